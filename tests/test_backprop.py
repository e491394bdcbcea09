"""Reward backpropagation into MusicGen: the objective against hand computations, the trainer on real tiny
models of both libraries (gradient to the adapter, learning, resume after an interruption, options)."""

from __future__ import annotations

import copy
import functools
import json
import math

import pytest
import torch
from run_helpers import latest_step

import deramos_reward as dr
from deramos_reward.integrations import musicgen_backend
from deramos_reward.integrations.musicgen.audiocraft import builders as ac
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.rewards.synthetic import LowBandEnergyReward, low_band_energy_fraction
from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
from deramos_reward.integrations.training.backprop.objective import backprop_loss, token_kl, truncate_gradient
from deramos_reward.integrations.training.backprop.trainer import MusicRewardBackpropTrainer, evaluate_policy

REWARD = LowBandEnergyReward(cutoff_hz=4000.0)
PROMPTS = [f"train prompt {i}" for i in range(6)]


def learnable(name: str):
    """A fresh copy of :func:`_learnable` (building the AudioCraft one runs k-means: seconds)."""
    return copy.deepcopy(_learnable(name))


@functools.cache
def _learnable(name: str):
    """A tiny MusicGen of ``name``'s library whose samples a LoRA adapter can change audibly.

    ``head_std=0.5``: a peaked next-code distribution (at the default init it is almost uniform and
    an adapter on the decoder layers cannot move it). Codebook vectors x10: the random codec's output is
    mostly a code-independent pattern (its biases); larger code embeddings make the codes, hence the
    policy, matter to the audio. Returns ``(model, processor)`` (processor None for AudioCraft).
    """
    if name == "transformers":
        model, processor = tm.tiny_musicgen(0, head_std=0.5)
        books = [layer.codebook.embed for layer in model.audio_encoder.quantizer.layers]
    else:
        model, processor = ac.tiny_musicgen(0, head_std=0.5), None
        books = [layer.codebook for layer in model.compression_model.quantizer.vq.layers]
    with torch.no_grad():
        for book in books:
            book.mul_(10.0)
    return model, processor


def config(**overrides) -> MusicBackpropConfig:
    base = dict(
        learning_rate=3e-3,
        max_steps=2,
        num_generations=2,
        prompts_per_step=2,
        duration=0.2,
        logging_steps=1,
        report_to="none",
        lr_scheduler_type="constant",
        lora_r=4,
        seed=0,
    )
    return MusicBackpropConfig(**{**base, **overrides})


def lora_state(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if "lora_" in n}


# ---- the objective ------------------------------------------------------------------------------
def test_token_kl_is_the_exact_kl_averaged_over_masked_positions():
    g = torch.Generator().manual_seed(0)
    logits, ref = torch.randn(2, 2, 3, 5, generator=g), torch.randn(2, 2, 3, 5, generator=g)
    mask = torch.ones(2, 2, 3, dtype=torch.bool)
    mask[1, :, 2] = False
    got = token_kl(logits, ref, mask)
    for b in range(2):
        terms = []
        for k in range(2):
            for s in range(3):
                if mask[b, k, s]:
                    p, q = torch.softmax(logits[b, k, s], 0), torch.softmax(ref[b, k, s], 0)
                    terms.append(float((p * (p / q).log()).sum()))
        assert float(got[b]) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert torch.equal(token_kl(ref, ref), torch.zeros(2))


def test_truncate_gradient_keeps_the_value_and_the_last_frames_gradient():
    logits = torch.randn(1, 2, 5, 3, requires_grad=True)
    out = truncate_gradient(logits, 2)
    assert torch.equal(out, logits)
    out.sum().backward()
    assert torch.equal(logits.grad[:, :, :3], torch.zeros(1, 2, 3, 3))
    assert torch.equal(logits.grad[:, :, 3:], torch.ones(1, 2, 2, 3))
    assert truncate_gradient(logits, None) is logits and truncate_gradient(logits, 9) is logits
    with pytest.raises(ValueError, match="frames"):
        truncate_gradient(logits, 0)


@pytest.fixture(scope="module")
def hf_backend():
    return musicgen_backend(*learnable("transformers"))


