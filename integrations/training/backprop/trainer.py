"""Reward backpropagation into MusicGen: LoRA fine-tuning on the gradient of a differentiable reward.

Best-of-N, DPO and online RL use reward *values*. A differentiable reward (``dr.MusicReward``: the
judge is differentiable in the waveform) also gives a direction in audio space; for diffusion models
following it (ReFL, DRaFT, AlignProp) learns far more per sample than RL. MusicGen's codes are discrete;
a straight-through estimator makes the path differentiable (:mod:`deramos_reward.integrations.musicgen.straight_through`). Each step:

1. sample codes from the current policy (no gradient; the configured guidance, temperature and top-k,
   the same policy online RL samples);
2. teacher-forced forward pass of the samples, with gradient: the logits they were sampled from
   ``[B, K, S, card]`` (guided: the conditional and unconditional passes, gradient through both);
3. straight-through decoding: softmax, one-hot of the sampled codes in the forward pass, soft codebook
   lookup, codec decoder -> audio equal to the sampled audio, differentiable in the logits;
4. the reward of that audio (resampling and judge inside the reward, with the reward's own MI/TA
   weights), and ``loss = -mean(reward) + beta * KL(policy || reference)`` (reference = the adapter
   disabled; the KL estimator of the config, shared with online RL);
5. one optimizer step on the LoRA adapter.

Options: DRaFT-K truncation (``truncate_frames``), gradient checkpointing through the codec and the
reward, bf16 autocast where supported. Logging, mid-run resume and multi-process training (accelerate,
DDP on the teacher-forced pass) come from :mod:`deramos_reward.integrations.training.common`, shared with the online RL trainer.

    from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
    from deramos_reward.integrations.training.backprop.trainer import MusicRewardBackpropTrainer
    trainer = MusicRewardBackpropTrainer(model, dr.MusicReward(judge), prompts,
                                         MusicBackpropConfig(max_steps=50, output_dir="run"), processor=processor)
    trainer.train(); trainer.save_adapter("run/adapter")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deramos_reward.integrations.musicgen.base import adapter_disabled
from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
from deramos_reward.integrations.training.backprop.objective import backprop_loss, reward_values, token_kl
from deramos_reward.integrations.training.common.checkpoints import save_adapter
from deramos_reward.integrations.training.common.lora import (
    ForwardModule,
    set_up_policy,
    trainable_parameters,
    training_prompts,
)
from deramos_reward.integrations.training.common.runtime import (
    autocast,
    eval_mode,
    grad_norm,
    make_scheduler,
)
from deramos_reward.integrations.training.common.trainer import AdapterTrainer
from deramos_reward.integrations.training.rl.rollout import (
    policy_sampling_options,
    prompt_schedule,
    reward_settings,
)
from deramos_reward.seeding import derive_seed

__all__ = ["MusicBackpropConfig", "MusicRewardBackpropTrainer", "evaluate_policy"]


def evaluate_policy(
    backend: Any,
    reward: Callable[..., Any],
    prompts: Sequence[str],
    *,
    frames: int,
    num_generations: int = 4,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    with_kl: bool = True,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Reward of fresh samples (fixed seeds) and KL to the reference, without gradient.

    Each prompt is sampled ``num_generations`` times (seed ``derive_seed(seed, "eval", i)`` for prompt
    ``i``) with ``sampling`` (default: ``backend.policy_sampling(temperature, 0, guidance_scale)``),
    decoded and scored. With ``with_kl`` the mean per-code exact KL(policy || reference) over the same
    samples is computed too, of ``softmax(guided logits / temperature)`` (the reference is the model
    with its adapter disabled; 0 without adapter): pass the ``guidance_scale`` and ``temperature`` that
    ``sampling`` samples with.

    Returns:
        ``{"reward": mean, "reward_sem": standard error of the mean, "kl": mean KL (nan if not computed),
        "samples": count}``.
    """
    prompts = training_prompts(prompts)
    if sampling is None:
        sampling = backend.policy_sampling(temperature, 0, guidance_scale)
    sampling = dict(sampling)
    rewards, kls = [], []
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            group = [prompt] * num_generations
            audio, codes = backend.generate(group, frames, seed=derive_seed(seed, "eval", i), **sampling)
            rewards.append(reward_values(reward, audio, backend.sample_rate, group).float().cpu())
            if with_kl:
                logits, mask = backend.code_logits(group, codes, guidance_scale=guidance_scale)
                with backend.reference():
                    ref_logits, _ = backend.code_logits(group, codes, guidance_scale=guidance_scale)
                kls.append(token_kl(logits / temperature, ref_logits / temperature, mask).cpu())
    r = torch.cat(rewards)
    sem = float(r.std() / math.sqrt(r.numel())) if r.numel() > 1 else float("nan")
    kl = float(torch.cat(kls).mean()) if kls else float("nan")
    return {"reward": float(r.mean()), "reward_sem": sem, "kl": kl, "samples": int(r.numel())}


