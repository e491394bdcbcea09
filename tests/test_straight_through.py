"""Straight-through decoding of MusicGen codes on real tiny models of both libraries.

Forward value == the library's own decoding of the same codes; gradients reach the logits, are finite
and are the soft path's gradient at the one-hot point chained through the softmax; the soft-decode path
(soft codebook lookup + codec decoder) matches finite differences in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch

from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.audiocraft.decoding import (
    audiocraft_decode_differentiable,
    audiocraft_soft_decode,
)
from deramos_reward.integrations.musicgen.audiocraft.logprobs import audiocraft_generate_with_codes
from deramos_reward.integrations.musicgen.straight_through import (
    soft_codebook_lookup,
    straight_through_one_hot,
)
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.musicgen.transformers.decoding import (
    transformers_decode_differentiable,
    transformers_soft_decode,
)
from deramos_reward.integrations.musicgen.transformers.logprobs import generate_with_codes
from deramos_reward.integrations.training.common.lora import attach_lora

PROMPTS = ["a calm piano piece", "fast drums"]


@pytest.fixture(scope="module")
def hf():
    return tm.tiny_musicgen(0)


@pytest.fixture(scope="module")
def acm():
    return ac.tiny_musicgen(0)


def hf_decode(model, codes):
    """What MusicgenForConditionalGeneration.generate does to its (mono) codes."""
    return model.audio_encoder.decode(codes[None], audio_scales=[None] * codes.shape[0]).audio_values


def random_logits(codes, card, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*codes.shape, card, generator=g).requires_grad_(True)


# ---- the estimator ----------------------------------------------------------------------------
def test_straight_through_one_hot_value_and_gradient():
    codes = torch.tensor([[[0, 2, 1]], [[1, 1, 0]]])  # [2, 1, 3]
    logits = random_logits(codes, 3)
    one_hot = straight_through_one_hot(codes, logits)
    assert one_hot.dtype == torch.float32
    assert torch.equal(one_hot, torch.nn.functional.one_hot(codes, 3).float())  # exactly, no rounding
    upstream = torch.randn(one_hot.shape, generator=torch.Generator().manual_seed(1))
    (one_hot * upstream).sum().backward()
    probs = torch.softmax(logits.detach(), -1)
    expected = probs * (upstream - (probs * upstream).sum(-1, keepdim=True))  # softmax's vector-Jacobian
    torch.testing.assert_close(logits.grad, expected)


def test_soft_codebook_lookup_value_is_the_hard_lookup_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(7, 5, generator=g)
    codes = torch.randint(0, 7, (3, 4), generator=g)
    weights = torch.softmax(torch.randn(3, 4, 7, generator=g), -1).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = soft_codebook_lookup(weights, codebook, codes)
    assert out.dtype == torch.float32 and torch.equal(out, codebook[codes])
    out.sum().backward()
    torch.testing.assert_close(weights.grad, codebook.sum(1).expand(3, 4, 7), atol=0.05, rtol=0.02)  # bf16
    torch.testing.assert_close(soft_codebook_lookup(weights, codebook), weights.detach() @ codebook)


@pytest.mark.parametrize(
    "codes, logits, error, match",
    [
        ([[[0]]], torch.zeros(1, 1, 1, 3), TypeError, "codes must be a torch.Tensor"),
        (torch.zeros(1, 1, 1, dtype=torch.float32), torch.zeros(1, 1, 1, 3), TypeError, "integer"),
        (torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, 1, 3), ValueError, r"\[B, K, S\]"),
        (torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, 1, 1, 3), ValueError, "agree"),
        (torch.full((1, 1, 1), 3), torch.zeros(1, 1, 1, 3), ValueError, r"\[0, 3\)"),
        (torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 1, 3), ValueError, "card"),
        (
            torch.zeros(1, 1, 1, dtype=torch.long),
            torch.zeros(1, 1, 1, 3, dtype=torch.long),
            TypeError,
            "float",
        ),
    ],
)
def test_straight_through_one_hot_rejects_bad_input(codes, logits, error, match):
    with pytest.raises(error, match=match):
        straight_through_one_hot(codes, logits)


# ---- transformers -----------------------------------------------------------------------------
def test_transformers_forward_equals_generate_and_decode(hf):
    model, processor = hf
    audio, codes = generate_with_codes(model, processor, PROMPTS, 12, seed=0)
    logits = random_logits(codes, 128)
    with torch.no_grad():  # the library decodes under no_grad: bit for bit
        assert torch.equal(transformers_decode_differentiable(model, codes, logits), audio)
        assert torch.equal(hf_decode(model, codes), audio)
    out = transformers_decode_differentiable(model, codes, logits)
    # With grad enabled torch picks another LSTM kernel: same as the library's decode in grad mode,
    # float rounding away from the no-grad value.
    assert torch.equal(out, hf_decode(model, codes))
    torch.testing.assert_close(out, audio, rtol=0, atol=1e-6)
    out.square().sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_transformers_stereo_decodes_even_and_odd_codebooks_as_channels():
    from transformers import MusicgenForConditionalGeneration

    config = tm.tiny_musicgen_config()
    config.decoder.audio_channels, config.decoder.num_codebooks = 2, 8
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config).eval()
    for layer in model.audio_encoder.quantizer.layers:
        torch.nn.init.normal_(layer.codebook.embed)
    codes = torch.randint(0, 128, (2, 8, 5), generator=torch.Generator().manual_seed(0))
    out = transformers_decode_differentiable(model, codes, random_logits(codes, 128))
    expected = torch.cat([hf_decode(model, codes[:, ::2]), hf_decode(model, codes[:, 1::2])], dim=1)
    assert out.shape == (2, 2, 5 * 640) and torch.equal(out, expected)


def test_transformers_rejects_mismatched_logits(hf):
    model, _ = hf
    codes = torch.zeros(1, 4, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[B, 4, S, 128\]"):
        transformers_decode_differentiable(model, codes, torch.zeros(1, 4, 3, 100))
    with pytest.raises(ValueError, match="K=4"):
        transformers_decode_differentiable(model, codes[:, :3], torch.zeros(1, 3, 3, 128))
    with pytest.raises(TypeError, match="MusicgenForConditionalGeneration"):
        transformers_decode_differentiable(torch.nn.Linear(2, 2), codes, torch.zeros(1, 4, 3, 128))


# ---- AudioCraft -------------------------------------------------------------------------------
def test_audiocraft_forward_equals_generate_audio(acm):
    audio, codes = audiocraft_generate_with_codes(acm, PROMPTS, duration=0.4, seed=0)
    logits = random_logits(codes, acm.lm.card)
    out = audiocraft_decode_differentiable(acm, codes, logits, gradient_checkpointing=True)
    assert out.shape == audio.shape and torch.equal(out, audio)
    assert torch.equal(out, acm.compression_model.decode(codes, None))
    out.square().sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_audiocraft_checkpointing_gives_the_same_gradient(acm):
    codes = torch.randint(0, acm.lm.card, (1, 4, 6), generator=torch.Generator().manual_seed(3))
    grads = []
    for ckpt in (False, True):
        logits = random_logits(codes, acm.lm.card, seed=4)
        audiocraft_decode_differentiable(acm, codes, logits, gradient_checkpointing=ckpt).sum().backward()
        grads.append(logits.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_audiocraft_interleaved_stereo(acm):
    from audiocraft.models.encodec import InterleaveStereoCompressionModel

    stereo = InterleaveStereoCompressionModel(acm.compression_model)
    musicgen = copy.copy(acm)  # a shallow copy: the fixture keeps its mono codec
    musicgen.compression_model = stereo
    codes = torch.randint(0, acm.lm.card, (2, 8, 5), generator=torch.Generator().manual_seed(0))
    out = audiocraft_decode_differentiable(musicgen, codes, random_logits(codes, acm.lm.card))
    assert out.shape[:2] == (2, 2) and torch.equal(out, stereo.decode(codes, None))


# ---- gradients ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def soft_decoders(hf, acm):
    """(soft decode, card) per library: float32 on the shared models, float64 on fresh copies."""
    model64, _ = tm.tiny_musicgen(1)
    musicgen64 = copy.copy(acm)
    musicgen64.compression_model = copy.deepcopy(acm.compression_model).double()
    model64.audio_encoder.double()
    return {
        "transformers": (lambda w, c=None: transformers_soft_decode(hf[0], w, c), 128),
        "audiocraft": (lambda w, c=None: audiocraft_soft_decode(acm, w, c), 400),
        "transformers64": (lambda w: transformers_soft_decode(model64, w), 128),
        "audiocraft64": (lambda w: audiocraft_soft_decode(musicgen64, w), 400),
    }


@pytest.mark.parametrize("which", ["transformers", "audiocraft"])
def test_soft_decode_matches_finite_differences_in_float64(soft_decoders, which):
    decode, card = soft_decoders[which + "64"]
    g = torch.Generator().manual_seed(len(which))
    weights = torch.softmax(torch.randn(1, 4, 2, card, generator=g, dtype=torch.float64), -1)
    weights.requires_grad_(True)
    # fast_mode: the analytic and the numerical vector-Jacobian products along random directions
    assert torch.autograd.gradcheck(lambda w: decode(w), (weights,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("which", ["transformers", "audiocraft"])
def test_straight_through_gradient_is_the_soft_gradient_at_the_one_hot(soft_decoders, which):
    decode, card = soft_decoders[which]
    g = torch.Generator().manual_seed(7)
    codes = torch.randint(0, card, (2, 4, 3), generator=g)
    logits = torch.randn(2, 4, 3, card, generator=g).requires_grad_(True)
    one_hot = straight_through_one_hot(codes, logits)
    decode(one_hot, codes).square().mean().backward()
    point = torch.nn.functional.one_hot(codes, card).float().requires_grad_(True)
    decode(point).square().mean().backward()  # plain soft path at the one-hot
    probs = torch.softmax(logits.detach(), -1)
    expected = probs * (point.grad - (probs * point.grad).sum(-1, keepdim=True))
    torch.testing.assert_close(logits.grad, expected, rtol=1e-4, atol=1e-9)


# ---- through the backend interface ---------------------------------------------------------------
@pytest.fixture(scope="module")
def backends(hf, acm):
    from deramos_reward.integrations import musicgen_backend

    return {"transformers": musicgen_backend(*hf), "audiocraft": musicgen_backend(acm)}


@pytest.mark.parametrize("name", ["transformers", "audiocraft"])
def test_backend_decode_differentiable_equals_decode(backends, name):
    backend = backends[name]
    audio, codes = backend.generate(PROMPTS, 6, seed=1, **backend.policy_sampling())
    logits, _ = backend.code_logits(PROMPTS, codes)
    with torch.no_grad():
        assert torch.equal(backend.decode_differentiable(codes, logits), backend.decode(codes))
    out = backend.decode_differentiable(codes, logits, gradient_checkpointing=True)
    torch.testing.assert_close(out, audio, rtol=0, atol=1e-6)  # grad mode: float rounding at most
    assert out.requires_grad


@pytest.mark.parametrize("name", ["transformers", "audiocraft"])
def test_gradient_reaches_the_lora_parameters_and_is_finite(hf, acm, name):
    from deramos_reward.integrations import musicgen_backend

    model = copy.deepcopy(hf[0] if name == "transformers" else acm)
    backend = musicgen_backend(model, hf[1] if name == "transformers" else None)
    policy = attach_lora(backend, r=2, seed=0)
    backend.set_trainable_module(policy)
    _, codes = backend.generate(PROMPTS, 6, seed=2, **backend.policy_sampling())
    logits, _ = backend.code_logits(PROMPTS, codes)
    audio = backend.decode_differentiable(codes, logits)
    audio.square().mean().backward()
    lora = [(n, p) for n, p in policy.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in lora)
    # LoRA's B matrices start at zero, so only they get a gradient at first; it must be non-zero
    assert sum(float(p.grad.abs().sum()) for n, p in lora if "lora_B" in n) > 0
    assert all(p.grad is None for n, p in policy.named_parameters() if "lora_" not in n)


@pytest.mark.parametrize("name", ["transformers", "audiocraft"])
def test_policy_sampling_samples_the_unguided_distribution(backends, name):
    """At a tiny temperature, policy sampling is greedy on the teacher-forced logits (no guidance);
    guided sampling picks other codes: the argmax of the guided teacher-forced logits, at every
    position of the delay pattern."""
    backend = backends[name]
    _, codes = backend.generate(PROMPTS, 8, seed=0, **backend.policy_sampling(temperature=1e-6))
    logits, _ = backend.code_logits(PROMPTS, codes)
    assert torch.equal(logits.argmax(-1), codes)
    guided = backend.policy_sampling(temperature=1e-6, guidance_scale=3.0)
    _, codes = backend.generate(PROMPTS, 8, seed=0, **guided)
    logits, _ = backend.code_logits(PROMPTS, codes)
    assert not torch.equal(logits.argmax(-1), codes)
    logits, _ = backend.code_logits(PROMPTS, codes, guidance_scale=3.0)
    assert torch.equal(logits.argmax(-1), codes)
    with pytest.raises(ValueError, match="guidance_scale"):
        backend.policy_sampling(guidance_scale=0.5)
    with pytest.raises(ValueError, match="temperature"):
        backend.policy_sampling(temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        backend.policy_sampling(top_k=-1)


@pytest.mark.parametrize("name", ["transformers", "audiocraft"])
def test_backend_to_the_current_device_keeps_everything_in_place(backends, name):
    backend = backends[name]
    assert backend.to("cpu") is backend and backend.device == torch.device("cpu")
