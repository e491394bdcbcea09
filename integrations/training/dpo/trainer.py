"""DPO for MusicGen with a peft LoRA adapter on the decoder; the reference is the adapter switched off.

:class:`MusicDPOTrainer` fine-tunes a LoRA adapter on MusicGen's decoder from preference pairs
(:func:`deramos_reward.integrations.training.dpo.pairs.build_pairs`): transformers' ``MusicgenForConditionalGeneration``
or AudioCraft's ``MusicGen`` / ``LMModel``. Per batch it scores the chosen and rejected codes of every pair
in one teacher-forced pass (:mod:`deramos_reward.integrations.musicgen.logprobs`), scores them again under the
reference policy (the same model inside ``with policy.disable_adapter():``, so no second copy sits in
memory), and minimises :func:`~deramos_reward.integrations.training.dpo.loss.dpo_loss`.

What comes from trl and what does not:

- :class:`MusicDPOConfig` uses the field names, meanings and (except ``learning_rate``) defaults of trl's
  ``DPOConfig``; :meth:`MusicDPOConfig.from_trl` copies them from a ``trl.DPOConfig``. The loss follows
  trl's conventions, and the logged metrics use trl's names (``rewards/margins``...).
- The loop is custom: trl's ``DPOTrainer`` tokenizes text, concatenates prompt and completion into one
  causal-LM sequence and reads log-probabilities off a single next-token head. MusicGen has a text
  encoder, ``K`` parallel codebooks with a delay pattern and ``K`` heads, so its log-probabilities need
  the MusicGen-specific functions in :mod:`~deramos_reward.integrations.musicgen.logprobs`.

The loop runs under ``accelerate launch`` (``Accelerator`` does device placement, gradient accumulation,
mixed precision and DDP). Only the LoRA parameters train; every base parameter is frozen. Adapters are
saved and reloaded with peft (:meth:`MusicDPOTrainer.save_adapter`, :func:`load_adapter`).

With ``output_dir`` set, ``output_dir`` is a run folder (:mod:`~deramos_reward.integrations.training.common`):
``settings.json``, ``log.jsonl`` and a checkpoint (adapter, optimizer, scheduler, RNG states, data
order, step, logs) every ``save_steps``; calling ``train()`` again on the same folder (the same command)
resumes mid-run and ends with the adapter an uninterrupted run gives. Other settings are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deramos_reward._optional import require
from deramos_reward.integrations.musicgen.audiocraft.backend import AUDIOCRAFT_LORA_TARGETS
from deramos_reward.integrations.musicgen.base import MusicGenBackend, adapter_disabled
from deramos_reward.integrations.musicgen.factory import musicgen_backend
from deramos_reward.integrations.musicgen.logprobs import SequenceLogProbs
from deramos_reward.integrations.musicgen.transformers.backend import TRANSFORMERS_LORA_TARGETS
from deramos_reward.integrations.training.common.checkpoints import (
    run_state,
    save_adapter,
)
from deramos_reward.integrations.training.common.lora import (
    attach_lora,
    default_lora_config,
)
from deramos_reward.integrations.training.common.runtime import (
    autocast,
    eval_mode,
    grad_norm,
    make_scheduler,
    resolve_bf16,
)
from deramos_reward.integrations.training.common.trainer import AdapterTrainer, check_process_group
from deramos_reward.integrations.training.dpo.config import TRL_SHARED_FIELDS, MusicDPOConfig
from deramos_reward.integrations.training.dpo.loss import dpo_loss
from deramos_reward.integrations.training.dpo.pairs import check_pairs, collate_pairs

__all__ = [
    "AUDIOCRAFT_LORA_TARGETS",
    "TRANSFORMERS_LORA_TARGETS",
    "TRL_SHARED_FIELDS",
    "MusicDPOConfig",
    "MusicDPOTrainer",
]

# ------------------------------------------------------------------------------------------ backends


class SequenceScorer(nn.Module):
    """``forward(prompts, codes [B, K, S]) -> (logps [B], counts [B])`` under the policy.

    A module of its own holding the policy (the peft model), so that ``accelerator.prepare`` (DDP)
    wraps the whole scoring pass; the backend runs the model.
    """

    def __init__(self, policy: nn.Module, backend: MusicGenBackend, keep_only_valid_steps: bool):
        super().__init__()
        self.policy = policy
        self.backend = backend
        self.keep_only_valid_steps = keep_only_valid_steps

    def score(self, prompts: list[str], codes: torch.Tensor) -> SequenceLogProbs:
        return self.backend.sequence_logprobs(
            prompts, codes, keep_only_valid_steps=self.keep_only_valid_steps
        )

    def forward(self, prompts: list[str], codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.score(prompts, codes)
        return out.logps, out.mask.sum(dim=(1, 2))


@dataclass
class _DPOLoop:
    """Where a DPO run stands (kept in checkpoints as JSON): the epoch, the batches of it already done,
    the shuffling generator's state at the start of the epoch, and the metric sums since the last log."""

    epoch: int = 0
    batch: int = 0
    order_state: list[int] | None = None
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    count: int = 0
    run_loss: float = 0.0
    run_count: int = 0
    grad_norms: list[float] = dataclasses.field(default_factory=list)


