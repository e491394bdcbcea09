"""The package's one seed derivation: numpy's SeedSequence, prefix-stable streams, the best-of-N sub-batch
seeds unchanged (their values are pinned in test_pinned_values), and bad keys refused."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from deramos_reward.rerank import batch_seeds
from deramos_reward.seeding import derive_seed, derive_seeds


def test_seeds_are_seed_sequence_words_and_a_stream_is_prefix_stable():
    words = np.random.SeedSequence([123, 0]).generate_state(5, dtype=np.uint64)
    assert derive_seeds(123, 5, 0) == [int(w) % 2**63 for w in words]
    assert derive_seeds(123, 2, 0) == derive_seeds(123, 5, 0)[:2]  # more seeds never change the first
    assert derive_seed(123, 0) == derive_seeds(123, 3, 0)[0]
    assert derive_seeds(123, 0, 0) == [] and all(0 <= s < 2**63 for s in derive_seeds(9, 50))
    # the best-of-N sub-batch seeds are this stream (what the pinned best-of-N values were drawn with)
    assert batch_seeds(123, 4, stream=2) == derive_seeds(123, 4, 2) and batch_seeds(None, 2) == [None] * 2


def test_string_keys_name_streams():
    key = int.from_bytes(hashlib.sha256(b"sample").digest()[:8], "big")
    assert derive_seed(7, "sample", 3) == derive_seed(7, key, 3)
    assert len({derive_seed(7, "sample", 3), derive_seed(7, "eval", 3), derive_seed(7, 3)}) == 3


@pytest.mark.parametrize("bad", [-1, 1.5, True, None])
def test_bad_keys_are_refused(bad):
    with pytest.raises(ValueError, match="seed and keys"):
        derive_seed(0, bad)
    with pytest.raises(ValueError, match="count"):
        derive_seeds(0, -1)
