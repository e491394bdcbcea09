"""Checkpoints and scores of the authors' code (ASTAR-NTU / DeRA-MOS), see docs/model.md.

``convert_reference_checkpoint`` turns their ``torch.save`` file into a checkpoint folder;
``reference_scores`` scores as their evaluation loop does.
"""

from .convert import convert_reference_checkpoint, read_reference_state, reference_config
from .inference import REFERENCE_SAMPLE_RATE, REFERENCE_SECONDS, crop_or_pad, reference_scores
from .keys import VARIANTS

__all__ = [
    "REFERENCE_SAMPLE_RATE",
    "REFERENCE_SECONDS",
    "VARIANTS",
    "convert_reference_checkpoint",
    "crop_or_pad",
    "read_reference_state",
    "reference_config",
    "reference_scores",
]
