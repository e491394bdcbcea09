"""The trl-signature reward function: one float per completion, equal to the reward computed directly,
for audio completions (any lengths, rates, layouts) and for codes decoded by real tiny MusicGens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deramos_reward as dr
from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.audiocraft.logprobs import audiocraft_generate_with_codes
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.musicgen.transformers.logprobs import generate_with_codes
from deramos_reward.integrations.rl import AudioRewardFunction, codes_decoder, prompt_text

PROMPTS = ["rock guitar with drums", "soft piano ballad", "dark ambient drone"]


@pytest.fixture(scope="module")
def reward():
    torch.manual_seed(0)
    return dr.MusicReward(dr.DeRAMOS(dr.DeRAMOSConfig.tiny()))


def _clips(seed=0):
    rng = np.random.default_rng(seed)
    return [
        (0.1 * rng.standard_normal(16000)).astype(np.float32),  # [T] numpy, 1 s at 16 kHz
        torch.from_numpy((0.1 * rng.standard_normal((2, 12000))).astype(np.float32)),  # [C, T] tensor
        (0.2 * rng.standard_normal(16000)).astype(np.float32),
    ]


def test_audio_completions_match_the_reward_computed_directly(reward):
    fn = AudioRewardFunction(reward, sample_rate=16000)
    clips = _clips()
    got = fn(prompts=PROMPTS, completions=clips)
    assert isinstance(got, list) and len(got) == 3 and all(isinstance(v, float) for v in got)
    with torch.no_grad():
        direct = [
            float(reward(torch.as_tensor(c).reshape(1, -1, c.shape[-1]), 16000, [p]))
            for c, p in zip(clips, PROMPTS)
        ]
    np.testing.assert_allclose(got, direct, atol=1e-5)
    # trl passes extra keywords (completion_ids, trainer_state, dataset columns...): accepted, ignored
    again = fn(
        PROMPTS, clips, completion_ids=[[1, 2]] * 3, trainer_state=None, log_extra=print, genre=["a"] * 3
    )
    assert again == got
    # per-call and per-completion sample rates: the same audio said to be at 32 kHz scores differently
    per_call = AudioRewardFunction(reward)(PROMPTS, clips, sample_rate=16000)
    np.testing.assert_allclose(per_call, got, atol=1e-6)
    dicts = [{"array": c, "sampling_rate": 16000 if i else 32000} for i, c in enumerate(clips)]
    mixed = fn(PROMPTS, dicts)
    np.testing.assert_allclose(mixed[1:], got[1:], atol=1e-6)
    assert mixed[0] != pytest.approx(got[0], abs=1e-6)


def test_batched_tensor_and_chunking_give_the_same_values(reward):
    audio = torch.from_numpy(np.stack([c for c in _clips(1) if c.ndim == 1]))  # [2, T]
    one = AudioRewardFunction(reward, sample_rate=16000, batch_size=1)(PROMPTS[:2], audio)
    many = AudioRewardFunction(reward, sample_rate=16000, batch_size=8)(PROMPTS[:2], list(audio))
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_name_and_signature_for_trl(reward):
    from trl.trainer.utils import get_callable_name

    fn = AudioRewardFunction(reward, sample_rate=16000, name="deramos_mi_ta")
    assert get_callable_name(fn) == fn.__name__ == "deramos_mi_ta"
    assert get_callable_name(AudioRewardFunction(reward, sample_rate=16000)) == "deramos_reward"
    assert fn(prompts=[], completions=[]) == []


def test_conversational_prompts_use_the_last_user_message(reward):
    fn = AudioRewardFunction(reward, sample_rate=16000)
    clips = _clips()[:1]
    chat = [[{"role": "system", "content": "be musical"}, {"role": "user", "content": PROMPTS[0]}]]
    assert fn(chat, clips) == fn(PROMPTS[:1], clips)
    assert prompt_text(chat[0]) == PROMPTS[0]


def test_codes_decoded_by_a_transformers_musicgen(reward):
    model, processor = tm.tiny_musicgen(seed=0)
    with torch.no_grad():  # random codebooks (the tiny EnCodec's are zeros), so codes change the audio
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(generator=torch.Generator().manual_seed(0))
    audio, codes = generate_with_codes(model, processor, PROMPTS, 4 + 8 - 1, seed=0, guidance_scale=1.0)
    fn = AudioRewardFunction(reward, decoder=model)
    got = fn(PROMPTS, list(codes))
    with torch.no_grad():
        direct = reward(audio, model.config.audio_encoder.sampling_rate, PROMPTS)
    np.testing.assert_allclose(got, direct.tolist(), atol=1e-5)
    assert fn.sample_rate == 32000
    assert fn(PROMPTS, codes) == got  # one [B, K, S] tensor works too


def test_codes_decoded_by_an_audiocraft_musicgen(reward):
    musicgen = ac.tiny_musicgen(seed=0)
    audio, codes = audiocraft_generate_with_codes(musicgen, PROMPTS, duration=0.4, seed=0)
    got = AudioRewardFunction(reward, decoder=musicgen)(PROMPTS, list(codes))
    with torch.no_grad():
        direct = reward(audio, musicgen.sample_rate, PROMPTS)
    np.testing.assert_allclose(got, direct.tolist(), atol=1e-5)
    assert len(set(got)) == 3  # different codes, different audio, different rewards


def test_callable_decoder_and_plain_reward():
    def decode(codes):  # codes [B, K, S] -> audio [B, 1, S * 100]
        return (codes.float().mean(1, keepdim=True) / 100.0).repeat_interleave(100, dim=-1)

    def level(audio, sample_rate, prompts):
        return audio.mean(dim=(1, 2))

    codes = [torch.full((4, 5), v) for v in (10, 50, 30)]
    fn = AudioRewardFunction(level, sample_rate=8000, decoder=decode)
    assert fn(PROMPTS, codes) == pytest.approx([0.1, 0.5, 0.3])
    decoder, rate = codes_decoder(decode)
    assert decoder is decode and rate is None


def test_bad_input_is_named():
    def level(audio, sample_rate, prompts):
        return audio.mean(dim=(1, 2))

    fn = AudioRewardFunction(level, sample_rate=8000)
    clip = np.zeros(800, dtype=np.float32)
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        fn(PROMPTS[:2], [clip])
    with pytest.raises(TypeError, match="decoder"):
        fn(PROMPTS[:1], [np.zeros(800, dtype=np.int64)])
    with pytest.raises(ValueError, match="sample_rate is unknown"):
        AudioRewardFunction(level)(PROMPTS[:1], [clip])
    with pytest.raises(ValueError, match=r"completions\[0\]"):
        fn(PROMPTS[:1], [np.zeros((1, 2, 800), dtype=np.float32)])
    with pytest.raises(TypeError, match=r"prompts\[0\]"):
        fn([3], [clip])
    with pytest.raises(TypeError, match="codes"):
        AudioRewardFunction(level, sample_rate=8000, decoder=lambda c: c)(PROMPTS[:1], [clip])
    with pytest.raises(ValueError, match="returned 2 values"):
        AudioRewardFunction(lambda a, sr, p: torch.zeros(2), sample_rate=8000)(PROMPTS[:1], [clip])
    with pytest.raises(ValueError, match="name"):
        AudioRewardFunction(level, name="has space")
