"""Loading a backbone by hub id or local folder, with one clear error when it is not there."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from ..errors import InputError

T = TypeVar("T")

# The paper's backbones, suggested when a configured local folder does not exist.
MUQ_HUB_ID = "OpenMuQ/MuQ-large-msd-iter"
ROBERTA_HUB_ID = "FacebookAI/roberta-base"
CLAP_HUB_ID = "laion/clap-htsat-unfused"


class BackboneUnavailableError(InputError, OSError):
    """A referenced backbone could not be found locally and could not be downloaded."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_hub_id(name: str) -> bool:
    """``owner/name``: the form the hub uses (a bare name may be a hub id or a folder)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and "\\" not in name


def load_text_backbone(
    name_or_path: str, loader: Callable[[str], T], what: str, hub_id: str | None = None
) -> tuple[T, object]:
    """A text tower and its tokenizer from one hub id or folder (``what``: e.g. ``"RoBERTa"``)."""
    from transformers import AutoTokenizer

    model = load_backbone(name_or_path, loader, f"{what} text encoder", hub_id)
    return model, load_backbone(name_or_path, AutoTokenizer.from_pretrained, f"{what} tokenizer", hub_id)


def load_backbone(name_or_path: str, loader: Callable[[str], T], what: str, hub_id: str | None = None) -> T:
    """Call ``loader(name_or_path)``, turning hub/offline failures into BackboneUnavailableError.

    ``hub_id``: the hub id to suggest downloading when ``name_or_path`` is not itself one (a local
    folder name that does not exist, say ``"muq-large"``).
    """
    try:
        return loader(name_or_path)
    except Exception as err:
        cause = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if os.path.isdir(name_or_path):
            raise BackboneUnavailableError(
                f"could not load the {what} from the local folder {name_or_path!r}: {cause}"
            ) from err
        reason = (
            "HF_HUB_OFFLINE is set"
            if _offline()
            else "the hub could not be reached or has no such model"
            + (f" ({cause})" if isinstance(err, OSError) else "")
        )
        if _is_hub_id(name_or_path):
            download, local_dir = name_or_path, "DIR"
        else:
            download, local_dir = hub_id or "OWNER/NAME", name_or_path
        raise BackboneUnavailableError(
            f"the {what} {name_or_path!r} is not available: there is no local folder "
            f"{os.path.abspath(os.path.expanduser(name_or_path))!r} and {reason}. Download it once with "
            f"`huggingface-cli download {download} --local-dir {local_dir}` and set the encoder's "
            "name_or_path to that folder."
        ) from err
