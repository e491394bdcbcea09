"""DeRA-MOS training objectives, as plain functions of tensors.

- ``distribution_loss``: KL(Gaussian soft label || predicted 20-bin distribution), per head.
- ``listwise_ranking_loss`` (BALR): ListNet cross-entropy over the mini-batch as one list (MI).
- ``score_anchored_alignment_loss`` (SAMA): MSE between the mapped audio/text cosine and the
  normalised TA label.
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

from .errors import InputError, InputTypeError

OBJECTIVES = ("distribution", "regression")
REGRESSION_KINDS = ("l1", "mse")
RANKING_KINDS = ("listwise", "pairwise")
SAMA_MAPPINGS = ("affine", "raw")


def _tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def _vector(x: object, name: str) -> torch.Tensor:
    x = _tensor(x, name)
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D [B], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; expected a batch of at least one value")
    return x


def _target(target: object, name: str, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Check a label vector [B] against batch size ``batch``; cast to ``like``'s dtype/device."""
    target = _vector(target, name)
    if target.shape[0] != batch:
        raise ValueError(f"{name} has {target.shape[0]} values but the predictions have batch size {batch}")
    if not torch.isfinite(target).all():
        raise ValueError(f"{name} contains NaN or Inf; every clip in a training batch needs a finite label")
    return target.detach().to(dtype=like.dtype, device=like.device)


def _check_range(low: float, high: float) -> None:
    if not float(low) < float(high):
        raise ValueError(f"low ({low}) must be < high ({high})")


