"""DeRA-MOS training objectives, as plain functions of tensors.

- ``distribution_loss``: KL(Gaussian soft label || predicted 20-bin distribution), per head.
- ``listwise_ranking_loss`` (BALR): ListNet cross-entropy over the mini-batch as one list (MI).
- ``score_anchored_alignment_loss`` (SAMA): MSE between the mapped audio/text cosine and the
  normalised TA label.
- ``prompt_contrast_loss`` (an addition, not in the paper): a clip rated as matching its prompt
  must score higher TA with that prompt than with another clip's prompt.
- Baselines for the ablation: ``regression_loss`` (L1 / MSE on the expected score) and
  ``pairwise_ranking_loss`` (margin ranking over all pairs with distinct labels).
- ``deramos_loss`` combines them according to a ``LossWeights``.

Every function validates its inputs and raises ``ValueError`` / ``TypeError`` naming the argument.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from .errors import InputError
from .loss_inputs import (
    as_label,
    check_batch,
    check_range,
    checked_embeddings,
    checked_logits,
    checked_target,
    label_for,
    swapped_scores,
    valid_mask,
    vector,
)
from .validation import (
    check_bool,
    check_choice,
    check_int,
    check_non_negative_float,
    check_number,
    check_positive_float,
)

OBJECTIVES = ("distribution", "regression")
REGRESSION_KINDS = ("l1", "mse")

RANKING_KINDS = ("listwise", "pairwise")
SAMA_MAPPINGS = ("affine", "raw")


# ---- the objectives on checked inputs (labels already in the predictions' dtype) ----------------
def _soft_labels(target: torch.Tensor, n_bins: int, sigma: float, low: float, high: float) -> torch.Tensor:
    centres = torch.linspace(float(low), float(high), n_bins, dtype=target.dtype, device=target.device)
    logits = -((centres[None, :] - target[:, None]) ** 2) / (2.0 * float(sigma) ** 2)
    return torch.softmax(logits, dim=-1)


def _distribution(
    logits: torch.Tensor, target: torch.Tensor, sigma: float, low: float, high: float
) -> torch.Tensor:
    soft = _soft_labels(target, logits.shape[1], sigma, low, high)
    return F.kl_div(F.log_softmax(logits, dim=-1), soft, reduction="batchmean")


def _listwise(pred: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    p_true = torch.softmax(target / temperature, dim=0)
    return -(p_true * torch.log_softmax(pred / temperature, dim=0)).sum()


def _alignment(
    audio_emb: torch.Tensor,
    text_emb: torch.Tensor,
    ta_target: torch.Tensor,
    low: float,
    high: float,
    mapping: str,
) -> torch.Tensor:
    cos = F.cosine_similarity(audio_emb, text_emb, dim=-1, eps=1e-8)
    mapped = (cos + 1.0) / 2.0 if mapping == "affine" else cos
    anchor = (ta_target - float(low)) / (float(high) - float(low))
    return F.mse_loss(mapped, anchor)


def _contrast(
    ta_own: torch.Tensor,
    ta_swapped: torch.Tensor,
    ta_target: torch.Tensor,
    valid: torch.Tensor,
    temperature: float,
    low: float,
    high: float,
) -> torch.Tensor:
    weight = ((ta_target - float(low)) / (float(high) - float(low))).clamp(0.0, 1.0) * valid
    logistic = F.softplus((ta_swapped - ta_own) / temperature)
    return (weight * logistic).sum() / valid.sum().clamp(min=1)


def _regression(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


def _pairwise(pred: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    higher = target[:, None] > target[None, :]  # [B, B]: i ranked above j
    if not higher.any():
        return pred.sum() * 0.0
    diff = pred[:, None] - pred[None, :]
    return torch.clamp(float(margin) - diff[higher], min=0.0).mean()


# ---- public objectives: check their arguments, then compute -----------------------------------


def bin_centres(
    n_bins: int = 20,
    low: float = 1.0,
    high: float = 5.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Evenly spaced bin centres from ``low`` to ``high`` inclusive: [n_bins]."""
    n_bins = check_int(n_bins, "n_bins", 2)
    check_range(low, high)
    return torch.linspace(float(low), float(high), n_bins, dtype=dtype, device=device)


