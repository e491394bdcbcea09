"""Train the DeRA-MOS heads on cached encoder features, with accelerate.

```python
from deramos_reward.training import TrainConfig, train
result = train(TrainConfig(model="tiny", max_epochs=30), "corpus/", "runs/tiny")
result.best["best_combined"]["path"]     # a DeRAMOS.save_pretrained folder
```

What a run writes under ``run_dir``:

- ``train_config.json``, ``data.json``: the config and a fingerprint of the clips and ratings (a
  resumed run must match both, except runtime fields; raising ``max_epochs`` or ``patience``
  extends a finished run; ``overwrite=True`` starts over, see ``run_folder``);
- ``log.jsonl``: one row per finished epoch (train loss and parts, validation loss and metrics,
  checkpoints saved, ``resumed_at`` = the first epoch of the process that wrote the row);
- ``best_loss/``, ``best_mi_sys_srcc/``, ``best_combined/``: the three checkpoints of the
  reference recipe (lowest validation loss; highest validation system-level MI SRCC; highest
  (utterance MI SRCC + system TA SRCC) / 2), each loadable with ``DeRAMOS.from_pretrained``;
- ``last/``: heads + optimizer + trackers after the latest finished epoch (see ``state``);
- ``summary.json``: best epochs, their validation metrics and what each checkpoint follows;
  ``features/``: the feature cache.

Undefined validation metrics (one system, constant ratings, too few clips) are logged as ``null``
and stated once; the checkpoints then follow a defined quantity instead (see ``selection``).

Resuming: run the same command again. Finished epochs are kept; the run continues from the
epoch after ``last/``. Randomness (shuffling, dropout) is re-derived at the start of every
epoch from ``(seed, epoch[, rank])``, so a resumed run computes exactly what an uninterrupted
run would. A finished run returns its result without training again.

Distributed: run unchanged under ``accelerate launch``. Only the heads are wrapped in DDP; the
main process extracts features first and the others read them from the cache. ``batch_size`` is
the global batch; each process takes its contiguous shard of every global batch. Validation
runs on every process over the whole validation set; decisions use the main process's numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
from tqdm.auto import tqdm

from .._optional import require
from ..checkpoint import atomic_write_bytes
from ..data import Example, load_dataset_split
from ..errors import InputError, InputTypeError
from ..heads import DeRAMOSHeads
from ..jsonl import append_rows, encode_rows, read_rows
from ..losses import deramos_loss
from ..metrics import evaluate_both, json_safe
from ..model import DeRAMOS
from ..seeding import derive_seed
from . import run_folder
from .config import TrainConfig
from .contrast import loss_forward
from .distributed import gather, gather_with_grad
from .features import FeatureSet, cached_feature_set, encoder_fingerprint, heads_forward
from .run_folder import LOG_FILE, SUMMARY_FILE
from .selection import EARLY_STOPPING, Selection, describe_plan, plan_selection
from .state import optimizer_state_dict, read_state, write_state

# checkpoint folder -> (validation quantity, True if higher is better)
CHECKPOINTS = {
    "best_loss": ("val_loss", False),
    "best_mi_sys_srcc": ("mi_sys_srcc", True),
    "best_combined": ("combined", True),
}
BACKBONE_SEED = 0
logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced.

    best: checkpoint name -> {"epoch", "value", "path", "metrics"}; history: the log rows;
    model: the model after the last epoch (in eval mode, heads on the training device).
    """

    run_dir: Path
    epochs: int
    stopped_early: bool
    best: dict[str, dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)
    model: DeRAMOS | None = None


def _improved(value: float, best: float | None, higher: bool) -> bool:
    """Is ``value`` better than ``best``? The first epoch always counts (so every checkpoint
    exists), an undefined value (nan: constant predictions) never beats a defined one."""
    if best is None:
        return True
    if value is None or math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if higher else value < best


