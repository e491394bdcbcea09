"""Where each weight of the authors' model goes in ``DeRAMOS``, and which of theirs are dropped.

The authors' classes (ASTAR-NTU ``muq_roberta_transformer_dist`` and DeRA-MOS's decoupled model)
name their modules as on the left; ``DeRAMOS`` holds the same tensors under the names on the right.
Their MLPs are ``Linear-ReLU-Dropout-Linear-ReLU-Linear-Softmax`` (Linear indices 0, 3, 5); ours put
a dropout after every hidden layer (indices 0, 3, 6), so the Linears are matched in order.
"""

from __future__ import annotations

import re

import torch

from ..errors import InputError

VARIANTS = ("deramos", "astar")

# reference module prefix -> DeRAMOS module prefix (weights under them keep their own names)
MODULES = {
    "muq.": "audio_encoder.backbone.",
    "roberta.": "text_encoder.backbone.",
    "audio_transformer_encoder.": "heads.mi.encoder.",
    "audio_attentive_pool.attention_weights.": "heads.mi.pool.score.",
    "audio_seq_proj.": "heads.ta.audio_proj.",
    "text_seq_proj.": "heads.ta.text_proj.",
    "cross_attention.": "heads.ta.cross_attention.",
    "cross_attention_norm.": "heads.ta.norm.",
    "fused_attentive_pool.attention_weights.": "heads.ta.pool.score.",
}
# DeRA-MOS's SAMA audio pool, on the projected frames
ALIGNMENT_POOL = {"audio_contrastive_attentive_pool.attention_weights.": "heads.ta.audio_pool.score."}
MLPS = {"overall_mlp.": "heads.mi.head.mlp.", "coherence_mlp.": "heads.ta.head.mlp."}
# Saved by the reference but not weights of the model: checked, then dropped.
POSITION_TABLE = "audio_pos_encoder.pe"
BIN_CENTRES = "bin_centers"
# Later ASTAR-NTU code adds a contrastive head (a pool over the raw frames and a projection) that only
# its training loss reads; DeRA-MOS's alignment pool (over the projected frames) comes without the projection.
ASTAR_CONTRASTIVE_HEAD = ("audio_contrastive_attentive_pool.", "audio_contrastive_seq_proj.")
# RoBERTa's pooler (the reference never uses it) and buffers older transformers saved.
DROPPABLE = re.compile(r"^roberta\.(pooler\..*|embeddings\.(position_ids|token_type_ids))$")


def map_keys(reference: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], variant: str) -> dict:
    """The reference state_dict renamed to ``DeRAMOS`` keys (``ours`` gives the names and shapes).

    Returns ``{our_key: tensor}``. Raises InputError, in one line naming the keys, for a reference
    key that has no place (unexpected) or a weight of ours it does not provide (missing).
    """
    modules = {**MODULES, **(ALIGNMENT_POOL if variant == "deramos" else {})}
    if variant == "astar" and any(k.startswith(ASTAR_CONTRASTIVE_HEAD[1]) for k in reference):
        reference = {k: v for k, v in reference.items() if not k.startswith(ASTAR_CONTRASTIVE_HEAD)}
    mapped, unexpected = {}, []
    mlp_keys: dict[str, list[str]] = {prefix: [] for prefix in MLPS}
    for key, tensor in reference.items():
        if key in (POSITION_TABLE, BIN_CENTRES):
            continue
        prefix = next((p for p in modules if key.startswith(p)), None)
        if prefix is not None:
            target = modules[prefix] + key[len(prefix) :]
            if target in ours:
                mapped[target] = tensor
                continue
        mlp = next((p for p in MLPS if key.startswith(p)), None)
        if mlp is not None:
            mlp_keys[mlp].append(key)
        elif not DROPPABLE.match(key):
            unexpected.append(key)
    _refuse_unexpected(unexpected, variant)
    for prefix, keys in mlp_keys.items():
        if keys:  # none at all: named below as missing weights
            mapped.update(_map_mlp(reference, keys, prefix, MLPS[prefix], ours, unexpected))
    _refuse_unexpected(unexpected, variant)
    _check_complete(mapped, ours, variant)
    return mapped


def _map_mlp(
    reference: dict, keys: list[str], prefix: str, target: str, ours: dict, unexpected: list[str]
) -> dict[str, torch.Tensor]:
    """An MLP's Linears, matched in order: reference ``{prefix}{i}.weight`` -> ``{target}{j}.weight``.

    Keys that fit nowhere are appended to ``unexpected``.
    """
    theirs = sorted({int(i) for i in (_index(k, prefix) for k in keys) if i.isdigit()})
    mine = sorted({int(_index(k, target)) for k in ours if k.startswith(target)})
    if len(theirs) != len(mine):
        raise InputError(
            f"reference checkpoint's {prefix.rstrip('.')} has {len(theirs)} Linear layers but the config "
            f"builds {len(mine)} (config.mi_mlp / config.ta_mlp give the hidden widths)"
        )
    index = dict(zip(theirs, mine))
    mapped = {}
    for key in keys:
        head, _, rest = key[len(prefix) :].partition(".")
        name = f"{target}{index[int(head)]}.{rest}" if head.isdigit() else None
        if name in ours:
            mapped[name] = reference[key]
        else:
            unexpected.append(key)
    return mapped


def _index(key: str, prefix: str) -> str:
    """The layer index right after ``prefix``: ``_index("mlp.3.weight", "mlp.") == "3"``."""
    return key[len(prefix) :].split(".")[0]


def _refuse_unexpected(unexpected: list[str], variant: str) -> None:
    if unexpected:
        hint = ""
        if variant == "astar" and any(k.startswith("audio_contrastive_") for k in unexpected):
            hint = " (a DeRA-MOS checkpoint has the alignment pool: convert it with variant 'deramos')"
        raise InputError(f"reference checkpoint has unexpected weights {_names(unexpected)}{hint}")


def _check_complete(mapped: dict, ours: dict, variant: str) -> None:
    """Every weight of the heads and backbones must come from the reference (shapes: ``check_state``)."""
    required = [
        k for k in ours if k.startswith(("heads.", "audio_encoder.backbone.", "text_encoder.backbone."))
    ]
    missing = [k for k in required if k not in mapped]
    if missing:
        hint = ""
        if variant == "deramos" and any(k.startswith("heads.ta.audio_pool.") for k in missing):
            hint = " (an ASTAR-NTU checkpoint has no alignment pool: convert it with variant 'astar')"
        raise InputError(f"reference checkpoint is missing weights for {_names(missing)}{hint}")


def _names(keys: list[str], most: int = 6) -> str:
    shown = ", ".join(keys[:most])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > most else ''}]"
