"""The ``deramos`` command. Each subcommand lives in its own module with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
}


class CommandError(Exception):
    """An error to report as one line with a non-zero exit (no traceback)."""


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CommandError, ValueError, TypeError, OSError, ImportError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"deramos {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"deramos {args.command}: interrupted; finished work is kept, run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # python -m deramos_reward.cli
    sys.exit(main())