@torch.no_grad()
def predict_features(
    heads: torch.nn.Module, data: FeatureSet, batch_size: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads in eval mode over every clip of ``data`` -> (mi [C], ta [C]) float32 on the CPU."""
    was_training = heads.training
    heads.eval()
    mi, ta = [], []
    try:
        for start in range(0, len(data), batch_size):
            out = heads_forward(heads, data.batch(range(start, min(start + batch_size, len(data))), device))
            mi.append(out.mi.float().cpu())
            ta.append(out.ta.float().cpu())
    finally:
        heads.train(was_training)
    return torch.cat(mi), torch.cat(ta)


@torch.no_grad()
def validation_loss(
    heads: torch.nn.Module, data: FeatureSet, config: TrainConfig, device
) -> dict[str, float]:
    """Mean (by clips) of the training loss and its parts over ``data`` in fixed batches of ``batch_size``."""
    was_training = heads.training
    heads.eval()
    sums: dict[str, float] = {}
    try:
        for start in range(0, len(data), config.batch_size):
            idx = list(range(start, min(start + config.batch_size, len(data))))
            out, contrast = loss_forward(heads, data, idx, device, config.loss.use_contrast)
            _, parts = deramos_loss(
                out, data.mi[idx].to(device), data.ta[idx].to(device), config.loss, contrast_inputs=contrast
            )
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
    finally:
        heads.train(was_training)
    return {k: v / len(data) for k, v in sums.items()}


def validation_metrics(
    heads: torch.nn.Module, data: FeatureSet, config: TrainConfig, device
) -> dict[str, Any]:
    """Validation loss (+ parts), the four metrics per axis and level, and the two selection scores."""
    mi, ta = predict_features(heads, data, config.eval_batch_size, device)
    metrics = evaluate_both(mi, data.mi, ta, data.ta, data.systems)
    loss = validation_loss(heads, data, config, device)
    return {
        "val_loss": loss["total"],
        "val_parts": {k: v for k, v in loss.items() if k != "total"},
        "metrics": metrics,
        "mi_sys_srcc": metrics["MI"]["system"]["SRCC"],
        "combined": (metrics["MI"]["utterance"]["SRCC"] + metrics["TA"]["system"]["SRCC"]) / 2,
    }


def _load_split(data: str | os.PathLike, split: str, what: str, config: TrainConfig) -> list[Example]:
    examples = load_dataset_split(data, split, config.rating_scale)
    unlabeled = [ex.wav_id for ex in examples if not ex.labeled]
    if unlabeled:
        raise InputError(
            f"{what} split {split!r} of {os.fspath(data)!r} has clips without MI/TA labels "
            f"(first: {unlabeled[0]!r}); training needs every clip rated"
        )
    for ex in examples:  # a file that cannot be read fails the run now, not after hours of extraction
        try:
            sf.info(ex.path)
        except Exception as err:
            raise InputError(
                f"audio file {ex.path!r} (clip {ex.wav_id!r}) could not be read as audio: {err}"
            ) from err
    return examples


def load_data(
    config: TrainConfig, data: str | os.PathLike, val_data: str | os.PathLike | None
) -> tuple[list[Example], list[Example]]:
    """The rated training and validation clips (every check on them happens here, before any writing)."""
    train_examples = _load_split(data, config.train_split, "training", config)
    val_examples = _load_split(
        val_data if val_data is not None else data, config.val_split, "validation", config
    )
    if [e.wav_id for e in train_examples] == [e.wav_id for e in val_examples]:
        raise InputError(
            f"the training and validation splits of {os.fspath(data)!r} are the same clips (a manifest "
            "without 'split' keys gives every split all lines); add 'split' keys or pass separate validation data"
        )
    return train_examples, val_examples


def _make_accelerator(config: TrainConfig):
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InputError("TrainConfig.device is 'cuda' but no CUDA GPU is available; use 'cpu' or 'auto'")
    accelerate = require("accelerate")
    from accelerate.utils import DistributedDataParallelKwargs

    # Without SAMA the alignment pooling gets no gradient; DDP must be told to expect that.
    kwargs = DistributedDataParallelKwargs(find_unused_parameters=not config.loss.use_sama)
    return accelerate.Accelerator(
        cpu=config.device == "cpu", mixed_precision=config.mixed_precision, kwargs_handlers=[kwargs]
    )


def _build_model(config: TrainConfig, resume_dir: Path | None) -> DeRAMOS:
    """The model to train: resumed, loaded from ``init_from``, or new.

    A new model's backbones built from a config (the tiny random ones) come from a fixed seed
    (``BACKBONE_SEED``), so runs that differ only in ``seed`` share one backbone and one feature
    cache; ``seed`` initialises the heads.
    """
    if resume_dir is not None:
        model = DeRAMOS.from_pretrained(resume_dir / "model")
    elif config.init_from is not None:
        model = DeRAMOS.from_pretrained(config.init_from)
    else:
        cfg = config.model_config()
        torch.manual_seed(BACKBONE_SEED)
        model = DeRAMOS(cfg)
        torch.manual_seed(config.seed)
        model.heads = DeRAMOSHeads(
            model.audio_encoder.dim, model.text_encoder.dim, cfg, model.text_encoder.pooling
        )
    return model.train()


def _batches(n: int, batch_size: int, world: int, seed: int, epoch: int) -> list[list[int]]:
    """This epoch's global batches of clip indices (a fresh shuffle; full batches only)."""
    size = min(batch_size, n)
    if size % world:
        raise ValueError(
            f"batch_size {size} (global batch) must be divisible by the number of processes ({world})"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch))).tolist()
    return [order[s : s + size] for s in range(0, n - size + 1, size)]