def gaussian_soft_labels(
    target: torch.Tensor, n_bins: int = 20, sigma: float = 0.25, low: float = 1.0, high: float = 5.0
) -> torch.Tensor:
    """Gaussian soft labels over the score bins.

    Args:
        target: [B] scores (e.g. MOS on 1-5).
        n_bins: number of bins; centres are ``linspace(low, high, n_bins)``.
        sigma: standard deviation of the Gaussian, on the score scale.

    Returns:
        [B, n_bins], each row ``exp(-(c - y)^2 / (2 sigma^2))`` normalised to sum to 1
        (computed as a softmax, so targets far outside [low, high] stay finite).
    """
    target = vector(target, "target")
    check_positive_float(sigma, "sigma")
    if not torch.isfinite(target).all():
        raise ValueError("target contains NaN or Inf; expected finite scores")
    n_bins = check_int(n_bins, "n_bins", 2)
    check_range(low, high)
    return _soft_labels(target, n_bins, sigma, low, high)


def distribution_loss(
    logits: torch.Tensor, target: torch.Tensor, sigma: float = 0.25, low: float = 1.0, high: float = 5.0
) -> torch.Tensor:
    """KL(soft label || softmax(logits)), reduction ``batchmean``.

    Args:
        logits: [B, n_bins] unnormalised bin scores of one head.
        target: [B] scores on [low, high]; the soft label is ``gaussian_soft_labels(target, n_bins, sigma)``.

    Returns:
        scalar: ``sum_b sum_k p_bk (log p_bk - log q_bk) / B``.
    """
    logits = checked_logits(logits, "logits")
    target = label_for(target, "target", logits.shape[0], logits)
    check_positive_float(sigma, "sigma")
    check_range(low, high)
    return _distribution(logits, target, sigma, low, high)


def listwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """BALR: ListNet cross-entropy with the whole batch as one list.

    ``-sum_i softmax(y / T)_i * log_softmax(s / T)_i``; the target distribution is detached.

    Args:
        pred: [B] predicted scores ``s`` (e.g. expected MI).
        target: [B] human scores ``y``.
        temperature: T > 0.

    Returns:
        scalar. For B == 1 the list has one item and the loss is exactly 0 (still connected to
        ``pred``'s graph, so ``backward`` works and gives a zero gradient).
    """
    pred = vector(pred, "pred")
    target = label_for(target, "target", pred.shape[0], pred)
    check_positive_float(temperature, "temperature")
    return _listwise(pred, target, temperature)


def score_anchored_alignment_loss(
    audio_emb: torch.Tensor,
    text_emb: torch.Tensor,
    ta_target: torch.Tensor,
    low: float = 1.0,
    high: float = 5.0,
    mapping: str = "affine",
) -> torch.Tensor:
    """SAMA: ``MSE(m(cos(a, t)), (y - low) / (high - low))``.

    Args:
        audio_emb: [B, D] pre-fusion audio embeddings ``a``.
        text_emb: [B, D] pre-fusion text embeddings ``t``.
        ta_target: [B] TA labels on [low, high].
        mapping: ``"affine"`` maps the cosine to [0, 1] with ``(cos + 1) / 2`` (paper, default);
            ``"raw"`` uses the cosine itself (latest public code).

    Returns:
        scalar mean squared error over the batch.
    """
    audio_emb, text_emb = checked_embeddings(audio_emb, text_emb, ("audio_emb", "text_emb"))
    check_choice(mapping, "mapping", SAMA_MAPPINGS)
    check_range(low, high)
    ta_target = label_for(ta_target, "ta_target", audio_emb.shape[0], audio_emb)
    return _alignment(audio_emb, text_emb, ta_target, low, high, mapping)


