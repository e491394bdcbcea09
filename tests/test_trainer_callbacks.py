"""What a user of trl expects from a trainer, for all three MusicGen trainers (DPO, online RL, reward
backpropagation): transformers callbacks called once per optimizer step, report_to="tensorboard" event
files holding the logged values, save_total_limit, a callback that stops the run (which the same command
then finishes, to the adapter an uninterrupted run gives), and resume_from_checkpoint."""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path

import pytest
import torch
from tensorboardX.proto import event_pb2
from transformers import TrainerCallback

from deramos_reward.integrations.dpo import MusicDPOConfig, MusicDPOTrainer, musicgen_pairs
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.rewards.synthetic import LowBandEnergyReward
from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer
from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
from deramos_reward.integrations.training.backprop.trainer import MusicRewardBackpropTrainer

PROMPTS = ["calm piano", "fast drums", "ambient pad", "rock guitar"]
KINDS = ["dpo", "rl", "backprop"]


@functools.cache
def _pairs():
    model, processor = tm.tiny_musicgen(0, head_std=0.5)
    return musicgen_pairs(model, PROMPTS, 3, LowBandEnergyReward(), processor=processor, duration=0.2, seed=0)


def make_trainer(kind: str, callbacks=None, **fields):
    """A tiny transformers MusicGen trainer of ``kind``; each optimizer step is two micro-batches (DPO,
    backprop: gradient accumulation) or one of two updates per batch (RL: num_iterations)."""
    model, processor = tm.tiny_musicgen(0, head_std=0.5)
    common = {"max_steps": 3, "logging_steps": 1, "learning_rate": 1e-2, **fields}
    if kind == "dpo":
        config = MusicDPOConfig(per_device_train_batch_size=1, gradient_accumulation_steps=2, **common)
        return MusicDPOTrainer(model, _pairs(), config, processor=processor, callbacks=callbacks)
    if kind == "rl":
        config = MusicRLConfig(num_generations=2, prompts_per_step=1, duration=0.2, num_iterations=2,
                               guidance_scale=1.0, **common)  # fmt: skip
        return MusicRLTrainer(
            model, LowBandEnergyReward(), PROMPTS, config, processor=processor, callbacks=callbacks
        )
    config = MusicBackpropConfig(num_generations=1, prompts_per_step=1, duration=0.2, gradient_accumulation_steps=2,
                                 guidance_scale=1.0, **common)  # fmt: skip
    return MusicRewardBackpropTrainer(
        model, LowBandEnergyReward(), PROMPTS, config, processor=processor, callbacks=callbacks
    )


def lora(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if "lora_" in n}