@dataclass
class _Fit:
    """What the epoch loop works with (built once per call of ``train``)."""

    config: TrainConfig
    run_dir: Path
    accelerator: Any
    model: DeRAMOS
    heads: torch.nn.Module  # DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    train_set: FeatureSet
    val_set: FeatureSet
    plan: dict[str, Selection]

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def train(
    config: TrainConfig,
    data: str | os.PathLike,
    run_dir: str | os.PathLike,
    val_data: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or resume) a run; see the module doc for what ``run_dir`` holds.

    Args:
        config: the recipe.
        data: a MusicEval-layout folder or a JSONL manifest; ``config.train_split`` is read from it.
        run_dir: where checkpoints, logs and the resumable state go.
        val_data: where ``config.val_split`` is read from (default: ``data``).
        overwrite: start over in ``run_dir`` instead of resuming the run it holds.
    """
    if not isinstance(config, TrainConfig):
        raise InputTypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    run_dir = Path(run_dir)
    train_examples, val_examples = load_data(config, data, val_data)
    accelerator = _make_accelerator(config)
    with run_folder.cleanup_failed_start(run_dir, accelerator.is_main_process):
        if accelerator.is_main_process:
            record = run_folder.data_record(train_examples, val_examples, config)
            run_folder.prepare(run_dir, config, record, overwrite)
        accelerator.wait_for_everyone()
        resumed = read_state(run_dir)
        state: dict[str, Any] = _reopen(resumed[1], config, run_dir) if resumed else {}
        if state.get("done"):
            return _result(run_dir, state, DeRAMOS.from_pretrained(resumed[0] / "model"))
        fit = _setup(config, run_dir, accelerator, train_examples, val_examples, resumed)
        state = _fit(fit, state)
    return _result(run_dir, state, fit.model.eval())


def _reopen(state: dict[str, Any], config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """A saved state, re-judged under this call's ``max_epochs`` / ``patience`` (which may extend it)."""
    epoch = int(state.get("epoch", 0))
    if epoch > config.max_epochs:
        raise InputError(
            f"{run_dir} already holds {epoch} epochs, more than max_epochs={config.max_epochs}; "
            f"use max_epochs >= {epoch}, --overwrite to start over, or another --out folder"
        )
    since = int(state.get("since_improvement", 0))
    stopped = config.patience > 0 and since >= config.patience
    return {**state, "stopped_early": stopped, "done": stopped or epoch >= config.max_epochs}


