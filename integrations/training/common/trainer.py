"""The base of the three MusicGen fine-tuning trainers: transformers' callback machinery around our loops.

``MusicDPOTrainer``, ``MusicRLTrainer`` and ``MusicRewardBackpropTrainer`` run loops of their own (DPO on
pairs, online sampling and scoring, straight-through reward gradients), so they do not subclass
``transformers.Trainer``; what a user of trl expects from a trainer comes from here instead:

- ``callbacks=[...]``: ``transformers.TrainerCallback`` objects, called as ``Trainer`` calls them
  (``on_train_begin``, ``on_step_begin`` / ``on_step_end`` once per optimizer step, ``on_log``,
  ``on_evaluate``, ``on_save``, ``on_train_end``) with a real ``TrainingArguments``
  (:meth:`AdapterTrainer.training_args`, built from the trainer's config), a ``TrainerState`` and a
  ``TrainerControl``. A callback that sets ``control.should_save`` gets a checkpoint at the end of that
  step; ``control.should_training_stop`` ends the run after a checkpoint (the same command resumes it);
- ``report_to``: transformers' reporting callbacks (``"tensorboard"``, ``"wandb"``, ...; ``"all"`` =
  every one installed), fed every log row;
- ``save_total_limit``: the number of ``checkpoint-<step>`` folders kept;
- ``train(resume_from_checkpoint=...)``: None (default) resumes from the latest checkpoint of
  ``output_dir`` when there is one, ``True`` requires one, a path resumes from that checkpoint.

Why not ``Trainer`` itself (measured, see BENCHMARKS.md): its checkpoints pickle the optimizer,
scheduler, RNG states and arguments, and a run killed while it writes one leaves a folder that
``resume_from_checkpoint=True`` picks up and fails on. Ours are safetensors + JSON, written atomically.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from deramos_reward._optional import require
from deramos_reward.integrations.training.common.checkpoints import (
    load_training_state,
    resolve_checkpoint,
    save_training_state,
)
from deramos_reward.integrations.training.common.config import AdapterTrainingConfig
from deramos_reward.integrations.training.common.run_log import RunLogger
from deramos_reward.integrations.training.common.runtime import (
    accelerator_device,
    make_accelerator,
    resolve_bf16,
)
from deramos_reward.integrations.training.common.settings import check_run_settings

__all__ = ["AdapterTrainer", "check_process_group", "training_arguments"]

LOG_FILE = "log.jsonl"


def training_arguments(config: AdapterTrainingConfig, *, use_cpu: bool) -> Any:
    """A ``transformers.TrainingArguments`` with ``config``'s values, for callbacks and reporters (the
    trainers themselves read ``config``). Fields ``TrainingArguments`` lacks are not carried."""
    transformers = require("transformers")
    eval_steps = getattr(config, "eval_steps", None)
    # TrainingArguments sets up devices on construction and, unless told to use the configured state,
    # resets accelerate's process-wide state: that would break the trainer's Accelerator
    configured = require("accelerate.state").is_initialized()
    return transformers.TrainingArguments(
        accelerator_config={"use_configured_state": True} if configured else None,
        output_dir=config.output_dir,
        logging_dir=config.logging_dir,
        run_name=config.run_name,
        report_to=config.report_to,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        num_train_epochs=getattr(config, "num_train_epochs", 1.0),
        per_device_train_batch_size=getattr(config, "per_device_train_batch_size", 1),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        max_grad_norm=config.max_grad_norm,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="no" if eval_steps is None else "steps",
        eval_steps=eval_steps,
        seed=config.seed,
        use_cpu=use_cpu,
        disable_tqdm=True,
    )


def check_process_group(accelerator: Any) -> None:
    """Refuse a launch of several processes that accelerate runs one by one: each would train the whole run
    alone into the same output folder (a CPU-only machine launched without ``--cpu`` / ``--device cpu``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"launched as {world} processes (WORLD_SIZE={world}) but accelerate runs this one alone, so each "
            "would train the whole run into the same folder; on a machine without GPUs set "
            "ACCELERATE_USE_CPU=1 (the CLI: --device cpu)"
        )


