"""The shared fine-tuning loop infrastructure: LoRA on a real tiny MusicGen, checkpoints that restore the
adapter, optimizer, scheduler and RNG states exactly, run settings, log rows."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import pytest
import torch

from deramos_reward.integrations.musicgen.base import adapter_disabled
from deramos_reward.integrations.musicgen.factory import musicgen_backend
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.musicgen.transformers.backend import TRANSFORMERS_LORA_TARGETS
from deramos_reward.integrations.musicgen.transformers.logprobs import (
    transformers_sequence_logprobs,
    transformers_text_inputs,
)
from deramos_reward.integrations.training.common.checkpoints import (
    checkpoint_folder,
    checkpoint_folders,
    load_training_state,
    resolve_checkpoint,
    save_training_state,
)
from deramos_reward.integrations.training.common.lora import attach_lora, lora_config, trainable_parameters
from deramos_reward.integrations.training.common.run_log import RunLogger
from deramos_reward.integrations.training.common.runtime import (
    accelerator_device,
    autocast,
    grad_norm,
    make_accelerator,
    make_scheduler,
    resolve_bf16,
)
from deramos_reward.integrations.training.common.settings import check_run_settings
from deramos_reward.jsonl import read_rows
from deramos_reward.seeding import derive_seed

PROMPTS = ["soft piano", "loud drums"]


def _policy(seed: int = 0):
    model, processor = tm.tiny_musicgen(seed=0)
    return attach_lora(musicgen_backend(model, processor), r=4, alpha=8, seed=seed), model, processor


def _logps(model, processor, codes):
    inputs = transformers_text_inputs(processor, PROMPTS)
    return transformers_sequence_logprobs(model, inputs["input_ids"], inputs["attention_mask"], codes).logps


def _codes(seed=0):
    return torch.randint(0, 128, (2, 4, 5), generator=torch.Generator().manual_seed(seed))


def _train_steps(policy, model, processor, optimizer, scheduler, steps):
    for i in range(steps):
        loss = -_logps(model, processor, _codes(i)).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def _optim(policy):
    optimizer = torch.optim.AdamW(trainable_parameters(policy), lr=1e-2)
    return optimizer, make_scheduler(optimizer, "linear", 1, 6)


def test_attach_lora_trains_only_the_adapter_and_disabling_it_gives_the_base_model():
    state = torch.get_rng_state()
    policy, model, processor = _policy(seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    names = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    again, _, _ = _policy(seed=3)
    a = {n: p for n, p in policy.named_parameters() if "lora_A" in n}
    b = {n: p for n, p in again.named_parameters() if "lora_A" in n}
    assert all(torch.equal(a[n], b[n]) for n in a)  # the seed decides the initialisation
    base = _logps(model, processor, _codes())
    optimizer, scheduler = _optim(policy)
    _train_steps(policy, model, processor, optimizer, scheduler, 2)
    trained = _logps(model, processor, _codes())  # the model object itself carries the adapter
    with adapter_disabled(policy):
        reference = _logps(model, processor, _codes())
    torch.testing.assert_close(reference, base)
    assert not torch.allclose(trained, base)
    # a PeftModel is trained further as it is; a second config for it is refused
    assert attach_lora(musicgen_backend(policy, processor)) is policy
    with pytest.raises(ValueError, match="peft_config"):
        attach_lora(musicgen_backend(policy, processor), peft_config=lora_config(TRANSFORMERS_LORA_TARGETS))
    with pytest.raises(ValueError, match="not a PeftModel"):
        attach_lora(musicgen_backend(model, processor))
    with pytest.raises(ValueError, match="no trainable parameters|target"):
        attach_lora(musicgen_backend(*tm.tiny_musicgen(seed=0)), target_modules=r"nothing\.matches")
    with pytest.raises(ValueError, match="LoRA r"):
        lora_config(TRANSFORMERS_LORA_TARGETS, r=0)


def test_checkpoint_restores_adapter_optimizer_scheduler_and_rng_exactly(tmp_path):
    policy, model, processor = _policy()
    optimizer, scheduler = _optim(policy)
    _train_steps(policy, model, processor, optimizer, scheduler, 2)
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    rows = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    save_training_state(
        tmp_path, policy, optimizer, scheduler, step=2, logs=rows, extra={"baseline": [1.0, 2.0]}
    )
    draws = (torch.rand(3), np.random.rand(3), random.random())
    _train_steps(policy, model, processor, optimizer, scheduler, 3)
    expected = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}

    fresh, fresh_model, _ = _policy(seed=99)  # another initialisation: the checkpoint overrides it
    fresh_opt, fresh_sched = _optim(fresh)
    state = load_training_state(tmp_path, fresh, fresh_opt, fresh_sched)
    assert (state.step, state.logs, state.extra) == (2, rows, {"baseline": [1.0, 2.0]})
    assert torch.equal(torch.rand(3), draws[0])
    assert np.array_equal(np.random.rand(3), draws[1]) and random.random() == draws[2]
    assert fresh_sched.state_dict()["last_epoch"] == 2
    _train_steps(fresh, fresh_model, processor, fresh_opt, fresh_sched, 3)
    got = {n: p.detach() for n, p in fresh.named_parameters() if p.requires_grad}
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[n], expected[n]) for n in got)
    assert fresh_sched.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"] == 5
    # the adapter folder is a peft adapter
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(state.folder / "adapter"))


def test_checkpoints_are_numbered_rotated_and_a_kill_mid_save_leaves_the_last_complete_one(tmp_path):
    policy, _, _ = _policy()
    optimizer, scheduler = _optim(policy)
    for step in (2, 4, 6):
        save_training_state(tmp_path, policy, optimizer, scheduler, step=step, save_total_limit=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4", "checkpoint-6"]
    assert [f.name for f in checkpoint_folders(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    # killed while writing checkpoint-8: the temporary folder is not a checkpoint
    (tmp_path / ".checkpoint-8.tmp" / "adapter").mkdir(parents=True)
    # and a folder that lost its state file is not one either
    os.remove(tmp_path / "checkpoint-6" / "trainer_state.json")
    assert checkpoint_folder(tmp_path).name == "checkpoint-4"
    assert load_training_state(tmp_path, policy, optimizer, scheduler).step == 4
    save_training_state(tmp_path, policy, optimizer, scheduler, step=8, save_total_limit=1)
    assert sorted(p for p in os.listdir(tmp_path) if not p.startswith(".")) == [
        "checkpoint-6",
        "checkpoint-8",
    ]
    assert load_training_state(tmp_path, policy, optimizer).step == 8
    # None keeps every checkpoint
    save_training_state(tmp_path, policy, optimizer, step=10)
    assert [f.name for f in checkpoint_folders(tmp_path)] == ["checkpoint-8", "checkpoint-10"]
    assert load_training_state(tmp_path / "none", policy, optimizer) is None


def test_resume_from_checkpoint_values_and_the_earlier_unnumbered_layout(tmp_path):
    policy, _, _ = _policy()
    optimizer, scheduler = _optim(policy)
    assert resolve_checkpoint(tmp_path, None) is None and resolve_checkpoint(None, None) is None
    with pytest.raises(ValueError, match="resume_from_checkpoint=True.*no complete checkpoint"):
        resolve_checkpoint(tmp_path, True)
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-3"))
    with pytest.raises(TypeError, match="resume_from_checkpoint"):
        resolve_checkpoint(tmp_path, 3)
    first = save_training_state(tmp_path, policy, optimizer, scheduler, step=3)
    save_training_state(tmp_path, policy, optimizer, scheduler, step=5)
    assert resolve_checkpoint(tmp_path, True).name == "checkpoint-5"
    assert resolve_checkpoint(tmp_path, str(first)) == first
    assert load_training_state(None, policy, optimizer, folder=first).step == 3
    # a run folder of the earlier layout (one unnumbered checkpoint) is read, and replaced on the next save
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    os.replace(first, legacy / "checkpoint")
    assert (
        checkpoint_folder(legacy).name == "checkpoint"
        and load_training_state(legacy, policy, optimizer).step == 3
    )
    save_training_state(legacy, policy, optimizer, step=4)
    assert sorted(os.listdir(legacy)) == ["checkpoint-4"]


def test_run_settings_are_recorded_then_compared(tmp_path):
    settings = {"learning_rate": 1e-4, "seed": 1, "logging_steps": 10, "targets": ["a", "b"]}
    assert check_run_settings(tmp_path, settings) is False
    assert check_run_settings(tmp_path, dict(settings)) is True
    assert check_run_settings(tmp_path, {**settings, "logging_steps": 1}, ignore=["logging_steps"])
    with pytest.raises(ValueError, match=r"learning_rate: 0\.0001 -> 0\.001.*new output folder"):
        check_run_settings(tmp_path, {**settings, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="extra"):
        check_run_settings(tmp_path, {**settings, "extra": 1})


def test_run_logger_rows_and_resume(tmp_path):
    path = tmp_path / "log.jsonl"
    logger = RunLogger(path, total=3)
    logger.log({"loss": torch.tensor(0.5), "kl": float("nan"), "note": "a"}, step=1)
    logger.advance()
    logger.log({"loss": 0.25}, step=2)
    logger.close()
    assert read_rows(path) == [{"step": 1, "loss": 0.5, "kl": None, "note": "a"}, {"step": 2, "loss": 0.25}]
    # a resumed run starts from the checkpoint's rows: later rows in the file are dropped
    resumed = RunLogger(path, total=3, initial=1, rows=read_rows(path)[:1])
    resumed.log({"loss": 0.3}, step=2)
    resumed.close()
    assert read_rows(path) == [{"step": 1, "loss": 0.5, "kl": None, "note": "a"}, {"step": 2, "loss": 0.3}]


def test_small_helpers(monkeypatch):
    g = int.from_bytes(hashlib.sha256(b"g").digest()[:8], "big")  # a string key enters as its hash
    state = np.random.SeedSequence([7, 3, g]).generate_state(1, dtype=np.uint64)
    assert derive_seed(7, 3, "g") == int(state[0]) % 2**63
    assert derive_seed(7, 3) != derive_seed(7, 4)
    assert resolve_bf16(None, "cpu") is False and resolve_bf16(True, "cpu") is True
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert accelerator_device() == torch.device("cpu")
    with pytest.raises(TypeError, match="bf16"):
        resolve_bf16("yes", "cpu")
    with autocast("cpu", True):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        make_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), "poly", 0, 1)
    w = torch.nn.Parameter(torch.ones(3))
    (w * torch.tensor([3.0, 0.0, 4.0])).sum().backward()
    accelerator = make_accelerator()
    assert grad_norm(accelerator, [w], 0.0) == pytest.approx(5.0)
    assert grad_norm(accelerator, [w], 1.0) == pytest.approx(5.0)
    assert float(w.grad.norm()) == pytest.approx(1.0, rel=1e-5)  # clipped


def test_attach_lora_on_audiocraft_goes_on_the_lm_and_the_backend_runs_it():
    from deramos_reward.integrations.musicgen.audiocraft import builders as ac

    musicgen = ac.tiny_musicgen(seed=0)
    backend = musicgen_backend(musicgen)
    codes = torch.randint(0, backend.card, (2, 4, 5), generator=torch.Generator().manual_seed(0))
    base = backend.sequence_logprobs(PROMPTS, codes).logps.detach()
    policy = attach_lora(backend, r=4, seed=0)
    assert backend.trainable_module() is policy and policy.get_base_model() is musicgen.lm
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)  # a non-zero adapter
    assert not torch.allclose(backend.sequence_logprobs(PROMPTS, codes).logps, base)
    with adapter_disabled(policy):
        torch.testing.assert_close(backend.sequence_logprobs(PROMPTS, codes).logps, base)