class MusicRewardBackpropTrainer(AdapterTrainer):
    """Fine-tune a LoRA adapter on MusicGen's decoder by backpropagating a differentiable reward.

    Args:
        model: a transformers ``MusicgenForConditionalGeneration`` (with ``processor``), an AudioCraft
            ``MusicGen``, a peft model of either, or a backend (``musicgen_backend(...)``). A model without
            an adapter gets a new LoRA adapter (``config.lora_*``), injected in place: the model object
            you hold generates with it afterwards.
        reward: ``dr.MusicReward`` (its own ``mi_weight`` / ``ta_weight``) or any callable
            ``(audio [B, C, T], sample_rate, prompts) -> [B]`` (or a ``RewardOutput``) that is
            differentiable in the audio.
        prompts: training prompts (cycled in a seeded order).
        config: :class:`MusicBackpropConfig` (defaults when None).
        processor: the transformers ``MusicgenProcessor`` (transformers models only).
        eval_prompts: prompts whose fresh samples are scored at the start, every ``eval_steps`` and at the end.
        callbacks: ``transformers.TrainerCallback`` objects (or classes), called as ``Trainer`` calls them.

    Attributes:
        backend: the MusicGen backend; ``policy``: the ``peft.PeftModel``; ``log_history``: the log rows;
        ``args`` (also ``config``): the config; ``state`` / ``control``: transformers' ``TrainerState`` /
        ``TrainerControl``, as callbacks see them.
    """

    name = "backprop"
    postfix = ("loss", "reward", "kl")

    def __init__(
        self,
        model: Any,
        reward: Callable[..., Any],
        prompts: Sequence[str],
        config: MusicBackpropConfig | None = None,
        processor: Any = None,
        eval_prompts: Sequence[str] | None = None,
        callbacks: Sequence[Any] | None = None,
    ):
        self.args = cfg = MusicBackpropConfig() if config is None else config
        setup = set_up_policy(model, processor, reward, prompts, eval_prompts, cfg, MusicBackpropConfig)
        self.backend, self.policy, self.prompts, self.eval_prompts, self.frames = setup
        self.reward, self.processor = reward, processor
        self.sampling = policy_sampling_options(self.backend, cfg)
        self.accelerator = self._new_accelerator()
        if cfg.prompts_per_step % self.accelerator.num_processes:
            raise ValueError(
                f"prompts_per_step={cfg.prompts_per_step} must be a multiple of the number of processes "
                f"({self.accelerator.num_processes})"
            )
        self.backend.to(self.accelerator.device)
        self.log_history: list[dict[str, Any]] = []
        self.global_step = 0
        self._init_callbacks(callbacks)

    @property
    def model(self) -> Any:
        """The MusicGen model (transformers model / AudioCraft MusicGen) with the adapter active."""
        return self.backend.model

    def save_adapter(self, path: str | os.PathLike | None = None) -> Path:
        """Save the adapter with peft (``adapter_config.json``, ``adapter_model.safetensors``) plus
        ``backprop_config.json`` and ``log_history.json`` into ``path`` (default ``output_dir/adapter``),
        atomically; load it with ``deramos_reward.integrations.dpo.load_adapter(model, path)``."""
        if path is None:
            if self.run_dir is None:
                raise ValueError("path is required when config.output_dir is None")
            path = self.run_dir / "adapter"
        return save_adapter(self.policy, path, files=self._adapter_files(), accelerator=self.accelerator)

    def evaluate(
        self, prompts: Sequence[str] | None = None, num_generations: int | None = None
    ) -> dict[str, float]:
        """:func:`evaluate_policy` on ``prompts`` (default: ``eval_prompts``) with the training sampling."""
        prompts = self.eval_prompts if prompts is None else prompts
        if prompts is None:
            raise ValueError("no prompts to evaluate: pass prompts or give the trainer eval_prompts")
        with eval_mode(self.policy):
            return evaluate_policy(
                self.backend,
                self.reward,
                prompts,
                frames=self.frames,
                num_generations=num_generations or self.args.num_generations,
                seed=derive_seed(self.args.seed, "evaluate"),
                sampling=self.sampling,
                guidance_scale=self.args.guidance_scale,
                temperature=self.args.temperature,
            )

    # ---- one step ----------------------------------------------------------------------------------
    def _samples(self, step: int, micro: int) -> tuple[list[str], torch.Tensor]:
        """This process's prompts ``[B]`` and sampled codes ``[B, K, S]`` for one micro-batch: the RL
        trainer's prompt schedule and per-group seeds, so any process count samples the same codes."""
        cfg = self.args
        batch = step * cfg.gradient_accumulation_steps + micro
        order = prompt_schedule(len(self.prompts), cfg.prompts_per_step, batch, cfg.seed)
        per_rank = cfg.prompts_per_step // self.accelerator.num_processes
        first = self.accelerator.process_index * per_rank
        prompts, codes = [], []
        for j in range(first, first + per_rank):
            group = [self.prompts[order[j]]] * cfg.num_generations
            seed = derive_seed(cfg.seed, "sample", batch, j)
            with torch.no_grad(), eval_mode(self.policy):
                _, group_codes = self.backend.generate(group, self.frames, seed=seed, **self.sampling)
            prompts += group
            codes.append(group_codes)
        return prompts, torch.cat(codes).to(self.accelerator.device)

    def _code_logits(self, prompts: list[str], codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits samples are drawn from (guided when ``guidance_scale > 1``, before the temperature)."""
        return self.backend.code_logits(prompts, codes, guidance_scale=self.args.guidance_scale)

    def _micro_step(self, forward: Any, prompts: list[str], codes: torch.Tensor) -> tuple[torch.Tensor, dict]:
        cfg = self.args
        with autocast(self.accelerator.device, self.bf16):
            logits, mask = forward(prompts, codes)
            with torch.no_grad(), adapter_disabled(self.policy):
                ref_logits, _ = self._code_logits(prompts, codes)
            return backprop_loss(
                self.backend,
                self.reward,
                prompts,
                codes,
                logits,
                ref_logits,
                mask,
                beta=cfg.beta,
                temperature=cfg.temperature,
                truncate_frames=cfg.truncate_frames,
                gradient_checkpointing=cfg.gradient_checkpointing,
                kl_estimator=cfg.kl_estimator,
            )

    def _step(self, step: int, forward: Any, optimizer: Any, scheduler: Any) -> dict[str, float]:
        cfg = self.args
        times = {"time/generation": 0.0, "time/forward": 0.0, "time/backward": 0.0}
        parts: dict[str, list[torch.Tensor]] = {"reward": [], "kl": [], "entropy": [], "loss": []}
        for micro in range(cfg.gradient_accumulation_steps):
            start = time.perf_counter()
            prompts, codes = self._samples(step, micro)
            times["time/generation"] += time.perf_counter() - start
            last = micro == cfg.gradient_accumulation_steps - 1
            sync = contextlib.nullcontext() if last else self.accelerator.no_sync(forward)
            with sync:
                start = time.perf_counter()
                loss, micro_parts = self._micro_step(forward, prompts, codes)
                times["time/forward"] += time.perf_counter() - start
                start = time.perf_counter()
                self.accelerator.backward(loss / cfg.gradient_accumulation_steps)
                times["time/backward"] += time.perf_counter() - start
            parts["loss"].append(loss.detach().float()[None])
            for key in ("reward", "kl"):
                parts[key].append(micro_parts[key])
            parts["entropy"].append(micro_parts["entropy"][None])
        start = time.perf_counter()
        norm = grad_norm(self.accelerator, trainable_parameters(self.policy), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times["time/update"] = time.perf_counter() - start
        gathered = {
            k: self.accelerator.gather(torch.cat(v).to(self.accelerator.device)) for k, v in parts.items()
        }
        return {
            "loss": float(gathered["loss"].mean()),
            "reward": float(gathered["reward"].mean()),
            "reward_std": float(gathered["reward"].std()) if gathered["reward"].numel() > 1 else 0.0,
            "kl": float(gathered["kl"].mean()),
            "entropy": float(gathered["entropy"].mean()),
            "grad_norm": norm,
            "learning_rate": float(scheduler.get_last_lr()[0]),
            **times,
        }

    # ---- the loop ----------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "prompts_sha256": hashlib.sha256(json.dumps(self.prompts).encode()).hexdigest(),
            "backend": type(self.backend).__name__,
            "reward": reward_settings(self.reward),
        }

    def _eval_row(self, step: int) -> dict[str, float] | None:
        every = self.args.eval_steps
        due = step in (0, self.args.max_steps) or (every is not None and step % every == 0)
        if self.eval_prompts is None or not due:
            return None
        return {f"eval/{k}": v for k, v in self.evaluate().items()}

    def train(self, resume_from_checkpoint: bool | str | None = None) -> dict[str, Any]:
        """Run (or resume) training up to ``max_steps``; returns the last log row plus ``global_step``,
        ``samples`` (generated by all processes) and ``train_runtime`` (seconds of this call).
        ``resume_from_checkpoint``: None = the latest checkpoint of ``output_dir`` if any, True = it must
        exist, a path = that checkpoint folder."""
        cfg = self.args
        begin = time.perf_counter()
        self.accelerator = acc = self._new_accelerator()
        optimizer = torch.optim.AdamW(
            trainable_parameters(self.policy), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        scheduler = make_scheduler(optimizer, cfg.lr_scheduler_type, cfg.warmup_steps, cfg.max_steps)
        forward, optimizer = acc.prepare(ForwardModule(self.policy, self._code_logits), optimizer)
        _, rows = self._resume(optimizer, scheduler, resume_from_checkpoint)
        self._begin(optimizer, scheduler, cfg.max_steps, rows)
        per_step = cfg.prompts_per_step * cfg.num_generations * cfg.gradient_accumulation_steps
        pending: list[dict[str, float]] = []
        last: dict[str, Any] = {}
        was_training = self.policy.training
        self.policy.train(not cfg.disable_dropout)
        try:
            if self.global_step == 0 and (row := self._eval_row(0)) is not None:
                last.update(self._log(row, evaluation=True))
            while self.global_step < cfg.max_steps:
                before = self.global_step
                self._step_begin()
                pending.append(self._step(before, forward, optimizer, scheduler))
                self.global_step += 1
                self._step_end()
                done = self.global_step == cfg.max_steps
                if self._due(cfg.logging_steps, before, done):
                    last.update(self._log({**_mean_rows(pending), "samples": self.global_step * per_step}))
                    pending = []
                if (row := self._eval_row(self.global_step)) is not None:
                    last.update(self._log(row, evaluation=True))
                if self._should_save(before, done) or self._should_stop():
                    self._checkpoint(optimizer, scheduler, {})
                    self._after_save()
                if self._should_stop():
                    break
        finally:
            self.policy.train(was_training)
            self._finish()
        return {
            **last,
            "global_step": self.global_step,
            "samples": self.global_step * per_step,
            "train_runtime": time.perf_counter() - begin,
        }


def _mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average the metrics of the steps since the last log row (times are summed)."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = float(sum(values)) if key.startswith("time/") else float(np.mean(values))
    return out