class AdapterTrainer:
    """What the three trainers share: the accelerator, callbacks and reporters, the run folder (settings,
    log, checkpoints) and resuming. A subclass sets ``args``, ``policy``, ``processor`` and ``accelerator``
    in its ``__init__``, then calls :meth:`_init_callbacks`; its ``train`` calls :meth:`_begin`,
    :meth:`_step_begin` / :meth:`_step_end` around each optimizer step, :meth:`_log`, :meth:`_checkpoint`
    and :meth:`_finish`.

    Class attributes a subclass sets: ``name`` (``"dpo"``...: the bar's label and the saved config's file
    name ``<name>_config.json``) and ``postfix`` (log keys shown on the bar).
    """

    name = "train"
    postfix: tuple[str, ...] = ("loss",)
    args: AdapterTrainingConfig
    global_step: int = 0

    # ---- set-up ---------------------------------------------------------------------------------
    def _new_accelerator(self) -> Any:
        """A fresh ``accelerate.Accelerator`` with this run's gradient accumulation (accelerate keeps it in
        process-wide state, so every ``train`` makes its own). bf16 is applied with :func:`autocast`
        around the passes (``self.bf16``), never through accelerate's process-wide mixed precision."""
        self.bf16 = resolve_bf16(self.args.bf16, accelerator_device())
        accelerator = make_accelerator(
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            bf16=False,
            project_dir=self.args.output_dir,
        )
        check_process_group(accelerator)
        return accelerator

    def _init_callbacks(self, callbacks: Sequence[Any] | None) -> None:
        trainer_callback = require("transformers.trainer_callback")
        integrations = require("transformers.integrations")
        reporters = integrations.get_reporting_integration_callbacks(self.training_args.report_to)
        user = [] if callbacks is None else list(callbacks)
        for callback in user:
            if not (isinstance(callback, type) or isinstance(callback, trainer_callback.TrainerCallback)):
                raise TypeError(
                    f"callbacks must hold transformers.TrainerCallback objects or classes, got {callback!r}"
                )
        self.callback_handler = trainer_callback.CallbackHandler(
            [trainer_callback.DefaultFlowCallback, *reporters, *user], self.policy, self.processor, None, None
        )
        self.state = trainer_callback.TrainerState()
        self.control = trainer_callback.TrainerControl()
        self.control = self.callback_handler.on_init_end(self.training_args, self.state, self.control)

    @functools.cached_property
    def training_args(self) -> Any:
        """The config as a ``transformers.TrainingArguments`` (what callbacks receive as ``args``)."""
        return training_arguments(self.args, use_cpu=accelerator_device().type == "cpu")

    @property
    def config(self) -> AdapterTrainingConfig:
        """The trainer's config (the same object as ``args``)."""
        return self.args

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def add_callback(self, callback: Any) -> None:
        """Add a ``TrainerCallback`` (an instance or a class), as ``Trainer.add_callback``."""
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Any) -> Any:
        """Remove and return a callback (an instance, or the first of a class), as ``Trainer.pop_callback``."""
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        """Remove a callback (an instance, or the first of a class), as ``Trainer.remove_callback``."""
        self.callback_handler.remove_callback(callback)

    # ---- run folder -----------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path | None:
        return None if self.args.output_dir is None else Path(self.args.output_dir)

    def _settings(self) -> dict[str, Any]:
        """What must not change between a run and its resume (a subclass adds its data, model, reward)."""
        return {k: v for k, v in self.args.to_dict().items() if k not in self.args.runtime_fields()}

    def _resume(
        self, optimizer: Any, scheduler: Any, resume_from_checkpoint: bool | str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Check the run's settings, then restore the checkpoint ``resume_from_checkpoint`` names (see
        :func:`~.checkpoints.resolve_checkpoint`) -> (the trainer's own state, the log rows); sets
        ``global_step``. ``({}, [])`` for a new run."""
        acc, run_dir = self.accelerator, self.run_dir
        if run_dir is not None:
            check_run_settings(
                run_dir,
                self._settings(),
                ignore=self.args.runtime_fields(),
                is_main_process=acc.is_main_process,
            )
            acc.wait_for_everyone()
        folder = resolve_checkpoint(run_dir, resume_from_checkpoint)
        self.global_step = 0
        if folder is None:
            return {}, []
        state = load_training_state(
            run_dir, self.policy, optimizer, scheduler, accelerator=acc, folder=folder
        )
        self.global_step = state.step
        return state.extra, state.logs

    def _checkpoint(self, optimizer: Any, scheduler: Any, extra: Mapping[str, Any]) -> None:
        """Write ``checkpoint-<global_step>`` (when the run has a folder) and tell the callbacks."""
        if self.run_dir is None:
            return
        save_training_state(
            self.run_dir, self.policy, optimizer, scheduler, step=self.global_step,
            logs=self.log_history, extra=dict(extra), accelerator=self.accelerator,
            save_total_limit=self.args.save_total_limit,
        )  # fmt: skip
        self.control = self.callback_handler.on_save(self.training_args, self.state, self.control)

    # ---- events ---------------------------------------------------------------------------------
    def _begin(
        self, optimizer: Any, scheduler: Any, max_steps: int, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Open the log (``output_dir/log.jsonl``, the bar) and call ``on_train_begin``."""
        acc = self.accelerator
        self.logger = RunLogger(
            None if self.run_dir is None else self.run_dir / LOG_FILE, total=max_steps,
            initial=self.global_step, rows=rows, desc=self.name, accelerator=acc, postfix=self.postfix,
        )  # fmt: skip
        self.log_history = self.logger.rows
        handler = self.callback_handler
        handler.optimizer, handler.lr_scheduler = optimizer, scheduler
        s = self.state
        s.global_step, s.max_steps = self.global_step, max_steps
        s.logging_steps, s.save_steps = self.args.logging_steps, self.args.save_steps
        s.eval_steps = getattr(self.args, "eval_steps", None) or s.eval_steps
        s.log_history = list(self.log_history)
        s.is_world_process_zero, s.is_local_process_zero = acc.is_main_process, acc.is_local_main_process
        self._requested = {"save": False, "stop": False}
        self.control = handler.on_train_begin(self.training_args, s, self.control)

    def _step_begin(self) -> None:
        self.control = self.callback_handler.on_step_begin(self.training_args, self.state, self.control)

    def _step_end(self) -> None:
        """After one optimizer step (``global_step`` already counts it): ``on_step_end``; remembers a
        callback's request to save or stop for the end of the trainer's unit of work."""
        self.state.global_step = self.global_step
        self.control = self.callback_handler.on_step_end(self.training_args, self.state, self.control)
        self.logger.advance()
        self._requested["save"] |= self.control.should_save
        self._requested["stop"] |= self.control.should_training_stop

    def _due(self, every: int | None, before: int, done: bool) -> bool:
        """Whether a multiple of ``every`` was crossed since step ``before`` (or the run is done)."""
        return done or (every is not None and self.global_step // every > before // every)

    def _should_save(self, before: int, done: bool) -> bool:
        return self._due(self.args.save_steps, before, done) or self._requested["save"]

    def _should_stop(self) -> bool:
        """A callback asked to stop before ``max_steps`` (DefaultFlowCallback's own stop at ``max_steps``
        is the loop's condition anyway)."""
        return self._requested["stop"] and self.global_step < self.state.max_steps

    def _after_save(self) -> None:
        self._requested["save"] = False

    def _log(self, row: Mapping[str, Any], *, evaluation: bool = False) -> dict[str, Any]:
        """Append a log row at ``global_step`` and pass its numbers to ``on_log`` (reporters) and, for an
        evaluation, ``on_evaluate``."""
        entry = self.logger.log(row, step=self.global_step)
        self.state.log_history.append(entry)
        numbers = {
            k: v
            for k, v in entry.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        args, handler = self.training_args, self.callback_handler
        if evaluation:
            self.control = handler.on_evaluate(args, self.state, self.control, metrics=numbers)
        self.control = handler.on_log(args, self.state, self.control, logs=numbers)
        return entry

    def _finish(self) -> None:
        """Close the log and call ``on_train_end`` (also after an error)."""
        self.logger.close()
        self.control = self.callback_handler.on_train_end(self.training_args, self.state, self.control)

    # ---- saving ---------------------------------------------------------------------------------
    def _adapter_files(self) -> dict[str, Any]:
        return {f"{self.name}_config.json": self.args.to_dict(), "log_history.json": self.log_history}
