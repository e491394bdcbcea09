"""Which MusicGen library a model comes from is decided here, and only here.

:func:`musicgen_backend` turns a model into a :class:`~deramos_reward.integrations.musicgen.base.MusicGenBackend`;
:func:`load_musicgen_backend` loads one by name (the CLI's ``--backend`` / ``--musicgen``).
"""

from __future__ import annotations

from typing import Any

from deramos_reward._optional import require
from deramos_reward.integrations.musicgen.audiocraft import backend as backend_audiocraft
from deramos_reward.integrations.musicgen.audiocraft.backend import AudioCraftMusicGen
from deramos_reward.integrations.musicgen.base import MusicGenBackend, check_sampling_options
from deramos_reward.integrations.musicgen.transformers import backend as backend_transformers
from deramos_reward.integrations.musicgen.transformers.backend import TransformersMusicGen

LIBRARIES = ("audiocraft", "transformers")
"""Values of ``library`` in :func:`load_musicgen_backend` (the CLI's ``--backend``)."""

_ACCEPTED = (
    "a transformers MusicgenForConditionalGeneration / MusicgenMelodyForConditionalGeneration (with its "
    "processor), an AudioCraft MusicGen, either one with a peft adapter, or a MusicGenBackend"
)


def _is_transformers_musicgen(model: Any) -> bool:
    if not type(model).__module__.startswith("transformers."):
        return False
    transformers = require("transformers")
    kinds = tuple(
        getattr(transformers, name)
        for name in ("MusicgenForConditionalGeneration", "MusicgenMelodyForConditionalGeneration")
        if hasattr(transformers, name)
    )
    return isinstance(model, kinds)


def _is_audiocraft_musicgen(model: Any) -> bool:
    return (
        type(model).__module__.startswith("audiocraft.")
        and hasattr(model, "compression_model")
        and hasattr(model, "lm")
        and hasattr(model, "generate_audio")
    )


def musicgen_backend(model: Any, processor: Any = None) -> MusicGenBackend:
    """The backend of a MusicGen model.

    Args:
        model: a transformers ``MusicgenForConditionalGeneration`` (or the Melody variant; text prompts
            only), an AudioCraft ``MusicGen``, a peft model of the transformers one (an adapter injected
            with ``get_peft_model`` is active in the base model too), or a backend (returned as is).
        processor: the transformers model's ``MusicgenProcessor`` (required for it; unused by AudioCraft).

    Raises:
        TypeError: for anything else, naming what is accepted.
    """
    if isinstance(model, MusicGenBackend):
        return model
    base = model.get_base_model() if type(model).__module__.startswith("peft.") else model
    if _is_transformers_musicgen(base):
        return TransformersMusicGen(model, processor)
    if _is_audiocraft_musicgen(base):
        return AudioCraftMusicGen(base)
    hint = ""
    if hasattr(base, "compute_predictions"):
        hint = " (an AudioCraft LMModel alone cannot generate: pass the MusicGen that holds it)"
    raise TypeError(f"model must be {_ACCEPTED}; got {type(model).__name__}{hint}")


def maybe_musicgen_backend(model: Any, processor: Any = None) -> MusicGenBackend | None:
    """:func:`musicgen_backend`, or None when ``model`` is not a MusicGen of either library."""
    try:
        return musicgen_backend(model, processor)
    except TypeError:
        return None


def load_musicgen_backend(library: str, spec: str, device: Any = "cpu") -> MusicGenBackend:
    """Load a MusicGen by name: ``library`` is ``"audiocraft"`` or ``"transformers"``; ``spec`` is an
    AudioCraft ``MusicGen.get_pretrained`` name, a transformers hub id or folder, or ``"tiny"`` for the
    library's tiny random model (seed 0, built offline; makes noise, for tests and demos)."""
    if library == "audiocraft":
        if spec == "tiny":
            from deramos_reward.integrations.musicgen.audiocraft.builders import tiny_musicgen

            return AudioCraftMusicGen(tiny_musicgen(0, device=device))
        models = require("audiocraft.models")
        return AudioCraftMusicGen(_from_hub(models.MusicGen.get_pretrained, spec, device=device))
    if library != "transformers":
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    if spec == "tiny":
        from deramos_reward.integrations.musicgen.transformers.builders import tiny_musicgen

        return TransformersMusicGen(*tiny_musicgen(0, device=device))
    transformers = require("transformers")
    model = _from_hub(transformers.MusicgenForConditionalGeneration.from_pretrained, spec)
    processor = _from_hub(transformers.AutoProcessor.from_pretrained, spec)
    return TransformersMusicGen(model.to(device).eval(), processor)


def check_sampling(library: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the sampling options of ``library`` (``"audiocraft"`` or
    ``"transformers"``), in that library's own names; InputError/InputTypeError naming the option
    (a misspelt one with the closest name, the other library's name with this one's)."""
    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    module = backend_audiocraft if library == "audiocraft" else backend_transformers
    return check_sampling_options(options, module.SAMPLING)


def _from_hub(load: Any, spec: str, **kwargs: Any) -> Any:
    """``load(spec)``; an OSError (missing folder, hub unreachable) names the model id."""
    try:
        return load(spec, **kwargs)
    except OSError as err:
        raise OSError(f"could not load MusicGen {spec!r}: {err}") from err
