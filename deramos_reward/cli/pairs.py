"""``deramos pairs``: DPO preference pairs from MusicGen candidates scored by DeRA-MOS.

For every prompt, N candidates are generated (with their codes) and scored; the best and the worst
(or, with ``--max-pairs-per-prompt``, the pairs with the largest score differences above ``--margin``)
become chosen/rejected pairs, saved as a Hugging Face ``datasets`` dataset in OUT (columns ``prompt``,
``chosen_codes``, ``rejected_codes``, ``chosen_score``, ``rejected_score``, ``margin``, ``scores``...).

Scored candidates are appended to ``OUT.partial.jsonl`` group by group, so an interrupted run resumes
when started again with the same arguments (each group has its own seed derived from ``--seed``); the
dataset is written atomically at the end and the partial file removed.

``--musicgen tiny`` builds the tiny random MusicGen of the chosen backend offline: a test and demo
affordance that makes noise, not music.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..jsonl import append_rows, read_rows
from . import CommandError
from .generate import group_seed, read_prompts
from .musicgen import (
    add_musicgen_arguments,
    add_reward_arguments,
    add_sampling_arguments,
    check_sampling_arguments,
    load_backend,
)


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="build DPO preference pairs from MusicGen candidates scored by DeRA-MOS",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_musicgen_arguments(p)
    add_reward_arguments(p)
    p.add_argument("--prompt", action="append", default=[], help="a text prompt (repeat for several)")
    p.add_argument("--prompts", metavar="FILE", help="a text file with one prompt per line")
    add_sampling_arguments(p, n_min=2)
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (must not exist)")
    p.add_argument(
        "--margin", type=float, default=0.0, help="keep pairs whose score difference exceeds this (default 0)"
    )
    p.add_argument(
        "--max-pairs-per-prompt",
        type=int,
        default=1,
        help="pairs per prompt, largest differences first; 1 = best vs worst (default), 0 = no cap",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    if args.n < 2:
        raise CommandError(f"--n must be >= 2 (a pair needs two candidates), got {args.n}")
    args.sampling_options = check_sampling_arguments(args)
    if not args.margin >= 0:
        raise CommandError(f"--margin must be >= 0, got {args.margin}")
    if args.max_pairs_per_prompt < 0:
        raise CommandError(
            f"--max-pairs-per-prompt must be >= 0 (0 = no cap), got {args.max_pairs_per_prompt}"
        )


def run_settings(args: argparse.Namespace, prompts: list[str]) -> dict:
    """What must match for a rerun to resume (stored with the dataset as pairs_settings.json)."""
    return {
        "backend": args.backend,
        "musicgen": args.musicgen,
        "reward": args.reward,
        "n": args.n,
        "duration": args.duration,
        "seed": args.seed,
        "sampling": args.sampling_options,
        "margin": args.margin,
        "max_pairs_per_prompt": args.max_pairs_per_prompt,
        "mi_weight": args.mi_weight,
        "ta_weight": args.ta_weight,
        "prompts": prompts,
    }


def _candidates(args: argparse.Namespace, backend: Any):
    """-> rerank(prompts, reward, seed) -> BestOfNResult with every candidate's codes."""
    from ..integrations.musicgen_rerank import best_of_n

    def rerank(prompts, reward, seed):
        return best_of_n(
            backend,
            prompts,
            args.n,
            reward,
            duration=args.duration,
            max_batch=args.max_batch,
            seed=seed,
            return_candidates=True,
            progress=True,
            **args.sampling_options,
        )

    return rerank


def run(args: argparse.Namespace) -> int:
    import torch

    import deramos_reward as dr

    from ..integrations.preference import PAIRS_SETTINGS, build_pairs, save_pairs

    prompts = read_prompts(args)
    check_args(args)
    settings = run_settings(args, prompts)
    out = Path(args.out)
    if out.exists():
        saved = out / PAIRS_SETTINGS
        if saved.is_file() and json.loads(saved.read_text()) == settings:
            print(f"deramos pairs: {out} is already complete", file=sys.stderr)
            return 0
        raise CommandError(f"{out} already exists; use another --out or remove it")
    partial = out.with_name(out.name + ".partial.jsonl")
    # pairing options do not change the candidates: a rerun with another --margin reuses them
    generation = {k: v for k, v in settings.items() if k not in ("margin", "max_pairs_per_prompt")}
    rows = read_rows(partial)
    if rows and rows[0].get("settings") != generation:
        raise CommandError(f"{partial} holds a run with other arguments; remove it or use another --out")
    if not rows:
        append_rows(partial, [{"settings": generation}])
    done = {r["prompt_index"]: r for r in rows[1:]}
    todo = [i for i in range(len(prompts)) if i not in done]
    if todo:
        judge = dr.DeRAMOS.from_pretrained(args.reward, device=args.device)
        reward = dr.MusicReward(judge, mi_weight=args.mi_weight, ta_weight=args.ta_weight)
        rerank = _candidates(args, load_backend(args, args.device))
        per_group = max(1, args.max_batch // args.n)
        for start in range(0, len(todo), per_group):
            group = todo[start : start + per_group]
            res = rerank([prompts[i] for i in group], reward, group_seed(args.seed, group[0]))
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
            append_rows(partial, new)
            done.update((r["prompt_index"], r) for r in new)
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
    print(f"deramos pairs: wrote {len(dataset)} pairs from {len(prompts)} prompts to {out}", file=sys.stderr)
    return 0
