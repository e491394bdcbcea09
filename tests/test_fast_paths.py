"""The judge's fast paths compute what the plain modules compute: folded-BatchNorm subsampling and
SDPA attention (values and gradients), bf16 encoder weights, torch.compile; and the conformer's rotary
cache never leaks a table of the wrong dtype, device or inference mode into a later call."""

from __future__ import annotations

import pytest
import torch
from conftest import tone

import deramos_reward as dr
from deramos_reward.acceleration import compile_judge
from deramos_reward.encoders.muq_fast import sdpa_compatible

SR = 24_000


@pytest.fixture(scope="module")
def judge():
    """A tiny judge whose BatchNorms have non-trivial statistics (so folding them is tested)."""
    torch.manual_seed(0)
    model = dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.audio_encoder.backbone.model.conv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return model


def _waves(seconds: float = 1.3, count: int = 2) -> torch.Tensor:
    return torch.stack([torch.tensor(tone(seconds, SR, 200 + 300 * i, seed=i)) for i in range(count)])


def _frames(encoder, wave: torch.Tensor, fast: bool) -> torch.Tensor:
    encoder.fast_paths = fast
    try:
        return encoder(wave).frames
    finally:
        encoder.fast_paths = True


def test_fast_paths_give_the_frames_and_gradients_of_muqs_own_modules(judge):
    encoder = judge.audio_encoder
    assert encoder.fast_paths and len(encoder._attention) == len(encoder.backbone.model.conformer.layers)
    wave = _waves().requires_grad_(True)
    fast, plain = _frames(encoder, wave, True), _frames(encoder, wave, False)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert plain.abs().mean() > 0.1  # not a trivially small comparison
    weights = torch.randn(fast.shape, generator=torch.Generator().manual_seed(0))
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), wave)
    (g_plain,) = torch.autograd.grad((plain * weights).sum(), wave)
    # the dB conversion amplifies rounding on near-silent bins: compare whole gradients by norm
    relative = float((g_fast - g_plain).norm() / g_plain.norm())
    assert relative < 1e-5, relative


def test_each_fast_path_switches_on_and_off_alone(judge):
    encoder = judge.audio_encoder
    attention = encoder._attention
    encoder.sdpa_attention = False
    assert not encoder.fast_paths and all("forward" not in vars(a) for a in attention)
    encoder.sdpa_attention = True
    assert all("forward" in vars(a) for a in attention)
    encoder.folded_subsampling = False
    try:
        assert not encoder.fast_paths
        with torch.no_grad():
            torch.testing.assert_close(
                encoder(_waves()).frames, _frames(encoder, _waves(), True), atol=1e-5, rtol=0
            )
    finally:
        encoder.fast_paths = True


def test_sdpa_attention_matches_the_original_with_a_padding_mask(judge):
    attn = judge.audio_encoder._attention[0]
    conformer = judge.audio_encoder.backbone.model.conformer
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 9, attn.num_heads * attn.head_size, generator=g)
    rotary = conformer.embed_positions(hidden)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[1, 6:] = False
    mask = (1.0 - keep[:, None, None, :].float()) * torch.finfo(torch.float32).min
    mask = mask.expand(2, 1, 9, 9)
    ours, none = attn(hidden, attention_mask=mask, relative_position_embeddings=rotary)
    theirs, probs = type(attn).forward(attn, hidden, mask, rotary)
    assert none is None and probs is not None
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    _, asked = attn(hidden, attention_mask=mask, relative_position_embeddings=rotary, output_attentions=True)
    assert asked is not None and asked.shape == (2, attn.num_heads, 9, 9)  # falls back for probabilities