def prompt_contrast_loss(
    ta_own: torch.Tensor,
    ta_swapped: torch.Tensor,
    ta_target: torch.Tensor,
    valid: torch.Tensor | None = None,
    temperature: float = 0.5,
    low: float = 1.0,
    high: float = 5.0,
) -> torch.Tensor:
    """Prompt contrast: a clip should score higher TA with its own prompt than with another one.

    ``sum_i w_i * softplus((ta_swapped_i - ta_own_i) / temperature) / n_valid`` with
    ``w_i = (y_i - low) / (high - low)`` (clipped to [0, 1]) and only valid pairs counted: a clip
    rated as matching its prompt must prefer it strongly, one rated as ignoring it not at all.
    The same audio is scored twice, so recognising who made a clip cannot lower this loss; only
    relating the audio to the words can.

    Args:
        ta_own: [B] TA of each clip with its own prompt.
        ta_swapped: [B] TA of the same clips with another clip's (different) prompt.
        ta_target: [B] TA labels on [low, high] (of the own prompt).
        valid: [B] bool, False where no different prompt was available (default: all valid).
        temperature: score difference per unit of the logistic (score points).

    Returns:
        scalar; 0 when no pair is valid.
    """
    ta_own = vector(ta_own, "ta_own")
    ta_swapped = swapped_scores(ta_swapped, ta_own)
    ta_target = label_for(ta_target, "ta_target", ta_own.shape[0], ta_own)
    valid = valid_mask(valid, ta_own)
    check_positive_float(temperature, "temperature")
    check_range(low, high)
    return _contrast(ta_own, ta_swapped, ta_target, valid, temperature, low, high)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Point-wise regression baseline on the expected score.

    Args:
        pred: [B] predicted scores. target: [B] labels. kind: ``"l1"`` or ``"mse"``.

    Returns:
        scalar mean absolute (``l1``) or squared (``mse``) error.
    """
    pred = vector(pred, "pred")
    target = label_for(target, "target", pred.shape[0], pred)
    check_choice(kind, "kind", REGRESSION_KINDS)
    return _regression(pred, target, kind)


def pairwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Margin ranking baseline over all pairs of the batch with distinct labels.

    Mean over pairs (i, j) with ``target_i > target_j`` of ``max(0, margin - (pred_i - pred_j))``
    (each unordered pair counted once; counting both orders gives the same mean).

    Args:
        pred: [B] predicted scores. target: [B] labels. margin: >= 0, on the score scale.

    Returns:
        scalar; exactly 0 (connected to ``pred``'s graph) when no two labels differ.
    """
    pred = vector(pred, "pred")
    target = label_for(target, "target", pred.shape[0], pred)
    check_non_negative_float(margin, "margin")
    return _pairwise(pred, target, margin)


