"""MusicGen options and loading shared by ``generate``, ``pairs`` and ``dpo`` (and ``rl``).

Each option is defined once here; a command adds the groups it needs.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from .options import CommandError


def add_musicgen_arguments(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--musicgen``: which MusicGen to load."""
    p.add_argument(
        "--backend",
        required=True,
        choices=("audiocraft", "transformers"),
        help="the library the MusicGen comes from",
    )
    p.add_argument(
        "--musicgen",
        required=True,
        metavar="ID_OR_DIR",
        help="audiocraft: MusicGen.get_pretrained name; transformers: hub id or folder; "
        "'tiny': the tiny random model of the backend, built offline (tests and demos; makes noise)",
    )


def add_reward_arguments(p: argparse.ArgumentParser) -> None:
    """``--reward`` (the judge) and the MI/TA weights of the reward."""
    p.add_argument("--reward", required=True, metavar="DIR", help="DeRA-MOS checkpoint folder or hub id")
    p.add_argument(
        "--mi-weight",
        type=float,
        default=0.5,
        help="weight of MI in the reward (default 0.5; with 0.5/0.5 the reward is the mean of MI and TA, 1-5)",
    )
    p.add_argument("--ta-weight", type=float, default=0.5, help="weight of TA in the reward (default 0.5)")


def add_sampling_arguments(p: argparse.ArgumentParser, n_default: int = 8, n_min: int = 1) -> None:
    """Candidates per prompt, duration, seed, batch size and the library's own sampling options."""
    p.add_argument("--n", type=int, default=n_default, help=f"candidates per prompt (default {n_default})")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per clip (default 10)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling (default: none)")
    p.add_argument("--max-batch", type=int, default=16, help="most candidates per generate call (default 16)")
    p.add_argument(
        "--sampling",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampling option of the backend's library, passed through (repeatable), e.g. "
        "top_k=250 guidance_scale=3.0 (transformers) or cfg_coef=3.0 temperature=1.0 (audiocraft)",
    )
    p.set_defaults(n_min=n_min)


def check_sampling_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Check the shared options; -> the sampling options as a dict (values parsed as Python literals)."""
    if args.n < args.n_min:
        raise CommandError(f"--n must be >= {args.n_min}, got {args.n}")
    if args.max_batch < 1:
        raise CommandError(f"--max-batch must be >= 1, got {args.max_batch}")
    if not args.duration > 0:
        raise CommandError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.seed is not None and args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    return parse_sampling(args.sampling)


def parse_sampling(items: list[str]) -> dict[str, Any]:
    """``["top_k=250", "do_sample=False"]`` -> ``{"top_k": 250, "do_sample": False}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CommandError(f"--sampling must be KEY=VALUE with KEY a name, got {item!r}")
        try:
            options[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = raw.strip()
    return options


def load_backend(args: argparse.Namespace, device: Any = "cpu"):
    """The MusicGen backend named by ``--backend`` / ``--musicgen``, on ``device``.

    A model that cannot be loaded (no such folder or hub id, the hub unreachable or offline) is a
    CommandError naming ``--musicgen``'s value.
    """
    from ..integrations.backend import load_musicgen_backend

    try:
        return load_musicgen_backend(args.backend, args.musicgen, device=device)
    except OSError as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if args.musicgen not in text:
            text = f"could not load --musicgen {args.musicgen!r}: {text}"
        raise CommandError(f"{text} (--backend {args.backend})") from err


def prompt_progress(total: int, done: int, desc: str):
    """One progress bar over a whole job's prompts (with ``done`` of them finished before), with ETA."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="prompt", file=sys.stderr, dynamic_ncols=True)
