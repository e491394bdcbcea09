"""``MusicRLTrainer``: online RL (GRPO / RLOO) of a LoRA adapter on MusicGen with an audio reward.

One step (see :class:`~deramos_reward.integrations.training.rl.config.MusicRLConfig` for every knob)::

    prompts of the step (prompts_per_step, split between processes, never a group)
      -> num_generations samples per prompt from the current policy (backend.generate, one seeded
         call per prompt group, with the config's guidance_scale and temperature)   [time/generation]
      -> reward of the decoded audio (a MusicReward: MI, TA, their std and audio embeddings)
      -> shaped reward: per-axis standardisation, the reward's own MI/TA weights, uncertainty
         penalty, diversity bonus
      -> advantages within each prompt's group (GRPO or RLOO)                 [time/scoring]
      -> per-token log-probs of the codes (delay pattern, valid steps) under the distribution they
         were sampled from (guided when guidance_scale > 1, at the temperature): the policy, the
         reference (adapter disabled; k3 only) and, for num_iterations > 1, the sampling policy
      -> num_iterations x clipped policy-gradient loss + beta * KL (kl_estimator), optimizer steps
                                                                              [time/update]

Randomness is derived from ``(seed, batch, prompt position)``, so the samples of a step do not depend on
how many processes run it or on a resume. The trainer runs unchanged under ``accelerate launch``: each
process samples and scores its own prompts (whole groups), gradients are averaged by DDP, and every
logged statistic is computed over all processes' samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from deramos_reward.integrations.musicgen.base import adapter_disabled
from deramos_reward.integrations.training.common.checkpoints import (
    save_adapter,
)
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
from deramos_reward.integrations.training.rl.config import MusicRLConfig
from deramos_reward.integrations.training.rl.diversity import (
    DiversityGuard,
    code_entropy,
    group_embedding_distance,
)
from deramos_reward.integrations.training.rl.objective import (
    clipped_policy_loss,
    group_advantages,
    policy_tokens,
    shaped_rewards,
    token_entropy,
    token_kl,
)
from deramos_reward.integrations.training.rl.rollout import (
    RewardParts,
    policy_sampling_options,
    prompt_schedule,
    repeat_prompts,
    reward_parts,
    reward_settings,
    score_audio,
    split,
)
from deramos_reward.seeding import derive_seed

__all__ = ["MusicRLTrainer", "Rollout"]


@dataclass
class Rollout:
    """One step's samples on this process: ``N = local prompts x num_generations``.

    ``prompts`` (N), ``codes`` ``[N, K, S]``, ``advantages`` ``[N]``, ``old_logps`` / ``ref_logps``
    ``[N, K, S]`` (None when not needed), ``stats``: logged values (over all processes), ``times``."""

    prompts: list[str]
    codes: torch.Tensor
    advantages: torch.Tensor
    old_logps: torch.Tensor | None
    ref_logps: torch.Tensor | None
    stats: dict[str, float]
    times: dict[str, float]


@dataclass
class _Loop:
    """Loop state carried across a resume (JSON)."""

    batch: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    guard: dict = field(default_factory=dict)

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            if v is not None and math.isfinite(v):
                self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def flush(self) -> dict[str, float]:
        out = {k: v / max(self.count, 1) for k, v in sorted(self.sums.items())}
        self.sums, self.count = {}, 0
        return out


def _sha(items: Sequence[str] | None) -> str | None:
    return None if items is None else hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()


class MusicRLTrainer(AdapterTrainer):
    """Online RL of a LoRA adapter on MusicGen's decoder/LM, rewarded by an audio reward.

    Args:
        model: a transformers ``MusicgenForConditionalGeneration`` (with ``processor``) or an AudioCraft
            ``MusicGen``, optionally already carrying a peft adapter (trained further). A new adapter is
            injected in place, so ``model`` itself samples from the policy afterwards (``trainer.model``).
        reward: a ``MusicReward`` (MI and TA are shaped separately, weighted with its own ``mi_weight`` /
            ``ta_weight``) or any callable ``(audio [B, C, T], sample_rate, prompts) -> [B]`` or
            ``-> RewardOutput``.
        prompts: training prompts, visited in a seeded random order (``prompts_per_step`` per step).
        config: :class:`~deramos_reward.integrations.training.rl.config.MusicRLConfig`.
        processor: the transformers model's ``MusicgenProcessor``.
        eval_prompts: prompts whose fresh samples (fixed seeds) are scored at the start, every
            ``eval_steps`` and at the end (``eval/...`` log rows).
        callbacks: ``transformers.TrainerCallback`` objects (or classes), called as ``Trainer`` calls them.

    Attributes:
        model: the model passed in, generating with the adapter active.
        policy: the ``peft.PeftModel``; ``backend``: its MusicGen backend; ``log_history``: the log rows;
        ``state`` / ``control``: transformers' ``TrainerState`` / ``TrainerControl``, as callbacks see them.
    """

    name = "rl"
    postfix = ("reward", "kl")

    def __init__(
        self,
        model: Any,
        reward: Callable,
        prompts: Sequence[str],
        config: MusicRLConfig,
        processor: Any = None,
        eval_prompts: Sequence[str] | None = None,
        callbacks: Sequence[Any] | None = None,
    ):
        self.args = config
        setup = set_up_policy(model, processor, reward, prompts, eval_prompts, config, MusicRLConfig)
        self.backend, self.policy, self.prompts, self.eval_prompts, self.frames = setup
        self.model, self.processor, self.reward = model, processor, reward
        self.accelerator = self._new_accelerator()
        self.policy.to(self.accelerator.device)
        self._forward = ForwardModule(self.policy, self._code_logits)
        self.guard = DiversityGuard(config.diversity_warning)
        self.log_history: list[dict[str, Any]] = []
        self.global_step = 0
        self._init_callbacks(callbacks)

    # ---- setup ----------------------------------------------------------------------------------

    def _code_logits(self, prompts: list[str], codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits samples are drawn from (guided when ``guidance_scale > 1``, before the temperature)."""
        a = self.args
        return self.backend.code_logits(
            prompts, codes, keep_only_valid_steps=a.keep_only_valid_steps, guidance_scale=a.guidance_scale
        )

    def _settings(self) -> dict[str, Any]:
        b = self.backend
        return {
            **super()._settings(),
            "prompts_sha256": _sha(self.prompts),
            "eval_prompts_sha256": _sha(self.eval_prompts),
            "model": {
                "library": b.name,
                "num_codebooks": b.num_codebooks,
                "card": b.card,
                "frames": self.frames,
            },
            "reward": reward_settings(self.reward),
            "num_processes": self.accelerator.num_processes,
        }

    def _check_layout(self) -> None:
        procs = self.accelerator.num_processes
        a = self.args
        if a.prompts_per_step % procs:
            raise ValueError(
                f"prompts_per_step ({a.prompts_per_step}) must be a multiple of the {procs} processes"
            )
        local = a.prompts_per_step // procs * a.num_generations
        if local % a.gradient_accumulation_steps:
            raise ValueError(
                f"each process's {local} samples per step must split evenly into "
                f"gradient_accumulation_steps={a.gradient_accumulation_steps} micro-batches"
            )

    def _autocast(self):
        return autocast(self.device, self.bf16)

    # ---- sampling and scoring -------------------------------------------------------------------
    def _sample(self, prompts: list[str], seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One seeded ``generate`` call per prompt group -> (audio [N, C, T], codes [N, K, S])."""
        g = self.args.num_generations
        sampling = policy_sampling_options(self.backend, self.args)
        audios, codes = [], []
        with eval_mode(self.policy), self._autocast():
            for prompt, seed in zip(prompts, seeds):
                audio, c = self.backend.generate([prompt] * g, self.frames, seed=seed, **sampling)
                audios.append(audio.float())
                codes.append(c)
        return torch.cat(audios), torch.cat(codes)

    def _advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        a, g = self.args, self.args.num_generations
        if a.advantage == "grpo" and a.scale_rewards == "batch":  # the std of the whole (global) batch
            centred = group_advantages(rewards, g, "grpo", "none")
            return centred / (self.accelerator.gather(rewards).std() + 1e-4)
        return group_advantages(rewards, g, a.advantage, a.scale_rewards)

    def _gathered_stats(self, parts: RewardParts, codes: torch.Tensor) -> dict[str, float]:
        """Logged statistics of a step's rewards and diversity, over every process's samples."""
        acc, g = self.accelerator, self.args.num_generations
        raw = acc.gather(parts.raw.float().contiguous())
        groups = raw.reshape(-1, g)
        stats = {
            "reward": float(raw.mean()),
            "reward_std": float(raw.std()),
            "frac_reward_zero_std": float((groups.std(1) < 1e-8).float().mean()),
        }
        for name, values in parts.logged.items():
            v = acc.gather(values.float().contiguous())
            stats[f"{name}/mean"], stats[f"{name}/std"] = float(v.mean()), float(v.std())
        diversity = {"code_entropy": acc.gather(code_entropy(codes, g, self.backend.card)).mean()}
        if parts.embeddings is not None:
            emb = parts.embeddings.float().to(self.device)
            diversity["embedding_distance"] = acc.gather(group_embedding_distance(emb, g)).mean()
        stats.update({f"diversity/{k}": float(v) for k, v in diversity.items()})
        return stats

    def _logps(self, prompts: list[str], codes: torch.Tensor, reference: bool) -> torch.Tensor:
        """Token log-probs [N, K, S] of the sampling distribution, no gradient, in micro-batches."""
        out = []
        adapter = adapter_disabled(self.policy) if reference else contextlib.nullcontext()
        with torch.no_grad(), eval_mode(self.policy), adapter, self._autocast():
            self.policy.train(not self.args.disable_dropout)
            for sl in split(len(prompts), self.args.gradient_accumulation_steps):
                logits, mask = self._code_logits(prompts[sl], codes[sl])
                out.append(policy_tokens(logits, codes[sl], mask, self.args.temperature).logps)
        return torch.cat(out)

    def _reference_log_probs(self, prompts: list[str], codes: torch.Tensor) -> torch.Tensor:
        """The reference's log-softmax [B, K, S, card] of one micro-batch (exact KL), no gradient."""
        with torch.no_grad(), adapter_disabled(self.policy):
            logits, mask = self._code_logits(prompts, codes)
            return policy_tokens(logits, codes, mask, self.args.temperature).log_probs

    def _rollout(self, batch: int) -> Rollout:
        a, acc, g = self.args, self.accelerator, self.args.num_generations
        order = prompt_schedule(len(self.prompts), a.prompts_per_step, batch, a.seed)
        per_rank = a.prompts_per_step // acc.num_processes
        positions = range(acc.process_index * per_rank, (acc.process_index + 1) * per_rank)
        prompts = [self.prompts[order[j]] for j in positions]
        t0 = time.perf_counter()
        audio, codes = self._sample(prompts, [derive_seed(a.seed, "sample", batch, j) for j in positions])
        t1 = time.perf_counter()
        flat = repeat_prompts(prompts, g)
        with self._autocast():
            scored = score_audio(self.reward, audio, self.backend.sample_rate, flat)
        parts = reward_parts(scored, a, g, self.reward)
        rewards = shaped_rewards(parts.parts, parts.weights, g, a.normalize_per_axis and len(parts.parts) > 1)
        advantages = self._advantages(rewards).to(self.device)
        stats = self._gathered_stats(parts, codes)
        t2 = time.perf_counter()
        codes = codes.to(self.device)
        old = self._logps(flat, codes, reference=False) if a.num_iterations > 1 else None
        k3 = a.beta > 0 and a.kl_estimator == "k3"  # exact: the reference runs next to each micro-step
        ref = self._logps(flat, codes, reference=True) if k3 else None
        times = {
            "time/generation": t1 - t0,
            "time/scoring": t2 - t1,
            "time/reference": time.perf_counter() - t2,
        }
        return Rollout(flat, codes, advantages, old, ref, stats, times)

    # ---- optimisation ---------------------------------------------------------------------------
    def _micro_step(self, forward: Any, ro: Rollout, sl: slice) -> dict[str, torch.Tensor]:
        """Loss and backward on one micro-batch -> its detached metrics.

        Every micro-batch holds the same number of valid tokens (equal lengths, the same delay-pattern
        mask), so ``dapo``'s normaliser (the batch's tokens, after accelerate divides each micro-batch's
        loss by the accumulation steps) is the micro-batch's own token count."""
        a, prompts, codes = self.args, ro.prompts[sl], ro.codes[sl]
        logits, mask = forward(prompts, codes)
        policy = policy_tokens(logits, codes, mask, a.temperature)
        kl = None
        if a.beta > 0:
            ref_logps = None if ro.ref_logps is None else ro.ref_logps[sl]
            ref_log_probs = self._reference_log_probs(prompts, codes) if a.kl_estimator == "exact" else None
            kl = token_kl(a.kl_estimator, policy.logps, ref_logps, policy.log_probs, ref_log_probs)
        old = policy.logps.detach() if ro.old_logps is None else ro.old_logps[sl]
        out = clipped_policy_loss(
            policy.logps, old, ro.advantages[sl], mask,
            epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta, kl=kl,
            loss_type=a.loss_type, max_tokens=mask[0].numel(),
        )  # fmt: skip
        self.accelerator.backward(out.loss)
        count = mask.sum().clamp_min(1)
        metrics = {
            "loss": out.loss.detach(),
            "entropy": (token_entropy(policy.log_probs) * mask).sum() / count,
            "clip_ratio/low_mean": out.clip_ratio_low,
            "clip_ratio/high_mean": out.clip_ratio_high,
            "clip_ratio/region_mean": out.clip_ratio,
        }
        if a.beta > 0:
            metrics["kl"] = out.kl
        return metrics

    def _update(self, forward: Any, optimizer: Any, scheduler: Any, params: list, ro: Rollout) -> dict:
        """``num_iterations`` optimizer steps on one rollout (fewer if ``max_steps`` is reached)."""
        a, acc = self.args, self.accelerator
        t0 = time.perf_counter()
        micro = split(len(ro.prompts), a.gradient_accumulation_steps)
        sums: dict[str, float] = {}
        updates = 0
        self.policy.train(not a.disable_dropout)
        for _ in range(a.num_iterations):
            if self.global_step >= a.max_steps:
                break
            norm = float("nan")
            self._step_begin()
            for sl in micro:
                with acc.accumulate(forward), self._autocast():
                    metrics = self._micro_step(forward, ro, sl)
                    if acc.sync_gradients:
                        norm = grad_norm(acc, params, a.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / len(micro)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + norm
            sums["learning_rate"] = sums.get("learning_rate", 0.0) + scheduler.get_last_lr()[0]
            scheduler.step()
            self.global_step += 1
            updates += 1
            self._step_end()  # a callback's stop takes effect after the batch: its updates share the samples
        self.policy.eval()
        out = {k: v / max(updates, 1) for k, v in sums.items()}
        out = dict(
            zip(out, acc.reduce(torch.tensor(list(out.values()), device=self.device), "mean").tolist())
        )
        out["time/update"] = time.perf_counter() - t0 + ro.times.pop("time/reference")
        return {**out, "_loss_sum": out.get("loss", 0.0) * updates, "_updates": updates}

    # ---- the loop -------------------------------------------------------------------------------
    def _prepare(self) -> tuple[Any, Any, Any, list]:
        a, acc = self.args, self.accelerator
        self._check_layout()
        params = trainable_parameters(self.policy)
        optimizer = torch.optim.AdamW(params, lr=a.learning_rate, weight_decay=a.weight_decay)
        scheduler = make_scheduler(optimizer, a.lr_scheduler_type, a.warmup_steps, a.max_steps)
        forward, optimizer = acc.prepare(self._forward, optimizer)
        return forward, optimizer, scheduler, params

    def _save(self, optimizer: Any, scheduler: Any, loop: _Loop) -> None:
        loop.guard = self.guard.state()
        self._checkpoint(optimizer, scheduler, asdict(loop))
        self._after_save()

    def _record(self, loop: _Loop, ro: Rollout, update: dict) -> None:
        """Add one step's statistics to the running sums; check diversity."""
        loop.loss_sum += update.pop("_loss_sum")
        loop.loss_count += update.pop("_updates")
        metrics = {**ro.stats, **ro.times, **update}
        measures = {k.split("/", 1)[1]: v for k, v in ro.stats.items() if k.startswith("diversity/")}
        if self.accelerator.is_main_process:
            metrics["diversity/below_threshold"] = float(len(self.guard.check(measures, self.global_step)))
        loop.add(metrics)

    def train(self, resume_from_checkpoint: bool | str | None = None) -> dict[str, Any]:
        """Run (or resume) RL to ``max_steps``; returns ``{"global_step", "train_loss", ...}`` with the last
        logged metrics (and the last evaluation). ``resume_from_checkpoint``: None = the latest checkpoint
        of ``output_dir`` if any (so running it again after an interruption continues; a finished run
        returns at once), True = it must exist, a path = that checkpoint folder."""
        self.accelerator = self._new_accelerator()
        a = self.args
        forward, optimizer, scheduler, params = self._prepare()
        extra, rows = self._resume(optimizer, scheduler, resume_from_checkpoint)
        loop = _Loop(**extra)
        self.guard.load_state(loop.guard)
        self._begin(optimizer, scheduler, a.max_steps, rows)
        try:
            if self.eval_prompts is not None and self.global_step == 0 and not rows:
                self._log(self.evaluate(), evaluation=True)
            while self.global_step < a.max_steps:
                before = self.global_step
                ro = self._rollout(loop.batch)
                update = self._update(forward, optimizer, scheduler, params, ro)
                loop.batch += 1
                self._record(loop, ro, update)
                done = self.global_step >= a.max_steps
                if self._due(a.logging_steps, before, done) or self._should_stop():
                    self._log(loop.flush())
                if self.eval_prompts is not None and self._due(a.eval_steps, before, done):
                    self._log(self.evaluate(), evaluation=True)
                if self._should_save(before, done) or self._should_stop():
                    self._save(optimizer, scheduler, loop)
                if self._should_stop():
                    break
        finally:
            self._finish()
            self.policy.eval()
        return self._summary(loop)

    def _summary(self, loop: _Loop) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for row in self.log_history:
            summary.update(row)
        summary.pop("step", None)
        summary["global_step"] = self.global_step
        summary["train_loss"] = loop.loss_sum / loop.loss_count if loop.loss_count else None
        return summary

    # ---- evaluation and saving ------------------------------------------------------------------
    def evaluate(self, prompts: Sequence[str] | None = None, seed: int | None = None) -> dict[str, float]:
        """Mean and spread of the reward of fresh samples: ``num_generations`` per prompt (``eval_prompts``
        by default), seeded by ``(seed, prompt index)`` (``seed`` defaults to the config's), so the same
        call before and after training compares the policies on the same noise.

        Returns ``eval/reward``, ``eval/reward_std``, ``eval/reward_sem`` (standard error), the per-axis
        ``eval/rewards/...`` means and ``eval/diversity/...``."""
        prompts = self.eval_prompts if prompts is None else training_prompts(prompts)
        if prompts is None:
            raise ValueError("no prompts: pass some or give eval_prompts to the trainer")
        a, g = self.args, self.args.num_generations
        seed = a.seed if seed is None else seed
        seeds = [derive_seed(seed, "eval", i) for i in range(len(prompts))]
        audio, codes = self._sample(list(prompts), seeds)
        flat = repeat_prompts(prompts, g)
        with self._autocast():
            scored = score_audio(self.reward, audio, self.backend.sample_rate, flat)
        parts = reward_parts(scored, a, g, self.reward)
        raw = parts.raw.double()
        out = {
            "eval/reward": float(raw.mean()),
            "eval/reward_std": float(raw.std()),
            "eval/reward_sem": float(raw.std() / math.sqrt(raw.numel())),
            "eval/diversity/code_entropy": float(code_entropy(codes, g, self.backend.card).mean()),
        }
        for name, values in parts.logged.items():
            out[f"eval/{name}"] = float(values.double().mean())
        if parts.embeddings is not None:
            distance = group_embedding_distance(parts.embeddings.float(), g)
            out["eval/diversity/embedding_distance"] = float(distance.mean())
        return out

    def save_adapter(self, path: str | Path | None = None) -> Path:
        """Save the adapter with peft (``adapter_config.json``, ``adapter_model.safetensors``) plus
        ``rl_config.json`` and ``log_history.json`` into ``path`` (default ``output_dir/adapter``),
        atomically; load it with ``deramos_reward.integrations.dpo.load_adapter(model, path)``."""
        if path is None:
            if self.args.output_dir is None:
                raise ValueError("path is required when config.output_dir is None")
            path = Path(self.args.output_dir) / "adapter"
        return save_adapter(self.policy, path, files=self._adapter_files(), accelerator=self.accelerator)
