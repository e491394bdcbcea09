"""Opt-in ``torch.compile`` of a DeRA-MOS judge.

``compile_judge(model)`` compiles the audio encoder's heavy modules in place (for MuQ: the conv
subsampling and each conformer layer). The judge encodes windows grouped by exact length, in batches of
at most ``model.window_batch_size``, so with ``dynamic=False`` each (batch, length) seen compiles
once and is reused: it pays when many clips of the same length are scored (best-of-N candidates,
RL rollouts), not for a one-off file of unusual length. torch.compile keeps at most
``torch._dynamo.config.cache_size_limit`` (8 by default) shapes per module and runs the rest eagerly.

The other opt-in speed-up, half-precision encoder weights, is ``DeRAMOS.set_encoder_dtype``
(or ``DeRAMOS.from_pretrained(..., dtype=torch.bfloat16)``).
"""

from __future__ import annotations

from .model import DeRAMOS

__all__ = ["compile_judge"]


def compile_judge(
    model: DeRAMOS,
    *,
    backend: str = "inductor",
    mode: str | None = None,
    dynamic: bool | None = False,
    fullgraph: bool = False,
) -> DeRAMOS:
    """Compile ``model``'s audio encoder in place with ``torch.compile``; returns ``model``.

    Scores are unchanged up to float rounding (compiled kernels may fuse and reorder arithmetic).
    The first call for each (batch, length) pays the compile time. ``backend``, ``mode``,
    ``dynamic`` and ``fullgraph`` go to ``torch.compile`` (``backend="eager"`` only traces: a quick
    check that the model compiles).
    """
    if not isinstance(model, DeRAMOS):
        raise TypeError(f"model must be a deramos_reward.DeRAMOS, got {type(model).__name__}")
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a torch.compile backend name, got {type(backend).__name__}")
    model.audio_encoder.compile_backbone(backend=backend, mode=mode, dynamic=dynamic, fullgraph=fullgraph)
    return model