def test_backprop_loss_is_minus_reward_plus_beta_kl(hf_backend):
    backend = hf_backend
    prompts = PROMPTS[:2]
    audio, codes = backend.generate(prompts, 5, seed=0, **backend.policy_sampling())
    g = torch.Generator().manual_seed(1)
    logits, _ = backend.code_logits(prompts, codes)
    logits = logits.detach().requires_grad_(True)
    ref = logits.detach() + 0.3 * torch.randn(logits.shape, generator=g)
    loss, parts = backprop_loss(
        backend, REWARD, prompts, codes, logits, ref, None, beta=0.5, kl_estimator="exact"
    )
    reward = low_band_energy_fraction(audio, backend.sample_rate, 4000.0)
    torch.testing.assert_close(parts["reward"], reward, rtol=0, atol=1e-6)  # the sampled audio's reward
    torch.testing.assert_close(loss, -reward.mean() + 0.5 * token_kl(logits, ref).mean(), rtol=0, atol=1e-6)
    # the default, k3: trl's estimate at the sampled codes, averaged over each sequence's positions
    k3_loss, k3_parts = backprop_loss(backend, REWARD, prompts, codes, logits, ref, None, beta=0.5)
    delta = torch.log_softmax(ref, -1) - torch.log_softmax(logits, -1)
    delta = delta.gather(-1, codes[..., None]).squeeze(-1)
    k3 = (delta.exp() - delta - 1).flatten(1).mean(1)
    torch.testing.assert_close(k3_parts["kl"], k3.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(k3_loss, -reward.mean() + 0.5 * k3.mean(), rtol=0, atol=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    ranked = dr.MusicReward(dr.DeRAMOS(dr.DeRAMOSConfig.tiny()), normalize="rank")
    with pytest.raises(ValueError, match="no gradient"):
        backprop_loss(backend, ranked, prompts, codes, logits, ref, None, beta=0.0)


# ---- the trainer --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["transformers", "audiocraft"])
def test_one_step_trains_the_adapter_with_a_finite_gradient(name):
    model, processor = learnable(name)
    trainer = MusicRewardBackpropTrainer(model, REWARD, PROMPTS, config(max_steps=1), processor=processor)
    before = lora_state(trainer)
    frozen = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if "lora_" not in n}
    out = trainer.train()
    after = lora_state(trainer)
    assert out["global_step"] == 1 and out["samples"] == 4 and math.isfinite(out["grad_norm"])
    assert out["grad_norm"] > 0 and all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.equal(p, frozen[n]) for n, p in trainer.policy.named_parameters() if "lora_" not in n)
    assert trainer.model is model  # the adapter is injected in place


@pytest.mark.parametrize("name", ["transformers", "audiocraft"])
def test_fresh_samples_improve(name):
    """With a learnable, differentiable reward of the audio, the reward of fresh samples (fixed seeds,
    prompts never trained on) rises by more than 3 standard errors within a few steps."""
    model, processor = learnable(name)
    cfg = config(
        learning_rate=3e-2, max_steps=8, prompts_per_step=2, num_generations=4, duration=0.3, beta=0.0
    )
    trainer = MusicRewardBackpropTrainer(model, REWARD, PROMPTS, cfg, processor=processor)
    held_out = [f"held-out prompt {i}" for i in range(8)]
    before = trainer.evaluate(held_out, num_generations=4)
    trainer.train()
    after = trainer.evaluate(held_out, num_generations=4)
    se = math.hypot(before["reward_sem"], after["reward_sem"])
    assert after["reward"] - before["reward"] > 3 * se, (before, after)
    assert before["kl"] == 0 and after["kl"] > 0


def test_resume_after_an_interruption_ends_with_the_same_adapter(tmp_path):
    cfg = dict(max_steps=4, save_steps=2)

    class Interrupt(Exception):
        pass

    def interrupting(calls: list[int], at: int):
        def reward(audio, sample_rate, prompts):
            calls.append(1)
            if len(calls) == at:
                raise Interrupt
            return REWARD(audio, sample_rate, prompts)

        return reward

    full = MusicRewardBackpropTrainer(*_model_and_reward(), PROMPTS, config(**cfg), processor=_processor())
    full.train()
    run = tmp_path / "run"
    first = MusicRewardBackpropTrainer(
        _model(), interrupting([], at=3), PROMPTS, config(**cfg, output_dir=str(run)), processor=_processor()
    )
    with pytest.raises(Interrupt):
        first.train()  # dies in step 3, after the step-2 checkpoint
    assert latest_step(run) == 2
    resumed = MusicRewardBackpropTrainer(
        _model(), REWARD, PROMPTS, config(**cfg, output_dir=str(run)), processor=_processor()
    )
    out = resumed.train()
    assert out["global_step"] == 4
    want, got = lora_state(full), lora_state(resumed)
    assert all(torch.equal(want[n], got[n]) for n in want)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["reward"] for r in rows] == [r["reward"] for r in full.log_history]
    with pytest.raises(ValueError, match="learning_rate"):
        MusicRewardBackpropTrainer(
            _model(),
            REWARD,
            PROMPTS,
            config(**cfg, output_dir=str(run), learning_rate=1e-2),
            processor=_processor(),
        ).train()


