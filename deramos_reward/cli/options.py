"""Options and helpers shared by the ``deramos`` subcommands: ``--device``, help layout."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"

# config field -> (flag, help) of the settings the training commands take from the command line:
# the judge's TrainConfig (train) and the adapter trainers' MusicDPOConfig, MusicRLConfig and
# MusicBackpropConfig (dpo, rl); a command offers the options whose field its config class has.
# A help that differs per command is {"dpo": ..., "": everyone else} (keys: HELP_KEYS of the config).
CONFIG_OPTIONS: dict[str, tuple[str, str | dict[str, str]]] = {
    "learning_rate": ("--lr", "learning rate"),
    "max_steps": ("--max-steps", {"dpo": "optimizer steps; -1 = train for --epochs", "": "optimizer steps"}),
    "gradient_accumulation_steps": ("--grad-accum", "micro-batches per optimizer update"),
    "lora_r": ("--lora-r", "LoRA rank"),
    "lora_alpha": ("--lora-alpha", "LoRA scaling (alpha / r multiplies the update)"),
    "logging_steps": ("--logging-steps", "optimizer steps per log row"),
    "save_steps": ("--save-steps", "optimizer steps per resumable checkpoint"),
    "save_total_limit": (
        "--save-total-limit",
        "checkpoints kept in the run folder, the oldest removed first",
    ),
    "report_to": ("--report-to", "reporting integration: none, all, tensorboard, wandb, ..."),
    "logging_dir": ("--logging-dir", "folder of the TensorBoard event files (default: OUT/runs/<time>)"),
    "seed": ("--seed", "seed of the initialisation, the data order, dropout and sampling"),
    "beta": (
        "--beta",
        {
            "dpo": "how far the policy may move from the reference (the DPO temperature)",
            "": "weight of the KL to the reference: how far the policy may move from it",
        },
    ),
    "loss_type": ("--loss-type", {"dpo": "sigmoid or ipo", "": "grpo, bnpo, dr_grpo or dapo"}),
    "num_train_epochs": ("--epochs", "passes over the pairs"),
    "per_device_train_batch_size": ("--batch-size", "pairs per device per step"),
    "num_generations": ("--num-generations", "samples per prompt and step (backprop: default 2)"),
    "prompts_per_step": ("--prompts-per-step", "prompts per step, all processes together"),
    "duration": ("--duration", "seconds per sample"),
    "temperature": ("--temperature", "sampling temperature"),
    "guidance_scale": (
        "--guidance-scale",
        "classifier-free guidance of the policy; 1 = off (no unconditional pass)",
    ),
    "kl_estimator": (
        "--kl-estimator",
        "KL to the reference: exact (whole distributions) or k3 (trl's estimate)",
    ),
    "top_k": ("--top-k", "top-k sampling, 0 = off"),
    "eval_steps": ("--eval-steps", "steps per evaluation on --eval-prompts (default: start and end)"),
    "epsilon": ("--epsilon", "clip range of the importance ratio"),
    "num_iterations": ("--num-iterations", "updates per batch of samples"),
    "advantage": ("--advantage", "grpo (group mean/std) or rloo (leave-one-out)"),
    "uncertainty_penalty": ("--uncertainty-penalty", "reward mean - this x the judge's std"),
    "diversity_weight": ("--diversity-weight", "bonus for distinct samples in a group"),
    "lr": ("--lr", "AdamW learning rate"),
    "batch_size": ("--batch-size", "global batch = the list BALR ranks"),
    "max_epochs": ("--max-epochs", "epochs; raise it to extend a finished run"),
    "patience": ("--patience", "epochs without improvement before stopping; 0 = never"),
    "early_stopping": ("--early-stopping", "what patience watches: loss, mi_sys_srcc or combined"),
    "mixed_precision": ("--mixed-precision", "no, bf16 or fp16"),
    "num_workers": ("--num-workers", "audio loader processes for feature extraction"),
    "feature_cache": ("--feature-cache", "folder for cached encoder features (default OUT/features)"),
    "max_seconds": ("--max-seconds", "crop clips to their first N seconds (default: window long clips)"),
    "train_split": ("--train-split", "the training split"),
    "val_split": ("--val-split", "the validation split"),
    "init_from": ("--init-from", "start from this checkpoint folder's weights and config"),
}


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


HELP_KEYS = {"MusicDPOConfig": "dpo"}


def config_options(config_type: type) -> dict[str, tuple[str, str]]:
    """The entries of :data:`CONFIG_OPTIONS` whose field the dataclass ``config_type`` has, with the
    help written for that config's command (no other command's notes)."""
    fields = {f.name for f in dataclasses.fields(config_type)}
    key = HELP_KEYS.get(config_type.__name__, "")
    return {
        field: (flag, text if isinstance(text, str) else text.get(key, text[""]))
        for field, (flag, text) in CONFIG_OPTIONS.items()
        if field in fields
    }


def add_config_options(p: argparse.ArgumentParser, config_type: type) -> None:
    """The options of ``config_type``'s fields (:func:`config_options`), typed as the fields.

    Options default to None, so only those given override the config (or a ``--config`` file); the
    help names the field's own default.
    """
    hints = typing.get_type_hints(config_type)
    defaults = {f.name: f.default for f in dataclasses.fields(config_type)}
    for field, (flag, text) in config_options(config_type).items():
        kind = next(t for t in typing.get_args(hints[field]) or (hints[field],) if t is not type(None))
        if "(default" not in text and defaults[field] is not None:
            text = f"{text} (default: {defaults[field]})"
        metavar = flag[2:].upper().replace("-", "_")  # the flag's name, not the field's
        p.add_argument(flag, type=kind, dest=field, default=None, metavar=metavar, help=text)


def config_values(args: argparse.Namespace, config_type: type) -> dict[str, Any]:
    """``{field: value}`` of the options of ``config_type`` given on the command line."""
    values = {field: getattr(args, field, None) for field in config_options(config_type)}
    return {field: value for field, value in values.items() if value is not None}


def make_config(
    config_type: type, args: argparse.Namespace, base: dict[str, Any] | None = None, **fixed: Any
):
    """``config_type`` from ``base`` values, then the options given (:func:`config_values`), then
    ``fixed``; an invalid value is a CommandError."""
    try:
        return config_type(**{**(base or {}), **config_values(args, config_type), **fixed})
    except (TypeError, ValueError) as err:
        raise CommandError(f"invalid option: {err}") from err


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


@contextlib.contextmanager
def new_folder(path: str | os.PathLike, finished: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Create the output folder ``path`` (and missing parents) for the block. When the block fails
    (an error or Ctrl-C) and the folder did not exist before, what was created is removed again,
    unless ``finished(path)`` says it already holds finished work; so a failed start leaves nothing."""
    path = Path(path)
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent  # the highest folder this call creates
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if created and not (finished is not None and finished(path)):
            shutil.rmtree(top, ignore_errors=True)
        raise
