"""The ``deramos`` command. Each subcommand lives in its own module with ``add_parser`` and ``run``.

Errors: a usage error (``CommandError``), a bad input found anywhere in the library
(``deramos_reward.errors.InputError``: a file, manifest, checkpoint or config value), a missing
optional extra (``MissingExtraError``) and a permission or disk-space error on a named file are
printed as one line, with exit status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from .._optional import extra_hint
from ..errors import InputError, MissingExtraError
from .options import CommandError

__all__ = ["CommandError", "build_parser", "main"]

# subcommand -> module under deramos_reward.cli; modules are imported only when used.
SUBCOMMANDS = {
    "score": "score",
    "train": "train",
    "eval": "evaluate",
    "generate": "generate",
    "pairs": "pairs",
    "dpo": "dpo",
    "rate": "rate",
    "agreement": "agreement",
    "rl": "rl",
    "convert-reference": "convert",
}
# OSErrors about the user's files and disk rather than about the code
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deramos", description="DeRA-MOS scoring, training and reranking")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"deramos_reward.cli.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"deramos_reward.cli.{module}":
                raise
            continue
        mod.add_parser(sub, name)
    return parser


def user_error_message(err: BaseException) -> str | None:
    """The one-line message for a usage/input error, or None for anything else (a bug)."""
    if isinstance(err, OSError) and not isinstance(err, InputError):
        if err.errno in USER_ERRNOS and err.filename is not None:
            return f"{err.strerror}: {err.filename!r}"
        return None
    if isinstance(err, ModuleNotFoundError) and not isinstance(err, MissingExtraError):
        hint = extra_hint(err.name or "")
        return (
            None if hint is None else f"{err.name!r} is needed for this command but is not installed; {hint}"
        )
    if not isinstance(err, (CommandError, InputError, MissingExtraError)):
        return None
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(
            f"deramos {args.command}: interrupted; finished work is kept, run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"deramos {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m deramos_reward.cli
    sys.exit(main())
