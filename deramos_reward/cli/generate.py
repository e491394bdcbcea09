"""``deramos generate``: best-of-N generation with MusicGen, reranked by DeRA-MOS.

Writes the chosen clip of every prompt as ``OUT/NNN.wav`` and ``OUT/scores.json`` with every
candidate's score (the reward: ``reward`` in scores.json says its weights and normalisation) and
MI, TA. Prompts are processed in groups; ``scores.json`` is rewritten (atomically) after each group,
so an interrupted run resumes where it stopped when started again with the same arguments (each
group has its own seed derived from ``--seed``). A rerun with other arguments or another judge
(its files' sha256 is recorded) is refused; ``--overwrite`` starts over.

``--musicgen tiny`` builds the tiny random MusicGen of the chosen backend offline: a test and
demo affordance that makes noise, not music.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write_bytes
from . import provenance
from .musicgen import (
    add_generation_arguments,
    check_frames,
    check_sampling_arguments,
    generation_settings,
    load_backend,
    load_reward,
    make_reranker,
    prompt_groups,
    read_prompts,
    warn_long_prompts,
)
from .options import (
    CommandError,
    add_command,
    add_device_argument,
    check_output,
    new_folder,
    resolve_device,
)

SCORES_NAME = "scores.json"
PROGRESSIVE_NOTE = (
    "a candidate's score is that of its full clip, or for a pruned one (score_of 'partial clip') that of its "
    "audio up to where it was pruned (scored_frames of the clip's frames): partial scores are not comparable "
    "with full ones and may be higher; the chosen clip is the best full clip"
)
CHECKPOINTS = (0.25, 0.5)  # --progressive defaults
KEEP = 0.5


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(sub, name, "generate with MusicGen and keep the best of N by DeRA-MOS", __doc__)
    add_generation_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NNN.wav and scores.json")
    p.add_argument("--overwrite", action="store_true", help="start over in --out instead of resuming")
    p.add_argument("--progressive", action="store_true", help="prune weak candidates at checkpoints")
    p.add_argument(
        "--checkpoints",
        help=f"progressive: increasing comma-separated fractions of the duration, each in (0, 1) "
        f"(default {','.join(map(str, CHECKPOINTS))})",
    )
    p.add_argument(
        "--keep", type=float, help=f"progressive: fraction kept per checkpoint, in (0, 1] (default {KEEP})"
    )
    add_device_argument(p, "MusicGen and the judge")
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> tuple[float, ...]:
    """Check the options (CommandError); -> the progressive checkpoints (empty without --progressive).

    Sets ``args.sampling_options`` and, with --progressive, fills in --keep's default."""
    args.sampling_options = check_sampling_arguments(args)
    if not args.progressive:
        options = (("--checkpoints", args.checkpoints), ("--keep", args.keep))
        given = [flag for flag, value in options if value is not None]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise CommandError(
                f"{' and '.join(given)} only {verb} with --progressive (add it or leave them out)"
            )
        return ()
    args.keep = KEEP if args.keep is None else args.keep
    if not 0 < args.keep <= 1:
        raise CommandError(f"--keep must be in (0, 1], got {args.keep}")
    if args.checkpoints is None:
        return CHECKPOINTS
    try:
        checkpoints = tuple(float(f) for f in args.checkpoints.split(","))
    except ValueError:
        checkpoints = ()
    if (
        not checkpoints
        or not all(0 < f < 1 for f in checkpoints)
        or any(b <= a for a, b in zip(checkpoints, checkpoints[1:]))
    ):
        raise CommandError(
            "--checkpoints must be increasing comma-separated fractions of the duration, each in (0, 1) "
            f"(e.g. 0.25,0.5), got {args.checkpoints!r}"
        )
    return checkpoints


