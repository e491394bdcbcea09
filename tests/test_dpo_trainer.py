"""LoRA DPO on real tiny MusicGens (transformers and AudioCraft): what trains, what stays fixed, adapter
round trips, the config's trl fields, the CLI, and a short run on pairs from a reward with a clear,
learnable preference that raises the held-out implicit reward margin and the reward of new samples."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from deramos_reward.cli import main
from deramos_reward.integrations.dpo import MusicDPOTrainer, load_adapter
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
from deramos_reward.integrations.rl import AudioRewardFunction
from deramos_reward.integrations.training.dpo.config import TRL_SHARED_FIELDS, MusicDPOConfig
from deramos_reward.integrations.training.dpo.loss import dpo_loss
from deramos_reward.integrations.training.dpo.pairs import (
    build_pairs,
    collate_pairs,
    generate_pairs,
    save_pairs,
)

PROMPTS = ["rock guitar with drums", "soft piano ballad", "dark ambient drone", "fast techno"]


def _random_pairs(card: int, frames: int, count: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, card, (count, 2, 4, frames), generator=g)
    scores = torch.tensor([[1.0, 0.0]] * count)
    return build_pairs((PROMPTS * count)[:count], codes, scores)


def _backend(name: str):
    """-> (model to train, processor, the module holding the adapter, code cardinality)."""
    if name == "transformers":
        model, processor = tm.tiny_musicgen(seed=0)
        return model, processor, model, 128
    musicgen = ac.tiny_musicgen(seed=0)
    return musicgen, None, musicgen.lm, musicgen.lm.card


@pytest.mark.parametrize("backend", ["transformers", "audiocraft"])
def test_only_the_adapter_trains_and_the_reference_stays_fixed(backend):
    model, processor, module, card = _backend(backend)
    pairs = _random_pairs(card, frames=6)
    base_before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = MusicDPOTrainer(
        model,
        pairs,
        MusicDPOConfig(learning_rate=1e-2, max_steps=4, per_device_train_batch_size=2, logging_steps=1),
        processor=processor,
    )
    lora = {n: p for n, p in trainer.policy.named_parameters() if "lora_" in n}
    # LoRA sits on the decoder's attention and feed-forward projections only (2 layers each)
    wrapped = {n.split(".lora_")[0] for n in lora}
    expected = 2 * 10 if backend == "transformers" else 2 * 4
    assert len(wrapped) == expected
    assert all(
        ("fc" in n or "_proj" in n) if backend == "transformers" else ("proj" in n or "linear" in n)
        for n in wrapped
    )
    assert {n for n, p in trainer.policy.named_parameters() if p.requires_grad} == set(lora)
    lora_before = {n: p.detach().clone() for n, p in lora.items()}

    prompts, chosen, rejected = collate_pairs(list(pairs))
    codes = torch.cat([chosen, rejected])
    ref_before = trainer.sequence_logps(prompts * 2, codes, reference=True).logps
    policy_before = trainer.sequence_logps(prompts * 2, codes).logps
    assert torch.equal(policy_before, ref_before)  # LoRA B starts at zero
    trainer.train()
    ref_after = trainer.sequence_logps(prompts * 2, codes, reference=True).logps
    policy_after = trainer.sequence_logps(prompts * 2, codes).logps

    assert torch.equal(ref_after, ref_before)
    assert not torch.allclose(policy_after, policy_before)
    # every base parameter and buffer is bit-identical (peft renames wrapped layers to *.base_layer.*)
    base_after = {
        k.replace(".base_layer", ""): v
        for k, v in trainer.policy.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert base_after.keys() == base_before.keys()
    assert all(torch.equal(base_after[k], v) for k, v in base_before.items())
    changed = [n for n, p in lora.items() if not torch.equal(p, lora_before[n])]
    assert sorted(n for n in changed if "lora_B" in n) == sorted(n for n in lora if "lora_B" in n)
    # the implicit reward margin on the training pairs went up from 0
    assert trainer.log_history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert trainer.evaluate(pairs)["rewards/margins"] > 0.01


@pytest.mark.parametrize("backend", ["transformers", "audiocraft"])
def test_adapter_save_and_reload(tmp_path, backend):
    model, processor, _, card = _backend(backend)
    pairs = _random_pairs(card, frames=5, seed=1)
    trainer = MusicDPOTrainer(
        model,
        pairs,
        MusicDPOConfig(learning_rate=1e-2, max_steps=2, per_device_train_batch_size=4),
        processor=processor,
    )
    trainer.train()
    path = trainer.save_adapter(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "dpo_config.json", "log_history.json"} <= {
        p.name for p in path.iterdir()
    }
    assert MusicDPOConfig(**json.loads((path / "dpo_config.json").read_text())) == trainer.args
    prompts, chosen, _ = collate_pairs(list(pairs))
    expected = trainer.sequence_logps(prompts, chosen).logps
    reference = trainer.sequence_logps(prompts, chosen, reference=True).logps

    fresh, _, _, _ = _backend(backend)
    loaded = load_adapter(fresh, path)
    if backend == "transformers":
        inputs = transformers_text_inputs(processor, prompts)
        got = transformers_sequence_logprobs(loaded, inputs["input_ids"], inputs["attention_mask"], chosen)
        with loaded.disable_adapter():
            base = transformers_sequence_logprobs(
                fresh, inputs["input_ids"], inputs["attention_mask"], chosen
            )
    else:
        got = audiocraft_sequence_logprobs(loaded, chosen, prompts)
        with loaded.disable_adapter():
            base = audiocraft_sequence_logprobs(fresh.lm, chosen, prompts)
    assert torch.allclose(got.logps, expected, atol=1e-5)
    assert torch.allclose(base.logps, reference, atol=1e-5)
    assert not torch.allclose(got.logps, base.logps)
    if backend == "audiocraft":  # the adapter is injected in place: MusicGen generates with it
        _, codes = audiocraft_generate_with_codes(fresh, PROMPTS[:1], duration=0.2, seed=0)
        assert codes.shape == (1, 4, 5)
    with pytest.raises(FileNotFoundError, match="adapter_config"):
        load_adapter(_backend(backend)[0], tmp_path)


def test_evaluate_matches_dpo_loss_and_gradient_accumulation_matches_a_larger_batch():
    pairs = _random_pairs(128, frames=5, count=4, seed=2)
    results = []
    for batch, accumulate in ((4, 1), (2, 2)):
        model, processor = tm.tiny_musicgen(seed=0)
        args = MusicDPOConfig(
            loss_type="ipo",
            beta=0.5,
            learning_rate=1e-2,
            max_steps=2,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulate,
            lr_scheduler_type="constant",
        )
        trainer = MusicDPOTrainer(model, pairs, args, processor=processor)
        trainer.train()
        lora = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if "lora_" in n}
        results.append((trainer, lora))
    (trainer, one), (_, two) = results
    assert one.keys() == two.keys()
    assert all(torch.allclose(one[n], two[n], atol=1e-6) for n in one)
    assert trainer.global_step == 2

    prompts, chosen, rejected = collate_pairs(list(pairs))
    pc = trainer.sequence_logps(prompts, chosen)
    pr = trainer.sequence_logps(prompts, rejected)
    rc = trainer.sequence_logps(prompts, chosen, reference=True).logps
    rr = trainer.sequence_logps(prompts, rejected, reference=True).logps
    out = dpo_loss(
        pc.logps,
        pr.logps,
        rc,
        rr,
        beta=0.5,
        loss_type="ipo",
        chosen_lengths=pc.mask.sum((1, 2)),
        rejected_lengths=pr.mask.sum((1, 2)),
    )
    metrics = trainer.evaluate(pairs)
    assert metrics["loss"] == pytest.approx(float(out.losses.mean()), rel=1e-5)
    assert metrics["rewards/margins"] == pytest.approx(
        float((out.chosen_rewards - out.rejected_rewards).mean()), rel=1e-5, abs=1e-7
    )
    assert metrics["logps/chosen"] == pytest.approx(float(pc.logps.mean()), rel=1e-6)


def test_precomputed_reference_gives_the_same_training():
    pairs = _random_pairs(128, frames=5, count=4, seed=3)
    finals = []
    for precompute in (False, True):
        model, processor = tm.tiny_musicgen(seed=0)
        args = MusicDPOConfig(
            learning_rate=1e-2,
            max_steps=3,
            per_device_train_batch_size=2,
            precompute_ref_log_probs=precompute,
        )
        trainer = MusicDPOTrainer(model, pairs, args, processor=processor)
        trainer.train()
        finals.append(
            torch.cat([p.detach().flatten() for n, p in trainer.policy.named_parameters() if "lora_" in n])
        )
    assert torch.allclose(finals[0], finals[1], atol=1e-6)


# ------------------------------------------------------------------------------------------- config


def test_config_shares_trl_dpo_config_fields(tmp_path):
    from trl import DPOConfig

    trl_fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    ours = {f.name: f for f in dataclasses.fields(MusicDPOConfig)}
    assert set(TRL_SHARED_FIELDS) <= set(trl_fields) and set(TRL_SHARED_FIELDS) <= set(ours)
    # ours: report nowhere unless told (trl: None, every integration installed), keep one checkpoint
    for name in set(TRL_SHARED_FIELDS) - {
        "learning_rate",
        "loss_type",
        "bf16",
        "report_to",
        "save_total_limit",
    }:
        assert ours[name].default == trl_fields[name].default, name
    assert trl_fields["loss_type"].default_factory() == [ours["loss_type"].default]
    trl_config = DPOConfig(
        output_dir=str(tmp_path),
        bf16=False,
        use_cpu=True,
        beta=0.3,
        loss_type=["ipo"],
        learning_rate=5e-5,
        max_steps=7,
        seed=3,
    )
    config = MusicDPOConfig.from_trl(trl_config, lora_r=4)
    assert (
        config.beta,
        config.loss_type,
        config.learning_rate,
        config.max_steps,
        config.seed,
        config.lora_r,
    ) == (
        0.3,
        "ipo",
        5e-5,
        7,
        3,
        4,
    )
    assert MusicDPOConfig(**json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta": 0.0}, ValueError, "beta"),
        ({"loss_type": "hinge"}, ValueError, "loss_type"),
        ({"loss_type": ["sigmoid", "ipo"]}, ValueError, "one loss"),
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"per_device_train_batch_size": 0}, ValueError, "per_device_train_batch_size"),
        ({"learning_rate": "1e-4"}, TypeError, "learning_rate"),
        ({"label_smoothing": 0.6}, ValueError, "label_smoothing"),
        ({"lr_scheduler_type": "poly"}, ValueError, "lr_scheduler_type"),
    ],
)
def test_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        MusicDPOConfig(**kwargs)


def test_trainer_rejects_bad_input():
    model, processor = tm.tiny_musicgen(seed=0)
    pairs = _random_pairs(128, frames=5)
    with pytest.raises(ValueError, match="processor"):
        MusicDPOTrainer(model, pairs)
    with pytest.raises(TypeError, match="MusicGen"):
        MusicDPOTrainer(torch.nn.Linear(2, 2), pairs)
    with pytest.raises(ValueError, match="no pairs"):
        MusicDPOTrainer(model, pairs.select([]), processor=processor)
    with pytest.raises(ValueError, match="codes"):  # codes outside the model's 128-entry codebooks
        MusicDPOTrainer(
            model, _random_pairs(400, frames=5), MusicDPOConfig(max_steps=1), processor=processor
        ).train()


# ---------------------------------------------------------------------------------------------- CLI


def test_dpo_cli_trains_and_saves_an_adapter(tmp_path, capsys):
    save_pairs(_random_pairs(128, frames=5, seed=4), tmp_path / "pairs")
    argv = ["dpo", "--backend", "transformers", "--musicgen", "tiny", "--pairs", str(tmp_path / "pairs")]
    argv += ["--out", str(tmp_path / "adapter"), "--max-steps", "3", "--batch-size", "2", "--lr", "1e-2"]
    argv += ["--eval-pairs", str(tmp_path / "pairs"), "--logging-steps", "1"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["global_step"] == 3 and summary["eval/rewards/margins"] > 0
    model, _ = tm.tiny_musicgen(seed=0)
    assert load_adapter(model, tmp_path / "adapter").peft_config["default"].r == 8
    assert main([*argv[:-4], "--beta", "-1"]) == 2
    assert "beta" in capsys.readouterr().err
    assert main([*argv[:5], "--pairs", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------- a preference DPO can learn

SR, HOP, STEPS = 8000, 160, 4 + 10 - 1  # 10 frames of 4 codebooks per sample
LOW_BAND_HZ = 50 + 25 * 64


def render(codes: torch.Tensor) -> torch.Tensor:
    """A fixed toy synth, codes [B, K, S] -> audio [B, 1, S * HOP] at 8 kHz: each code is a 20 ms
    sinusoid at 50 + 25 * code Hz, so codes below 64 (half of the 128) sound below LOW_BAND_HZ."""
    freqs = 50.0 + 25.0 * codes.double()
    t = torch.arange(HOP, dtype=torch.float64) / SR
    frames = torch.sin(2 * math.pi * freqs[..., None] * t)  # [B, K, S, HOP]
    return (frames.mean(1).reshape(codes.shape[0], 1, -1)).float()


def low_band_energy(audio: torch.Tensor, sample_rate: int, prompts) -> torch.Tensor:
    """Reward of the audio: the fraction of its spectral energy below LOW_BAND_HZ. [B, C, T] -> [B]"""
    power = torch.fft.rfft(audio.double(), dim=-1).abs().pow(2).sum(1)
    freqs = torch.fft.rfftfreq(audio.shape[-1], 1.0 / sample_rate)
    return power[:, freqs < LOW_BAND_HZ].sum(-1) / power.sum(-1)


def _peaked_tiny_musicgen():
    """The tiny transformers MusicGen with output heads of std 0.5 instead of 0.02. With std 0.02 its
    logits stay within about +-0.06 whatever the hidden state is (a near-uniform distribution that no
    adapter on the decoder layers can move); a trained MusicGen's distribution is peaked."""
    model, processor = tm.tiny_musicgen(seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for head in model.decoder.lm_heads:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.5)
    return model, processor


