"""``deramos score``: score files against prompts; resumable JSONL (or CSV) output.

Output rows are ``{"index", "path", "prompt", "mi", "ta"}``, or ``"error"`` instead of the scores
for an input that could not be read or scored; the exit code is 1 when any row has an error. A row
whose audio was scored but looks wrong (a truncated file; float samples beyond +-2, i.e. integer
PCM stored as float) also has a ``"warning"``.

``OUT.meta.json`` records the model that made the rows (its path and a sha256 of its files). A rerun
with another model is refused; ``--overwrite`` starts over. Batch size and device do not change the
scores (beyond float rounding), so a run may be resumed with other values.

With ``--out`` every batch of rows is appended with one write + fsync, so a killed run loses at
most the batch in flight: the same command again skips the rows on disk (checking they belong to
the same inputs), cuts a torn last line and scores the rest. ``.csv`` output is written atomically
at the end from a ``<out>.partial.jsonl`` kept while the job runs.

Under ``accelerate launch`` / ``torchrun`` (K processes) each rank scores every K-th pending input
into ``<out>.part-RRRRR-of-KKKKK.jsonl`` and rank 0 merges the parts into ``--out`` in input order
(see ``deramos_reward.sharding``); the result is the same as with one process.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import warnings
from pathlib import Path

import soundfile as sf
import torch
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_bytes
from ..frontend import items_to_clips
from ..jsonl import append_rows, read_rows, write_rows
from ..sharding import (
    Shard,
    barrier,
    device_for,
    find_parts,
    init_distributed,
    part_path,
    shard_from_env,
    shutdown,
    take,
)
from . import provenance
from .options import CommandError, add_command, add_device_argument, check_output, resolve_device

CSV_FIELDS = ["path", "prompt", "mi", "ta", "error", "warning"]
META_SUFFIX = ".meta.json"
# Reading a file can fail in many ways (missing, corrupt, too large for memory): each becomes
# that input's error row and the run goes on.
READ_ERRORS = (ValueError, TypeError, OSError, MemoryError, RuntimeError)


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(sub, name, "score audio files (MI and TA, 1-5)", __doc__)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--prompt", help="the prompt for every FILE")
    p.add_argument(
        "--manifest", help='JSONL with lines {"path": ..., "prompt": ...}; relative paths are from its folder'
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files (with --prompt)")
    p.add_argument("--out", help="output .jsonl (resumable) or .csv; default: JSONL on stdout")
    p.add_argument("--overwrite", action="store_true", help="start --out over instead of resuming it")
    add_device_argument(p, "the model")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="when resuming, score again the inputs whose rows have an error (e.g. after fixing files)",
    )
    p.set_defaults(run=run)


def read_jobs(args: argparse.Namespace) -> list[dict]:
    """Inputs as [{"index", "path", "prompt", "file"}]: ``file`` is where to read, ``path`` as given."""
    if args.manifest and (args.files or args.prompt):
        raise CommandError("give either --manifest or --prompt with FILEs, not both")
    if args.manifest:
        from ..data import read_manifest_entries

        entries = read_manifest_entries(args.manifest)
        return [
            {"index": i, "path": e.path, "prompt": e.prompt, "file": e.file} for i, e in enumerate(entries)
        ]
    if not args.files:
        raise CommandError("no input: give FILEs with --prompt, or --manifest")
    if args.prompt is None:
        raise CommandError("--prompt is required with FILEs")
    return [{"index": i, "path": f, "prompt": args.prompt, "file": f} for i, f in enumerate(args.files)]


def _duration(path: str) -> float:
    """Seconds of audio a file's header announces (0 when it cannot be read: its row is an error)."""
    try:
        return float(sf.info(path).duration)
    except Exception:
        return 0.0


def _describe(err: BaseException) -> str:
    message = str(err).strip() or type(err).__name__
    return message if isinstance(err, (ValueError, TypeError)) else f"{type(err).__name__}: {message}"


def _score_good(model, waves, prompts, batch_size, cache, advance) -> list[dict | BaseException]:
    """Scores for readable clips; if the batch fails, each clip alone (so one bad clip is one bad row)."""
    from ..scoring import score_clips

    try:
        return score_clips(model, waves, prompts, batch_size, prompt_cache=cache, on_progress=advance)
    except (RuntimeError, MemoryError, ValueError) as err:
        if len(waves) == 1:
            return [err]
    out: list[dict | BaseException] = []
    for wave, prompt in zip(waves, prompts):
        try:
            out.extend(score_clips(model, [wave], [prompt], 1, prompt_cache=cache, on_progress=advance))
        except (RuntimeError, MemoryError, ValueError) as err:
            out.append(err)
    return out