def wav_bytes(audio, sample_rate: int) -> bytes:
    """audio [T] or [C, T] float tensor -> 16-bit PCM WAV bytes."""
    import soundfile as sf

    data = audio.detach().float().cpu().numpy()
    data = data[None] if data.ndim == 1 else data
    buf = io.BytesIO()
    sf.write(buf, np.clip(data.T, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def run_settings(args: argparse.Namespace, prompts: list[str], checkpoints: tuple[float, ...]) -> dict:
    """What must match for a rerun to resume the results in OUT."""
    settings = {**generation_settings(args, prompts), "progressive": args.progressive}
    if args.progressive:
        settings.update(checkpoints=list(checkpoints), keep=args.keep)
    return settings


def _previous(out: Path, settings: dict) -> dict | None:
    """The state of an earlier run in ``out`` to resume (None: start fresh), or CommandError."""
    scores_path = out / SCORES_NAME
    if not scores_path.is_file():
        return None
    try:
        previous = json.loads(scores_path.read_text())
    except json.JSONDecodeError as err:
        raise CommandError(
            f"{scores_path} is not valid JSON ({err.msg}); use --overwrite or another --out"
        ) from err
    diff = provenance.differences(previous.get("settings", {}), settings)
    if diff:
        raise CommandError(
            f"{out} holds results of a run with other arguments "
            f"({provenance.describe(previous.get('settings', {}), settings, diff[0])}); "
            "use the same arguments to resume, --overwrite to start over, or another --out"
        )
    return previous


def _clear(out: Path) -> None:
    """--overwrite: remove an earlier run's clips and scores.json from ``out`` (nothing else)."""
    scores_path = out / SCORES_NAME
    if not scores_path.is_file():
        return
    try:
        results = json.loads(scores_path.read_text()).get("results", [])
    except (json.JSONDecodeError, AttributeError):
        results = []
    for r in results:
        if isinstance(r, dict) and isinstance(r.get("file"), str):
            (out / Path(r["file"]).name).unlink(missing_ok=True)
    scores_path.unlink()


def run(args: argparse.Namespace) -> int:
    from deramos_reward.reward import describe_reward

    prompts = read_prompts(args)
    checkpoints = check_args(args)
    device = resolve_device(args.device)
    check_output(args.out, "--out", folder=True)
    out = Path(args.out)
    settings = run_settings(args, prompts, checkpoints)
    scores_path = out / SCORES_NAME
    reward_info = describe_reward(args.mi_weight, args.ta_weight)
    previous = None if args.overwrite else _previous(out, settings)
    state = previous or {"settings": settings, "sample_rate": None, "stats": {}, "results": []}
    state["reward"] = reward_info  # what every "score" in this file is
    if args.progressive:
        state["score_of"] = PROGRESSIVE_NOTE
    done = {r["prompt_index"] for r in state["results"] if (out / r["file"]).is_file()}
    state["results"] = [r for r in state["results"] if r["prompt_index"] in done]
    todo = [i for i in range(len(prompts)) if i not in done]
    if not todo:
        print(f"deramos generate: all {len(prompts)} prompts already done in {out}", file=sys.stderr)
        return 0
    reward = load_reward(args, device)
    backend = load_backend(args, device)
    check_frames(backend, args.duration, checkpoints)
    warn_long_prompts("generate", backend, reward.model, prompts)
    extra = {"checkpoints": checkpoints, "keep": args.keep} if args.progressive else {}
    rerank = make_reranker(args, backend, args.progressive, **extra)
    if args.overwrite:  # only now that every check passed
        _clear(out)
    # the folder is created only now, and removed again when the first group fails
    with new_folder(out, finished=lambda folder: (folder / SCORES_NAME).is_file()):
        for group, seed in prompt_groups(args, todo, len(prompts), "generate"):
            res = rerank([prompts[i] for i in group], reward, seed)
            _record_group(state, out, prompts, group, res)
            atomic_write_bytes(scores_path, (json.dumps(state, indent=2) + "\n").encode())
    print(
        f"deramos generate: wrote {len(prompts)} clips and {scores_path} (score = reward: {reward_info['text']})",
        file=sys.stderr,
    )
    return 0


def _record_group(state: dict, out: Path, prompts: list[str], group: list[int], res) -> None:
    """Write the chosen clip of each prompt in ``group`` and add its candidates to ``state``."""
    state["sample_rate"] = res.sample_rate
    for j, i in enumerate(group):
        name = f"{i:03d}.wav"
        atomic_write_bytes(out / name, wav_bytes(res.audio[j], res.sample_rate))
        rows = [r for r in res.rows() if r["prompt_index"] == j]
        candidates = [
            {k: v for k, v in r.items() if k not in ("prompt_index", "prompt", "chosen")} for r in rows
        ]
        state["results"].append(
            {
                "prompt_index": i,
                "prompt": prompts[i],
                "file": name,
                "chosen": int(res.index[j]),
                "score": float(res.scores[j, res.index[j]]),
                "candidates": candidates,
            }
        )
    for key in ("candidates", "generated_frames", "plain_generated_frames"):
        if key in res.stats:
            state["stats"][key] = state["stats"].get(key, 0) + res.stats[key]
    if "stage_frames" in res.stats:  # the code frames each progressive stage ends at
        state["stats"]["stage_frames"] = res.stats["stage_frames"]
    state["results"].sort(key=lambda r: r["prompt_index"])
