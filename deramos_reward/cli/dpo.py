"""``deramos dpo``: DPO of a LoRA adapter on MusicGen's decoder from ``deramos pairs`` output.

The reference policy is the same model with the adapter switched off. The adapter is saved with peft
in OUT (``adapter_config.json``, ``adapter_model.safetensors``, plus ``dpo_config.json`` and
``log_history.json``); load it with ``deramos_reward.integrations.dpo.load_adapter(model, OUT)``.
A JSON summary (``global_step``, ``train_loss``, the last logged metrics and, with ``--eval-pairs``,
``eval/...`` metrics) is printed on stdout.

OUT is also the run folder: ``settings.json``, ``log.jsonl`` and ``checkpoint/`` (adapter, optimizer,
scheduler, RNG states, data order, step, logs) every ``--save-steps``. Running the same command again
after an interruption resumes mid-run and ends with the adapter an uninterrupted run gives; a command
with other settings is refused (use a new OUT).

Runs under ``accelerate launch`` for several GPUs or processes::

    accelerate launch -m deramos_reward.cli dpo --backend transformers --musicgen ... --pairs P --out A

``OUT/dpo_run.json`` records what made the adapter (backend, MusicGen, a sha256 of the pairs, the
options). A rerun into an OUT made from other inputs is refused (the same inputs: nothing to do);
``--overwrite`` trains again and replaces it. A folder that is not an adapter of ``deramos dpo`` is
never replaced.

``--musicgen tiny`` builds the tiny random MusicGen of the chosen backend offline (tests and demos).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from .._optional import require
from ..integrations.training.dpo.config import MusicDPOConfig
from . import provenance
from .musicgen import add_musicgen_arguments, load_backend
from .options import (
    CommandError,
    add_command,
    add_config_options,
    add_device_argument,
    check_output,
    make_config,
    resolve_device,
)


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(sub, name, "DPO-tune a LoRA adapter on MusicGen from preference pairs", __doc__)
    add_musicgen_arguments(p)
    p.add_argument("--pairs", required=True, metavar="DIR", help="pairs dataset folder (deramos pairs --out)")
    p.add_argument("--out", required=True, metavar="ADAPTER_DIR", help="where the adapter is saved")
    p.add_argument("--eval-pairs", metavar="DIR", help="held-out pairs to evaluate after training")
    p.add_argument("--overwrite", action="store_true", help="train again and replace the adapter in --out")
    add_config_options(p, MusicDPOConfig)
    p.add_argument("--precompute-ref", action="store_true", help="compute reference log-probs once up front")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    add_device_argument(p, "training (under accelerate launch: cpu or each process's GPU)")
    p.set_defaults(run=run)


RUN_RECORD = "dpo_run.json"


def _config(args: argparse.Namespace) -> MusicDPOConfig:
    fixed = {"output_dir": args.out, "precompute_ref_log_probs": args.precompute_ref, "bf16": args.bf16}
    if args.per_device_train_batch_size is not None:  # pairs are evaluated in batches of the training size
        fixed["per_device_eval_batch_size"] = args.per_device_train_batch_size
    return make_config(MusicDPOConfig, args, **fixed)


def _pairs_identity(path: str) -> dict:
    """``{"path", "sha256"}`` of a pairs dataset folder (every file in it)."""
    folder = Path(path)
    if not folder.is_dir():
        raise CommandError(f"pairs dataset {path!r} is not a folder (expected the --out of deramos pairs)")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {"path": path, "sha256": provenance.sha256_of(files)}


def _read_pairs(path: str, backend, what: str):
    """The pairs dataset at ``path``, checked against the MusicGen that will learn from it."""
    from ..integrations.training.dpo.pairs import load_pairs

    try:
        pairs = load_pairs(path)
    except (OSError, ValueError, TypeError) as err:
        raise CommandError(f"{what}: {str(err).splitlines()[0]}") from err
    for column in ("chosen_codes", "rejected_codes"):
        for n, codes in enumerate(pairs[column]):
            arr = np.asarray(codes)
            if arr.ndim != 2 or arr.shape[0] != backend.num_codebooks or arr.size == 0:
                raise CommandError(
                    f"{what}: row {n} has {column} of shape {list(arr.shape)}; this MusicGen needs "
                    f"[{backend.num_codebooks}, S] (were the pairs made with another model?)"
                )
            if arr.min() < 0 or arr.max() >= backend.card:
                raise CommandError(
                    f"{what}: row {n} has {column} outside 0..{backend.card - 1}, this MusicGen's codebook "
                    "(were the pairs made with another model?)"
                )
    return pairs


def _accelerator(args: argparse.Namespace, config: MusicDPOConfig):
    """None (the trainer's own: GPU when there is one) or a CPU accelerator for --device cpu."""
    device = resolve_device(args.device)  # unknown or missing device: one line, exit 2
    if args.device == "auto" or device.startswith("cuda"):
        return None
    if device != "cpu":
        raise CommandError(
            f"--device {args.device!r}: dpo takes auto, cpu or cuda (accelerate places the model)"
        )
    from ..integrations.training.common.runtime import make_accelerator

    return make_accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps, cpu=True)