def _read(job: dict, sample_rate: int) -> tuple[dict, torch.Tensor | None]:
    """(row, wave at ``sample_rate`` or None); reading problems go to the row's error/warning."""
    from ..errors import AudioInputWarning
    from ..validation import check_prompts

    row = {"index": job["index"], "path": job["path"], "prompt": job["prompt"]}
    wave = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AudioInputWarning)
        try:
            check_prompts([job["prompt"]], name=f"prompt of {job['path']!r}")
            wave = items_to_clips([job["file"]], None, sample_rate, name="audio").waves[0]
        except READ_ERRORS as err:
            row["error"] = _describe(err)
    notes = []
    for w in caught:
        if issubclass(w.category, AudioInputWarning):
            notes.append(str(w.message))
        else:  # not ours to keep: pass it on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if notes and "error" not in row:
        row["warning"] = " | ".join(notes)
    return row, wave


class _BatchProgress:
    """Advances a progress bar by one batch's seconds of audio, never past the batch's total."""

    def __init__(self, bar: tqdm, total: float):
        self.bar, self.left = bar, total

    def __call__(self, seconds: float) -> None:
        step = max(0.0, min(seconds, self.left))
        self.left -= step
        self.bar.update(step)
        if self.bar.total is not None and self.bar.n > self.bar.total:  # float rounding of the sums
            self.bar.n = self.bar.total

    def finish(self) -> None:
        self(self.left)


def score_jobs(model, jobs: list[dict], batch_size: int, progress: bool, desc: str = "scoring"):
    """Yield finished rows batch by batch; an input that cannot be read or scored gets ``error``.

    The progress bar counts seconds of audio (from the files' headers), advancing as the windows
    of long clips are scored.
    """
    from ..prompt_cache import PromptCache

    cache = PromptCache(model.text_encoder)
    seconds = [_duration(job["file"]) for job in jobs] if progress else [0.0] * len(jobs)
    bar = tqdm(
        total=sum(seconds),
        disable=not progress,
        desc=desc,
        unit="s",
        unit_scale=True,
        file=sys.stderr,
    )
    bar.set_postfix_str(f"{len(jobs)} clips")
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        advance = _BatchProgress(bar, sum(seconds[start : start + batch_size]))
        rows, good, waves = [], [], []
        for job in batch:
            row, wave = _read(job, model.sample_rate)
            if wave is not None:
                good.append(row)
                waves.append(wave)
            rows.append(row)
        if good:
            results = _score_good(model, waves, [r["prompt"] for r in good], batch_size, cache, advance)
            for row, res in zip(good, results):
                if isinstance(res, BaseException):
                    row["error"] = f"scoring failed: {_describe(res)}"
                    row.pop("warning", None)
                elif not all(math.isfinite(v) for v in res.values()):
                    row["error"] = f"scoring gave a non-finite score {res}"
                    row.pop("warning", None)
                else:
                    row.update(res)
        advance.finish()  # unreadable files and rounding: the batch counts in full
        yield rows
    bar.close()


def collect_rows(paths: list[Path], jobs: list[dict]) -> dict[int, dict]:
    """Rows already on disk, by input index; a row that is not for this job's inputs is an error.

    Several rows for one input (a retried error, or parts merged twice) keep the one without an
    error, else the first.
    """
    by_index: dict[int, dict] = {}
    for path in paths:
        for row in read_rows(path, repair=False):
            index = row.get("index")
            job = jobs[index] if isinstance(index, int) and 0 <= index < len(jobs) else None
            if job is None or row.get("path") != job["path"] or row.get("prompt") != job["prompt"]:
                raise CommandError(
                    f"{path} holds a row for another input ({json.dumps(row, ensure_ascii=False)[:120]}); "
                    "it was written by a run over a different manifest or file list: remove it or choose "
                    "another --out"
                )
            previous = by_index.get(index)
            if previous is None or ("error" in previous and "error" not in row):
                by_index[index] = row
    return by_index


def read_finished_csv(out: Path, jobs: list[dict]) -> dict[int, dict]:
    """Rows of a CSV written by an earlier, finished run over the same inputs ({} if it is not)."""
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    same = len(rows) == len(jobs) and all(
        r.get("path") == j["path"] and r.get("prompt") == j["prompt"] for r, j in zip(rows, jobs)
    )
    if not same:
        return {}
    done = {}
    for r, j in zip(rows, jobs):
        row = {"index": j["index"], "path": j["path"], "prompt": j["prompt"]}
        if r.get("error"):
            row["error"] = r["error"]
        else:
            row.update(mi=float(r["mi"]), ta=float(r["ta"]))
        if r.get("warning"):
            row["warning"] = r["warning"]
        done[j["index"]] = row
    return done


def _in_order(path: Path, count: int) -> bool:
    """Whether ``path`` holds exactly one row per input, in input order."""
    return [r.get("index") for r in read_rows(path, repair=False)] == list(range(count))


