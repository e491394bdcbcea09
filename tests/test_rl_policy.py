"""One policy semantics: online RL samples from the distribution whose log-probs it optimises, with and
without classifier-free guidance, on both MusicGen libraries; guided teacher-forced logits are what
transformers' generate samples from and carry gradient through both passes; AudioCraft at cfg_coef 1
runs no unconditional pass; every trainer takes the reward's own MI/TA weights."""

from __future__ import annotations

import copy
import functools

import peft
import pytest
import torch

import deramos_reward as dr
from deramos_reward.integrations import musicgen_backend
from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.rewards.synthetic import LowBandEnergyReward
from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer
from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
from deramos_reward.integrations.training.backprop.trainer import MusicRewardBackpropTrainer
from deramos_reward.integrations.training.dpo.pairs import musicgen_pairs

PROMPT = "calm piano"


@functools.cache
def _sensitive(library: str):
    """A tiny MusicGen whose next-code distribution is peaked (head_std=1) and depends on the text
    (transformers: cross-attention outputs x20), so guided and unguided sampling differ visibly."""
    if library == "audiocraft":
        return ac.tiny_musicgen(0, head_std=1.0), None
    model, processor = tm.tiny_musicgen(0, head_std=1.0)
    with torch.no_grad():
        for layer in model.decoder.model.decoder.layers:
            layer.encoder_attn.out_proj.weight.mul_(20.0)
    return model, processor


def sensitive(library: str):
    return copy.deepcopy(_sensitive(library))


def _total_variation(first: torch.Tensor, logps: torch.Tensor) -> float:
    """TV distance between the empirical distribution of ``first`` (codes [N]) and the distribution
    that gave each code the log-prob ``logps`` [N]; codes never drawn count with their whole mass."""
    codes, counts = first.unique(return_counts=True)
    probs = torch.stack([logps[first == c][0] for c in codes]).double().exp()
    freq = counts.double() / first.numel()
    return float(0.5 * ((freq - probs).abs().sum() + (1 - probs.sum())))


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("library", ["transformers", "audiocraft"])
def test_rl_samples_come_from_the_distribution_whose_logprobs_it_optimises(library, guidance):
    """800 one-frame samples of one prompt through the trainer's own sampler: the frequencies of the
    first code match exp(the trainer's log-probs of it) within TV 0.15 (measured 0.03-0.06 with this
    seed), and do not match the distribution of the other guidance setting (measured 0.35-0.55)."""
    model, processor = sensitive(library)
    duration = 0.08 if library == "transformers" else 0.04  # the fewest frames: 4 at 50 Hz, 1 at 25 Hz
    config = MusicRLConfig(
        num_generations=800, prompts_per_step=1, duration=duration, guidance_scale=guidance,
        temperature=0.7, beta=0.0, report_to="none",
    )  # fmt: skip
    trainer = MusicRLTrainer(model, LowBandEnergyReward(), [PROMPT], config, processor=processor)
    _, codes = trainer._sample([PROMPT], [3])
    logps = trainer._logps([PROMPT] * len(codes), codes, reference=False)
    first = codes[:, 0, 0]
    assert _total_variation(first, logps[:, 0, 0]) < 0.15
    other, _ = trainer.backend.code_logits([PROMPT], codes[:1], guidance_scale=4.0 - guidance)
    other_logps = torch.log_softmax(other[0, 0, 0].double() / 0.7, -1)[first]
    assert _total_variation(first, other_logps) > 0.3


