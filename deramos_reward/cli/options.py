"""Options and helpers shared by the ``deramos`` subcommands: ``--device``, help layout."""

from __future__ import annotations

import argparse
import os

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class CommandError(Exception):
    """A usage or input error to report as one line with exit status 2 (no traceback)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends ``(default: X)`` to every option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_command(
    sub: argparse._SubParsersAction, name: str, summary: str, doc: str | None
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: ``summary`` is its line in ``deramos --help``, ``doc`` (the
    module docstring) its description; every option's help shows its default."""
    return sub.add_parser(name, help=summary, description=doc, formatter_class=HelpFormatter)


def add_device_argument(
    p: argparse.ArgumentParser, what: str = "the models", default: str | None = "auto"
) -> None:
    """``--device``: where ``what`` run; ``auto`` = a CUDA GPU when there is one, else the CPU.

    ``default=None`` leaves the choice to a config file (``deramos train --config``), whose own
    default is ``auto``.
    """
    text = f"where {what} run: {DEVICE_CHOICES}; auto = a CUDA GPU when there is one, else the CPU"
    if default is None:
        text += " (default: auto, or the --config file's device)"
    p.add_argument("--device", default=default, metavar="DEVICE", help=text)


def resolve_device(spec: str) -> str:
    """``--device`` value -> a torch device string, or CommandError for an unknown or missing device.

    ``auto`` -> ``cuda`` when a CUDA GPU is available, else ``cpu``.
    """
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise CommandError(f"--device {spec!r} is not a device; expected {DEVICE_CHOICES}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CommandError(
                f"--device {spec}: no CUDA GPU is available here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise CommandError(
                f"--device {spec}: there are only {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(
            f"--device {spec}: Apple MPS is not available on this machine; use --device cpu or auto"
        )
    return str(device)


def add_rating_scale_argument(p: argparse.ArgumentParser) -> None:
    """``--rating-scale LOW HIGH``: the scale of the data's ratings, mapped linearly onto 1-5."""
    p.add_argument(
        "--rating-scale",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="the scale of the ratings in --data, mapped linearly onto 1-5; a rating outside it is an "
        "error naming its file and line (default: 1 5)",
    )


def check_output(path: str | None, flag: str, folder: bool) -> None:
    """An output path must not be the wrong kind of thing: a file output an existing folder, or a
    folder output an existing file (CommandError naming ``flag``)."""
    if path is None:
        return
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"{flag} {path!r} is a file; expected a folder")
    if not folder and os.path.isdir(path):
        raise CommandError(f"{flag} {path!r} is a folder; expected a file")
