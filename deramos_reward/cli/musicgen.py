"""MusicGen loading shared by the ``generate``, ``pairs`` and ``dpo`` subcommands."""

from __future__ import annotations

import argparse
from typing import Any

from . import CommandError


def add_musicgen_arguments(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--musicgen`` (used by ``deramos pairs`` and ``deramos dpo``)."""
    p.add_argument("--backend", required=True, choices=("audiocraft", "transformers"))
    p.add_argument(
        "--musicgen",
        required=True,
        metavar="ID_OR_DIR",
        help="audiocraft: MusicGen.get_pretrained name; transformers: hub id or folder; "
        "'tiny': the tiny random model of the backend, built offline (tests and demos)",
    )


def load_musicgen(backend: str, spec: str, device: str = "cpu") -> tuple[Any, Any]:
    """-> ``(model, processor)``: transformers ``MusicgenForConditionalGeneration`` + processor, or an
    AudioCraft ``MusicGen`` and None. ``spec == "tiny"`` builds the tiny model of the backend (seed 0)."""
    if backend == "audiocraft":
        from ..integrations import audiocraft as ac

        if spec == "tiny":
            return ac.tiny_musicgen(0, device=device), None
        from .._optional import require

        return require("audiocraft.models").MusicGen.get_pretrained(spec, device=device), None
    if backend != "transformers":
        raise CommandError(f"--backend must be audiocraft or transformers, got {backend!r}")
    from ..integrations import transformers_musicgen as tm

    if spec == "tiny":
        return tm.tiny_musicgen(0, device=device)
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(spec).to(device).eval()
    return model, AutoProcessor.from_pretrained(spec)