def _setup(config, run_dir, accelerator, train_examples, val_examples, resumed) -> _Fit:
    """Model, cached features, optimizer, checkpoint-selection plan (stated once when it differs)."""
    model = _build_model(config, resumed[0] if resumed else None)
    device = accelerator.device
    extract = dict(
        device=device,
        batch_size=config.extract_batch_size,
        max_seconds=config.max_seconds,
        num_workers=config.num_workers,
        feature_dtype=config.feature_dtype,
        progress=config.progress and accelerator.is_main_process,
    )
    cache = config.feature_cache or os.fspath(run_dir / "features")
    with accelerator.main_process_first():  # the main process fills the cache, the others read it
        key = encoder_fingerprint(model)
        train_set = cached_feature_set(model, train_examples, cache, config.train_split, key, **extract)
        val_set = cached_feature_set(model, val_examples, cache, config.val_split, key, **extract)
    model.audio_encoder.to("cpu")
    model.text_encoder.to("cpu")
    model.heads.to(device)
    optimizer = torch.optim.AdamW(model.heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if resumed:
        optimizer.load_state_dict(optimizer_state_dict(resumed[0] / "optimizer.safetensors"))
    heads, optimizer = accelerator.prepare(model.heads, optimizer)
    plan, undefined = plan_selection(val_set.mi.tolist(), val_set.ta.tolist(), val_set.systems)
    if accelerator.is_main_process:
        for line in describe_plan(plan, undefined):
            logger.warning("deramos train: %s", line)
    return _Fit(config, run_dir, accelerator, model, heads, optimizer, train_set, val_set, plan)


def _train_epoch(fit: _Fit, epoch: int) -> tuple[dict[str, float], int]:
    """One epoch of optimizer steps -> (mean loss parts over its batches and processes, steps)."""
    config, accelerator, train_set = fit.config, fit.accelerator, fit.train_set
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    torch.manual_seed(derive_seed(config.seed, epoch, rank))  # dropout stream of this epoch and rank
    fit.heads.train()
    sums: dict[str, float] = {}
    batches = _batches(len(train_set), config.batch_size, world, config.seed, epoch)
    for global_idx in batches:
        shard = len(global_idx) // world
        idx = global_idx[rank * shard : (rank + 1) * shard]
        mi_t, ta_t = train_set.mi[idx].to(device), train_set.ta[idx].to(device)
        with accelerator.autocast():
            out, contrast = loss_forward(fit.heads, train_set, idx, device, config.loss.use_contrast)
            balr = None
            if config.gather_balr and config.loss.use_balr and world > 1:
                balr = (gather_with_grad(out.mi.float()), gather(mi_t))
            loss, parts = deramos_loss(
                out, mi_t, ta_t, config.loss, balr_inputs=balr, contrast_inputs=contrast
            )
        accelerator.backward(loss)
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(fit.heads.parameters(), config.max_grad_norm)
        fit.optimizer.step()
        fit.optimizer.zero_grad(set_to_none=True)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    keys = sorted(sums)
    local = torch.tensor([sums[k] / max(1, len(batches)) for k in keys], dtype=torch.float64, device=device)
    averaged = accelerator.reduce(local, reduction="mean").tolist() if world > 1 else local.tolist()
    return dict(zip(keys, averaged)), len(batches)


def _restored(value: float | None) -> float:
    """A tracked value read back from JSON: null (undefined) is nan again, as before the save."""
    return math.nan if value is None else value


def _select(fit: _Fit, row: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Save the checkpoints this epoch improves and update the early-stopping trackers -> new state."""
    best = dict(state.get("best", {}))
    saved = []
    for name, sel in fit.plan.items():
        value = row["selection"][name]
        if _improved(value, _restored(best[name]["value"]) if name in best else None, sel.higher):
            best[name] = {
                "epoch": row["epoch"],
                "value": value,
                "quantity": sel.label,
                "metrics": row["metrics"],
            }
            saved.append(name)
            if fit.main:
                fit.model.save_pretrained(fit.run_dir / name)
    row["saved"] = saved
    watched = EARLY_STOPPING[fit.config.early_stopping]
    value, since = row["selection"][watched], int(state.get("since_improvement", 0))
    previous = _restored(state["stop_best"]) if "stop_best" in state else None
    stop_best = state.get("stop_best")
    if _improved(value, previous, fit.plan[watched].higher):
        stop_best, since = value, 0
    else:
        since += 1
    stopped = fit.config.patience > 0 and since >= fit.config.patience
    return {
        "epoch": row["epoch"],
        "best": best,
        "stop_best": stop_best,
        "since_improvement": since,
        "stopped_early": stopped,
        "done": stopped or row["epoch"] >= fit.config.max_epochs,
        "seed": fit.config.seed,
    }


def _fit(fit: _Fit, state: dict[str, Any]) -> dict[str, Any]:
    """Epochs from the one after ``state`` up to ``max_epochs`` or early stopping -> the final state."""
    config, accelerator, run_dir = fit.config, fit.accelerator, fit.run_dir
    start = int(state.get("epoch", 0)) + 1
    if fit.main:  # drop log rows of epochs that finished after the saved state (killed in between)
        rows = [r for r in read_rows(run_dir / LOG_FILE) if r.get("epoch", 0) < start]
        atomic_write_bytes(run_dir / LOG_FILE, encode_rows(rows))
    plain_heads = accelerator.unwrap_model(fit.heads)
    show = config.progress and fit.main
    bar = tqdm(
        range(start, config.max_epochs + 1), disable=not show, desc="epochs", unit="epoch", file=sys.stderr
    )
    for epoch in bar:
        train_parts, steps = _train_epoch(fit, epoch)
        val = validation_metrics(plain_heads, fit.val_set, config, accelerator.device)
        if accelerator.num_processes > 1:  # every process acts on the main process's numbers
            from accelerate.utils import broadcast_object_list

            val = broadcast_object_list([val])[0]
        row = {
            "epoch": epoch,
            "train_loss": train_parts.pop("total", math.nan),
            "train_parts": train_parts,
            **val,
            "selection": {name: sel.value(val) for name, sel in fit.plan.items()},
            "steps": steps,
            "resumed_at": start,  # first epoch of the process that wrote this row
        }
        state = _select(fit, row, state)
        if fit.main:
            append_rows(run_dir / LOG_FILE, [json_safe(row)])
            write_state(run_dir, fit.model, fit.optimizer, json_safe(state))
            _write_summary(run_dir, state, fit.plan)
            bar.set_postfix(
                loss=f"{row['train_loss']:.3f}", val=f"{row['val_loss']:.3f}", mi_sys=_fmt(row["mi_sys_srcc"])
            )
        accelerator.wait_for_everyone()
        if state["done"]:
            break
    bar.close()
    if not state.get("done"):  # max_epochs was already reached before this call: mark it finished
        state = {**state, "done": True}
        if fit.main:
            write_state(run_dir, fit.model, fit.optimizer, json_safe(state))
            _write_summary(run_dir, state, fit.plan)
    accelerator.wait_for_everyone()
    return state


def _fmt(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.3f}"


def _write_summary(run_dir: Path, state: dict[str, Any], plan: dict[str, Selection]) -> None:
    summary = {
        "epochs": state["epoch"],
        "stopped_early": state["stopped_early"],
        "done": state["done"],
        "best": {name: {**b, "path": str(run_dir / name)} for name, b in state["best"].items()},
        "selection": {name: {"quantity": sel.label, "fallback": sel.note} for name, sel in plan.items()},
    }
    atomic_write_bytes(run_dir / SUMMARY_FILE, json.dumps(json_safe(summary), indent=1).encode())


def _result(run_dir: Path, state: dict[str, Any], model: DeRAMOS) -> TrainResult:
    best = {name: {**b, "path": str(run_dir / name)} for name, b in state.get("best", {}).items()}
    return TrainResult(
        run_dir=run_dir,
        epochs=int(state.get("epoch", 0)),
        stopped_early=bool(state.get("stopped_early", False)),
        best=json_safe(best),
        history=read_rows(run_dir / LOG_FILE),
        model=model,
    )
