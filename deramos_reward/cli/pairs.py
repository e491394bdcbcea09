"""``deramos pairs``: DPO preference pairs from MusicGen candidates scored by DeRA-MOS.

For every prompt, N candidates are generated (with their codes) and scored; the best and the worst
(or, with ``--max-pairs-per-prompt``, the pairs with the largest score differences above ``--margin``)
become chosen/rejected pairs, saved as a Hugging Face ``datasets`` dataset in OUT (columns ``prompt``,
``chosen_codes``, ``rejected_codes``, ``chosen_score``, ``rejected_score``, ``margin``, ``scores``...).

Scored candidates are appended to ``OUT.partial.jsonl`` group by group, so an interrupted run resumes
when started again with the same arguments (each group has its own seed derived from ``--seed``); the
dataset is written atomically at the end and the partial file removed. The settings, the judge's
identity (sha256 of its files) and what the scores are (the reward's weights and normalisation) are
stored in ``OUT/pairs_settings.json``; a rerun with other ones is refused, ``--overwrite`` starts over.

``--musicgen tiny`` builds the tiny random MusicGen of the chosen backend offline: a test and demo
affordance that makes noise, not music.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .._optional import require
from ..jsonl import append_rows, read_rows
from . import musicgen, provenance
from .options import CommandError, add_command, add_device_argument, check_output, resolve_device


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(
        sub, name, "build DPO preference pairs from MusicGen candidates scored by DeRA-MOS", __doc__
    )
    musicgen.add_generation_arguments(p, n_min=2)
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (must not exist)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over: replace a pairs dataset in --out and its partial file",
    )
    p.add_argument(
        "--margin", type=float, default=0.0, help="keep pairs whose score difference exceeds this (default 0)"
    )
    p.add_argument(
        "--max-pairs-per-prompt",
        type=int,
        default=1,
        help="pairs per prompt, largest differences first; 1 = best vs worst (default), 0 = no cap",
    )
    add_device_argument(p, "MusicGen and the judge")
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    if args.n < 2:
        raise CommandError(f"--n must be >= 2 (a pair needs two candidates), got {args.n}")
    args.sampling_options = musicgen.check_sampling_arguments(args)
    if not 0 <= args.margin < float("inf"):
        raise CommandError(f"--margin must be a finite number >= 0, got {args.margin}")
    if args.max_pairs_per_prompt < 0:
        raise CommandError(
            f"--max-pairs-per-prompt must be >= 0 (0 = no cap), got {args.max_pairs_per_prompt}"
        )


def run_settings(args: argparse.Namespace, prompts: list[str]) -> dict:
    """What must match for a rerun to resume (stored with the dataset as pairs_settings.json)."""
    return {
        **musicgen.generation_settings(args, prompts),
        "margin": args.margin,
        "max_pairs_per_prompt": args.max_pairs_per_prompt,
    }


def _start(args: argparse.Namespace, out: Path, partial: Path, settings: dict, generation: dict) -> bool:
    """Check ``out`` and the partial file against this run (or clear them with --overwrite).

    Returns True when ``out`` already holds this very dataset (nothing to do).
    """
    from ..integrations.training.dpo.pairs import PAIRS_SETTINGS

    saved = out / PAIRS_SETTINGS
    if out.exists():
        if not saved.is_file():
            raise CommandError(
                f"{out} already exists and is not a dataset of deramos pairs; use another --out"
            )
        before = provenance.read(saved) or {}
        if not args.overwrite:
            diff = provenance.differences(before, settings)
            if not diff:
                return True
            raise CommandError(
                f"{out} already exists, made with other settings ({provenance.describe(before, settings, diff[0])}); "
                "use --overwrite to start over, or another --out"
            )
        shutil.rmtree(out)
    if args.overwrite:
        partial.unlink(missing_ok=True)
    rows = read_rows(partial)
    if rows:
        diff = provenance.differences(rows[0].get("settings") or {}, generation)
        if diff:
            raise CommandError(
                f"{partial} holds a run with other arguments "
                f"({provenance.describe(rows[0].get('settings') or {}, generation, diff[0])}); "
                "use --overwrite to start over, or another --out"
            )
    return False


def _generate(args, prompts, todo, done, partial, generation, device) -> None:
    """Generate and score the candidates of the prompts in ``todo``, appending them to ``partial``."""
    reward = musicgen.load_reward(args, device)
    backend = musicgen.load_backend(args, device)
    musicgen.check_frames(backend, args.duration)
    musicgen.warn_long_prompts("pairs", backend, reward.model, prompts)
    rerank = musicgen.make_reranker(args, backend, return_candidates=True)
    # the partial file starts with the first group's rows: a failed start leaves no file behind
    header = [] if read_rows(partial) else [{"settings": generation}]
    for group, seed in musicgen.prompt_groups(args, todo, len(prompts), "pairs"):
        res = rerank([prompts[i] for i in group], reward, seed)
        new = []
        for j, i in enumerate(group):
            row = {
                "prompt_index": i,
                "scores": res.scores[j].tolist(),
                "codes": res.candidate_codes[j].tolist(),
            }
            if res.mi is not None:
                row.update(mi=res.mi[j].tolist(), ta=res.ta[j].tolist())
            new.append(row)
        append_rows(partial, header + new)
        header = []
        done.update((r["prompt_index"], r) for r in new)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..integrations.training.dpo.pairs import build_pairs, save_pairs
    from ..reward import describe_reward

    require("datasets")  # before the slow part: the dataset is written with it
    prompts = musicgen.read_prompts(args)
    check_args(args)
    device = resolve_device(args.device)
    check_output(args.out, "--out", folder=True)
    settings = {
        **run_settings(args, prompts),
        "reward_function": describe_reward(args.mi_weight, args.ta_weight),
    }
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial.jsonl")
    # pairing options do not change the candidates: a rerun with another --margin reuses them
    generation = {k: v for k, v in settings.items() if k not in ("margin", "max_pairs_per_prompt")}
    if _start(args, out, partial, settings, generation):
        print(f"deramos pairs: {out} is already complete", file=sys.stderr)
        return 0
    done = {r["prompt_index"]: r for r in read_rows(partial)[1:]}
    todo = [i for i in range(len(prompts)) if i not in done]
    if todo:
        _generate(args, prompts, todo, done, partial, generation, device)
    ordered = [done[i] for i in range(len(prompts))]
    shapes = {tuple(torch.tensor(r["codes"]).shape[1:]) for r in ordered}
    if len(shapes) > 1:
        raise CommandError(f"candidates in {partial} have codes of different shapes {sorted(shapes)}")
    has_parts = all("mi" in r for r in ordered)
    dataset = build_pairs(
        prompts,
        torch.tensor([r["codes"] for r in ordered]),
        torch.tensor([r["scores"] for r in ordered], dtype=torch.float64),
        margin=args.margin,
        max_pairs_per_prompt=args.max_pairs_per_prompt or None,
        mi=torch.tensor([r["mi"] for r in ordered]) if has_parts else None,
        ta=torch.tensor([r["ta"] for r in ordered]) if has_parts else None,
    )
    if len(dataset) == 0:
        raise CommandError(
            f"no pair has a score difference above --margin {args.margin}; lower it or raise --n "
            f"(scored candidates are kept in {partial})"
        )
    save_pairs(dataset, out, settings)
    partial.unlink()
    print(
        f"deramos pairs: wrote {len(dataset)} pairs from {len(prompts)} prompts to {out} "
        f"(scores = reward: {settings['reward_function']['text']})",
        file=sys.stderr,
    )
    return 0