def _config_changes(stored: dict, record: dict) -> str:
    """``name: OLD -> NEW; ...`` for the training settings that differ."""
    old, new = stored.get("config") or {}, record["config"]
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _check_out(out: Path, record: dict, overwrite: bool) -> dict | None:
    """The stored record when ``out`` holds the finished adapter of this very run (None otherwise: no
    folder, an interrupted run of the same inputs that the trainer resumes, or ``--overwrite``);
    CommandError when ``out`` holds a run of other inputs (or no run of ``deramos dpo``)."""
    if not out.exists():
        return None
    stored = provenance.read(out / RUN_RECORD)
    if stored is None:
        raise CommandError(
            f"{out} exists and has no {RUN_RECORD} (not an adapter written by deramos dpo); "
            "choose another --out (it is never replaced)"
        )
    diff = provenance.differences(stored, record, ignore=("summary",))
    if overwrite:  # a folder of deramos dpo (it has the record): start over
        shutil.rmtree(out)
        return None
    if diff:
        what = (
            f"config: {_config_changes(stored, record)}"
            if diff == ["config"]
            else provenance.describe(stored, record, diff[0])
        )
        raise CommandError(
            f"{out} holds an adapter made from other inputs ({what}); "
            "use --overwrite to train again and replace it, or another --out"
        )
    return stored if "summary" in stored else None


def run(args: argparse.Namespace) -> int:
    require("peft")  # the adapter; checked before anything slow
    require("datasets")  # the pairs
    from ..integrations.dpo import MusicDPOTrainer

    check_output(args.out, "--out", folder=True)
    config = _config(args)
    accelerator = _accelerator(args, config)
    record = {
        "backend": args.backend,
        "musicgen": args.musicgen,
        "pairs": _pairs_identity(args.pairs),
        "eval_pairs": _pairs_identity(args.eval_pairs) if args.eval_pairs else None,
        # what decides the adapter (not what is logged, saved or reported)
        "config": {k: v for k, v in config.to_dict().items() if k not in config.runtime_fields()},
    }
    out = Path(args.out)
    finished = _check_out(out, record, args.overwrite)
    if finished is not None:
        print(json.dumps(finished["summary"], indent=2))
        print(f"deramos dpo: {out} already holds the adapter of this run; nothing to do", file=sys.stderr)
        return 0
    backend = load_backend(args)
    pairs = _read_pairs(args.pairs, backend, "--pairs")
    eval_pairs = _read_pairs(args.eval_pairs, backend, "--eval-pairs") if args.eval_pairs else None
    trainer = MusicDPOTrainer(backend, pairs, config, eval_dataset=eval_pairs, accelerator=accelerator)
    if (
        trainer.accelerator.is_main_process
    ):  # before training: an interrupted run resumes only with these inputs
        out.mkdir(parents=True, exist_ok=True)
        provenance.write(out / RUN_RECORD, record)
    summary = trainer.train()
    if eval_pairs is not None:
        summary.update({f"eval/{k}": v for k, v in trainer.evaluate().items()})
    trainer.save_adapter(args.out)
    if trainer.accelerator.is_main_process:
        provenance.write(out / RUN_RECORD, {**record, "summary": summary})
        print(json.dumps(summary, indent=2))
        print(f"deramos dpo: saved the adapter to {args.out}", file=sys.stderr)
    return 0
