"""best-of-N and progressive best-of-N on real tiny MusicGen models (transformers and AudioCraft), through
the one backend interface (``musicgen_backend``)."""

from __future__ import annotations

import pytest
import torch

import deramos_reward as dr
from deramos_reward.integrations import musicgen_backend
from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.rerank import best_of_n, progressive_best_of_n

PROMPTS = ["a calm piano piece", "fast drums"]


@pytest.fixture(scope="module")
def reward():
    torch.manual_seed(5)
    return dr.MusicReward(dr.DeRAMOS(dr.DeRAMOSConfig.tiny()), chunk_size=8)


@pytest.fixture(scope="module")
def hf_musicgen():
    model, processor = tm.tiny_musicgen(0)
    # The tiny EnCodec's codebooks start at zero (transformers initialises them lazily from
    # data), which would decode every code sequence to the same audio; give them random entries
    # so candidates sound different.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape, generator=g))
    return model, processor


@pytest.fixture(scope="module")
def ac_musicgen():
    musicgen = ac.tiny_musicgen(0)
    musicgen.set_generation_params(duration=0.4, top_k=50)
    return musicgen


def hf_decode(model, codes):
    """codes [B, K, S] -> audio [B, 1, T] with the model's own EnCodec decoder."""
    with torch.no_grad():
        return model.audio_encoder.decode(codes[None], audio_scales=[None] * codes.shape[0]).audio_values


# ---- transformers -----------------------------------------------------------------------------
def test_transformers_best_of_n_end_to_end(hf_musicgen, reward):
    model, processor = hf_musicgen
    res = best_of_n(
        model,
        PROMPTS,
        3,
        reward,
        processor=processor,
        max_batch=4,
        seed=0,
        duration=0.3,
        return_candidates=True,
    )
    frames = 15  # 0.3 s at 50 frames/s
    assert res.sample_rate == 32_000
    assert res.codes.shape == (2, 4, frames) and res.audio.shape == (2, 1, 640 * frames)
    assert res.scores.shape == (2, 3) and torch.equal(res.index, res.scores.argmax(1))
    assert len({tuple(c.flatten().tolist()) for c in res.candidate_codes.flatten(0, 1)}) == 6  # sampled
    # the chosen codes are the chosen audio, and the scores are those of the candidates
    torch.testing.assert_close(hf_decode(model, res.codes), res.audio, rtol=0, atol=1e-5)
    with torch.no_grad():
        again = reward(res.candidates.flatten(0, 1), 32_000, [p for p in PROMPTS for _ in range(3)])
    torch.testing.assert_close(again.reshape(2, 3), res.scores, rtol=0, atol=1e-5)
    # seeded: the same call gives the same candidates
    again = best_of_n(model, PROMPTS, 3, reward, processor=processor, max_batch=4, seed=0, duration=0.3)
    assert torch.equal(again.codes, res.codes) and torch.equal(again.scores, res.scores)


def test_transformers_sampling_options_reach_generate(hf_musicgen, reward):
    model, processor = hf_musicgen
    greedy = best_of_n(
        model,
        PROMPTS[:1],
        3,
        reward,
        processor=processor,
        duration=0.18,
        do_sample=False,
        return_candidates=True,
    )
    assert greedy.codes.shape == (1, 4, 9)  # round(0.18 s * 50 frames/s)
    codes = greedy.candidate_codes[0]
    assert torch.equal(codes[0], codes[1]) and torch.equal(codes[0], codes[2])  # greedy: all the same
    for option in ("max_new_tokens", "max_length", "num_return_sequences"):
        with pytest.raises(ValueError, match=option):
            best_of_n(model, PROMPTS, 2, reward, processor=processor, duration=0.3, **{option: 12})
    # without a duration, the model's own generation length (max_length 256 -> 255 steps - 3 delay)
    default = musicgen_backend(model, processor).default_frames()
    assert default == model.generation_config.max_length - 1 - 3


def test_transformers_progressive(hf_musicgen, reward):
    model, processor = hf_musicgen
    res = progressive_best_of_n(
        model, PROMPTS, 5, reward, processor=processor, duration=0.4, checkpoints=(0.4,), keep=0.5, seed=0,
        return_candidates=True,
    )  # fmt: skip
    assert res.scores.shape == (2, 5) and torch.isfinite(res.scores).all()
    assert (~res.pruned).sum(1).tolist() == [3, 3]  # ceil(0.5 * 5)
    assert res.stats["stage_frames"] == [8, 20]
    assert res.stats["generated_frames"] == 2 * (5 * 8 + 3 * 12)
    assert res.codes.shape == (2, 4, 20)
    torch.testing.assert_close(hf_decode(model, res.codes), res.audio, rtol=0, atol=1e-5)
    for p in range(2):
        for i in torch.nonzero(res.pruned[p]).flatten():  # pruned at 8 frames: partial score kept
            partial = res.candidate_codes[p, i]
            assert (partial[:, :8] >= 0).all() and (partial[:, 8:] == -1).all()
            with torch.no_grad():
                score = reward(hf_decode(model, partial[None, :, :8]), 32_000, [PROMPTS[p]])
            assert float(score) == pytest.approx(float(res.scores[p, i]), abs=1e-5)
    with pytest.raises(ValueError, match="at least 4 frames"):
        progressive_best_of_n(
            model, PROMPTS, 2, reward, processor=processor, duration=0.2, checkpoints=(0.1,)
        )