class Recorder(TrainerCallback):
    """Records every event with the step the state held then."""

    def __init__(self, stop_at: int | None = None, save_at: int | None = None):
        self.events: list[tuple[str, int]] = []
        self.logs: list[dict] = []
        self.stop_at, self.save_at = stop_at, save_at

    def _add(self, name, state):
        self.events.append((name, state.global_step))

    def on_train_begin(self, args, state, control, **kwargs):
        assert args.max_steps == state.max_steps == 3 and "model" in kwargs
        self._add("train_begin", state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._add("step_begin", state)

    def on_step_end(self, args, state, control, **kwargs):
        self._add("step_end", state)
        if state.global_step == self.stop_at:
            control.should_training_stop = True
        if state.global_step == self.save_at:
            control.should_save = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._add("log", state)
        self.logs.append(dict(logs))

    def on_save(self, args, state, control, **kwargs):
        self._add("save", state)

    def on_train_end(self, args, state, control, **kwargs):
        self._add("train_end", state)

    def named(self, name: str) -> list[int]:
        return [step for event, step in self.events if event == name]


@pytest.mark.parametrize("kind", KINDS)
def test_callbacks_run_once_per_optimizer_step(kind, tmp_path):
    recorder = Recorder()
    trainer = make_trainer(kind, callbacks=[recorder], output_dir=str(tmp_path / "run"), save_steps=2)
    summary = trainer.train()
    assert summary["global_step"] == 3
    assert recorder.named("train_begin") == [0] and recorder.named("train_end") == [3]
    assert recorder.named("step_begin") == [0, 1, 2]  # two micro-batches or two updates per batch: one call
    assert recorder.named("step_end") == [1, 2, 3]
    assert recorder.named("save") == [2, 3]
    # every log row reaches on_log with its numbers
    logged = [row for row in trainer.log_history if "step" in row]
    assert len(recorder.logs) == len(logged) and recorder.named("log") == [row["step"] for row in logged]
    key = "reward" if kind == "rl" else "loss"
    assert [log[key] for log in recorder.logs] == [row[key] for row in logged]
    assert trainer.state.global_step == 3 and trainer.pop_callback(Recorder) is recorder


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``folder``: tag -> [(step, value)] (the
    TFRecord framing read here: length u64, its CRC u32, the Event, its CRC u32)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_report_to_tensorboard_writes_the_logged_values(kind, tmp_path):
    logs = tmp_path / "tb"
    trainer = make_trainer(kind, report_to="tensorboard", logging_dir=str(logs))
    trainer.train()
    scalars = _scalars(logs)
    key = "reward" if kind == "rl" else "loss"
    rows = [row for row in trainer.log_history if key in row and "step" in row]
    assert [row["step"] for row in rows] == ([2, 3] if kind == "rl" else [1, 2, 3])  # RL logs per batch
    written = scalars[f"train/{key}"]
    assert [step for step, _ in written] == [row["step"] for row in rows]
    assert [value for _, value in written] == pytest.approx([row[key] for row in rows], rel=1e-6)
    assert "train/learning_rate" in scalars or kind == "backprop" and "train/kl" in scalars


@pytest.mark.parametrize("kind", KINDS)
def test_save_total_limit(kind, tmp_path):
    run = tmp_path / "one"
    make_trainer(kind, output_dir=str(run), save_steps=1, save_total_limit=1).train()
    assert sorted(p for p in os.listdir(run) if p.startswith("checkpoint")) == ["checkpoint-3"]
    run = tmp_path / "all"
    make_trainer(kind, output_dir=str(run), save_steps=1, save_total_limit=None).train()
    kept = sorted(p for p in os.listdir(run) if p.startswith("checkpoint"))
    # RL saves at the end of a batch (two updates each here)
    assert kept == (
        ["checkpoint-2", "checkpoint-3"] if kind == "rl" else ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_callback_stops_the_run_and_the_same_command_finishes_it(kind, tmp_path):
    """should_training_stop at step 1 ends the run with a checkpoint there (RL: at the end of that batch,
    step 2, since a batch's updates share its samples); train() again (a new trainer on the same
    output_dir) ends at the adapter and log of a run never stopped."""
    whole = make_trainer(kind)
    whole.train()
    run = str(tmp_path / "run")
    stopper = Recorder(stop_at=1)
    stopped = make_trainer(kind, callbacks=[stopper], output_dir=run, save_steps=100)
    at = 2 if kind == "rl" else 1
    assert stopped.train()["global_step"] == at
    assert stopper.named("save") == [at] and f"checkpoint-{at}" in os.listdir(run)
    resumed = make_trainer(kind, output_dir=run, save_steps=100)
    assert resumed.train()["global_step"] == 3
    expected, got = lora(whole), lora(resumed)
    assert got.keys() == expected.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)
    key = "reward" if kind == "rl" else "loss"
    whole_rows = [row[key] for row in whole.log_history if key in row and "step" in row]
    resumed_rows = [row[key] for row in resumed.log_history if key in row and "step" in row]
    assert resumed_rows == pytest.approx(whole_rows, rel=1e-5)


def test_resume_from_checkpoint_names_what_is_missing_and_resumes_from_a_given_folder(tmp_path):
    run = tmp_path / "run"
    trainer = make_trainer("backprop", output_dir=str(run), save_steps=1, save_total_limit=None)
    with pytest.raises(ValueError, match="resume_from_checkpoint=True.*no complete checkpoint"):
        trainer.train(resume_from_checkpoint=True)
    trainer.train()
    again = make_trainer("backprop", output_dir=str(run), save_steps=1, save_total_limit=None)
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        again.train(resume_from_checkpoint=str(run / "checkpoint-9"))
    recorder = Recorder()
    again.add_callback(recorder)
    assert again.train(resume_from_checkpoint=str(run / "checkpoint-2"))["global_step"] == 3
    assert recorder.named("step_end") == [3]  # only the step after checkpoint-2 ran


def test_callbacks_must_be_trainer_callbacks():
    with pytest.raises(TypeError, match="TrainerCallback"):
        make_trainer("backprop", callbacks=[print])


def test_a_launch_of_several_processes_that_accelerate_runs_one_by_one_is_refused(monkeypatch):
    from deramos_reward.integrations.training.common.runtime import make_accelerator
    from deramos_reward.integrations.training.common.trainer import check_process_group

    accelerator = make_accelerator()  # this test runs as one process
    check_process_group(accelerator)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun / accelerate launch would set it
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2.*ACCELERATE_USE_CPU=1"):
        check_process_group(accelerator)
