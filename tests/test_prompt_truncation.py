"""Prompts longer than a text encoder reads are cut as its tokenizer cuts them: MusicGen's T5 (transformers)
keeps its first 512 tokens, end-of-text last; the judge its first `max_tokens`. `generate` says so once."""

from __future__ import annotations

import torch

from deramos_reward.cli import main
from deramos_reward.integrations.musicgen.factory import load_musicgen_backend
from deramos_reward.integrations.musicgen.transformers.builders import T5_MAX_TOKENS
from deramos_reward.integrations.musicgen.transformers.logprobs import transformers_text_inputs

LONG = "a calm piano piece with soft strings and a slow pulse, " * 40  # 2200 bytes: 1 token per byte


def test_musicgen_reads_the_first_512_tokens_of_a_long_prompt():
    backend = load_musicgen_backend("transformers", "tiny")
    cut = LONG[: T5_MAX_TOKENS - 1]  # the byte-level tokenizer: one token per byte, then </s>
    inputs = transformers_text_inputs(backend.processor, [LONG, cut])
    assert inputs["input_ids"].shape == (2, T5_MAX_TOKENS)
    assert torch.equal(inputs["input_ids"][0], inputs["input_ids"][1])
    assert int(inputs["input_ids"][0, -1]) == backend.processor.tokenizer.eos_token_id
    frames = backend.frames_for(0.2)
    long_audio, long_codes = backend.generate([LONG], frames, seed=3)
    cut_audio, cut_codes = backend.generate([cut], frames, seed=3)
    assert torch.equal(long_codes, cut_codes) and torch.equal(long_audio, cut_audio)
    logits, _ = backend.code_logits([LONG], long_codes)
    expected, _ = backend.code_logits([cut], long_codes)
    assert torch.equal(logits, expected)
    assert backend.prompt_tokens([LONG, "short"]) == (T5_MAX_TOKENS, [len(LONG.encode()) + 1, 6])


def test_generate_warns_once_about_long_prompts(tiny_checkpoint, tmp_path, capsys):
    argv = ["generate", "--backend", "transformers", "--musicgen", "tiny", "--reward", str(tiny_checkpoint)]
    argv += [
        "--prompt",
        LONG,
        "--prompt",
        "fast drums",
        "--prompt",
        "b" * 300,
        "--n",
        "2",
        "--duration",
        "0.2",
    ]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert "MusicGen reads the first 512 tokens (1 prompts are longer, e.g. #0)" in warnings[0]
    assert "the judge reads the first 128 (2 prompts are longer, e.g. #0)" in warnings[0]
    short = [*argv[:7], "--prompt", "fast drums", "--n", "2", "--duration", "0.2"]
    assert main([*short, "--out", str(tmp_path / "short")]) == 0
    assert "warning" not in capsys.readouterr().err
