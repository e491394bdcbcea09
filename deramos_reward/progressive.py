"""Progressive best-of-N: prune weak candidates early instead of finishing all N.

Generation runs in stages. All ``n`` candidates of a prompt are generated up to the first
checkpoint, their partial audio is scored, and only the best ``keep`` fraction (rounded up, at
least one) is continued from its own codes to the next checkpoint, and so on to the full length.
The chosen candidate is the best one that reached the end. Every candidate keeps a score: the
final one, or, for a pruned candidate, the score of its last partial audio (``pruned`` marks
those).

The generator is a *segment generator*:
``generate_segment(prompts, prefix, frames) -> (audio, codes)`` continues ``prefix`` codes
``[B, K, S0]`` (``None`` at the first stage) to ``frames`` code frames in total and returns the
decoded audio of all of them (``[B, T]`` or ``[B, C, T]``) and the codes ``[B, K, frames]``.
``deramos_reward.integrations.audiocraft`` and ``.transformers_musicgen`` provide one for MusicGen.

Compute: plain best-of-N generates ``P * n * frames`` frames. With checkpoints ``f_1 < f_2 ...``
and keep fraction ``k``, progressive generates about
``P * n * (f_1 + k (f_2 - f_1) + k^2 (1 - f_2) ...) * frames``; the exact count is in
``result.stats`` (continuing from a prefix also costs one parallel pass over the prefix, which
is not counted as generated frames).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .rerank import (
    BestOfNResult,
    batch_seeds,
    check_n,
    check_prompt_list,
    generate_batches,
    score_candidates,
)
from .validation import check_sample_rate

SegmentGenerator = Callable[[list[str], torch.Tensor | None, int], tuple[torch.Tensor, torch.Tensor]]


def stage_frames(total_frames: int, checkpoints: Sequence[float]) -> list[int]:
    """Frame counts at which candidates are scored: ``round(f * total)`` per checkpoint, then total.

    Raises ValueError unless the checkpoints are increasing fractions in (0, 1) that map to
    distinct frame counts in [1, total_frames).
    """
    if isinstance(total_frames, bool) or not isinstance(total_frames, int) or total_frames < 2:
        raise ValueError(f"total_frames must be an int >= 2, got {total_frames!r}")
    checkpoints = list(checkpoints)
    for f in checkpoints:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise ValueError(f"checkpoints must be fractions of the duration in (0, 1), got {checkpoints}")
    frames = [max(1, round(f * total_frames)) for f in checkpoints] + [total_frames]
    if any(b <= a for a, b in zip(frames, frames[1:])):
        raise ValueError(
            f"checkpoints {checkpoints} give frame counts {frames} for {total_frames} frames; "
            "they must be increasing and distinct (use fewer checkpoints or a longer duration)"
        )
    return frames


def progressive_best_of_n(
    generate_segment: SegmentGenerator,
    prompts: str | Sequence[str],
    n: int,
    reward: Callable,
    sample_rate: int,
    total_frames: int,
    checkpoints: Sequence[float] = (0.25, 0.5),
    keep: float = 0.5,
    max_batch: int = 16,
    seed: int | None = None,
    return_candidates: bool = False,
    progress: bool = False,
) -> BestOfNResult:
    """Best-of-N with pruning at ``checkpoints`` (fractions of ``total_frames``).

    Args:
        generate_segment: see the module docstring.
        prompts: P prompts.
        n: candidates per prompt.
        reward: a ``MusicReward`` or ``reward(audio, sample_rate, prompts) -> [B]``.
        sample_rate: rate of the generated audio.
        total_frames: code frames of a finished candidate.
        checkpoints: increasing fractions in (0, 1) at which partial audio is scored.
        keep: fraction of a prompt's surviving candidates continued after each checkpoint
            (``ceil(keep * alive)``, at least 1; ``n`` need not be divisible by anything).
        max_batch, seed: as in ``best_of_n`` (a stage's sub-batches get their own seeds).
        return_candidates: also return every candidate's audio ``[P, n, ...]`` and codes
            ``[P, n, K, total_frames]``; pruned candidates are zero-padded (codes padded with -1).
    Returns:
        BestOfNResult: ``scores`` [P, n] (final score, or last partial score where ``pruned``),
        ``index`` [P] the best unpruned candidate, ``audio``/``codes`` of it, and ``stats`` with
        ``generated_frames``, ``plain_generated_frames`` (plain best-of-N at the same n) and
        ``saved_fraction``.
    """
    if not callable(generate_segment):
        raise TypeError(f"generate_segment must be callable, got {type(generate_segment).__name__}")
    if not callable(reward):
        raise TypeError(f"reward must be a MusicReward or a callable, got {type(reward).__name__}")
    prompts = check_prompt_list(prompts)
    n = check_n(n)
    max_batch = check_n(max_batch, "max_batch")
    sample_rate = check_sample_rate(sample_rate)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    frames = stage_frames(total_frames, checkpoints)

    P = len(prompts)
    scores = torch.full((P, n), float("nan"))
    mi = torch.full((P, n), float("nan"))
    ta = torch.full((P, n), float("nan"))
    reached = torch.zeros((P, n), dtype=torch.long)  # index of the last stage each candidate finished
    alive = [(p, i) for p in range(P) for i in range(n)]  # prompt-major
    prefix: torch.Tensor | None = None  # codes of the alive candidates, [len(alive), K, S]
    audio = codes = None
    partial_audio: dict[tuple[int, int], torch.Tensor] = {}
    partial_codes: dict[tuple[int, int], torch.Tensor] = {}
    generated = 0
    prev = 0
    for stage, target in enumerate(frames):
        stage_prompts = [prompts[p] for p, _ in alive]
        seeds = batch_seeds(seed, len(range(0, len(alive), max_batch)), stream=stage)

        def call(start: int, stop: int, stage_prompts=stage_prompts, prefix=prefix, target=target):
            pre = None if prefix is None else prefix[start:stop]
            return generate_segment(stage_prompts[start:stop], pre, target)

        audio, codes = generate_batches(
            call, len(alive), max_batch, seeds, desc=f"stage {stage + 1}/{len(frames)}", progress=progress
        )
        if codes is None or codes.dim() < 2 or codes.shape[-1] != target:
            raise ValueError(
                f"generate_segment must return (audio, codes [B, K, {target}]) at stage {stage + 1}, "
                f"got codes of shape {None if codes is None else tuple(codes.shape)}"
            )
        generated += len(alive) * (target - prev)
        s, m, t = score_candidates(reward, audio, sample_rate, stage_prompts, [p for p, _ in alive])
        for j, (p, i) in enumerate(alive):
            scores[p, i], reached[p, i] = s[j], stage
            if m is not None:
                mi[p, i], ta[p, i] = m[j], t[j]
        if stage == len(frames) - 1:
            break
        survivors = []
        for p in range(P):
            mine = [j for j, (q, _) in enumerate(alive) if q == p]
            count = max(1, math.ceil(keep * len(mine)))
            best = sorted(mine, key=lambda j: (-float(s[j]), alive[j][1]))[:count]
            survivors += sorted(best, key=lambda j: alive[j][1])
            if return_candidates:
                for j in set(mine) - set(best):
                    partial_audio[alive[j]], partial_codes[alive[j]] = audio[j], codes[j]
        keep_idx = torch.tensor(survivors, dtype=torch.long)
        prefix = codes.index_select(0, keep_idx.to(codes.device))
        alive = [alive[j] for j in survivors]
        prev = target

    final = reached == len(frames) - 1
    index = scores.masked_fill(~final, float("-inf")).argmax(dim=1)
    row_of = {pi: j for j, pi in enumerate(alive)}
    chosen = [row_of[(p, int(index[p]))] for p in range(P)]
    chosen_idx = torch.tensor(chosen, dtype=torch.long)
    plain = P * n * total_frames
    result = BestOfNResult(
        audio=audio.index_select(0, chosen_idx.to(audio.device)),
        scores=scores,
        index=index,
        sample_rate=sample_rate,
        prompts=prompts,
        codes=codes.index_select(0, chosen_idx.to(codes.device)),
        mi=None if mi.isnan().all() else mi,
        ta=None if ta.isnan().all() else ta,
        pruned=~final,
        stats={
            "candidates": P * n,
            "stage_frames": frames,
            "generated_frames": generated,
            "plain_generated_frames": plain,
            "saved_fraction": 1.0 - generated / plain,
        },
    )
    if return_candidates:
        for j, pi in enumerate(alive):
            partial_audio[pi], partial_codes[pi] = audio[j], codes[j]
        result.candidates = _pad_stack(partial_audio, P, n, 0.0)
        result.candidate_codes = _pad_stack(partial_codes, P, n, -1)
    return result


def _pad_stack(items: dict[tuple[int, int], torch.Tensor], P: int, n: int, fill: float) -> torch.Tensor:
    """{(p, i): [..., L_pi]} -> [P, n, ..., L_max], padded at the end of the last axis with ``fill``."""
    length = max(x.shape[-1] for x in items.values())
    first = next(iter(items.values()))
    out = torch.full((P, n, *first.shape[:-1], length), fill, dtype=first.dtype, device=first.device)
    for (p, i), x in items.items():
        out[p, i, ..., : x.shape[-1]] = x
    return out


__all__ = ["SegmentGenerator", "progressive_best_of_n", "stage_frames"]