def _model():
    return learnable("transformers")[0]


def _processor():
    return learnable("transformers")[1]


def _model_and_reward():
    return _model(), REWARD


@pytest.mark.parametrize("name", ["transformers", "audiocraft"])
def test_checkpointing_truncation_and_bf16_options(name):
    """Gradient checkpointing changes nothing but memory; DRaFT-K truncation changes the update; bf16
    autocast runs (on the CPU when asked for) and gives a finite update."""
    results = {}
    for key, overrides in {
        "plain": {},
        "ckpt": {"gradient_checkpointing": True},
        "draft": {"truncate_frames": 2},
        "bf16": {"bf16": True},
    }.items():
        model, processor = learnable(name)
        trainer = MusicRewardBackpropTrainer(
            model, REWARD, PROMPTS, config(max_steps=1, **overrides), processor=processor
        )
        trainer.train()
        results[key] = lora_state(trainer)
    for n in results["plain"]:
        torch.testing.assert_close(results["ckpt"][n], results["plain"][n], rtol=1e-4, atol=1e-6)
        assert torch.isfinite(results["bf16"][n]).all()
    assert any((results["draft"][n] - results["plain"][n]).abs().max() > 1e-6 for n in results["plain"])


def test_evaluate_policy_without_adapter_has_zero_kl(hf_backend):
    out = evaluate_policy(hf_backend, REWARD, PROMPTS[:2], frames=5, num_generations=2, seed=0)
    assert out["samples"] == 4 and out["kl"] == 0 and 0 < out["reward"] < 1 and out["reward_sem"] > 0


def test_bad_arguments():
    model, processor = learnable("transformers")
    with pytest.raises(TypeError, match="MusicBackpropConfig"):
        MusicRewardBackpropTrainer(model, REWARD, PROMPTS, {"max_steps": 1}, processor=processor)
    with pytest.raises(TypeError, match="callable"):
        MusicRewardBackpropTrainer(model, 3, PROMPTS, config(), processor=processor)
    with pytest.raises(TypeError, match="model must be"):
        MusicRewardBackpropTrainer(torch.nn.Linear(2, 2), REWARD, PROMPTS, config())
    with pytest.raises(ValueError, match="processor"):
        MusicRewardBackpropTrainer(model, REWARD, PROMPTS, config())
    with pytest.raises(ValueError, match="prompts must not be empty"):
        MusicRewardBackpropTrainer(model, REWARD, [], config(), processor=processor)
    for bad in (
        {"beta": -1.0},
        {"truncate_frames": 0},
        {"lr_scheduler_type": "step"},
        {"num_generations": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            config(**bad)
    assert MusicBackpropConfig.from_dict(config().to_dict()) == config()
    with pytest.raises(ValueError, match="unknown"):
        MusicBackpropConfig.from_dict({"nope": 1})


# ---- two processes --------------------------------------------------------------------------------


# ---- the command --------------------------------------------------------------------------------
def test_cli_rl_method_backprop_trains_saves_and_resumes(tiny_checkpoint, tmp_path, capsys):
    from deramos_reward.cli import main

    run = tmp_path / "run"
    argv = ["rl", "--method", "backprop", "--backend", "transformers", "--musicgen", "tiny"]
    argv += ["--judge", str(tiny_checkpoint), "--prompt", "calm piano", "--prompt", "fast drums"]
    argv += ["--out", str(run), "--duration", "0.2", "--max-steps", "2", "--num-generations", "1"]
    argv += ["--prompts-per-step", "2", "--logging-steps", "1", "--save-steps", "1", "--lora-r", "2"]
    argv += ["--truncate-frames", "4", "--gradient-checkpointing"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["global_step"] == 2 and summary["samples"] == 4 and math.isfinite(summary["reward"])
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    saved = json.loads((run / "adapter" / "backprop_config.json").read_text())
    assert saved["truncate_frames"] == 4 and saved["gradient_checkpointing"] is True
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(1 <= r["reward"] <= 5 for r in rows)  # MOS scale
    assert main(argv) == 0  # the same command again: the run is complete, nothing more to do
    assert json.loads(capsys.readouterr().out)["global_step"] == 2
    assert main([*argv, "--lr", "0.5"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main([*argv, "--truncate-frames", "0"]) == 2
    assert "truncate_frames" in capsys.readouterr().err
    assert main([*argv, "--epsilon", "0.1"]) == 2
    assert "--epsilon only apply to --method rl" in capsys.readouterr().err
    assert main([a for a in argv if a not in ("--method", "backprop")]) == 2  # rl with backprop options
    assert "only apply to --method backprop" in capsys.readouterr().err
