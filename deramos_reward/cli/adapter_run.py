"""The run folder of ``deramos rl`` (both methods): what made the run, and whether RUN may take it.

``RUN/rl_run.json`` records what the trainer's own ``settings.json`` cannot see: the method, the
MusicGen, the judge (its path and a sha256 of its files, as ``deramos generate`` records it), the
reward's weights and shaping, the sampling options and the prompts (a sha256 of them). A rerun into
RUN with any of these changed is refused before anything loads, naming the change; ``--overwrite``
starts over. A folder with files but no run of ``deramos rl`` is never written into.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import provenance
from .options import CommandError, new_folder, resolve_device

RUN_RECORD = "rl_run.json"
# what deramos rl itself writes into RUN besides the trainer's run state: --overwrite removes these, the
# trainer's entries (settings, log, checkpoints, event files) and temporary folders of interrupted saves
RUN_FILES = (RUN_RECORD, "adapter")
TEMPORARY = (".checkpoint*", ".adapter.*")
# reward settings of MusicRLConfig (MusicBackpropConfig has none: its weights are options of the command)
REWARD_FIELDS = ("mi_weight", "ta_weight", "normalize_per_axis", "uncertainty_penalty", "diversity_weight")


def is_main_process() -> bool:
    """This process writes and removes run files (rank 0 under ``accelerate launch``/``torchrun``)."""
    return os.environ.get("RANK", "0") == "0"


def prompts_identity(prompts: list[str] | None, source: str | None) -> dict[str, Any] | None:
    """``{"path", "count", "sha256"}`` of a prompt list (``source``: its file, or ``--prompt``)."""
    if prompts is None:
        return None
    digest = hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()
    return {"path": source or "--prompt", "count": len(prompts), "sha256": digest}


def run_record(
    args: Any, config: Any, reward: dict[str, Any], prompts: list[str], eval_prompts: list[str] | None
) -> dict[str, Any]:
    """What made a run (flat keys, so a refusal names the very setting that changed)."""
    sampling = {
        "guidance_scale": config.guidance_scale,
        "temperature": config.temperature,
        "top_k": config.top_k,
        **(config.generation_kwargs or {}),
    }
    return {
        "method": args.method,
        "backend": args.backend,
        "musicgen": args.musicgen,
        "judge": provenance.checkpoint_identity(args.judge),
        **{f"reward.{k}": v for k, v in reward.items()},
        **{f"sampling.{k}": v for k, v in sampling.items()},
        "duration": config.duration,
        "prompts": prompts_identity(prompts, args.prompts),
        "eval_prompts": prompts_identity(eval_prompts, args.eval_prompts),
    }


def check_run_folder(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """CommandError when ``out`` cannot take this run: it holds files but no run of ``deramos rl``
    (even with --overwrite), or a run made with other settings (unless --overwrite)."""
    if not out.exists() or not any(out.iterdir()):
        return
    stored = provenance.read(out / RUN_RECORD)
    if stored is None:
        if started(out):
            return  # a run of an earlier deramos rl, which had no record: the trainer checks its settings
        raise CommandError(
            f"--out {str(out)!r} holds files but no run of deramos rl (no {RUN_RECORD}); "
            "choose another --out (it is never written into)"
        )
    if not overwrite and started(out):  # a record without a started run describes nothing yet
        provenance.check(out / RUN_RECORD, record, str(out))


def started(out: Path) -> bool:
    """Has a run begun in ``out`` (the trainer wrote its settings)?"""
    return (out / "settings.json").is_file()


def clear_run(out: Path) -> None:
    """--overwrite: remove what a run of deramos rl wrote into ``out`` (nothing else)."""
    if not out.is_dir():
        return
    from ..integrations.training.common.checkpoints import run_state

    for name in (*RUN_FILES, *run_state(out)):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for pattern in TEMPORARY:
        for tmp in out.glob(pattern):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def first_start(out: Path, finished: Callable[[Path], bool]) -> Iterator[None]:
    """For the block: RUN, created when missing. When the block fails before the run holds finished work
    (``finished``), what this start wrote goes again: the folder it created, or the run files it wrote
    into a folder that held no run; so a failed first start leaves nothing behind."""
    fresh = not started(out)
    with new_folder(out, finished):
        try:
            yield
        except BaseException:
            if fresh and out.is_dir() and not finished(out):
                clear_run(out)
            raise


@contextlib.contextmanager
def training_device(spec: str) -> Iterator[None]:
    """``--device``: auto (a GPU when there is one), cpu or cuda; accelerate places each process.

    ``cpu`` holds accelerate on the CPU for the block (``ACCELERATE_USE_CPU``), even with a GPU."""
    device = resolve_device(spec)  # unknown or missing device: one line, exit 2
    if spec != "auto" and device != "cpu" and device != "cuda":
        raise CommandError(f"--device {spec!r}: rl takes auto, cpu or cuda (accelerate places the model)")
    if device != "cpu" or spec == "auto":
        yield
        return
    before = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = before
