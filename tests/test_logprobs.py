"""Sequence log-probabilities of MusicGen codes against independent step-by-step computations.

The references below lay out the delay pattern by hand (codebook k of frame t at step t + k + 1,
special/pad token elsewhere) and score one step at a time on the growing prefix, or read the raw
logits that transformers' ``generate`` itself sampled from.
"""

from __future__ import annotations

import copy

import pytest
import torch

from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.audiocraft.logprobs import (
    audiocraft_conditions,
    audiocraft_generate_with_codes,
    audiocraft_sequence_logprobs,
)
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.musicgen.transformers.logprobs import (
    generate_with_codes,
    transformers_sequence_logprobs,
    transformers_text_inputs,
)

PROMPTS = ["rock guitar with drums", "soft piano ballad"]


# ---------------------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def hf():
    model, processor = tm.tiny_musicgen(seed=0)
    return model, processor


@pytest.fixture(scope="module")
def hf64(hf):
    return copy.deepcopy(hf[0]).double()


class _Recorder:
    """A transformers streamer: receives the BOS column first, then each step's sampled tokens."""

    def __init__(self):
        self.chunks = []

    def put(self, value):
        self.chunks.append(value if value.dim() == 2 else value[:, None])

    def end(self):
        pass


def _hf_prefix_reference(model, inputs, codes):
    """Sum of log p(code) scoring the hand-built delayed sequence one prefix at a time. [B]"""
    batch, k_books, steps = codes.shape
    pad = model.decoder.config.pad_token_id
    length = steps + k_books
    seq = torch.full((batch, k_books, length), pad, dtype=torch.long)
    for k in range(k_books):
        seq[:, k, k + 1 : k + 1 + steps] = codes[:, k]
    total = torch.zeros(batch, dtype=torch.float64)
    with torch.no_grad():
        for pos in range(1, length):
            logits = model(**inputs, decoder_input_ids=seq[:, :, :pos].reshape(batch * k_books, pos)).logits
            logp = torch.log_softmax(logits[:, -1].double(), -1).reshape(batch, k_books, -1)
            for k in range(k_books):
                t = pos - 1 - k
                if 0 <= t < steps:
                    total += logp[torch.arange(batch), k, codes[:, k, t]]
    return total


def test_generate_with_codes_matches_generate_and_its_own_logits(hf):
    model, processor = hf
    inputs = transformers_text_inputs(processor, PROMPTS)
    audio, codes = generate_with_codes(
        model, processor, PROMPTS, max_new_tokens=12, seed=5, guidance_scale=1.0
    )
    assert codes.shape == (2, 4, 12 + 1 - 4) and codes.dtype == torch.long
    assert audio.shape == (2, 1, codes.shape[-1] * 640)

    recorder = _Recorder()
    torch.manual_seed(5)
    out = model.generate(
        **inputs,
        max_new_tokens=12,
        guidance_scale=1.0,
        streamer=recorder,
        return_dict_in_generate=True,
        output_logits=True,
    )
    assert torch.equal(out.sequences, audio)  # same seed, same sampling
    raw = torch.cat(recorder.chunks, dim=1).reshape(2, 4, -1)  # [B, K, L] before the delay mask
    steps = codes.shape[-1]
    manual = torch.stack([raw[:, k, k + 1 : k + 1 + steps] for k in range(4)], dim=1)
    assert torch.equal(manual, codes)
    # the audio is the decoding of these codes
    decoded = model.audio_encoder.decode(codes[None], [None]).audio_values
    assert torch.allclose(decoded, audio)

    # log-probs from the raw logits generate sampled from (guidance 1: the conditional model)
    logits = torch.stack(out.logits, dim=1).reshape(2, 4, raw.shape[-1] - 1, -1)
    logp = torch.log_softmax(logits, -1)
    expected = torch.zeros(2)
    for k in range(4):
        for t in range(steps):
            expected += logp[torch.arange(2), k, t + k, codes[:, k, t]]
    res = transformers_sequence_logprobs(model, inputs["input_ids"], inputs["attention_mask"], codes)
    assert torch.allclose(res.logps, expected, atol=1e-4)
    assert res.mask.all() and res.mask.shape == codes.shape