def _check_positive(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def bin_centres(
    n_bins: int = 20,
    low: float = 1.0,
    high: float = 5.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Evenly spaced bin centres from ``low`` to ``high`` inclusive: [n_bins]."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
    _check_range(low, high)
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
    target = _vector(target, "target")
    _check_positive(sigma, "sigma")
    if not torch.isfinite(target).all():
        raise ValueError("target contains NaN or Inf; expected finite scores")
    centres = bin_centres(n_bins, low, high, dtype=target.dtype, device=target.device)
    logits = -((centres[None, :] - target[:, None]) ** 2) / (2.0 * float(sigma) ** 2)
    return torch.softmax(logits, dim=-1)


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
    logits = _tensor(logits, "logits")
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"logits must be [B, n_bins] with B >= 1 and n_bins >= 2, got {tuple(logits.shape)}")
    target = _target(target, "target", logits.shape[0], logits)
    soft = gaussian_soft_labels(target, logits.shape[1], sigma, low, high)
    return F.kl_div(F.log_softmax(logits, dim=-1), soft, reduction="batchmean")


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
    pred = _vector(pred, "pred")
    target = _target(target, "target", pred.shape[0], pred)
    _check_positive(temperature, "temperature")
    p_true = torch.softmax(target / temperature, dim=0)
    return -(p_true * torch.log_softmax(pred / temperature, dim=0)).sum()


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
    audio_emb = _tensor(audio_emb, "audio_emb")
    text_emb = _tensor(text_emb, "text_emb")
    if audio_emb.dim() != 2 or audio_emb.shape[0] == 0:
        raise ValueError(f"audio_emb must be [B, D] with B >= 1, got shape {tuple(audio_emb.shape)}")
    if text_emb.shape != audio_emb.shape:
        raise ValueError(
            f"text_emb must have the same shape as audio_emb {tuple(audio_emb.shape)}, got {tuple(text_emb.shape)}"
        )
    if mapping not in SAMA_MAPPINGS:
        raise ValueError(f"mapping must be one of {SAMA_MAPPINGS}, got {mapping!r}")
    _check_range(low, high)
    ta_target = _target(ta_target, "ta_target", audio_emb.shape[0], audio_emb)
    cos = F.cosine_similarity(audio_emb, text_emb, dim=-1, eps=1e-8)
    mapped = (cos + 1.0) / 2.0 if mapping == "affine" else cos
    anchor = (ta_target - float(low)) / (float(high) - float(low))
    return F.mse_loss(mapped, anchor)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Point-wise regression baseline on the expected score.

    Args:
        pred: [B] predicted scores. target: [B] labels. kind: ``"l1"`` or ``"mse"``.

    Returns:
        scalar mean absolute (``l1``) or squared (``mse``) error.
    """
    pred = _vector(pred, "pred")
    target = _target(target, "target", pred.shape[0], pred)
    if kind not in REGRESSION_KINDS:
        raise ValueError(f"kind must be one of {REGRESSION_KINDS}, got {kind!r}")
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


def pairwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Margin ranking baseline over all pairs of the batch with distinct labels.

    Mean over pairs (i, j) with ``target_i > target_j`` of ``max(0, margin - (pred_i - pred_j))``
    (each unordered pair counted once; counting both orders gives the same mean).

    Args:
        pred: [B] predicted scores. target: [B] labels. margin: >= 0, on the score scale.

    Returns:
        scalar; exactly 0 (connected to ``pred``'s graph) when no two labels differ.
    """
    pred = _vector(pred, "pred")
    target = _target(target, "target", pred.shape[0], pred)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    higher = target[:, None] > target[None, :]  # [B, B]: i ranked above j
    if not higher.any():
        return pred.sum() * 0.0
    diff = pred[:, None] - pred[None, :]
    return torch.clamp(float(margin) - diff[higher], min=0.0).mean()


@dataclass
class LossWeights:
    """How ``deramos_loss`` combines the objectives. Defaults are the paper's (dist + BALR + SAMA).

    objective: ``"distribution"`` (KL to Gaussian soft labels, per head) or ``"regression"``
        (``regression_kind`` on the expected scores ``out.mi`` / ``out.ta``).
    use_balr / alpha: add ``alpha *`` the ranking loss on MI; ``ranking="listwise"`` is BALR,
        ``"pairwise"`` the margin-ranking baseline (``pairwise_margin``).
    use_sama / beta: add ``beta *`` SAMA on the alignment embeddings, with ``sama_mapping``.
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
    sigma: float = 0.25
    low: float = 1.0
    high: float = 5.0

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InputError(f"LossWeights.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.regression_kind not in REGRESSION_KINDS:
            raise InputError(
                f"LossWeights.regression_kind must be one of {REGRESSION_KINDS}, got {self.regression_kind!r}"
            )
        if self.ranking not in RANKING_KINDS:
            raise InputError(f"LossWeights.ranking must be one of {RANKING_KINDS}, got {self.ranking!r}")
        if self.sama_mapping not in SAMA_MAPPINGS:
            raise InputError(
                f"LossWeights.sama_mapping must be one of {SAMA_MAPPINGS}, got {self.sama_mapping!r}"
            )
        for key in ("use_balr", "use_sama"):
            if not isinstance(getattr(self, key), bool):
                raise InputTypeError(f"LossWeights.{key} must be a bool, got {getattr(self, key)!r}")
        for key in ("alpha", "beta", "pairwise_margin"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(f"LossWeights.{key} must be a number >= 0, got {value!r}")
        for key in ("temperature", "sigma"):
            try:
                _check_positive(getattr(self, key), f"LossWeights.{key}")
            except ValueError as err:
                raise InputError(str(err)) from None
        try:
            _check_range(self.low, self.high)
        except ValueError as err:
            raise InputError(f"LossWeights: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LossWeights:
        """One of the ablation settings in ``ABLATIONS`` (optionally with fields overridden)."""
        if name not in ABLATIONS:
            raise InputError(f"unknown loss preset {name!r}; known: {sorted(ABLATIONS)}")
        weights = replace(ABLATIONS[name], **overrides)
        weights.validate()
        return weights


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


def deramos_loss(
    out: object,
    mi_target: torch.Tensor,
    ta_target: torch.Tensor,
    weights: LossWeights | None = None,
    balr_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DeRA-MOS training loss ``L_MI + L_TA + alpha * L_rank + beta * L_SAMA``.

    Args:
        out: the model output; read by attribute: ``mi``, ``ta`` [B], ``mi_logits``, ``ta_logits``
            [B, n_bins], ``audio_embedding``, ``text_embedding`` [B, D] (only those the chosen
            objectives need).
        mi_target, ta_target: [B] human MI / TA labels.
        weights: which objectives and weights; default ``LossWeights()`` (paper).
        balr_inputs: optional ``(pred [N], target [N])`` to compute the ranking term over instead
            of ``(out.mi, mi_target)``, e.g. the global batch gathered from all processes.

    Returns:
        ``(total, parts)``: ``total`` is the scalar to backpropagate; ``parts`` maps
        ``"mi"``, ``"ta"`` (distribution or regression term), ``"balr"``, ``"sama"`` (unweighted,
        present only when enabled) and ``"total"`` to detached scalars.
    """
    weights = LossWeights() if weights is None else weights
    if not isinstance(weights, LossWeights):
        raise TypeError(f"weights must be a LossWeights, got {type(weights).__name__}")
    weights.validate()
    parts: dict[str, torch.Tensor] = {}
    if weights.objective == "distribution":
        mi_logits, ta_logits = _out_field(out, "mi_logits"), _out_field(out, "ta_logits")
        _target(mi_target, "mi_target", _tensor(mi_logits, "out.mi_logits").shape[0], mi_logits)
        _target(ta_target, "ta_target", _tensor(ta_logits, "out.ta_logits").shape[0], ta_logits)
        parts["mi"] = distribution_loss(mi_logits, mi_target, weights.sigma, weights.low, weights.high)
        parts["ta"] = distribution_loss(ta_logits, ta_target, weights.sigma, weights.low, weights.high)
    else:
        mi, ta = _vector(_out_field(out, "mi"), "out.mi"), _vector(_out_field(out, "ta"), "out.ta")
        _target(mi_target, "mi_target", mi.shape[0], mi)
        _target(ta_target, "ta_target", ta.shape[0], ta)
        parts["mi"] = regression_loss(mi, mi_target, weights.regression_kind)
        parts["ta"] = regression_loss(ta, ta_target, weights.regression_kind)
    total = parts["mi"] + parts["ta"]
    if weights.use_balr:
        if balr_inputs is None:
            pred = _vector(_out_field(out, "mi"), "out.mi")
            _target(mi_target, "mi_target", pred.shape[0], pred)
            rank_pred, rank_target = pred, mi_target
        else:
            if not isinstance(balr_inputs, (tuple, list)) or len(balr_inputs) != 2:
                raise TypeError("balr_inputs must be a pair (pred [N], target [N])")
            rank_pred, rank_target = balr_inputs
        if weights.ranking == "listwise":
            parts["balr"] = listwise_ranking_loss(rank_pred, rank_target, weights.temperature)
        else:
            parts["balr"] = pairwise_ranking_loss(rank_pred, rank_target, weights.pairwise_margin)
        total = total + weights.alpha * parts["balr"]
    if weights.use_sama:
        parts["sama"] = score_anchored_alignment_loss(
            _out_field(out, "audio_embedding"),
            _out_field(out, "text_embedding"),
            ta_target,
            weights.low,
            weights.high,
            weights.sama_mapping,
        )
        total = total + weights.beta * parts["sama"]
    parts = {k: v.detach() for k, v in parts.items()}
    parts["total"] = total.detach()
    return total, parts
