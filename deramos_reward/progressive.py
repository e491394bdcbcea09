"""Progressive best-of-N: prune weak candidates early instead of finishing all N.

Generation runs in stages. All ``n`` candidates of a prompt are generated up to the first
checkpoint, their partial audio is scored, and only the best ``keep`` fraction (rounded up, at
least one) is continued from its own codes to the next checkpoint, and so on to the full length.
The chosen candidate is the best one that reached the end. Every candidate keeps a score: the
final one, or, for a pruned candidate, the score of its last partial audio (``pruned`` marks
those, ``scored_frames`` says how many code frames each score was taken on). A partial score is
not comparable with a final one and can be higher than the chosen candidate's.

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

from .rerank import BestOfNResult, batch_seeds, check_rerank_args, generate_batches, score_candidates
from .validation import check_fraction, check_int

SegmentGenerator = Callable[[list[str], torch.Tensor | None, int], tuple[torch.Tensor, torch.Tensor]]


def stage_frames(total_frames: int, checkpoints: Sequence[float]) -> list[int]:
    """Frame counts at which candidates are scored: ``round(f * total)`` per checkpoint, then total.

    Raises ValueError unless the checkpoints are increasing fractions in (0, 1) that map to
    distinct frame counts in [1, total_frames).
    """
    total_frames = check_int(total_frames, "total_frames", 2)
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
    prompts, n, max_batch, sample_rate = check_rerank_args(
        generate_segment, "generate_segment", prompts, n, reward, sample_rate, max_batch, seed
    )
    keep = check_fraction(keep, "keep")
    frames = stage_frames(total_frames, checkpoints)
    search = _Search(prompts, n, keep_partial=return_candidates)
    for stage, target in enumerate(frames):
        desc = f"stage {stage + 1}/{len(frames)}"
        audio, codes = search.generate(generate_segment, target, max_batch, seed, stage, desc, progress)
        scores = search.score(reward, audio, sample_rate, stage)
        if stage < len(frames) - 1:
            search.prune(keep, scores, audio, codes)
    return search.result(audio, codes, frames, sample_rate)


class _Search:
    """The state of one progressive search over P prompts x n candidates.

    ``alive`` lists the (prompt, candidate) pairs still generating, prompt-major; ``prefix``
    holds their codes [len(alive), K, S]; ``scores``/``mi``/``ta`` [P, n] the latest score of
    every candidate and ``reached`` [P, n] the last stage it finished.
    """

    def __init__(self, prompts: list[str], n: int, keep_partial: bool):
        P = len(prompts)
        self.prompts, self.n, self.keep_partial = prompts, n, keep_partial
        self.scores = torch.full((P, n), float("nan"))
        self.mi = torch.full((P, n), float("nan"))
        self.ta = torch.full((P, n), float("nan"))
        self.reached = torch.zeros((P, n), dtype=torch.long)
        self.alive = [(p, i) for p in range(P) for i in range(n)]
        self.prefix: torch.Tensor | None = None
        self.frames_done = 0  # code frames every alive candidate has
        self.generated = 0  # code frames generated so far, all candidates together
        self.partial_audio: dict[tuple[int, int], torch.Tensor] = {}
        self.partial_codes: dict[tuple[int, int], torch.Tensor] = {}

    def generate(
        self,
        generate_segment: SegmentGenerator,
        target: int,
        max_batch: int,
        seed: int | None,
        stage: int,
        desc: str,
        progress: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue every alive candidate to ``target`` frames -> (audio [A, ...], codes [A, K, target])."""
        stage_prompts = [self.prompts[p] for p, _ in self.alive]
        prefix = self.prefix

        def call(start: int, stop: int) -> object:
            return generate_segment(
                stage_prompts[start:stop], None if prefix is None else prefix[start:stop], target
            )

        seeds = batch_seeds(seed, len(range(0, len(self.alive), max_batch)), stream=stage)
        audio, codes = generate_batches(call, len(self.alive), max_batch, seeds, desc=desc, progress=progress)
        if codes is None or codes.dim() < 2 or codes.shape[-1] != target:
            raise ValueError(
                f"generate_segment must return (audio, codes [B, K, {target}]) at stage {stage + 1}, "
                f"got codes of shape {None if codes is None else tuple(codes.shape)}"
            )
        self.generated += len(self.alive) * (target - self.frames_done)
        self.frames_done = target
        return audio, codes

    def score(self, reward: Callable, audio: torch.Tensor, sample_rate: int, stage: int) -> torch.Tensor:
        """Score the alive candidates' ``audio`` [A, ...] at ``stage`` -> their scores [A]."""
        prompts = [self.prompts[p] for p, _ in self.alive]
        scores, mi, ta = score_candidates(reward, audio, sample_rate, prompts, [p for p, _ in self.alive])
        for j, (p, i) in enumerate(self.alive):
            self.scores[p, i], self.reached[p, i] = scores[j], stage
            if mi is not None:
                self.mi[p, i], self.ta[p, i] = mi[j], ta[j]
        return scores

    def prune(self, keep: float, scores: torch.Tensor, audio: torch.Tensor, codes: torch.Tensor) -> None:
        """Keep the best ``ceil(keep * alive)`` (at least 1) of each prompt's alive candidates."""
        survivors = []
        for p in range(len(self.prompts)):
            mine = [j for j, (q, _) in enumerate(self.alive) if q == p]
            count = max(1, math.ceil(keep * len(mine)))
            best = sorted(mine, key=lambda j: (-float(scores[j]), self.alive[j][1]))[:count]
            survivors += sorted(best, key=lambda j: self.alive[j][1])
            if self.keep_partial:
                for j in set(mine) - set(best):
                    self.partial_audio[self.alive[j]], self.partial_codes[self.alive[j]] = audio[j], codes[j]
        keep_idx = torch.tensor(survivors, dtype=torch.long)
        self.prefix = codes.index_select(0, keep_idx.to(codes.device))
        self.alive = [self.alive[j] for j in survivors]

    def result(
        self, audio: torch.Tensor, codes: torch.Tensor, frames: list[int], sample_rate: int
    ) -> BestOfNResult:
        """The best finished candidate per prompt, from the last stage's ``audio`` / ``codes``."""
        P, n = len(self.prompts), self.n
        final = self.reached == len(frames) - 1
        index = self.scores.masked_fill(~final, float("-inf")).argmax(dim=1)
        row_of = {pi: j for j, pi in enumerate(self.alive)}
        chosen = torch.tensor([row_of[(p, int(index[p]))] for p in range(P)], dtype=torch.long)
        plain = P * n * frames[-1]
        result = BestOfNResult(
            audio=audio.index_select(0, chosen.to(audio.device)),
            scores=self.scores,
            index=index,
            sample_rate=sample_rate,
            prompts=self.prompts,
            codes=codes.index_select(0, chosen.to(codes.device)),
            mi=None if self.mi.isnan().all() else self.mi,
            ta=None if self.ta.isnan().all() else self.ta,
            pruned=~final,
            scored_frames=torch.tensor(frames, dtype=torch.long)[self.reached],
            stats={
                "candidates": P * n,
                "stage_frames": frames,
                "generated_frames": self.generated,
                "plain_generated_frames": plain,
                "saved_fraction": 1.0 - self.generated / plain,
            },
        )
        if self.keep_partial:
            for j, pi in enumerate(self.alive):
                self.partial_audio[pi], self.partial_codes[pi] = audio[j], codes[j]
            result.candidates = _pad_stack(self.partial_audio, P, n, 0.0)
            result.candidate_codes = _pad_stack(self.partial_codes, P, n, -1)
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