def test_transformers_backend_generate_continues_a_prefix(hf_musicgen):
    model, processor = hf_musicgen
    backend = musicgen_backend(model, processor)
    audio, codes = backend.generate(PROMPTS, 8, seed=0)
    assert codes.shape == (2, 4, 8)
    longer, more = backend.generate(PROMPTS, 20, prefix=codes, seed=1)
    assert more.shape == (2, 4, 20) and longer.shape == (2, 1, 640 * 20)
    assert torch.equal(more[..., :8], codes)
    # generate's own audio decodes exactly these codes, so the prefix really was kept
    torch.testing.assert_close(hf_decode(model, more), longer, rtol=0, atol=1e-5)


def test_transformers_melody_model_text_only(reward):
    """MusicgenMelodyForConditionalGeneration goes through the same path for text prompts."""
    from transformers import (
        MusicgenMelodyConfig,
        MusicgenMelodyFeatureExtractor,
        MusicgenMelodyForConditionalGeneration,
        MusicgenMelodyProcessor,
    )

    base = tm.tiny_musicgen_config()
    config = MusicgenMelodyConfig(
        text_encoder=base.text_encoder.to_dict(),
        audio_encoder=base.audio_encoder.to_dict(),
        decoder=base.decoder.to_dict(),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MusicgenMelodyForConditionalGeneration(config).eval()
        with torch.no_grad():
            for layer in model.audio_encoder.quantizer.layers:
                layer.codebook.embed.normal_()
    pad = config.decoder.pad_token_id
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = pad
    gen.do_sample, gen.max_length = True, 64
    processor = MusicgenMelodyProcessor(
        feature_extractor=MusicgenMelodyFeatureExtractor(), tokenizer=tm.byte_level_t5_tokenizer()
    )
    res = best_of_n(model, PROMPTS, 2, reward, processor=processor, duration=0.3, seed=0)
    assert res.codes.shape == (2, 4, 15) and res.audio.shape == (2, 1, 640 * 15)
    torch.testing.assert_close(hf_decode(model, res.codes), res.audio, rtol=0, atol=1e-5)
    backend = musicgen_backend(model, processor)
    assert backend.name == "transformers"
    _, codes = backend.generate(PROMPTS, 6, seed=0)
    longer, more = backend.generate(PROMPTS, 14, prefix=codes, seed=1)
    assert torch.equal(more[..., :6], codes)
    torch.testing.assert_close(hf_decode(model, more), longer, rtol=0, atol=1e-5)


# ---- AudioCraft -------------------------------------------------------------------------------
def test_audiocraft_best_of_n_end_to_end(ac_musicgen, reward):
    musicgen = ac_musicgen
    before = (musicgen.duration, dict(musicgen.generation_params))
    res = best_of_n(musicgen, PROMPTS, 3, reward, max_batch=4, seed=0, return_candidates=True)
    assert (musicgen.duration, musicgen.generation_params) == before
    frames = int(0.4 * musicgen.frame_rate)  # honours set_generation_params(duration=0.4)
    assert res.sample_rate == musicgen.sample_rate == 32_000
    assert res.codes.shape == (2, 4, frames) and res.audio.shape[:2] == (2, 1)
    assert torch.equal(res.index, res.scores.argmax(1)) and res.scores.std() > 0
    with torch.no_grad():
        decoded = musicgen.generate_audio(res.codes)
    torch.testing.assert_close(decoded, res.audio, rtol=0, atol=1e-6)
    for p in range(2):
        assert torch.equal(res.audio[p], res.candidates[p, res.index[p]])
    again = best_of_n(musicgen, PROMPTS, 3, reward, max_batch=4, seed=0)
    assert torch.equal(again.codes, res.codes)


def test_audiocraft_generation_params_are_honoured_and_restored(ac_musicgen, reward):
    musicgen = ac_musicgen
    before = (musicgen.duration, dict(musicgen.generation_params))
    greedy = best_of_n(
        musicgen, PROMPTS[:1], 3, reward, duration=0.2, use_sampling=False, return_candidates=True
    )
    assert (musicgen.duration, musicgen.generation_params) == before
    codes = greedy.candidate_codes[0]
    assert codes.shape == (3, 4, 5)
    assert torch.equal(codes[0], codes[1]) and torch.equal(codes[0], codes[2])
    with pytest.raises(ValueError, match="unknown generation_params"):
        best_of_n(musicgen, PROMPTS, 2, reward, temprature=0.5)


def test_audiocraft_progressive(ac_musicgen, reward):
    musicgen = ac_musicgen
    before = (musicgen.duration, dict(musicgen.generation_params))
    res = progressive_best_of_n(
        musicgen, PROMPTS, 4, reward, duration=0.8, checkpoints=(0.25, 0.5), keep=0.4, seed=0,
        return_candidates=True,
    )  # fmt: skip
    assert (musicgen.duration, musicgen.generation_params) == before
    assert res.stats["stage_frames"] == [5, 10, 20]
    assert (~res.pruned).sum(1).tolist() == [1, 1]  # 4 -> ceil(1.6)=2 -> ceil(0.8)=1
    assert res.scores.shape == (2, 4) and torch.isfinite(res.scores).all()
    assert res.stats["generated_frames"] == 2 * (4 * 5 + 2 * 5 + 1 * 10)
    with torch.no_grad():
        decoded = musicgen.generate_audio(res.codes)
    torch.testing.assert_close(decoded, res.audio, rtol=0, atol=1e-6)
    for p in range(2):
        assert not res.pruned[p, res.index[p]]
        for i in torch.nonzero(res.pruned[p]).flatten():  # pruned at 5 or 10 frames
            partial = res.candidate_codes[p, i]
            length = int((partial[0] >= 0).sum())
            assert length in (5, 10) and (partial[:, length:] == -1).all()
            with torch.no_grad():
                score = reward(musicgen.generate_audio(partial[None, :, :length]), 32_000, [PROMPTS[p]])
            assert float(score) == pytest.approx(float(res.scores[p, i]), abs=1e-5)


def test_audiocraft_backend_generate_continues_a_prefix(ac_musicgen):
    backend = musicgen_backend(ac_musicgen)
    audio, codes = backend.generate(PROMPTS, 5, seed=0)
    assert codes.shape == (2, 4, 5)
    longer, more = backend.generate(PROMPTS, 12, prefix=codes, seed=1)
    assert more.shape == (2, 4, 12)
    assert torch.equal(more[..., :5], codes)  # AudioCraft's LM kept the prompt tokens
    with torch.no_grad():
        torch.testing.assert_close(ac_musicgen.generate_audio(more), longer, rtol=0, atol=1e-6)


# ---- CLI --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["transformers", "audiocraft"])
def test_generate_cli_writes_wavs_and_scores(backend, tiny_checkpoint, tmp_path):
    import json

    import soundfile as sf

    from deramos_reward.cli import main

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("fast drums\n\n")
    out = tmp_path / "out"
    argv = [
        "generate", "--backend", backend, "--musicgen", "tiny", "--reward", str(tiny_checkpoint),
        "--prompt", "a calm piano piece", "--prompts", str(prompts_file), "--n", "3", "--duration", "0.4",
        "--out", str(out), "--seed", "0", "--max-batch", "4",
    ]  # fmt: skip
    if backend == "audiocraft":
        argv += ["--progressive", "--checkpoints", "0.5", "--keep", "0.5"]
    assert main(argv) == 0
    report = json.loads((out / "scores.json").read_text())
    assert report["sample_rate"] == 32_000
    assert [r["prompt"] for r in report["results"]] == ["a calm piano piece", "fast drums"]
    model = dr.DeRAMOS.from_pretrained(tiny_checkpoint)
    reward = dr.MusicReward(model)
    for r in report["results"]:
        scores = [c["score"] for c in r["candidates"]]
        assert len(scores) == 3
        finished = [c["score"] for c in r["candidates"] if not c.get("pruned", False)]
        assert r["score"] == max(finished) == scores[r["chosen"]]
        assert all(c["score"] == pytest.approx(0.5 * c["mi"] + 0.5 * c["ta"]) for c in r["candidates"])
        audio, rate = sf.read(out / r["file"], dtype="float32", always_2d=True)
        assert rate == 32_000 and audio.shape[1] == 1
        assert audio.shape[0] == (12_800 if backend == "transformers" else int(0.4 * 25) * 1280)
        with torch.no_grad():
            again = reward(torch.from_numpy(audio.T.copy())[None], rate, [r["prompt"]])
        assert float(again) == pytest.approx(r["score"], abs=2e-3)  # 16-bit WAV vs float audio
    if backend == "audiocraft":
        assert (
            sum(c["pruned"] for r in report["results"] for c in r["candidates"]) == 2
        )  # 3 -> 2 -> ... per prompt
        assert report["stats"]["generated_frames"] < report["stats"]["plain_generated_frames"]
    # a second run with the same arguments resumes (nothing left to do); other arguments are refused
    before = (out / "scores.json").read_bytes()
    assert main(argv) == 0 and (out / "scores.json").read_bytes() == before
    changed = [a if a != "3" else "2" for a in argv]
    assert main(changed) == 2
