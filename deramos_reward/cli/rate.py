"""``deramos rate``: a local listening and rating web app (MOS or A/B), and exports of its answers.

Serve (stop with Ctrl-C; run the same command again to resume, rated items are skipped)::

    deramos rate --clips clips.jsonl --out ratings.jsonl [--mode mos|ab] [--port 7860]
    # open http://127.0.0.1:7860/?rater=alice  (each rater: their own id, their own random order)

Export (nothing is served)::

    deramos rate --clips clips.jsonl --out votes.jsonl --export-pairs pairs/   # A/B -> deramos dpo --pairs
    deramos rate --out ratings.jsonl --export-mos mos.jsonl                    # per-clip mean MI/TA

MOS answers are training-manifest lines (``deramos train --data ratings.jsonl``). The server
binds 127.0.0.1 unless --host says otherwise, serves only the manifest's audio files, and
writes nothing but --out (and, at the first answer, ``OUT.session.json``: the settings that decide
what the answers mean; a resume with other ones is refused). Use --token on a LAN (``--token auto``
makes a random one).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator

from .options import CommandError, add_command, add_device_argument, check_output, resolve_device


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = add_command(
        sub, name, "listen and rate clips in the browser (MOS or A/B); export ratings and DPO pairs", __doc__
    )
    p.add_argument(
        "--clips",
        help="clips manifest (JSONL: path, prompt [, system, id, split, codes, judge_mi, judge_ta])",
    )
    p.add_argument("--out", required=True, help="ratings file (JSONL, appended; also read to resume)")
    p.add_argument(
        "--mode", choices=("mos", "ab"), default="mos", help="MOS (MI and TA, 1-5) or A/B (default mos)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    p.add_argument(
        "--rater", action="append", metavar="ID", help="allowed rater id (repeatable; default: any valid id)"
    )
    p.add_argument("--show-judge", action="store_true", help="show the judge's MI/TA next to each clip")
    p.add_argument("--model", help="judge checkpoint to score the clips with for --show-judge")
    add_device_argument(p, "the --model judge")
    p.add_argument(
        "--token", help="require this token (?token=...) for data and audio; 'auto' = a random one"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the raters' orders and A/B sides (default 0)")
    p.add_argument(
        "--max-pairs-per-prompt",
        type=int,
        default=0,
        help="A/B: pairs per prompt, drawn once (default 0 = all)",
    )
    p.add_argument(
        "--dev-fraction",
        type=float,
        default=0.2,
        help="MOS: share of clips whose ratings get split 'dev' when the manifest has no splits (default 0.2)",
    )
    p.add_argument("--audio-root", help="folder every clip must lie in (default: the manifest's folder)")
    p.add_argument(
        "--export-pairs", metavar="DIR", help="A/B: write the votes as a DPO pairs dataset and exit"
    )
    p.add_argument(
        "--min-margin", type=float, default=0.0, help="--export-pairs: least vote-share difference"
    )
    p.add_argument("--export-mos", metavar="FILE", help="MOS: write per-clip mean ratings and exit")
    p.set_defaults(run=run)


def _judge_scores(args: argparse.Namespace, clips) -> list:
    """Per clip (mi, ta) for --show-judge: from the manifest, or scored with --model."""
    if args.model is None:
        if args.show_judge and any(c.judge is None for c in clips):
            missing = next(c for c in clips if c.judge is None)
            raise CommandError(
                f"--show-judge needs judge_mi/judge_ta on every manifest line (line {missing.line} has none) "
                "or --model CKPT to score the clips"
            )
        return [c.judge for c in clips]
    if not args.show_judge:
        raise CommandError("--model only scores clips for --show-judge; add --show-judge or drop --model")
    import deramos_reward as dr

    model = dr.DeRAMOS.from_pretrained(args.model, device=resolve_device(args.device))
    rows = dr.score(model, [c.file for c in clips], [c.prompt for c in clips], progress=True)
    return [(r["mi"], r["ta"]) for r in rows]


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be in 0..65535, got {args.port}")
    if args.max_pairs_per_prompt < 0:
        raise CommandError(f"--max-pairs-per-prompt must be >= 0 (0 = all), got {args.max_pairs_per_prompt}")
    if not (0 <= args.min_margin < float("inf")):
        raise CommandError(f"--min-margin must be a number >= 0, got {args.min_margin}")
    if not 0 <= args.dev_fraction < 1:
        raise CommandError(
            f"--dev-fraction must be in [0, 1) (a share of the clips), got {args.dev_fraction}"
        )
    if args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    if args.export_pairs and args.export_mos:
        raise CommandError("give --export-pairs or --export-mos, not both")
    if args.clips is None and not args.export_mos:
        raise CommandError("--clips is required (except with --export-mos)")
    if args.token is not None and (not args.token.strip() or len(args.token) > 256):
        raise CommandError("--token must be 1-256 characters")
    check_output(args.out, "--out", folder=False)
    serving = not (args.export_pairs or args.export_mos)
    if serving and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise CommandError(f"the folder of --out {args.out!r} does not exist")
    check_output(args.export_mos, "--export-mos", folder=False)
    if args.export_pairs and os.path.exists(args.export_pairs):
        raise CommandError(f"--export-pairs {args.export_pairs!r} already exists; choose another folder")


def _bind(args: argparse.Namespace, app):
    """The server bound to --host:--port; CommandError when the address cannot be bound."""
    from ..rating import RatingServer

    try:
        return RatingServer((args.host, args.port), app)
    except OSError as err:  # in use, not this machine's address, no such host, a privileged port
        reason = err.strerror or str(err) or type(err).__name__
        hint = (
            "choose another --port (0 = any free port)"
            if err.errno == errno.EADDRINUSE
            else "check --host and --port"
        )
        raise CommandError(
            f"cannot serve on --host {args.host} --port {args.port}: {reason}; {hint}"
        ) from err


def run(args: argparse.Namespace) -> int:
    from ..rating import build_items, check_rater, read_clips
    from ..rating.export import export_mos, export_pairs

    _check(args)
    if args.export_mos:
        n = export_mos(args.out, args.export_mos)
        print(f"deramos rate: wrote mean ratings of {n} clips to {args.export_mos}", file=sys.stderr)
        return 0
    clips = read_clips(args.clips, args.audio_root)
    if args.export_pairs:
        dataset = export_pairs(clips, args.clips, args.out, args.export_pairs, min_margin=args.min_margin)
        print(f"deramos rate: wrote {len(dataset)} pairs to {args.export_pairs}", file=sys.stderr)
        return 0
    raters = frozenset(check_rater(r) for r in args.rater) if args.rater else None
    items = build_items(clips, args.mode, args.max_pairs_per_prompt or None, args.seed)
    with _ctrl_c_stops():
        _serve(args, clips, items, raters)
    return 0


@contextlib.contextmanager
def _ctrl_c_stops() -> Iterator[None]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt while scoring and serving, also when this process was
    started with SIGINT ignored (a shell does that to a command a script starts with ``&``): Ctrl-C and
    ``kill -INT`` always stop the server. The previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can set a handler (and only it gets KeyboardInterrupt)
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)


def _serve(args: argparse.Namespace, clips, items, raters) -> None:
    """Score the clips if asked, bind, then serve until Ctrl-C (KeyboardInterrupt reaches ``main``).

    The ratings log opens (creating --out) only once the address is bound.
    """
    from ..rating import RatingApp, RatingLog
    from ..rating.clips import resolve_root

    judge = _judge_scores(args, clips)
    token = secrets.token_urlsafe(16) if args.token == "auto" else args.token
    audio_root = resolve_root(args.clips, args.audio_root)
    session = {"max_pairs_per_prompt": args.max_pairs_per_prompt} if args.mode == "ab" else {}
    log = RatingLog(args.out, args.mode, clips, items, args.seed, args.dev_fraction, session)
    server = _bind(args, RatingApp(log, audio_root, token, args.show_judge, judge, raters))
    try:
        log.open()
    except BaseException:
        server.server_close()
        raise
    try:
        try:
            query = f"?token={token}&rater=" if token else "?rater="
            print(
                f"deramos rate: {len(items)} {args.mode} items from {len(clips)} clips; answers go to {args.out}\n"
                f"  open {server.url}{query}YOUR_ID   (Ctrl-C stops; the same command resumes)",
                file=sys.stderr,
            )
            if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
                print("  warning: reachable from other machines without --token", file=sys.stderr)
            sys.stderr.flush()
            server.serve_forever()
        finally:
            server.server_close()
    finally:
        log.close()
