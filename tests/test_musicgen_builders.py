"""Offline MusicGen builders of both libraries: shapes, determinism, prompt sensitivity, architecture."""

from __future__ import annotations

import hashlib

import pytest
import torch

from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.transformers import builders as tm

PROMPTS = ["rock guitar with drums", "soft piano ballad"]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ AudioCraft


@pytest.fixture(scope="module")
def ac_pair():
    return ac.tiny_musicgen(seed=0), ac.tiny_musicgen(seed=0)


def test_audiocraft_tiny_is_deterministic_and_leaves_global_rng(ac_pair):
    state = torch.get_rng_state()
    other = ac.tiny_musicgen(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    a, b = ac_pair
    assert _same_state(a.lm, b.lm) and _same_state(a.compression_model, b.compression_model)
    assert not _same_state(a.lm, other.lm)


def test_audiocraft_tiny_generates_expected_shapes_and_same_seed_same_output(ac_pair):
    a, b = ac_pair
    outs = []
    for model in (a, b):
        model.set_generation_params(duration=0.4)
        torch.manual_seed(7)
        outs.append(model.generate(PROMPTS, return_tokens=True))
    (audio, codes), (audio_b, codes_b) = outs
    frames = int(0.4 * 25)  # debug EnCodec: 25 frames/s, hop 1280 at 32 kHz
    assert a.sample_rate == 32000 and a.frame_rate == 25
    assert audio.shape == (2, 1, frames * 1280)
    assert codes.shape == (2, 4, frames)
    assert int(codes.min()) >= 0 and int(codes.max()) < a.lm.card
    assert torch.equal(codes, codes_b) and torch.equal(audio, audio_b)
    assert torch.isfinite(audio).all()


def test_audiocraft_tiny_conditioning_depends_on_prompt(ac_pair):
    lm = ac_pair[0].lm
    provider = lm.condition_provider
    from deramos_reward.integrations.musicgen.audiocraft.logprobs import audiocraft_conditions

    tokenized = provider.tokenize(audiocraft_conditions(PROMPTS))
    tokens, _ = tokenized["description"]
    # one LUT row per whole prompt, chosen by sha256 (stable across processes, unlike hash())
    expected = [int(hashlib.sha256(p.encode()).hexdigest(), 16) % ac.TINY_LUT_BINS for p in PROMPTS]
    assert tokens[:, 0].tolist() == expected and expected[0] != expected[1]
    embedding, mask = provider(tokenized)["description"]
    assert embedding.shape == (2, 1, lm.dim) and mask.tolist() == [[1], [1]]
    assert not torch.allclose(embedding[0], embedding[1])


def test_audiocraft_small_architecture_parameter_count():
    # Built on the meta device: only shapes. Independent count of the musicgen-small LM:
    d, layers, n_q, card, lut_bins, lut_dim = 1024, 24, 4, 2048, ac.TINY_LUT_BINS, 768
    per_layer = (
        (4 * d * d) + (4 * d * d) + (2 * d * 4 * d) + 3 * (2 * d)
    )  # self, cross, ff (no biases), 3 LNs
    expected = layers * per_layer + n_q * (card + 1) * d + n_q * d * card + 2 * d
    expected += lut_bins * lut_dim + lut_dim * d + d  # LUT + projection to the LM width
    with torch.device("meta"):
        lm = ac._lut_lm(lut_dim=lut_dim, n_bins=lut_bins, **ac._SMALL_LM)
    assert sum(p.numel() for p in lm.parameters()) == expected
    assert lm.num_codebooks == 4 and lm.card == 2048 and lm.cfg_coef == 3.0


def test_audiocraft_builders_validate_arguments():
    with pytest.raises(TypeError, match="seed"):
        ac.tiny_musicgen(seed="0")
    with pytest.raises(ValueError, match="max_duration"):
        ac.tiny_musicgen(max_duration=0)


# ---------------------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def tm_pair():
    return tm.tiny_musicgen(seed=0), tm.tiny_musicgen(seed=0)


def test_transformers_tiny_is_deterministic_and_leaves_global_rng(tm_pair):
    state = torch.get_rng_state()
    other, _ = tm.tiny_musicgen(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    (a, _), (b, _) = tm_pair
    assert _same_state(a, b)
    assert not _same_state(a, other)


def test_transformers_tiny_generates_expected_shapes_and_same_seed_same_output(tm_pair):
    audios = []
    for model, processor in tm_pair:
        inputs = processor(text=PROMPTS, padding=True, return_tensors="pt")
        torch.manual_seed(11)
        audios.append(model.generate(**inputs, max_new_tokens=13))
    frames = 13 + 1 - 4  # delay pattern: K - 1 steps; hop 640 at 32 kHz
    assert audios[0].shape == (2, 1, frames * 640)
    assert torch.equal(audios[0], audios[1])
    assert torch.isfinite(audios[0]).all()
    model = tm_pair[0][0]
    assert model.config.audio_encoder.frame_rate == 50
    assert model.audio_encoder.quantizer.num_quantizers == model.decoder.num_codebooks == 4


def test_transformers_tiny_tokenizer_and_conditioning(tm_pair):
    model, processor = tm_pair[0]
    tokenizer = processor.tokenizer
    assert len(tokenizer) == model.config.text_encoder.vocab_size == 259
    ids = tokenizer("ab")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id == 1 and len(ids) == 3  # one token per byte + </s>
    assert (
        tokenizer.decode(tokenizer("café au lait")["input_ids"], skip_special_tokens=True) == "café au lait"
    )
    batch = processor(text=PROMPTS, padding=True, return_tensors="pt")
    assert batch["attention_mask"][1].sum() == len(PROMPTS[1].encode()) + 1
    with torch.no_grad():
        states = model.text_encoder(**batch).last_hidden_state
    assert not torch.allclose(states[0, :3], states[1, :3])


def test_transformers_tiny_tokenizer_round_trips_through_save(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = tm.byte_level_t5_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(PROMPTS)["input_ids"] == tokenizer(PROMPTS)["input_ids"]


def test_transformers_small_architecture_dimensions():
    from transformers import MusicgenForConditionalGeneration

    config = tm.musicgen_small_config()
    assert config.decoder.hidden_size == 1024 and config.decoder.num_hidden_layers == 24
    assert config.decoder.ffn_dim == 4096 and config.decoder.vocab_size == 2048
    assert config.text_encoder.d_model == 768 and config.text_encoder.num_layers == 12
    assert config.audio_encoder.frame_rate == 50 and config.audio_encoder.num_quantizers == 4
    with torch.device("meta"):
        model = MusicgenForConditionalGeneration(config)
    d, layers = 1024, 24
    # decoder: self + cross attention (q, k, v, out with biases? none in MusicGen), ffn, 3 LNs, + final LN
    per_layer = 2 * (4 * d * d) + 2 * d * 4 * d + 3 * 2 * d
    expected_decoder = layers * per_layer + 2 * d + 4 * (2048 + 1) * d + 4 * d * 2048
    decoder_params = sum(p.numel() for p in model.decoder.parameters())
    assert decoder_params == expected_decoder
    assert model.enc_to_dec_proj.weight.shape == (1024, 768)


def test_missing_audiocraft_raises_import_error_naming_the_recipe(monkeypatch):
    import sys

    from deramos_reward.integrations.musicgen.audiocraft.logprobs import audiocraft_conditions

    # a None entry in sys.modules makes `import` fail as if the package were not installed
    monkeypatch.setitem(sys.modules, "audiocraft.models.builders", None)
    monkeypatch.setitem(sys.modules, "audiocraft.modules.conditioners", None)
    with pytest.raises(ImportError, match="AudioCraft install recipe"):
        ac.tiny_musicgen()
    with pytest.raises(ImportError, match="AudioCraft install recipe"):
        audiocraft_conditions(["rock"])