def dpo_effect(seed: int = 0) -> dict[str, float]:
    model, processor = _peaked_tiny_musicgen()

    def generate(prompts):
        _, codes = generate_with_codes(model, processor, prompts, STEPS, guidance_scale=1.0)
        return render(codes), codes

    reward_fn = AudioRewardFunction(low_band_energy, decoder=render, sample_rate=SR, name="low_band")
    train = generate_pairs(
        generate, [f"train prompt {i}" for i in range(64)], 8, low_band_energy, SR, seed=seed
    )
    held_out = generate_pairs(
        generate, [f"held-out prompt {i}" for i in range(32)], 8, low_band_energy, SR, seed=seed + 1
    )
    fresh = [f"fresh prompt {i}" for i in range(16) for _ in range(8)]

    def sample_reward() -> tuple[float, float]:
        _, codes = generate_with_codes(model, processor, fresh, STEPS, seed=seed + 2, guidance_scale=1.0)
        r = torch.tensor(reward_fn(fresh, list(codes)))
        return float(r.mean()), float(r.std() / math.sqrt(len(r)))

    trainer = MusicDPOTrainer(
        model,
        train,
        MusicDPOConfig(
            learning_rate=3e-3, max_steps=16, per_device_train_batch_size=16, seed=seed, logging_steps=4
        ),
        processor=processor,
    )
    before, se_before = sample_reward()
    held_before = trainer.evaluate(held_out)
    trainer.train()
    held_after = trainer.evaluate(held_out)
    after, se_after = sample_reward()
    return {
        "reward_before": before,
        "reward_after": after,
        "reward_se": math.hypot(se_before, se_after),
        "held_margin_before": held_before["rewards/margins"],
        "held_margin_after": held_after["rewards/margins"],
        "held_accuracy_after": held_after["rewards/accuracies"],
        "train_loss_first": trainer.log_history[0]["loss"],
        "train_loss_last": trainer.log_history[-2]["loss"],
    }


def test_dpo_learns_a_clear_preference():
    """Pairs from a reward that prefers low codes (heard through a toy synth, scored by the trl-style
    reward function): a short DPO run raises the implicit reward margin on held-out pairs and the mean
    reward of newly sampled outputs (16 prompts x 8 samples, same sampling seed before and after)."""
    out = dpo_effect(seed=0)
    assert out["held_margin_before"] == pytest.approx(0.0, abs=1e-6)
    assert out["held_margin_after"] > 0.1
    assert out["held_accuracy_after"] > 0.6
    assert out["train_loss_last"] < out["train_loss_first"]
    assert out["reward_after"] - out["reward_before"] > 5 * out["reward_se"]


# ---------------------------------------------------------------------------------- data parallel
