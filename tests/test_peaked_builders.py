"""The tiny MusicGen builders' ``head_std`` option: output heads redrawn with that spread, deterministic,
the caller's RNG untouched, and a next-code distribution far from uniform (the default one is almost
uniform, which is why adapters barely change what the default tiny models sample)."""

from __future__ import annotations

import math

import pytest
import torch

from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.audiocraft.logprobs import (
    audiocraft_generate_with_codes,
    audiocraft_sequence_logprobs,
)
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.musicgen.transformers.logprobs import (
    generate_with_codes,
    transformers_sequence_logprobs,
    transformers_text_inputs,
)

PROMPTS = [f"prompt {i}" for i in range(8)]


def _nll_transformers(head_std):
    model, processor = tm.tiny_musicgen(seed=0, head_std=head_std)
    _, codes = generate_with_codes(model, processor, PROMPTS, 13, seed=0, guidance_scale=1.0, top_k=0)
    inputs = transformers_text_inputs(processor, PROMPTS)
    out = transformers_sequence_logprobs(model, inputs["input_ids"], inputs["attention_mask"], codes)
    return model, -float(out.token_logps.mean())


def _nll_audiocraft(head_std):
    musicgen = ac.tiny_musicgen(seed=0, head_std=head_std)
    _, codes = audiocraft_generate_with_codes(musicgen, PROMPTS, duration=0.4, seed=0, top_k=0, cfg_coef=1.0)
    return musicgen, -float(audiocraft_sequence_logprobs(musicgen.lm, codes, PROMPTS).token_logps.mean())


@pytest.mark.parametrize("backend", ["transformers", "audiocraft"])
def test_head_std_gives_peaked_next_code_distributions(backend):
    nll = _nll_transformers if backend == "transformers" else _nll_audiocraft
    state = torch.get_rng_state()
    model, peaked = nll(0.5)
    assert torch.equal(torch.get_rng_state(), state)
    heads = model.decoder.lm_heads if backend == "transformers" else model.lm.linears
    weights = torch.cat([h.weight.flatten() for h in heads])
    assert float(weights.std()) == pytest.approx(0.5, rel=0.05)
    again, _ = nll(0.5)
    heads_again = again.decoder.lm_heads if backend == "transformers" else again.lm.linears
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(heads, heads_again))
    _, default = nll(None)
    uniform = math.log(128 if backend == "transformers" else 400)
    assert default > 0.93 * uniform  # the library's initialisation: almost uniform
    assert peaked < 0.75 * uniform
    with pytest.raises(ValueError, match="head_std"):
        nll(-1.0)
