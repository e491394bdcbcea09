"""The one MusicGen backend interface on real tiny models of both libraries: the factory, the facts,
generation, decoding, teacher-forced logits and log-probs, adapters and the reference policy."""

from __future__ import annotations

import peft
import pytest
import torch

from deramos_reward.integrations import musicgen_backend
from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.audiocraft.logprobs import audiocraft_sequence_logprobs
from deramos_reward.integrations.musicgen.base import MusicGenBackend, adapter_disabled
from deramos_reward.integrations.musicgen.factory import load_musicgen_backend, maybe_musicgen_backend
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.musicgen.transformers.logprobs import (
    transformers_sequence_logprobs,
    transformers_text_inputs,
)

PROMPTS = ["a calm piano piece", "fast drums"]


@pytest.fixture(scope="module", params=["transformers", "audiocraft"])
def backend(request):
    if request.param == "transformers":
        return musicgen_backend(*tm.tiny_musicgen(seed=0))
    return musicgen_backend(ac.tiny_musicgen(seed=0))


def test_factory_accepts_both_libraries_and_names_what_it_accepts():
    model, processor = tm.tiny_musicgen(seed=0)
    hf = musicgen_backend(model, processor)
    assert hf.name == "transformers" and hf.model is model
    assert (hf.sample_rate, hf.frame_rate, hf.num_codebooks, hf.card) == (32000, 50.0, 4, 128)
    musicgen = ac.tiny_musicgen(seed=0)
    acb = musicgen_backend(musicgen)
    assert acb.name == "audiocraft" and acb.model is musicgen
    assert (acb.sample_rate, acb.frame_rate, acb.num_codebooks, acb.card) == (32000, 25.0, 4, 400)
    assert musicgen_backend(hf) is hf  # a backend passes through
    for bad in (model.decoder, musicgen.lm, "facebook/musicgen-small", None):
        with pytest.raises(TypeError, match="transformers MusicgenForConditionalGeneration"):
            musicgen_backend(bad)
    with pytest.raises(TypeError, match="pass the MusicGen that holds it"):
        musicgen_backend(musicgen.lm)
    assert maybe_musicgen_backend(lambda codes: codes) is None
    with pytest.raises(ValueError, match="processor"):
        musicgen_backend(model).generate(PROMPTS, 5)
    with pytest.raises(ValueError, match="library must be one of"):
        load_musicgen_backend("jax", "tiny")
    assert load_musicgen_backend("transformers", "tiny").name == "transformers"


def test_a_peft_model_is_accepted_and_generates_with_its_adapter():
    model, processor = tm.tiny_musicgen(seed=0)
    backend = musicgen_backend(model, processor)
    config = peft.LoraConfig(r=2, target_modules=backend.lora_target_modules(), init_lora_weights=False)
    wrapped = peft.get_peft_model(backend.trainable_module(), config)
    adapted = musicgen_backend(wrapped, processor)
    assert adapted.name == "transformers" and adapted.model is model
    codes = adapted.generate(PROMPTS, 6, seed=0)[1]
    with adapted.reference():
        ref = adapted.sequence_logprobs(PROMPTS, codes).logps
    pol = adapted.sequence_logprobs(PROMPTS, codes).logps
    assert not torch.allclose(ref, pol)  # the adapter (random B) changes the policy; reference() removes it
    with wrapped.disable_adapter():
        base = transformers_sequence_logprobs(model, *_text(processor), codes).logps
    torch.testing.assert_close(ref, base)
    # the one adapter-off context: it unwraps training wrappers and is a no-op without an adapter
    with adapter_disabled(torch.nn.DataParallel(wrapped)):
        torch.testing.assert_close(adapted.sequence_logprobs(PROMPTS, codes).logps, ref)
    with adapter_disabled(torch.nn.Linear(2, 2)), musicgen_backend(model, processor).reference():
        pass


def _text(processor):
    inputs = transformers_text_inputs(processor, PROMPTS)
    return inputs["input_ids"], inputs["attention_mask"]


def test_generate_is_seeded_and_decode_gives_the_generated_audio(backend):
    audio, codes = backend.generate(PROMPTS, 6, seed=3)
    again_audio, again = backend.generate(PROMPTS, 6, seed=3)
    other = backend.generate(PROMPTS, 6, seed=4)[1]
    assert codes.shape == (2, backend.num_codebooks, 6) and codes.dtype == torch.long
    assert torch.equal(codes, again) and not torch.equal(codes, other)
    assert int(codes.min()) >= 0 and int(codes.max()) < backend.card
    assert audio.dim() == 3 and audio.shape[:2] == (2, 1)
    torch.testing.assert_close(backend.decode(codes), audio, rtol=0, atol=1e-5)
    assert backend.frames_for(0.2) == round(0.2 * backend.frame_rate)
    with pytest.raises(ValueError, match="duration"):
        backend.frames_for(0)


def test_code_logits_and_logprobs_match_the_library_functions(backend):
    codes = backend.generate(PROMPTS, 6, seed=0)[1]
    logits, mask = backend.code_logits(PROMPTS, codes)
    assert logits.shape == (2, backend.num_codebooks, 6, backend.card) and mask.all()
    out = backend.sequence_logprobs(PROMPTS, codes)
    expected = torch.log_softmax(logits.float(), -1).gather(-1, codes[..., None]).squeeze(-1).sum((1, 2))
    torch.testing.assert_close(out.logps, expected)
    if backend.name == "transformers":
        direct = transformers_sequence_logprobs(backend.model, *_text(backend.processor), codes)
    else:
        direct = audiocraft_sequence_logprobs(backend.model.lm, codes, PROMPTS)
    torch.testing.assert_close(out.logps, direct.logps)
    valid = backend.sequence_logprobs(PROMPTS, codes, keep_only_valid_steps=True)
    k = backend.num_codebooks
    assert int(valid.mask[0].sum()) == k * 6 - k * (k - 1) // 2
    # gradient reaches the parameters of the trainable module
    logits.sum().backward()
    grads = [p.grad for p in backend.trainable_module().parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    backend.trainable_module().zero_grad(set_to_none=True)


def test_every_backend_implements_the_interface(backend):
    assert isinstance(backend, MusicGenBackend)
    assert backend.min_frames >= 1 and backend.default_frames() >= 1
    assert isinstance(backend.lora_target_modules(), str)
    assert repr(backend).startswith(type(backend).__name__)
