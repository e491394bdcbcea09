"""Best-of-N reranking for any text-to-music generator.

``best_of_n(generate, prompts, n, reward, sample_rate)`` repeats each prompt ``n`` times in the
batch (prompt-major: all candidates of prompt 0, then of prompt 1, ...), generates them in
sub-batches of at most ``max_batch``, scores every candidate with the reward under
``torch.no_grad`` and keeps the argmax per prompt. Repeating prompts in the batch is what works
across generators (``num_return_sequences`` is broken in transformers' MusicGen).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .seeding import derive_seeds
from .validation import check_non_negative_int, check_positive_int, check_prompts, check_sample_rate

Generated = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
GenerateFn = Callable[[list[str]], Generated]


@dataclass
class BestOfNResult:
    """The chosen candidate per prompt and the scores of all of them.

    ``P`` prompts, ``n`` candidates each; audio is ``[..., T]`` or ``[..., C, T]`` as generated.
    """

    audio: torch.Tensor  # [P, T] or [P, C, T]: the chosen candidate of each prompt
    scores: torch.Tensor  # [P, n] reward of every candidate (float32, CPU)
    index: torch.Tensor  # [P] long: which candidate was chosen (argmax of its row)
    sample_rate: int
    prompts: list[str]
    codes: torch.Tensor | None = None  # [P, K, S] codes of the chosen candidates, if the generator gave codes
    candidates: torch.Tensor | None = None  # [P, n, ...] every candidate (return_candidates=True)
    candidate_codes: torch.Tensor | None = None  # [P, n, K, S]
    mi: torch.Tensor | None = None  # [P, n] expected MI per candidate (MusicReward only)
    ta: torch.Tensor | None = None  # [P, n] expected TA per candidate (MusicReward only)
    pruned: torch.Tensor | None = None  # [P, n] bool (progressive): stopped early, score is a partial one
    scored_frames: torch.Tensor | None = (
        None  # [P, n] long (progressive): code frames each score was taken on
    )
    stats: dict = field(default_factory=dict)  # e.g. generated frames (progressive)

    def rows(self) -> list[dict]:
        """One JSON-ready row per candidate: prompt, candidate, score, mi, ta, chosen; progressive also
        ``pruned``, ``score_of`` (``"partial clip"`` for a pruned candidate: the score of its audio up to
        where it was pruned, not comparable with a final score; ``"full clip"`` otherwise) and
        ``scored_frames`` (the code frames that audio had)."""
        out = []
        for p, prompt in enumerate(self.prompts):
            for i in range(self.scores.shape[1]):
                row = {
                    "prompt_index": p,
                    "prompt": prompt,
                    "candidate": i,
                    "score": float(self.scores[p, i]),
                    "chosen": bool(int(self.index[p]) == i),
                }
                if self.mi is not None:
                    row["mi"] = float(self.mi[p, i])
                    row["ta"] = float(self.ta[p, i])
                if self.pruned is not None:
                    row["pruned"] = bool(self.pruned[p, i])
                    row["score_of"] = "partial clip" if row["pruned"] else "full clip"
                if self.scored_frames is not None:
                    row["scored_frames"] = int(self.scored_frames[p, i])
                out.append(row)
        return out


# ---- shared checks and helpers (also used by progressive best-of-N) ---------------------------
def check_rerank_args(
    generator: object,
    generator_name: str,
    prompts: object,
    n: object,
    reward: object,
    sample_rate: object,
    max_batch: object,
    seed: object,
) -> tuple[list[str], int, int, int]:
    """Check what every best-of-N entry point takes -> (prompts, n, max_batch, sample_rate)."""
    if not callable(generator):
        raise TypeError(f"{generator_name} must be callable, got {type(generator).__name__}")
    if not callable(reward):
        raise TypeError(f"reward must be a MusicReward or a callable, got {type(reward).__name__}")
    prompts = check_prompts(prompts, name="prompts")
    if not prompts:
        raise ValueError("prompts is empty; give at least one prompt")
    n = check_positive_int(n, "n")
    max_batch = check_positive_int(max_batch, "max_batch")
    sample_rate = check_sample_rate(sample_rate)
    check_non_negative_int(seed, "seed", optional=True)
    return prompts, n, max_batch, sample_rate


def batch_seeds(seed: int | None, count: int, stream: int = 0) -> list[int | None]:
    """``count`` independent torch seeds derived from ``seed`` (an int >= 0; ``None`` -> no seeding)."""
    if seed is None:
        return [None] * count
    return list(derive_seeds(seed, count, stream))


def split_generated(out: object, count: int, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check a generator's output: audio [count, T] / [count, C, T] (+ codes [count, ...])."""
    codes = None
    if isinstance(out, tuple):
        if len(out) != 2:
            raise TypeError(f"{where} returned a tuple of {len(out)} items; expected (audio, codes)")
        out, codes = out
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise TypeError(f"{where} must return a floating audio tensor, got {type(out).__name__}")
    if out.dim() not in (2, 3) or out.shape[0] != count:
        raise ValueError(
            f"{where} returned audio of shape {tuple(out.shape)} for {count} prompts; "
            f"expected [{count}, T] or [{count}, C, T]"
        )
    if codes is not None and (not isinstance(codes, torch.Tensor) or codes.shape[0] != count):
        raise ValueError(
            f"{where} returned codes of shape {tuple(getattr(codes, 'shape', ()))}; expected [{count}, ...]"
        )
    return out, codes