def test_guided_logits_are_what_transformers_generate_samples_from_with_gradient_through_both():
    model, processor = sensitive("transformers")
    backend = musicgen_backend(model, processor)
    out = model.generate(
        **processor(text=[PROMPT], return_tensors="pt"), max_new_tokens=8,
        **backend.policy_sampling(0.7, 0, 3.0), output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    codes = torch.zeros(1, 4, 4, dtype=torch.long)
    with torch.no_grad():
        guided, _ = backend.code_logits([PROMPT], codes, guidance_scale=3.0)
        cond, _ = backend.code_logits([PROMPT], codes)
    # generate's first step: the guided logits of codebook 0, after the temperature
    want = torch.log_softmax(guided[0, 0, 0] / 0.7, -1)  # float32 like generate's scores
    torch.testing.assert_close(torch.log_softmax(out.scores[0][0], -1), want, rtol=0, atol=1e-4)
    assert not torch.allclose(guided, cond, atol=1e-3)
    config = peft.LoraConfig(r=2, target_modules=backend.lora_target_modules(), init_lora_weights=False)
    adapted = musicgen_backend(peft.get_peft_model(model, config), processor)
    grads = {}
    for scale in (1.0, 3.0):
        adapted.model.zero_grad()
        logits, _ = adapted.code_logits([PROMPT], codes, guidance_scale=scale)
        logits[..., 0].sum().backward()
        grads[scale] = torch.cat(
            [p.grad.flatten() for n, p in adapted.model.named_parameters() if "lora_" in n]
        )
    # with the unconditional pass detached the guided gradient would be 3x the conditional one
    assert grads[1.0].abs().sum() > 0 and not torch.allclose(grads[3.0], 3 * grads[1.0], rtol=1e-2)


def test_audiocraft_at_cfg_one_runs_no_unconditional_pass():
    musicgen, _ = sensitive("audiocraft")
    backend = musicgen_backend(musicgen)
    batches: list[int] = []
    hook = musicgen.lm.transformer.register_forward_pre_hook(lambda m, a: batches.append(a[0].shape[0]))
    try:
        _, codes = backend.generate([PROMPT] * 3, 5, seed=0, **backend.policy_sampling(1.0, 0, 1.0))
        assert set(batches) == {3}  # the conditional batch only (AudioCraft's own path doubles it)
        batches.clear()
        backend.generate([PROMPT] * 3, 5, seed=0, **backend.policy_sampling(1.0, 0, 3.0))
        assert set(batches) == {6}
        batches.clear()
        with torch.no_grad(), musicgen.autocast:  # AudioCraft's own sampling at cfg_coef 1, same seed
            torch.manual_seed(0)
            attributes, _ = musicgen._prepare_tokens_and_attributes([PROMPT] * 3, None)
            own = musicgen.lm.generate(None, attributes, max_gen_len=5, use_sampling=True, temp=1.0,
                                       top_k=0, top_p=0.0, cfg_coef=1.0, two_step_cfg=False)  # fmt: skip
        assert set(batches) == {6} and torch.equal(own, codes)  # the same samples, half the work
    finally:
        hook.remove()


# ---- every trainer optimises what the reward says ------------------------------------------------


@pytest.fixture(scope="module")
def judges():
    """A tiny judge and a copy whose TA head differs: a reward that ignores TA cannot tell them apart."""
    torch.manual_seed(0)
    judge = dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).eval()
    other = copy.deepcopy(judge)
    with torch.no_grad():
        other.heads.ta.head.mlp[6].weight.add_(torch.randn_like(other.heads.ta.head.mlp[6].weight))
    audio = 0.1 * torch.randn(4, 1, 8000, generator=torch.Generator().manual_seed(1))
    a, b = (
        dr.MusicReward(judge).evaluate(audio, 16000, [PROMPT] * 4),
        dr.MusicReward(other).evaluate(audio, 16000, [PROMPT] * 4),
    )
    assert torch.equal(a.mi, b.mi) and not torch.allclose(a.ta, b.ta)
    return judge, other


def _lora(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if "lora_" in n}


def test_every_trainer_optimises_mi_alone_with_mi_weight_1_ta_weight_0(judges):
    """MusicReward(judge, mi_weight=1, ta_weight=0): RL, reward backpropagation and DPO's pair scoring
    give the same result whatever the judge's TA says, and RL a different one with the default weights
    (so the TA change would show if a trainer used weights of its own)."""
    prompts = ["calm piano", "fast drums", "ambient pad", "rock guitar"]

    def rl(judge, **weights):
        model, processor = tm.tiny_musicgen(0, head_std=0.5)
        config = MusicRLConfig(max_steps=2, num_generations=2, prompts_per_step=2, duration=0.2, beta=0.1,
                               learning_rate=1e-2, guidance_scale=1.0, report_to="none")  # fmt: skip
        trainer = MusicRLTrainer(
            model, dr.MusicReward(judge, **weights), prompts, config, processor=processor
        )
        trainer.train()
        return _lora(trainer)

    mi_only = {"mi_weight": 1.0, "ta_weight": 0.0}
    first, second = rl(judges[0], **mi_only), rl(judges[1], **mi_only)
    assert all(torch.equal(first[n], second[n]) for n in first)
    both = rl(judges[1])
    assert any(not torch.equal(first[n], both[n]) for n in first)

    def backprop(judge):
        model, processor = tm.tiny_musicgen(0, head_std=0.5)
        config = MusicBackpropConfig(max_steps=1, num_generations=1, prompts_per_step=2, duration=0.2,
                                     learning_rate=1e-2, report_to="none")  # fmt: skip
        reward = dr.MusicReward(judge, **mi_only)
        trainer = MusicRewardBackpropTrainer(model, reward, prompts, config, processor=processor)
        trainer.train()
        return _lora(trainer)

    first, second = backprop(judges[0]), backprop(judges[1])
    assert all(torch.equal(first[n], second[n]) for n in first)

    def pairs(judge):
        model, processor = tm.tiny_musicgen(0, head_std=0.5)
        reward = dr.MusicReward(judge, **mi_only)
        data = musicgen_pairs(model, prompts[:2], 3, reward, processor=processor, duration=0.2, seed=0)
        return [(row["chosen_index"], row["rejected_index"], row["chosen_codes"]) for row in data]

    assert pairs(judges[0]) == pairs(judges[1])
