"""Seed derivation: the one way every loop of the package turns a user's seed into seeds of its parts.

A seed for one part of a run (a training step, a prompt group, an epoch's order, a rank's dropout
stream) is derived from ``(seed, *keys)`` with numpy's ``SeedSequence``, so it is the same on every
machine and process and does not depend on what ran before: a resumed or multi-process run draws
what an uninterrupted single-process run draws. Keys are ints (step, index, rank) or strings that
name a stream (``"sample"``, ``"eval"``); a string enters as the first 8 bytes of its sha256.

    derive_seed(seed, "sample", step, group)      # one 63-bit seed
    derive_seeds(seed, count, stream)             # count seeds of one stream (best-of-N sub-batches)

``derive_seeds(seed, n, *keys)[0] == derive_seed(seed, *keys)``: the seeds of a stream are the
leading words of one ``SeedSequence`` state, so asking for more of them never changes the first ones.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["derive_seed", "derive_seeds"]

_MASK = 2**63


def _entropy(seed: int, keys: tuple[int | str, ...]) -> list[int]:
    words = []
    for value in (seed, *keys):
        if isinstance(value, str):
            value = int.from_bytes(hashlib.sha256(value.encode()).digest()[:8], "big")
        elif isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"seed and keys must be ints >= 0 or strings, got {value!r}")
        words.append(int(value))
    return words


def derive_seeds(seed: int, count: int, *keys: int | str) -> list[int]:
    """``count`` independent 63-bit seeds of the stream ``(seed, *keys)``.

    ``SeedSequence([seed, *keys]).generate_state(count, uint64) % 2**63`` (strings hashed, see the
    module docstring); a seed of it never depends on ``count``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    state = np.random.SeedSequence(_entropy(seed, keys)).generate_state(max(count, 1), dtype=np.uint64)
    return [int(s % _MASK) for s in state[:count]]


def derive_seed(seed: int, *keys: int | str) -> int:
    """One 63-bit seed from ``seed`` and ``keys`` (e.g. a stream name, a step, a prompt index)."""
    return derive_seeds(seed, 1, *keys)[0]
