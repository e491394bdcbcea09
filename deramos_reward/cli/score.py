"""``deramos score``: score files against prompts; resumable JSONL (or CSV) output."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..checkpoint import atomic_write_bytes
from ..frontend import items_to_clips
from ..jsonl import append_rows, read_rows
from . import CommandError


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="score audio files (MI and TA, 1-5)", description=__doc__)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--prompt", help="the prompt for every FILE")
    p.add_argument(
        "--manifest", help='JSONL with lines {"path": ..., "prompt": ...}; relative paths are from its folder'
    )
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--out", help="output .jsonl (resumable) or .csv; default: JSONL on stdout")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(run=run)


def read_jobs(args: argparse.Namespace) -> list[dict]:
    """Inputs as [{"index", "path", "prompt", "file"}]: ``file`` is where to read, ``path`` as given."""
    if args.manifest and (args.files or args.prompt):
        raise CommandError("give either --manifest or --prompt with FILEs, not both")
    if args.manifest:
        manifest = Path(args.manifest)
        if not manifest.is_file():
            raise CommandError(f"manifest {args.manifest!r} does not exist")
        jobs = []
        for n, line in enumerate(manifest.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise CommandError(f"{manifest}:{n}: not valid JSON ({err.msg})") from err
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("path"), str)
                or not isinstance(item.get("prompt"), str)
            ):
                raise CommandError(
                    f'{manifest}:{n}: expected {{"path": str, "prompt": str}}, got {line[:80]!r}'
                )
            file = Path(item["path"]) if Path(item["path"]).is_absolute() else manifest.parent / item["path"]
            jobs.append(
                {"index": len(jobs), "path": item["path"], "prompt": item["prompt"], "file": str(file)}
            )
        if not jobs:
            raise CommandError(f"manifest {args.manifest!r} has no entries")
        return jobs
    if not args.files:
        raise CommandError("no input: give FILEs with --prompt, or --manifest")
    if args.prompt is None:
        raise CommandError("--prompt is required with FILEs")
    return [{"index": i, "path": f, "prompt": args.prompt, "file": f} for i, f in enumerate(args.files)]


def score_jobs(model, jobs: list[dict], batch_size: int, progress: bool):
    """Yield finished rows batch by batch; a file that cannot be read gives a row with ``error``."""
    from ..prompt_cache import PromptCache
    from ..scoring import score_clips
    from ..validation import check_prompts

    cache = PromptCache(model.text_encoder)
    bar = tqdm(total=len(jobs), disable=not progress, desc="scoring", unit="clip", file=sys.stderr)
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        rows, good, waves = [], [], []
        for job in batch:
            row = {"index": job["index"], "path": job["path"], "prompt": job["prompt"]}
            try:
                check_prompts([job["prompt"]], name=f"prompt of {job['path']!r}")
                waves.append(items_to_clips([job["file"]], None, model.sample_rate, name="audio").waves[0])
                good.append(row)
            except (ValueError, TypeError) as err:
                row["error"] = str(err)
            rows.append(row)
        if good:
            scores = score_clips(model, waves, [r["prompt"] for r in good], batch_size, prompt_cache=cache)
            for row, s in zip(good, scores):
                row.update(s)
        bar.update(len(batch))
        yield rows
    bar.close()


def run(args: argparse.Namespace) -> int:
    from ..model import DeRAMOS

    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    jobs = read_jobs(args)
    out = Path(args.out) if args.out else None
    as_csv = out is not None and out.suffix.lower() == ".csv"
    stream = out.with_name(out.name + ".partial.jsonl") if as_csv else out
    done = {r["index"]: r for r in read_rows(stream)} if stream else {}
    todo = [j for j in jobs if j["index"] not in done]
    if todo:
        model = DeRAMOS.from_pretrained(args.model, device=args.device)
        for rows in score_jobs(model, todo, args.batch_size, progress=True):
            if stream:
                append_rows(stream, rows)
                done.update((r["index"], r) for r in rows)
            else:
                for r in rows:
                    print(json.dumps(r, ensure_ascii=False), flush=True)
                done.update((r["index"], r) for r in rows)
    ordered = [done[j["index"]] for j in jobs]
    if as_csv:
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=["path", "prompt", "mi", "ta", "error"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(ordered)
        atomic_write_bytes(out, buf.getvalue().encode())
        stream.unlink()
    failed = [r for r in ordered if "error" in r]
    if failed:
        print(
            f"deramos score: {len(failed)} of {len(ordered)} inputs failed (see the 'error' field)",
            file=sys.stderr,
        )
        return 1
    return 0