def concat_candidates(parts: list[torch.Tensor], what: str) -> torch.Tensor:
    """Concatenate sub-batch outputs, which must agree on every dimension but the first."""
    shapes = {tuple(p.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(
            f"the generator returned {what} of different shapes across sub-batches {sorted(shapes)}; "
            "every candidate must have the same length (fix the duration / max_new_tokens)"
        )
    return torch.cat(parts)


def score_candidates(
    reward: Callable, audio: torch.Tensor, sample_rate: int, prompts: list[str], groups: list[int]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Score candidates without gradient -> (scores [B], mi [B] | None, ta [B] | None) on the CPU."""
    from .reward import RewardOutput, call_reward

    with torch.no_grad():
        out = call_reward(reward, audio, sample_rate, prompts, parts=True, group_ids=groups)
    if isinstance(out, RewardOutput):
        return out.reward.float().cpu(), out.mi.float().cpu(), out.ta.float().cpu()
    return out.float().cpu(), None, None


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch (CPU and CUDA) for the block and restore the caller's RNG state after."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(
        devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
    ):
        torch.manual_seed(seed)
        yield


def generate_batches(
    call: Callable[[int, int], object],
    count: int,
    max_batch: int,
    seeds: list[int | None],
    desc: str = "generating",
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generate ``count`` candidates as ``call(start, stop)`` over sub-batches of at most
    ``max_batch``; a sub-batch whose seed is not None runs with torch seeded by it (the caller's
    RNG state is restored after).

    Returns (audio [count, ...], codes [count, ...] or None).
    """
    audio_parts, code_parts = [], []
    starts = list(range(0, count, max_batch))
    for k, start in enumerate(tqdm(starts, desc=desc, unit="batch", disable=not progress)):
        stop = min(start + max_batch, count)
        with _seeded(seeds[k]), torch.no_grad():
            out = call(start, stop)
        audio, codes = split_generated(out, stop - start, "generate")
        audio_parts.append(audio)
        code_parts.append(codes)
    if any(c is None for c in code_parts) and not all(c is None for c in code_parts):
        raise ValueError("generate returned codes for some sub-batches but not others")
    codes = None if code_parts[0] is None else concat_candidates(code_parts, "codes")
    return concat_candidates(audio_parts, "audio"), codes


def pick(candidates: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """candidates [P, n, ...], index [P] -> [P, ...]: row p's candidate index[p]."""
    rows = torch.arange(candidates.shape[0], device=candidates.device)
    return candidates[rows, index.to(candidates.device)]


def best_of_n(
    generate: GenerateFn,
    prompts: str | Sequence[str],
    n: int,
    reward: Callable,
    sample_rate: int,
    max_batch: int = 16,
    seed: int | None = None,
    return_candidates: bool = False,
    progress: bool = False,
) -> BestOfNResult:
    """Generate ``n`` candidates per prompt and keep the best by ``reward``.

    Args:
        generate: ``generate(list[str]) -> audio [len, T] or [len, C, T]``, or a tuple
            ``(audio, codes [len, ...])``. Called with each prompt repeated ``n`` times
            (prompt-major), in sub-batches of at most ``max_batch`` prompts.
        prompts: P prompts (a single string is one prompt).
        n: candidates per prompt.
        reward: a ``MusicReward`` (also gives MI/TA per candidate; candidates of a prompt form
            its rank group) or any ``reward(audio, sample_rate, prompts) -> [B]``.
        sample_rate: rate of the generated audio in Hz.
        max_batch: most prompts per ``generate`` call.
        seed: when given, every sub-batch runs with torch seeded by a seed derived from it
            (``torch.manual_seed``; the caller's RNG state is restored after), so the same call
            gives the same candidates.
        return_candidates: also return every candidate's audio (and codes).
    Returns:
        BestOfNResult with ``audio`` [P, ...], ``scores`` [P, n], ``index`` [P] (argmax of each
        row), ``codes`` [P, ...] when the generator gives codes, ``mi``/``ta`` [P, n].
    """
    prompts, n, max_batch, sample_rate = check_rerank_args(
        generate, "generate", prompts, n, reward, sample_rate, max_batch, seed
    )
    flat = [p for p in prompts for _ in range(n)]
    seeds = batch_seeds(seed, len(range(0, len(flat), max_batch)))
    audio, codes = generate_batches(
        lambda start, stop: generate(flat[start:stop]), len(flat), max_batch, seeds, progress=progress
    )
    groups = [i // n for i in range(len(flat))]
    scores, mi, ta = score_candidates(reward, audio, sample_rate, flat, groups)
    P = len(prompts)
    scores = scores.reshape(P, n)
    index = scores.argmax(dim=1)
    candidates = audio.reshape(P, n, *audio.shape[1:])
    cand_codes = None if codes is None else codes.reshape(P, n, *codes.shape[1:])
    return BestOfNResult(
        audio=pick(candidates, index),
        scores=scores,
        index=index,
        sample_rate=sample_rate,
        prompts=prompts,
        codes=None if cand_codes is None else pick(cand_codes, index),
        candidates=candidates if return_candidates else None,
        candidate_codes=cand_codes if return_candidates else None,
        mi=None if mi is None else mi.reshape(P, n),
        ta=None if ta is None else ta.reshape(P, n),
        stats={"candidates": P * n},
    )