def test_relative_position_attention_is_left_alone():
    from transformers import Wav2Vec2ConformerConfig
    from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import (
        Wav2Vec2ConformerSelfAttention,
    )

    cfg = Wav2Vec2ConformerConfig(hidden_size=16, num_attention_heads=2, position_embeddings_type="relative")
    assert not sdpa_compatible(Wav2Vec2ConformerSelfAttention(cfg))
    cfg.position_embeddings_type = "rotary"
    assert sdpa_compatible(Wav2Vec2ConformerSelfAttention(cfg))
    assert not sdpa_compatible(torch.nn.Linear(2, 2))


def test_reward_backward_after_inference_mode_scoring_of_the_same_length(judge):
    """transformers caches the rotary table by length only: a table made under inference_mode must
    not reach a later call that autograd records (it raised 'Inference tensors cannot be saved')."""
    wave = _waves(1.0, 1)
    dr.score(judge, [wave[0]], ["calm piano"], sample_rate=SR)
    audio = wave.clone().requires_grad_(True)
    reward = dr.MusicReward(judge)
    (grad,) = torch.autograd.grad(reward(audio, SR, ["calm piano"]).sum(), audio)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_float32_frames_do_not_change_after_a_bf16_autocast_call(judge):
    import copy

    wave = _waves(1.17, 2)  # a length no other test uses
    encoder = judge.audio_encoder
    fresh = copy.deepcopy(encoder)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            encoder(wave)  # caches a bf16-rounded rotary table for this length
        torch.testing.assert_close(encoder(wave).frames, fresh(wave).frames, atol=0, rtol=0)


def test_casting_after_a_call_does_not_reuse_the_old_rotary_table(judge):
    import copy

    wave = _waves(1.23, 1)
    with torch.no_grad():
        judge(wave, ["a"])  # caches a float32 table for this length
        half = copy.deepcopy(judge).set_encoder_dtype(torch.bfloat16)
        assert torch.isfinite(half(wave, ["a"]).mi).all()  # was: mat1 and mat2 must have the same dtype


def test_bf16_encoder_weights_keep_heads_and_front_end_in_float32(judge, tmp_path):
    import copy

    half = copy.deepcopy(judge).set_encoder_dtype(torch.bfloat16)
    assert {p.dtype for p in half.audio_encoder.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.text_encoder.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.heads.parameters()} == {torch.float32}
    assert half.audio_encoder.mel.spectrogram.window.dtype == torch.float32
    wave = _waves(1.2, 2)
    with torch.no_grad():
        ref, out = judge(wave, ["a", "b"]), half(wave, ["a", "b"])
    assert out.mi.dtype == torch.float32
    drift = torch.cat([out.mi - ref.mi, out.ta - ref.ta]).abs().max()
    assert 0 < drift < 1e-2  # bf16 rounding, not a different function

    judge.save_pretrained(tmp_path / "ckpt")
    loaded = dr.DeRAMOS.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert next(loaded.audio_encoder.backbone.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave, ["a", "b"]).mi, out.mi, atol=0, rtol=0)
    with pytest.raises(TypeError, match="dtype"):
        judge.set_encoder_dtype(torch.int8)


def test_float64_casts_the_whole_judge(tiny_model):
    import copy

    double = copy.deepcopy(tiny_model).set_encoder_dtype(torch.float64)
    assert {p.dtype for p in double.parameters()} == {torch.float64}
    with torch.no_grad():
        assert double(_waves(1.0, 1).double(), ["a"]).mi.dtype == torch.float64


def test_compiled_judge_gives_the_same_scores(judge):
    import copy

    compiled = compile_judge(copy.deepcopy(judge), backend="eager")
    wave = _waves(1.0, 2)
    with torch.no_grad():
        want = judge(wave, ["a", "b"])
        for _ in range(2):  # the second call reuses the compiled graphs
            got = compiled(wave, ["a", "b"])
            torch.testing.assert_close(got.mi, want.mi, atol=1e-6, rtol=0)
            torch.testing.assert_close(got.ta, want.ta, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="DeRAMOS"):
        compile_judge(torch.nn.Linear(2, 2))