@dataclass(frozen=True)
class LossWeights:
    """How ``deramos_loss`` combines the objectives. Defaults are the paper's (dist + BALR + SAMA).

    Checked when built and immutable after (``dataclasses.replace`` makes a changed copy), so
    ``deramos_loss`` never checks it again.

    objective: ``"distribution"`` (KL to Gaussian soft labels, per head) or ``"regression"``
        (``regression_kind`` on the expected scores ``out.mi`` / ``out.ta``).
    use_balr / alpha: add ``alpha *`` the ranking loss on MI; ``ranking="listwise"`` is BALR,
        ``"pairwise"`` the margin-ranking baseline (``pairwise_margin``).
    use_sama / beta: add ``beta *`` SAMA on the alignment embeddings, with ``sama_mapping``.
    use_contrast / gamma: add ``gamma *`` the prompt contrast on TA (``prompt_contrast_loss``, not
        in the paper), at ``contrast_temperature``; off by default.
    """

    objective: str = "distribution"
    regression_kind: str = "l1"
    use_balr: bool = True
    alpha: float = 0.2
    ranking: str = "listwise"
    temperature: float = 1.0
    pairwise_margin: float = 0.1
    use_sama: bool = True
    beta: float = 0.3
    sama_mapping: str = "affine"
    use_contrast: bool = False
    gamma: float = 1.0
    contrast_temperature: float = 0.5
    sigma: float = 0.25
    low: float = 1.0
    high: float = 5.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError/InputTypeError naming the first bad field."""
        for key, allowed in (
            ("objective", OBJECTIVES),
            ("regression_kind", REGRESSION_KINDS),
            ("ranking", RANKING_KINDS),
            ("sama_mapping", SAMA_MAPPINGS),
        ):
            check_choice(getattr(self, key), f"LossWeights.{key}", allowed)
        for key in ("use_balr", "use_sama", "use_contrast"):
            check_bool(getattr(self, key), f"LossWeights.{key}")
        for key in ("alpha", "beta", "gamma", "pairwise_margin"):
            check_non_negative_float(getattr(self, key), f"LossWeights.{key}")
        for key in ("temperature", "contrast_temperature", "sigma"):
            check_positive_float(getattr(self, key), f"LossWeights.{key}")
        for key in ("low", "high"):
            check_number(getattr(self, key), f"LossWeights.{key}")
        if not self.low < self.high:
            raise InputError(f"LossWeights: low ({self.low}) must be < high ({self.high})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LossWeights:
        """One of the ablation settings in ``ABLATIONS`` (optionally with fields overridden)."""
        if name not in ABLATIONS:
            raise InputError(f"unknown loss preset {name!r}; known: {sorted(ABLATIONS)}")
        return replace(ABLATIONS[name], **overrides)


ABLATIONS: dict[str, LossWeights] = {
    "regression": LossWeights(objective="regression", regression_kind="l1", use_balr=False, use_sama=False),
    "regression_mse": LossWeights(
        objective="regression", regression_kind="mse", use_balr=False, use_sama=False
    ),
    "distribution": LossWeights(use_balr=False, use_sama=False),
    "distribution+balr": LossWeights(use_balr=True, use_sama=False),
    "distribution+sama": LossWeights(use_balr=False, use_sama=True),
    "deramos": LossWeights(use_balr=True, use_sama=True),
    "distribution+pairwise": LossWeights(use_balr=True, ranking="pairwise", use_sama=False),
}
"""Named loss settings for the ablation: point-wise regression, distribution only, +BALR, +SAMA,
+both (``"deramos"``, the paper), and the pairwise-ranking baseline in BALR's place."""


def _out_field(out: object, name: str) -> torch.Tensor:
    if not hasattr(out, name):
        raise TypeError(f"out must have attribute {name!r} (the model output), got {type(out).__name__}")
    return getattr(out, name)