def test_transformers_logprobs_match_prefix_reference_float64(hf, hf64):
    _, processor = hf
    inputs = transformers_text_inputs(processor, PROMPTS)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 128, (2, 4, 7), generator=gen)
    res = transformers_sequence_logprobs(hf64, inputs["input_ids"], inputs["attention_mask"], codes)
    expected = _hf_prefix_reference(hf64, inputs, codes)
    assert res.logps.dtype == torch.float64
    assert torch.allclose(res.logps, expected, atol=1e-9, rtol=0)
    assert torch.allclose(res.token_logps.sum((1, 2)), res.logps)
    # one code changed late in codebook 0 changes only that code and codes that see it later
    changed = codes.clone()
    changed[0, 0, 5] = (changed[0, 0, 5] + 1) % 128
    res2 = transformers_sequence_logprobs(hf64, inputs["input_ids"], inputs["attention_mask"], changed)
    assert torch.equal(res2.token_logps[1], res.token_logps[1])
    assert torch.equal(res2.token_logps[0, 0, :5], res.token_logps[0, 0, :5])
    assert not torch.equal(res2.token_logps[0, 0, 5], res.token_logps[0, 0, 5])


def test_transformers_valid_steps_mask(hf):
    model, processor = hf
    inputs = transformers_text_inputs(processor, PROMPTS)
    codes = torch.randint(0, 128, (2, 4, 9), generator=torch.Generator().manual_seed(1))
    full = transformers_sequence_logprobs(model, inputs["input_ids"], inputs["attention_mask"], codes)
    valid = transformers_sequence_logprobs(
        model, inputs["input_ids"], inputs["attention_mask"], codes, keep_only_valid_steps=True
    )
    assert int(full.mask.sum()) == 2 * 4 * 9
    assert int(valid.mask.sum()) == 2 * (4 * 9 - (0 + 1 + 2 + 3))
    assert valid.mask[0, 3, :6].all() and not valid.mask[0, 3, 6:].any()
    assert torch.equal(valid.token_logps, full.token_logps * valid.mask)
    assert torch.allclose(valid.logps, (full.token_logps * valid.mask).sum((1, 2)))


def test_transformers_logprobs_are_differentiable(hf):
    model, processor = hf
    inputs = transformers_text_inputs(processor, PROMPTS)
    codes = torch.randint(0, 128, (2, 4, 5), generator=torch.Generator().manual_seed(2))
    model.zero_grad()
    transformers_sequence_logprobs(
        model, inputs["input_ids"], inputs["attention_mask"], codes
    ).logps.sum().backward()
    head = model.decoder.lm_heads[0].weight.grad
    text = model.text_encoder.shared.weight.grad
    assert head is not None and head.abs().sum() > 0
    assert text is not None and text.abs().sum() > 0
    model.zero_grad()


