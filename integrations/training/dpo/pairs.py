"""Preference pairs for DPO from N scored candidates per prompt: selection, building, saving and
loading (a ``datasets.Dataset`` with :data:`PAIR_COLUMNS`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from deramos_reward._optional import require
from deramos_reward.validation import check_prompts

# ------------------------------------------------------------------------------- preference pairs
#
# Pairs are built from N scored candidates per prompt. Every ordered pair (i, j) of a prompt's
# candidates with ``score_i - score_j > margin`` qualifies; they are ranked by score difference (ties:
# lower candidate indices first) and the first ``max_pairs_per_prompt`` are kept. With the default cap of
# 1 this is exactly chosen = best, rejected = worst (the pair with the largest difference).

PAIR_COLUMNS = (
    "prompt",
    "chosen_codes",
    "rejected_codes",
    "chosen_score",
    "rejected_score",
    "margin",
    "scores",
    "chosen_index",
    "rejected_index",
    "prompt_index",
)
"""Columns of every pairs dataset (``chosen_mi``, ``chosen_ta``, ``rejected_mi``, ``rejected_ta`` are
added when the reward is a :class:`~deramos_reward.MusicReward`)."""

PAIRS_SETTINGS = "pairs_settings.json"
"""File written next to the dataset by :func:`save_pairs` when settings are given."""


def _check_margin(margin: object) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise TypeError(f"margin must be a finite number, got {margin!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0 (a score difference), got {margin}")
    return float(margin)


def _check_cap(max_pairs: object, name: str = "max_pairs_per_prompt") -> int | None:
    if max_pairs is None:
        return None
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1:
        raise ValueError(f"{name} must be a positive int or None (no cap), got {max_pairs!r}")
    return max_pairs


def select_pairs(
    scores: Sequence[float] | torch.Tensor, margin: float = 0.0, max_pairs: int | None = 1
) -> list[tuple[int, int, float]]:
    """Choose preference pairs among the candidates of one prompt.

    Args:
        scores: ``[N]`` reward of each candidate.
        margin: keep pairs whose score difference is strictly greater than this (``>= 0``).
        max_pairs: most pairs to keep (largest differences first); None keeps every qualifying pair.

    Returns:
        ``[(chosen_index, rejected_index, difference), ...]`` sorted by decreasing difference (ties:
        lower indices first). With ``max_pairs=1`` the single pair is (argmax, argmin), unless all
        differences are ``<= margin`` (then no pair).
    """
    margin = _check_margin(margin)
    max_pairs = _check_cap(max_pairs, "max_pairs")
    values = torch.as_tensor(scores, dtype=torch.float64).detach().cpu()
    if values.dim() != 1 or values.numel() < 2:
        raise ValueError(f"scores must have shape [N] with N >= 2 candidates, got {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("scores must be finite (got NaN or Inf)")
    diff = values[:, None] - values[None, :]  # [N, N]: diff[i, j] = s_i - s_j
    chosen, rejected = torch.nonzero(diff > margin, as_tuple=True)
    pairs = sorted(
        ((int(i), int(j), float(diff[i, j])) for i, j in zip(chosen, rejected)),
        key=lambda p: (-p[2], p[0], p[1]),
    )
    return pairs if max_pairs is None else pairs[:max_pairs]


def _pair_features(with_parts: bool):
    datasets = require("datasets")
    codes = datasets.List(datasets.List(datasets.Value("int32")))
    features = {
        "prompt": datasets.Value("string"),
        "chosen_codes": codes,
        "rejected_codes": codes,
        "chosen_score": datasets.Value("float64"),
        "rejected_score": datasets.Value("float64"),
        "margin": datasets.Value("float64"),
        "scores": datasets.List(datasets.Value("float64")),
        "chosen_index": datasets.Value("int32"),
        "rejected_index": datasets.Value("int32"),
        "prompt_index": datasets.Value("int32"),
    }
    if with_parts:
        for key in ("chosen_mi", "chosen_ta", "rejected_mi", "rejected_ta"):
            features[key] = datasets.Value("float64")
    return datasets.Features(features)


def build_pairs(
    prompts: Sequence[str],
    codes: torch.Tensor,
    scores: torch.Tensor,
    *,
    margin: float = 0.0,
    max_pairs_per_prompt: int | None = 1,
    mi: torch.Tensor | None = None,
    ta: torch.Tensor | None = None,
    prompt_indices: Sequence[int] | None = None,
):
    """Preference pairs from scored candidates, as a Hugging Face ``datasets.Dataset``.

    Args:
        prompts: ``P`` prompts.
        codes: ``[P, N, K, S]`` integer codes of the ``N`` candidates of each prompt.
        scores: ``[P, N]`` reward of each candidate.
        margin, max_pairs_per_prompt: pair selection (see :func:`select_pairs`).
        mi, ta: ``[P, N]`` optional MI / TA of each candidate (stored for the chosen and rejected sample).
        prompt_indices: ``P`` ids stored in ``prompt_index`` (default ``0 .. P-1``).

    Returns:
        ``datasets.Dataset`` with :data:`PAIR_COLUMNS` (codes as ``K`` lists of ``S`` ints), one row per pair,
        in prompt order; prompts without a qualifying pair contribute no row.
    """
    datasets = require("datasets")
    prompts = check_prompts(prompts, name="prompts")
    margin = _check_margin(margin)
    max_pairs_per_prompt = _check_cap(max_pairs_per_prompt)
    if not isinstance(codes, torch.Tensor) or codes.dim() != 4:
        raise ValueError(
            f"codes must be a [P, N, K, S] tensor, got {getattr(codes, 'shape', type(codes).__name__)}"
        )
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    scores = torch.as_tensor(scores)
    if scores.shape != codes.shape[:2] or codes.shape[0] != len(prompts):
        raise ValueError(
            f"expected {len(prompts)} prompts, codes [P, N, K, S] and scores [P, N] with the same P and N; "
            f"got codes {tuple(codes.shape)} and scores {tuple(scores.shape)}"
        )
    for name, part in (("mi", mi), ("ta", ta)):
        if part is not None and tuple(part.shape) != tuple(scores.shape):
            raise ValueError(
                f"{name} must have the shape of scores {tuple(scores.shape)}, got {tuple(part.shape)}"
            )
    if (mi is None) != (ta is None):
        raise ValueError("mi and ta must be given together")
    if prompt_indices is None:
        prompt_indices = range(len(prompts))
    elif len(prompt_indices) != len(prompts):
        raise ValueError(f"prompt_indices must have {len(prompts)} entries, got {len(prompt_indices)}")
    codes = codes.detach().cpu().to(torch.int32)
    scores = scores.detach().cpu().double()
    rows: dict[str, list] = {name: [] for name in _pair_features(mi is not None)}
    for p, prompt in enumerate(prompts):
        for i, j, diff in select_pairs(scores[p], margin, max_pairs_per_prompt):
            rows["prompt"].append(prompt)
            rows["chosen_codes"].append(codes[p, i].tolist())
            rows["rejected_codes"].append(codes[p, j].tolist())
            rows["chosen_score"].append(float(scores[p, i]))
            rows["rejected_score"].append(float(scores[p, j]))
            rows["margin"].append(diff)
            rows["scores"].append(scores[p].tolist())
            rows["chosen_index"].append(i)
            rows["rejected_index"].append(j)
            rows["prompt_index"].append(int(prompt_indices[p]))
            if mi is not None:
                rows["chosen_mi"].append(float(mi[p, i]))
                rows["chosen_ta"].append(float(ta[p, i]))
                rows["rejected_mi"].append(float(mi[p, j]))
                rows["rejected_ta"].append(float(ta[p, j]))
    return datasets.Dataset.from_dict(rows, features=_pair_features(mi is not None))


def pairs_from_candidates(result: Any, *, margin: float = 0.0, max_pairs_per_prompt: int | None = 1):
    """Pairs from a best-of-N result made with ``return_candidates=True`` and a generator that gives codes.

    ``result`` is a :class:`deramos_reward.BestOfNResult` (``candidate_codes [P, N, K, S]``,
    ``scores [P, N]``, ``mi``/``ta`` when the reward is a ``MusicReward``). Returns a ``datasets.Dataset``
    (see :func:`build_pairs`).
    """
    codes = getattr(result, "candidate_codes", None)
    if codes is None:
        raise ValueError(
            "result has no candidate_codes: run best_of_n with return_candidates=True and a generator "
            "that returns (audio, codes)"
        )
    return build_pairs(
        result.prompts,
        codes,
        result.scores,
        margin=margin,
        max_pairs_per_prompt=max_pairs_per_prompt,
        mi=result.mi,
        ta=result.ta,
    )


def generate_pairs(
    generate: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    prompts: Sequence[str],
    n: int,
    reward: Callable,
    sample_rate: int,
    *,
    margin: float = 0.0,
    max_pairs_per_prompt: int | None = 1,
    max_batch: int = 16,
    seed: int | None = None,
    progress: bool = False,
):
    """Generate ``n`` candidates per prompt, score them and build preference pairs.

    Args:
        generate: ``generate(list[str]) -> (audio [B, C, T] or [B, T], codes [B, K, S])``, e.g. a wrapper of
            :func:`~deramos_reward.integrations.musicgen.transformers.logprobs.generate_with_codes`.
        prompts: ``P`` prompts; n: candidates per prompt (``>= 2``).
        reward: a :class:`~deramos_reward.MusicReward` or any ``reward(audio, sample_rate, prompts) -> [B]``.
        sample_rate: rate of the generated audio in Hz.
        margin, max_pairs_per_prompt: pair selection (see :func:`select_pairs`).
        max_batch, seed, progress: passed to :func:`deramos_reward.best_of_n`.

    Returns:
        ``datasets.Dataset`` of pairs (see :func:`build_pairs`).
    """
    from deramos_reward.rerank import best_of_n

    _check_n(n)
    result = best_of_n(
        generate,
        prompts,
        n,
        reward,
        sample_rate,
        max_batch=max_batch,
        seed=seed,
        return_candidates=True,
        progress=progress,
    )
    return pairs_from_candidates(result, margin=margin, max_pairs_per_prompt=max_pairs_per_prompt)


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (a pair needs two candidates), got {n!r}")
    return n


def musicgen_pairs(
    model: Any,
    prompts: Sequence[str],
    n: int,
    reward: Callable,
    *,
    processor: Any = None,
    duration: float | None = None,
    margin: float = 0.0,
    max_pairs_per_prompt: int | None = 1,
    max_batch: int = 16,
    seed: int | None = None,
    progress: bool = False,
    **sampling: Any,
):
    """Preference pairs from a MusicGen of either library (see :func:`generate_pairs`).

    Candidates come from :func:`deramos_reward.integrations.rerank.best_of_n` (``model`` is a
    backend or a MusicGen, with ``processor`` for transformers; ``duration`` in seconds, None = the model's
    own length; ``sampling``: the library's own sampling options).
    """
    from deramos_reward.integrations.rerank import best_of_n

    _check_n(n)
    result = best_of_n(
        model,
        prompts,
        n,
        reward,
        processor=processor,
        duration=duration,
        max_batch=max_batch,
        seed=seed,
        return_candidates=True,
        progress=progress,
        **sampling,
    )
    return pairs_from_candidates(result, margin=margin, max_pairs_per_prompt=max_pairs_per_prompt)


def save_pairs(dataset: Any, path: str | os.PathLike, settings: dict | None = None) -> Path:
    """Write a pairs dataset to ``path`` atomically (a temporary sibling folder renamed into place).

    ``settings`` (JSON-ready) are stored as :data:`PAIRS_SETTINGS` inside the folder. ``path`` must not exist.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; remove it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        dataset.save_to_disk(str(tmp / "data"))
        if settings is not None:
            (tmp / "data" / PAIRS_SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
        os.replace(tmp / "data", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_pairs(path: str | os.PathLike):
    """Load a pairs dataset written by :func:`save_pairs` (or ``Dataset.save_to_disk``) and check its columns."""
    datasets = require("datasets")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"pairs dataset {str(path)!r} is not a folder (expected datasets.save_to_disk)"
        )
    dataset = datasets.load_from_disk(str(path))
    return check_pairs(dataset, name=f"pairs dataset {str(path)!r}")


def check_pairs(dataset: Any, name: str = "pairs"):
    """Raise unless ``dataset`` is a non-empty ``datasets.Dataset`` with the columns DPO needs."""
    datasets = require("datasets")
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}")
    missing = [c for c in ("prompt", "chosen_codes", "rejected_codes") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; expected the columns of build_pairs")
    if len(dataset) == 0:
        raise ValueError(f"{name} has no pairs")
    return dataset


def collate_pairs(rows: Sequence[dict]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Rows of a pairs dataset -> ``(prompts, chosen [B, K, S], rejected [B, K, S])`` (``long`` codes).

    Every row must have codes of the same shape ``[K, S]`` (the pairs of one ``deramos pairs`` run do).
    """
    if len(rows) == 0:
        raise ValueError("rows must not be empty")
    prompts = [row["prompt"] for row in rows]
    try:
        chosen = torch.stack([torch.as_tensor(row["chosen_codes"], dtype=torch.long) for row in rows])
        rejected = torch.stack([torch.as_tensor(row["rejected_codes"], dtype=torch.long) for row in rows])
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"pairs in a batch must all have codes of one shape [K, S] ({err}); "
            "build them with one duration or use a batch size of 1"
        ) from err
    if chosen.shape != rejected.shape or chosen.dim() != 3:
        raise ValueError(
            f"chosen and rejected codes must both be [K, S]; got {tuple(chosen.shape[1:])} and "
            f"{tuple(rejected.shape[1:])}"
        )
    return prompts, chosen, rejected
