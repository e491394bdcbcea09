"""Loading a backbone by hub id or local folder, with one clear error when it is not there."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class BackboneUnavailableError(OSError):
    """A referenced backbone could not be found locally and could not be downloaded."""


def load_text_backbone(name_or_path: str, loader: Callable[[str], T], what: str) -> tuple[T, object]:
    """A text tower and its tokenizer from one hub id or folder (``what``: e.g. ``"RoBERTa"``)."""
    from transformers import AutoTokenizer

    model = load_backbone(name_or_path, loader, f"{what} text encoder")
    return model, load_backbone(name_or_path, AutoTokenizer.from_pretrained, f"{what} tokenizer")


def load_backbone(name_or_path: str, loader: Callable[[str], T], what: str) -> T:
    """Call ``loader(name_or_path)``, turning hub/offline failures into BackboneUnavailableError."""
    try:
        return loader(name_or_path)
    except Exception as err:
        if os.path.isdir(name_or_path):
            raise BackboneUnavailableError(
                f"could not load the {what} from the local folder {name_or_path!r}: {err}"
            ) from err
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        raise BackboneUnavailableError(
            f"the {what} {name_or_path!r} is not available"
            + (" (HF_HUB_OFFLINE is set)" if offline else " (no local copy and the hub could not be reached)")
            + f": {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            f"Download it once (e.g. `huggingface-cli download {name_or_path} --local-dir DIR`) and set the "
            f"encoder's name_or_path to DIR, or pass a local folder instead of the hub id."
        ) from err