def _finish(out: Path, stream: Path, as_csv: bool, jobs: list[dict], known: dict[int, dict]) -> list[dict]:
    """Rank 0, after every rank is done: one row per input, in input order, in ``out``.

    ``known``: rows of a finished CSV from an earlier run (rows on disk take precedence).
    """
    parts = find_parts(stream)
    done = {**known, **collect_rows([stream, *parts], jobs)}
    missing = [j["path"] for j in jobs if j["index"] not in done]
    if missing:
        raise CommandError(f"{len(missing)} inputs have no row after scoring (first: {missing[0]!r})")
    ordered = [done[j["index"]] for j in jobs]
    if as_csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ordered)
        atomic_write_bytes(out, buf.getvalue().encode())
        for p in [stream, *parts]:
            p.unlink(missing_ok=True)
    elif parts or not _in_order(stream, len(jobs)):
        write_rows(stream, ordered)
        for p in parts:
            p.unlink(missing_ok=True)
    return ordered


def _score_to_stdout(args: argparse.Namespace, jobs: list[dict], device: str) -> int:
    from ..model import DeRAMOS

    model = DeRAMOS.from_pretrained(args.model, device=device)
    failed = warned = 0
    for rows in score_jobs(model, jobs, args.batch_size, progress=True):
        for r in rows:
            print(json.dumps(r, ensure_ascii=False), flush=True)
            failed += "error" in r
            warned += "warning" in r
    return _report(failed, warned, len(jobs))


def _report(failed: int, warned: int, total: int) -> int:
    if warned:
        print(
            f"deramos score: {warned} of {total} inputs have warnings (see the 'warning' field)",
            file=sys.stderr,
        )
    if failed:
        print(f"deramos score: {failed} of {total} inputs failed (see the 'error' field)", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if shard_from_env().distributed and not args.out:
        raise CommandError("--out is required with several processes (rank 0 merges their rows into it)")
    check_output(args.out, "--out", folder=False)
    device = resolve_device(args.device)
    jobs = read_jobs(args)
    if not args.out:
        return _score_to_stdout(args, jobs, device)
    shard = init_distributed()
    try:
        return _run(args, shard, jobs, device)
    finally:
        shutdown(shard)


def _outputs(out: Path) -> tuple[bool, Path, Path]:
    """(as_csv, the JSONL stream rows are appended to, the provenance record) for ``--out``."""
    as_csv = out.suffix.lower() == ".csv"
    stream = out.with_name(out.name + ".partial.jsonl") if as_csv else out
    return as_csv, stream, out.with_name(out.name + META_SUFFIX)


def _start_over(out: Path) -> None:
    """--overwrite: remove the output, its part files and its record (rank 0, before anyone reads)."""
    as_csv, stream, meta = _outputs(out)
    for path in {out, stream, meta, *find_parts(stream)}:
        path.unlink(missing_ok=True)


def _check_origin(out: Path, record: dict) -> None:
    """Refuse rows written with another model (or by a version that kept no record)."""
    as_csv, stream, meta = _outputs(out)
    written = [p for p in (stream, *find_parts(stream), *([out] if as_csv else [])) if p.exists()]
    if written and not meta.exists():
        raise CommandError(
            f"{written[0]} has no record of the model that wrote it ({meta.name} is missing); "
            "use --overwrite to start over, or another --out"
        )
    provenance.check(meta, record, str(out))


def _run(args: argparse.Namespace, shard: Shard, jobs: list[dict], device: str) -> int:
    from ..model import DeRAMOS

    out = Path(args.out)
    as_csv, stream, meta = _outputs(out)
    record = {"command": "deramos score", "model": provenance.checkpoint_identity(args.model)}
    # Rank 0 cuts torn last lines left by a killed run; then every rank reads the same rows
    # (and nobody appends until all have read them, so every rank computes the same to-do list).
    if shard.is_main:
        if args.overwrite:
            _start_over(out)
        for path in [stream, *find_parts(stream)]:
            read_rows(path)
    barrier(shard)
    _check_origin(out, record)
    sources = [stream, *find_parts(stream)]
    done = collect_rows(sources, jobs)
    finished_csv = {}
    if as_csv and out.exists() and not any(p.exists() for p in sources):
        done = finished_csv = read_finished_csv(out, jobs)
    barrier(shard)
    todo = [j for j in jobs if j["index"] not in done or (args.retry_errors and "error" in done[j["index"]])]
    mine = take(todo, shard)
    target = part_path(stream, shard) if shard.distributed else stream
    if mine:
        model = DeRAMOS.from_pretrained(args.model, device=device_for(device, shard))
        if not meta.exists():  # only now, so a failed start leaves no files or folders behind
            provenance.write(meta, record)
        desc = f"scoring (rank {shard.rank} of {shard.world_size})" if shard.distributed else "scoring"
        for rows in score_jobs(model, mine, args.batch_size, progress=shard.is_main, desc=desc):
            append_rows(target, rows)
    barrier(shard)
    if not shard.is_main:
        return 0  # rank 0 reports the merged result and sets the exit code
    ordered = _finish(out, stream, as_csv, jobs, finished_csv)
    return _report(sum("error" in r for r in ordered), sum("warning" in r for r in ordered), len(ordered))