class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _collate(pairs: Any):
    def collate(indices: list[int]):
        rows = pairs.select_columns(["prompt", "chosen_codes", "rejected_codes"])[indices]
        rows = [dict(zip(rows, values)) for values in zip(*rows.values())]
        prompts, chosen, rejected = collate_pairs(rows)
        return torch.tensor(indices, dtype=torch.long), prompts, chosen, rejected

    return collate


# ------------------------------------------------------------------------------------------- trainer


class MusicDPOTrainer(AdapterTrainer):
    """DPO of a LoRA adapter on MusicGen's decoder from preference pairs.

    Args:
        model: transformers ``MusicgenForConditionalGeneration`` (needs ``processor``), AudioCraft ``MusicGen``
            or ``LMModel``, or a peft model of either (its adapter is trained further). A plain model gets a
            new LoRA adapter (``peft_config``, default :func:`default_lora_config` from the ``lora_*`` fields
            of ``args``), injected in place: the model you passed generates with the adapter afterwards.
        train_dataset: a pairs ``datasets.Dataset`` (columns ``prompt``, ``chosen_codes`` ``[K, S]``,
            ``rejected_codes``; see :func:`~deramos_reward.integrations.training.dpo.pairs.build_pairs`).
        args: :class:`MusicDPOConfig` (default settings when None).
        processor: the ``MusicgenProcessor`` (transformers backend only).
        eval_dataset: pairs scored by :meth:`evaluate` when it is called without a dataset.
        peft_config: a ``peft.LoraConfig`` replacing the default one.
        accelerator: an ``accelerate.Accelerator`` to use (default: one built from ``args``).
        callbacks: ``transformers.TrainerCallback`` objects (or classes), called as ``Trainer`` calls them.

    Attributes:
        policy: the ``peft.PeftModel`` (the transformers model, or AudioCraft's LM, with the adapter).
        backend: the :class:`~deramos_reward.integrations.musicgen.base.MusicGenBackend` the trainer runs the model through.
        log_history: one dict per logging step (trl's metric names) and a final summary.
        state, control: transformers' ``TrainerState`` / ``TrainerControl``, as callbacks see them.
    """

    name = "dpo"
    postfix = ("loss", "rewards/margins")

    def __init__(
        self,
        model: Any,
        train_dataset: Any,
        args: MusicDPOConfig | None = None,
        *,
        processor: Any = None,
        eval_dataset: Any = None,
        peft_config: Any = None,
        accelerator: Any = None,
        callbacks: Sequence[Any] | None = None,
    ):
        self.args = args if args is not None else MusicDPOConfig()
        if not isinstance(self.args, MusicDPOConfig):
            raise TypeError(f"args must be a MusicDPOConfig, got {type(self.args).__name__}")
        self.backend = musicgen_backend(model, processor)
        self.backend.check_ready()
        self.processor = processor
        self.train_dataset = check_pairs(train_dataset, name="train_dataset")
        self.eval_dataset = None if eval_dataset is None else check_pairs(eval_dataset, name="eval_dataset")
        already_adapted = isinstance(self.backend.trainable_module(), require("peft").PeftModel)
        if peft_config is None and not already_adapted:
            peft_config = default_lora_config(self.backend, self.args)
        self.policy = attach_lora(self.backend, peft_config=peft_config, seed=self.args.seed)
        self._own_accelerator = accelerator is None
        self.accelerator = self._new_accelerator() if accelerator is None else accelerator
        self.policy.to(self.accelerator.device)
        self.scorer = SequenceScorer(self.policy, self.backend, self.args.keep_only_valid_steps)
        self.log_history: list[dict[str, float]] = []
        self.global_step = 0
        if accelerator is not None:
            check_process_group(accelerator)
            self.bf16 = resolve_bf16(self.args.bf16, accelerator.device)
        self._init_callbacks(callbacks)

    # ---- scoring ----------------------------------------------------------------------------

    def sequence_logps(
        self, prompts: Sequence[str], codes: torch.Tensor, *, reference: bool = False
    ) -> SequenceLogProbs:
        """Log-probabilities of ``codes [B, K, S]`` given ``prompts`` under the policy (or, with
        ``reference=True``, the reference: adapter disabled), without gradient. -> ``SequenceLogProbs``."""
        codes = codes.to(self.device)
        with torch.no_grad(), self._dropout_off(), self._adapter(reference), autocast(self.device, self.bf16):
            return self.scorer.score(list(prompts), codes)

    def _adapter(self, reference: bool):
        return adapter_disabled(self.policy) if reference else contextlib.nullcontext()

    def _dropout_off(self):
        return eval_mode(self.accelerator.unwrap_model(self.policy))

    def _reference_pair_logps(self, prompts: list[str], chosen: torch.Tensor, rejected: torch.Tensor):
        both = self.sequence_logps(prompts + prompts, torch.cat([chosen, rejected]), reference=True).logps
        return both[: len(prompts)], both[len(prompts) :]

    def _precompute_reference(self, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs of every pair: ``(chosen [N], rejected [N])`` on the accelerator's device."""
        loader = torch.utils.data.DataLoader(
            _Indices(len(dataset)),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=_collate(dataset),
        )
        chosen_parts, rejected_parts = [], []
        for _, prompts, chosen, rejected in loader:
            c, r = self._reference_pair_logps(prompts, chosen.to(self.device), rejected.to(self.device))
            chosen_parts.append(c)
            rejected_parts.append(r)
        return torch.cat(chosen_parts), torch.cat(rejected_parts)

    def _loss(self, policy_c, policy_r, ref_c, ref_r, len_c, len_r):
        lengths = {}
        if self.args.loss_type == "ipo":
            lengths = {"chosen_lengths": len_c, "rejected_lengths": len_r}
        return dpo_loss(
            policy_c,
            policy_r,
            ref_c.to(policy_c.dtype),
            ref_r.to(policy_r.dtype),
            beta=self.args.beta,
            loss_type=self.args.loss_type,
            label_smoothing=self.args.label_smoothing,
            **lengths,
        )

    @staticmethod
    def _metrics(out, policy_c, policy_r) -> dict[str, torch.Tensor]:
        return {
            "loss": out.losses.detach().sum(),
            "rewards/chosen": out.chosen_rewards.sum(),
            "rewards/rejected": out.rejected_rewards.sum(),
            "rewards/margins": (out.chosen_rewards - out.rejected_rewards).sum(),
            "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float().sum(),
            "logps/chosen": policy_c.detach().sum(),
            "logps/rejected": policy_r.detach().sum(),
        }

    def _reduce(self, sums: dict[str, torch.Tensor], count: torch.Tensor) -> dict[str, float]:
        keys = sorted(sums)
        packed = torch.stack([sums[k].float() for k in keys] + [count.float()]).to(self.device)
        packed = self.accelerator.reduce(packed, reduction="sum")
        total = float(packed[-1])
        return {k: float(packed[i]) / max(total, 1.0) for i, k in enumerate(keys)}

    # ---- training ---------------------------------------------------------------------------
    def _total_steps(self, batches_per_epoch: int) -> tuple[int, int]:
        """-> (optimizer steps, epochs to iterate)."""
        per_epoch = max(1, math.ceil(batches_per_epoch / self.args.gradient_accumulation_steps))
        if self.args.max_steps > 0:
            total = self.args.max_steps
        else:
            total = max(1, math.ceil(self.args.num_train_epochs * per_epoch))
        return total, math.ceil(total / per_epoch)

    def _prepare_training(self):
        """-> (scorer, optimizer, loader, scheduler, trainable params, total steps, epochs), prepared by
        the accelerator. ``self._order`` is the generator that shuffles the pairs (its state at the start
        of an epoch fixes that epoch's order; checkpoints keep it)."""
        args = self.args
        self._order = torch.Generator().manual_seed(args.seed)
        loader = torch.utils.data.DataLoader(
            _Indices(len(self.train_dataset)),
            batch_size=args.per_device_train_batch_size,
            shuffle=True,
            generator=self._order,
            collate_fn=_collate(self.train_dataset),
        )
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
        scorer, optimizer, loader = self.accelerator.prepare(self.scorer, optimizer, loader)
        total, epochs = self._total_steps(len(loader))
        scheduler = make_scheduler(optimizer, args.lr_scheduler_type, args.warmup_steps, total)
        return scorer, optimizer, loader, scheduler, params, total, epochs

    def _pair_loss(self, scorer, prompts, chosen, rejected, refs):
        """Policy log-probs of chosen and rejected codes in one pass -> (DPOLoss, logps [2B])."""
        with autocast(self.device, self.bf16):
            logps, lengths = scorer(prompts + prompts, torch.cat([chosen, rejected]))
        logps = logps.float()
        b = len(prompts)
        return self._loss(logps[:b], logps[b:], *refs, lengths[:b], lengths[b:]), logps

    def _settings(self) -> dict[str, Any]:
        prompts = list(self.train_dataset["prompt"])
        return {
            **super()._settings(),
            "pairs": len(prompts),
            "pairs_prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
            "model": {"library": self.backend.name, "card": self.backend.card},
            "num_processes": self.accelerator.num_processes,
        }

    def _accumulate(self, loop: _DPOLoop, out, logps, b: int) -> None:
        for k, v in self._metrics(out, logps[:b], logps[b:]).items():
            loop.sums[k] = loop.sums.get(k, 0.0) + float(v)
        loop.count += b
        loop.run_loss += float(out.losses.detach().sum())
        loop.run_count += b

    def _log_row(self, loop: _DPOLoop, scheduler, epoch: float) -> dict[str, float]:
        sums = {k: torch.tensor(v, device=self.device) for k, v in loop.sums.items()}
        logs = self._reduce(sums, torch.tensor(float(loop.count), device=self.device))
        # the gradient is all-reduced before it is measured: every process has the same norms
        norms = loop.grad_norms
        logs.update(learning_rate=scheduler.get_last_lr()[0], epoch=epoch)
        logs["grad_norm"] = sum(norms) / len(norms) if norms else float("nan")
        loop.sums, loop.count, loop.grad_norms = {}, 0, []
        return logs

    def _epoch(self, epoch: int, loop: _DPOLoop, parts: tuple, ref_table) -> bool:
        """One pass over the pairs from ``loop.batch`` on -> True when ``max_steps`` is reached."""
        args, acc = self.args, self.accelerator
        scorer, optimizer, loader, scheduler, params, total, _ = parts
        norm, open_step = float("nan"), False
        for step, (indices, prompts, chosen, rejected) in enumerate(loader):
            if step < loop.batch:  # done before the checkpoint this run resumed from
                continue
            if not open_step:  # the first micro-batch of an optimizer step
                self._step_begin()
                open_step = True
            with acc.accumulate(scorer):
                if ref_table is not None:
                    refs = ref_table[0][indices], ref_table[1][indices]
                else:
                    refs = self._reference_pair_logps(prompts, chosen, rejected)
                out, logps = self._pair_loss(scorer, prompts, chosen, rejected, refs)
                acc.backward(out.losses.mean())
                if acc.sync_gradients:
                    norm = grad_norm(acc, params, args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            self._accumulate(loop, out, logps, len(prompts))
            loop.batch = step + 1
            if not acc.sync_gradients:
                continue
            open_step = False
            before = self.global_step
            loop.grad_norms.append(norm)
            scheduler.step()
            self.global_step += 1
            self.state.epoch = epoch + (step + 1) / len(loader)
            self._step_end()
            done = self.global_step >= total
            if self._due(args.logging_steps, before, done) or self._should_stop():
                self._log(self._log_row(loop, scheduler, self.state.epoch))
            if self._should_save(before, done) or self._should_stop():
                self._checkpoint(optimizer, scheduler, dataclasses.asdict(loop))
                self._after_save()
            if done or self._should_stop():
                return True
        return False

    def train(self, resume_from_checkpoint: bool | str | None = None) -> dict[str, float]:
        """Run DPO (or resume it); returns ``{"global_step", "train_loss", ...}`` (the last logged metrics
        included). ``resume_from_checkpoint``: None = the latest checkpoint of ``output_dir`` if any,
        True = it must exist, a path = that checkpoint folder. The policy is left in eval mode
        (AudioCraft's ``generate`` requires it)."""
        if self._own_accelerator:
            self.accelerator = self._new_accelerator()
        args, acc = self.args, self.accelerator
        parts = self._prepare_training()
        scorer, optimizer, _, scheduler, _, total, epochs = parts
        extra, rows = self._resume(optimizer, scheduler, resume_from_checkpoint)
        loop = _DPOLoop(**extra)
        ref_table = self._precompute_reference(self.train_dataset) if args.precompute_ref_log_probs else None
        policy = acc.unwrap_model(scorer).policy
        policy.train(not args.disable_dropout)
        self._begin(optimizer, scheduler, total, rows)
        try:
            for epoch in range(loop.epoch, epochs):
                if self.global_step >= total:
                    break
                if loop.order_state is not None and epoch == loop.epoch:
                    self._order.set_state(torch.tensor(loop.order_state, dtype=torch.uint8))
                else:
                    loop.epoch, loop.batch = epoch, 0
                    loop.order_state = self._order.get_state().tolist()
                if self._epoch(epoch, loop, parts, ref_table):
                    break
                loop.order_state = None
        finally:
            self._finish()
            policy.eval()
        summary = dict(self.log_history[-1]) if self.log_history else {}
        summary.pop("step", None)
        run = self._reduce({"loss": torch.tensor(loop.run_loss)}, torch.tensor(float(loop.run_count)))
        train_loss = run["loss"]
        summary.update(global_step=self.global_step, train_loss=train_loss)
        self.log_history.append({"global_step": self.global_step, "train_loss": train_loss})
        return summary

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self, dataset: Any = None) -> dict[str, float]:
        """DPO loss and implicit rewards on pairs (``eval_dataset`` by default), without gradient.

        Returns means over pairs under trl's names: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
        ``rewards/margins`` (implicit reward margin ``beta * (chosen log-ratio - rejected log-ratio)``),
        ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``.
        """
        dataset = self.eval_dataset if dataset is None else check_pairs(dataset, name="dataset")
        if dataset is None:
            raise ValueError("no dataset: pass one or give eval_dataset to the trainer")
        loader = torch.utils.data.DataLoader(
            _Indices(len(dataset)),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=_collate(dataset),
        )
        loader = self.accelerator.prepare_data_loader(loader)
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=self.device)
        for _, prompts, chosen, rejected in loader:
            b = len(prompts)
            both = torch.cat([chosen, rejected])
            policy = self.sequence_logps(prompts + prompts, both)
            ref = self.sequence_logps(prompts + prompts, both, reference=True).logps
            lengths = policy.mask.sum(dim=(1, 2))
            out = self._loss(policy.logps[:b], policy.logps[b:], ref[:b], ref[b:], lengths[:b], lengths[b:])
            for k, v in self._metrics(out, policy.logps[:b], policy.logps[b:]).items():
                sums[k] = sums.get(k, torch.zeros((), device=self.device)) + v.float()
            count += b
        return self._reduce(sums, count)

    # ---- saving -------------------------------------------------------------------------------
    def save_adapter(self, path: str | os.PathLike | None = None) -> Path:
        """Save the adapter with peft (``adapter_config.json`` + ``adapter_model.safetensors``), plus
        ``dpo_config.json`` and ``log_history.json``; ``path`` defaults to ``args.output_dir``.

        Written to a temporary sibling folder and renamed into place (an existing folder is replaced,
        except the run's resume state when ``path`` is ``output_dir``). Only the main process writes;
        every process waits for it.
        """
        if path is None:
            path = self.args.output_dir
        if path is None:
            raise ValueError("path is required when args.output_dir is None")
        run_dir = None if self.args.output_dir is None else Path(self.args.output_dir).resolve()
        keep = run_state(path) if Path(path).resolve() == run_dir else ()
        return save_adapter(
            self.policy, path, files=self._adapter_files(), keep=keep, accelerator=self.accelerator
        )