def _ranking_term(
    out: object,
    mi_target: torch.Tensor,
    weights: LossWeights,
    balr_inputs: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """The ranking loss on MI: over ``(out.mi, mi_target)`` (checked target) or ``balr_inputs``."""
    if balr_inputs is None:
        pred = vector(_out_field(out, "mi"), "out.mi")
        check_batch(mi_target, "mi_target", pred.shape[0])
        target = as_label(mi_target, pred)
    else:
        if not isinstance(balr_inputs, (tuple, list)) or len(balr_inputs) != 2:
            raise TypeError("balr_inputs must be a pair (pred [N], target [N])")
        pred = vector(balr_inputs[0], "pred")
        target = label_for(balr_inputs[1], "target", pred.shape[0], pred)
    if weights.ranking == "listwise":
        return _listwise(pred, target, weights.temperature)
    return _pairwise(pred, target, weights.pairwise_margin)


def _contrast_term(
    out: object,
    ta_target: torch.Tensor,
    weights: LossWeights,
    contrast_inputs: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    if not isinstance(contrast_inputs, (tuple, list)) or len(contrast_inputs) != 2:
        raise TypeError(
            "contrast_inputs must be a pair (ta_swapped [B], valid [B] bool) when weights.use_contrast is on"
        )
    ta_own = vector(_out_field(out, "ta"), "out.ta")
    ta_swapped = swapped_scores(contrast_inputs[0], ta_own)
    valid = valid_mask(contrast_inputs[1], ta_own)
    check_batch(ta_target, "ta_target", ta_own.shape[0])
    label = as_label(ta_target, ta_own)
    w = weights
    return _contrast(ta_own, ta_swapped, label, valid, w.contrast_temperature, w.low, w.high)


def deramos_loss(
    out: object,
    mi_target: torch.Tensor,
    ta_target: torch.Tensor,
    weights: LossWeights | None = None,
    balr_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    contrast_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DeRA-MOS training loss ``L_MI + L_TA + alpha * L_rank + beta * L_SAMA [+ gamma * L_contrast]``.

    Args:
        out: the model output; read by attribute: ``mi``, ``ta`` [B], ``mi_logits``, ``ta_logits``
            [B, n_bins], ``audio_embedding``, ``text_embedding`` [B, D] (only those the chosen
            objectives need).
        mi_target, ta_target: [B] human MI / TA labels.
        weights: which objectives and weights; default ``LossWeights()`` (paper).
        balr_inputs: optional ``(pred [N], target [N])`` to compute the ranking term over instead
            of ``(out.mi, mi_target)``, e.g. the global batch gathered from all processes.
        contrast_inputs: ``(ta_swapped [B], valid [B] bool)``, the same clips' TA with other
            prompts; required when ``weights.use_contrast``.

    Returns:
        ``(total, parts)``: ``total`` is the scalar to backpropagate; ``parts`` maps
        ``"mi"``, ``"ta"`` (distribution or regression term), ``"balr"``, ``"sama"``, ``"contrast"`` (unweighted,
        present only when enabled) and ``"total"`` to detached scalars.
    """
    weights = LossWeights() if weights is None else weights
    if not isinstance(weights, LossWeights):
        raise TypeError(f"weights must be a LossWeights, got {type(weights).__name__}")
    w = weights
    parts: dict[str, torch.Tensor] = {}
    # Each input is checked once here; the objectives below run on checked tensors.
    if w.objective == "distribution":
        mi_pred = checked_logits(_out_field(out, "mi_logits"), "out.mi_logits")
        ta_pred = checked_logits(_out_field(out, "ta_logits"), "out.ta_logits")
    else:
        mi_pred = vector(_out_field(out, "mi"), "out.mi")
        ta_pred = vector(_out_field(out, "ta"), "out.ta")
    mi_target = checked_target(mi_target, "mi_target", mi_pred.shape[0])
    ta_target = checked_target(ta_target, "ta_target", ta_pred.shape[0])
    if w.objective == "distribution":
        parts["mi"] = _distribution(mi_pred, as_label(mi_target, mi_pred), w.sigma, w.low, w.high)
        parts["ta"] = _distribution(ta_pred, as_label(ta_target, ta_pred), w.sigma, w.low, w.high)
    else:
        parts["mi"] = _regression(mi_pred, as_label(mi_target, mi_pred), w.regression_kind)
        parts["ta"] = _regression(ta_pred, as_label(ta_target, ta_pred), w.regression_kind)
    total = parts["mi"] + parts["ta"]
    if w.use_balr:
        parts["balr"] = _ranking_term(out, mi_target, w, balr_inputs)
        total = total + w.alpha * parts["balr"]
    if w.use_sama:
        audio_emb, text_emb = checked_embeddings(
            _out_field(out, "audio_embedding"),
            _out_field(out, "text_embedding"),
            ("out.audio_embedding", "out.text_embedding"),
        )
        check_batch(ta_target, "ta_target", audio_emb.shape[0])
        ta_label = as_label(ta_target, audio_emb)
        parts["sama"] = _alignment(audio_emb, text_emb, ta_label, w.low, w.high, w.sama_mapping)
        total = total + w.beta * parts["sama"]
    if w.use_contrast:
        parts["contrast"] = _contrast_term(out, ta_target, w, contrast_inputs)
        total = total + w.gamma * parts["contrast"]
    parts = {k: v.detach() for k, v in parts.items()}
    parts["total"] = total.detach()
    return total, parts