def test_transformers_logprobs_validate_inputs(hf):
    model, processor = hf
    inputs = transformers_text_inputs(processor, PROMPTS)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with pytest.raises(ValueError, match="K=4"):
        transformers_sequence_logprobs(model, ids, mask, torch.zeros(2, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 128\)"):
        transformers_sequence_logprobs(model, ids, mask, torch.full((2, 4, 5), 128))
    with pytest.raises(TypeError, match="integer"):
        transformers_sequence_logprobs(model, ids, mask, torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="input_ids"):
        transformers_sequence_logprobs(model, ids[:1], mask[:1], torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="frames"):
        transformers_sequence_logprobs(model, ids, mask, torch.zeros(2, 4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate_with_codes(model, processor, PROMPTS, 8, num_return_sequences=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_with_codes(model, processor, PROMPTS, 5)
    with pytest.raises(TypeError, match="prompts"):
        generate_with_codes(model, processor, "one prompt", 8)


# ------------------------------------------------------------------------------------------ AudioCraft


@pytest.fixture(scope="module")
def acm():
    return ac.tiny_musicgen(seed=0)


@pytest.fixture(scope="module")
def ac_lm64(acm):
    return copy.deepcopy(acm.lm).double()


def _ac_prefix_reference(lm, prompts, codes):
    """Score the hand-built delayed sequence prefix by prefix; returns (sum log p [B], is_argmax [B, K, S])."""
    batch, k_books, steps = codes.shape
    special = lm.card
    length = steps + k_books
    seq = torch.full((batch, k_books, length), special, dtype=torch.long)
    for k in range(k_books):
        seq[:, k, k + 1 : k + 1 + steps] = codes[:, k]
    provider = lm.condition_provider
    tensors = provider(provider.tokenize(audiocraft_conditions(prompts)))
    total = torch.zeros(batch, dtype=torch.float64)
    is_argmax = torch.zeros(codes.shape, dtype=torch.bool)
    with torch.no_grad():
        for pos in range(1, length):
            logp = torch.log_softmax(lm(seq[:, :, :pos], [], tensors)[:, :, -1].double(), -1)  # [B, K, card]
            for k in range(k_books):
                t = pos - 1 - k
                if 0 <= t < steps:
                    total += logp[torch.arange(batch), k, codes[:, k, t]]
                    is_argmax[:, k, t] = logp[:, k].argmax(-1) == codes[:, k, t]
    return total, is_argmax


def test_audiocraft_logprobs_match_prefix_reference_float64(ac_lm64):
    codes = torch.randint(0, ac_lm64.card, (2, 4, 6), generator=torch.Generator().manual_seed(0))
    res = audiocraft_sequence_logprobs(ac_lm64, codes, PROMPTS)
    expected, _ = _ac_prefix_reference(ac_lm64, PROMPTS, codes)
    assert res.logps.dtype == torch.float64 and res.token_logps.shape == codes.shape
    assert torch.allclose(res.logps, expected, atol=1e-9, rtol=0)
    same = audiocraft_sequence_logprobs(ac_lm64, codes, audiocraft_conditions(PROMPTS))
    assert torch.equal(same.logps, res.logps)


def test_audiocraft_greedy_generation_is_the_argmax_of_the_reference(acm, ac_lm64):
    audio, codes = audiocraft_generate_with_codes(
        acm, PROMPTS, duration=0.24, use_sampling=False, cfg_coef=1.0
    )
    assert codes.shape == (2, 4, 6)
    assert torch.allclose(acm.generate_audio(codes), audio)
    expected, is_argmax = _ac_prefix_reference(ac_lm64, PROMPTS, codes)
    assert is_argmax.all()  # the hand-built layout is the one generation used
    res = audiocraft_sequence_logprobs(ac_lm64, codes, PROMPTS)
    assert torch.allclose(res.logps, expected, atol=1e-9, rtol=0)


def test_audiocraft_generate_with_codes_is_seeded_and_restores_settings(acm):
    acm.set_generation_params(duration=1.0, top_k=50)
    before = (acm.duration, dict(acm.generation_params))
    a1, c1 = audiocraft_generate_with_codes(acm, PROMPTS, duration=0.2, seed=3, temperature=1.5)
    a2, c2 = audiocraft_generate_with_codes(acm, PROMPTS, duration=0.2, seed=3, temperature=1.5)
    _, c3 = audiocraft_generate_with_codes(acm, PROMPTS, duration=0.2, seed=4, temperature=1.5)
    assert torch.equal(c1, c2) and torch.equal(a1, a2) and not torch.equal(c1, c3)
    assert c1.shape == (2, 4, 5) and a1.shape == (2, 1, 5 * 1280)
    assert (acm.duration, acm.generation_params) == before
    with pytest.raises(ValueError, match="generation_params"):
        audiocraft_generate_with_codes(acm, PROMPTS, duration=0.2, topk=3)


def test_audiocraft_valid_steps_mask_and_gradients(acm):
    lm = acm.lm
    codes = torch.randint(0, lm.card, (2, 4, 8), generator=torch.Generator().manual_seed(3))
    full = audiocraft_sequence_logprobs(lm, codes, PROMPTS)
    valid = audiocraft_sequence_logprobs(lm, codes, PROMPTS, keep_only_valid_steps=True)
    assert int(full.mask.sum()) == 2 * 4 * 8
    assert int(valid.mask.sum()) == 2 * (4 * 8 - (0 + 1 + 2 + 3))
    assert torch.allclose(valid.token_logps, full.token_logps * valid.mask, atol=1e-5)
    assert torch.isfinite(valid.logps).all()
    lm.zero_grad()
    valid.logps.sum().backward()
    grads = [p.grad for p in lm.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert lm.linears[0].weight.grad.abs().sum() > 0
    assert lm.condition_provider.conditioners["description"].embed.weight.grad.abs().sum() > 0
    lm.zero_grad()


def test_audiocraft_logprobs_ignore_condition_dropout_in_training_mode(acm):
    lm = copy.deepcopy(acm.lm)
    lm.cfg_dropout.p = 1.0  # would drop every description if the LM's own dropout were applied
    codes = torch.randint(0, lm.card, (2, 4, 4), generator=torch.Generator().manual_seed(4))
    reference = audiocraft_sequence_logprobs(lm, codes, PROMPTS).logps
    lm.train()
    assert torch.allclose(audiocraft_sequence_logprobs(lm, codes, PROMPTS).logps, reference, atol=1e-6)


def test_audiocraft_logprobs_validate_inputs(acm):
    lm = acm.lm
    codes = torch.zeros(2, 4, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="one entry per sequence"):
        audiocraft_sequence_logprobs(lm, codes, PROMPTS[:1])
    with pytest.raises(ValueError, match="K=4"):
        audiocraft_sequence_logprobs(lm, torch.zeros(2, 2, 3, dtype=torch.long), PROMPTS)
    with pytest.raises(ValueError, match=r"\[0, 400\)"):
        audiocraft_sequence_logprobs(lm, torch.full((2, 4, 3), 400), PROMPTS)
    with pytest.raises(TypeError, match="conditions"):
        audiocraft_sequence_logprobs(lm, codes, "rock")
