"""MusicGen options, loading and the best-of-N loop shared by ``generate``, ``pairs``, ``dpo`` and ``rl``.

Each option is defined once here; a command adds the groups it needs.
"""

from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path
from typing import Any

from ..seeding import derive_seed
from ..validation import check_file
from . import provenance
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


def add_prompt_arguments(p: argparse.ArgumentParser, what: str = "prompt") -> None:
    """``--prompt`` (repeatable) and ``--prompts FILE``; read them with :func:`read_prompts`."""
    p.add_argument("--prompt", action="append", default=[], help=f"a {what} (repeat for several)")
    p.add_argument("--prompts", metavar="FILE", help=f"a text file with one {what} per line")


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts of ``--prompt`` and ``--prompts FILE`` (one per non-empty line), or CommandError."""
    prompts = [p for p in args.prompt]
    if args.prompts:
        path = Path(check_file(args.prompts, "--prompts file"))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise CommandError(f"--prompts file {args.prompts!r} is not UTF-8 text ({err.reason})") from err
        prompts += [line.strip() for line in text.split("\n") if line.strip()]
    if not prompts:
        raise CommandError("no prompts: give --prompt TEXT (repeatable) or --prompts FILE")
    if any(not p.strip() for p in prompts):
        raise CommandError("--prompt must not be empty")
    return prompts


def add_generation_arguments(p: argparse.ArgumentParser, n_min: int = 1) -> None:
    """Everything a best-of-N command needs: the MusicGen, the judge and weights, prompts, sampling."""
    add_musicgen_arguments(p)
    add_reward_arguments(p)
    add_prompt_arguments(p)
    add_sampling_arguments(p, n_min=n_min)


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
    """Check the shared options; -> the sampling options as a dict (values parsed as Python literals,
    checked against the ``--backend`` library's own sampling options)."""
    if args.n < args.n_min:
        raise CommandError(f"--n must be >= {args.n_min}, got {args.n}")
    if args.max_batch < 1:
        raise CommandError(f"--max-batch must be >= 1, got {args.max_batch}")
    if not (args.duration > 0 and math.isfinite(args.duration)):
        raise CommandError(f"--duration must be a positive number of seconds, got {args.duration}")
    if args.seed is not None and args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    check_reward_weights(args.mi_weight, args.ta_weight)
    return check_sampling(args.backend, parse_sampling(args.sampling))


def check_reward_weights(mi_weight: float | None, ta_weight: float | None) -> None:
    """CommandError for a weight that is not a finite number, or both weights 0 (a constant reward
    ranks nothing: the pick would be arbitrary). None = the command's default."""
    for flag, value in (("--mi-weight", mi_weight), ("--ta-weight", ta_weight)):
        if value is not None and not math.isfinite(value):
            raise CommandError(f"{flag} must be a finite number, got {value}")
    if mi_weight == 0 and ta_weight == 0:
        raise CommandError(
            "--mi-weight and --ta-weight are both 0: the reward would be constant; give one a non-zero weight"
        )


def check_sampling(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the sampling options of the ``--backend`` library (CommandError)."""
    from ..errors import InputError
    from ..integrations.musicgen.factory import check_sampling as check_library_sampling

    try:
        return check_library_sampling(backend, options)
    except InputError as err:
        raise CommandError(f"--sampling: {err}") from err


GUIDANCE_OPTIONS = ("guidance_scale", "cfg_coef")  # each library's name for classifier-free guidance


def policy_sampling(args: argparse.Namespace) -> dict[str, Any]:
    """``deramos rl``'s ``--sampling`` options, checked against the library (CommandError); guidance is
    refused there: the trainers sample and score with one guidance, ``--guidance-scale``."""
    options = check_sampling(args.backend, parse_sampling(args.sampling))
    guided = [key for key in GUIDANCE_OPTIONS if key in options]
    if guided:
        raise CommandError(
            f"--sampling {guided[0]}: deramos rl samples and takes log-probabilities with one guidance; "
            "set it with --guidance-scale"
        )
    return options


def generation_settings(args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    """The arguments of a best-of-N command that must match for a rerun to resume its output."""
    return {
        "backend": args.backend,
        "musicgen": args.musicgen,
        "reward": provenance.checkpoint_identity(args.reward),
        "n": args.n,
        "duration": args.duration,
        "seed": args.seed,
        "sampling": args.sampling_options,
        "mi_weight": args.mi_weight,
        "ta_weight": args.ta_weight,
        "prompts": prompts,
    }


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
    from ..integrations.musicgen.factory import load_musicgen_backend

    try:
        return load_musicgen_backend(args.backend, args.musicgen, device=device)
    except OSError as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if args.musicgen not in text:
            text = f"could not load --musicgen {args.musicgen!r}: {text}"
        raise CommandError(f"{text} (--backend {args.backend})") from err


def check_frames(backend: Any, duration: float, checkpoints: tuple[float, ...] = ()) -> int:
    """The code frames of ``--duration`` on ``backend``; CommandError when they are too few for the
    model (its delay pattern), or when the progressive ``--checkpoints`` cut them into segments that are."""
    from ..progressive import stage_frames

    try:
        frames = backend.frames_for(duration)
    except ValueError as err:
        raise CommandError(f"--duration {duration}: {err}") from err
    if frames < backend.min_frames:
        raise CommandError(
            f"--duration {duration} gives {frames} code frames; this MusicGen needs at least "
            f"{backend.min_frames} ({backend.min_frames / backend.frame_rate:.3g} s)"
        )
    if checkpoints:
        try:
            stages = stage_frames(frames, checkpoints)
        except ValueError as err:
            raise CommandError(f"--checkpoints: {err}") from err
        shortest = min(b - a for a, b in zip([0, *stages], stages))
        if shortest < backend.min_frames:
            raise CommandError(
                f"--checkpoints {','.join(map(str, checkpoints))} cut the {frames} code frames of --duration "
                f"{duration} into segments ending at {stages}; each must add at least {backend.min_frames} "
                "frames: use fewer checkpoints or a longer --duration"
            )
    return frames


def warn_long_prompts(command: str, backend: Any, judge: Any, prompts: list[str]) -> None:
    """One warning line (stderr) when prompts are longer than MusicGen's or the judge's text encoder
    reads: each keeps the first tokens its encoder takes (the tokenizer's own truncation)."""
    import sys

    notes = []
    limit, counts = backend.prompt_tokens(prompts)
    long = [i for i, n in enumerate(counts) if limit is not None and n > limit]
    if long:
        notes.append(
            f"MusicGen reads the first {limit} tokens ({len(long)} prompts are longer, e.g. #{long[0]})"
        )
    encoder = getattr(judge, "text_encoder", None)
    if encoder is not None:
        ids = encoder.tokenizer(list(prompts), verbose=False)["input_ids"]
        long = [i for i, row in enumerate(ids) if len(row) > encoder.max_tokens]
        if long:
            notes.append(
                f"the judge reads the first {encoder.max_tokens} ({len(long)} prompts are longer, e.g. #{long[0]})"
            )
    if notes:
        print(f"deramos {command}: warning: long prompts are truncated: {'; '.join(notes)}", file=sys.stderr)


def group_seed(seed: int | None, first_prompt: int) -> int | None:
    """A seed per group of prompts, so a resumed run generates what the full run would have."""
    if seed is None:
        return None
    return derive_seed(seed, first_prompt)


def load_reward(args: argparse.Namespace, device: Any):
    """The ``MusicReward`` of ``--reward`` with ``--mi-weight`` / ``--ta-weight``, on ``device``."""
    import deramos_reward as dr

    judge = dr.DeRAMOS.from_pretrained(args.reward, device=device)
    return dr.MusicReward(judge, mi_weight=args.mi_weight, ta_weight=args.ta_weight)


def make_reranker(args: argparse.Namespace, backend: Any, progressive: bool = False, **options: Any):
    """-> ``rerank(prompts, reward, seed) -> BestOfNResult`` with the command's ``--n``, duration, batch and
    sampling options; ``options`` go to ``best_of_n`` (or ``progressive_best_of_n``)."""
    from ..integrations.rerank import best_of_n, progressive_best_of_n

    fn = progressive_best_of_n if progressive else best_of_n

    def rerank(prompts: list[str], reward: Any, seed: int | None):
        return fn(
            backend,
            prompts,
            args.n,
            reward,
            duration=args.duration,
            max_batch=args.max_batch,
            seed=seed,
            progress=False,  # the command shows one bar over all prompts
            **options,
            **args.sampling_options,
        )

    return rerank


def prompt_groups(args: argparse.Namespace, todo: list[int], total: int, desc: str):
    """Yield ``(group, seed)``: the prompt indices in ``todo`` a generate call at a time (``--max-batch``
    candidates), each with its seed, under one progress bar over all ``total`` prompts."""
    per_group = max(1, args.max_batch // args.n)
    bar = prompt_progress(total, total - len(todo), desc)
    for start in range(0, len(todo), per_group):
        group = todo[start : start + per_group]
        yield group, group_seed(args.seed, group[0])
        bar.update(len(group))
    bar.close()


def prompt_progress(total: int, done: int, desc: str):
    """One progress bar over a whole job's prompts (with ``done`` of them finished before), with ETA."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="prompt", file=sys.stderr, dynamic_ncols=True)
