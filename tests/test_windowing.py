"""The windowing path shared by inference and the feature cache: encode_windows, combine_windows."""

from __future__ import annotations

import pytest
import torch

import deramos_reward as dr
from deramos_reward.frontend import Window, plan_windows
from deramos_reward.heads import DeRAMOSOutput
from deramos_reward.windowing import OUTPUT_FIELDS, combine_windows, concat_outputs, encode_windows

SR = 24_000


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).eval()


def _outputs(n: int, seed: int = 0, bins: int = 5, dim: int = 3) -> DeRAMOSOutput:
    g = torch.Generator().manual_seed(seed)
    return DeRAMOSOutput(
        mi=1 + 4 * torch.rand(n, generator=g, dtype=torch.float64),
        ta=1 + 4 * torch.rand(n, generator=g, dtype=torch.float64),
        mi_logits=torch.randn(n, bins, generator=g, dtype=torch.float64),
        ta_logits=torch.randn(n, bins, generator=g, dtype=torch.float64),
        audio_embedding=torch.randn(n, dim, generator=g, dtype=torch.float64),
        text_embedding=torch.randn(n, dim, generator=g, dtype=torch.float64),
        mi_std=0.1 + torch.rand(n, generator=g, dtype=torch.float64),
        ta_std=0.1 + torch.rand(n, generator=g, dtype=torch.float64),
    )


def test_combine_windows_is_the_length_weighted_mean_per_clip():
    # clip 0: one window; clip 1: windows of 10, 10 and 4 samples; clip 2: one window
    windows = [Window(0, 0, 7), Window(1, 0, 10), Window(1, 5, 15), Window(1, 10, 14), Window(2, 0, 3)]
    out = _outputs(len(windows))
    got = combine_windows(windows, out, 3)
    w = torch.tensor([10.0, 10.0, 4.0], dtype=torch.float64) / 24.0
    for f in OUTPUT_FIELDS:
        rows = getattr(out, f)
        assert torch.equal(getattr(got, f)[0], rows[0]) and torch.equal(getattr(got, f)[2], rows[4]), f
    for f in ("mi", "ta", "audio_embedding", "text_embedding"):
        expected = sum(w[k] * getattr(out, f)[1 + k] for k in range(3))
        torch.testing.assert_close(getattr(got, f)[1], expected, rtol=0, atol=1e-12)
    for f in ("mi_logits", "ta_logits"):
        probs = sum(w[k].float() * torch.softmax(getattr(out, f)[1 + k].float(), -1) for k in range(3))
        torch.testing.assert_close(getattr(got, f)[1], torch.log(probs), rtol=0, atol=1e-6, check_dtype=False)
    for axis in ("mi", "ta"):  # spread of the mixture: E[X^2] - E[X]^2 over the windows' distributions
        mean = sum(w[k] * getattr(out, axis)[1 + k] for k in range(3))
        second = sum(
            w[k] * (getattr(out, f"{axis}_std")[1 + k] ** 2 + getattr(out, axis)[1 + k] ** 2)
            for k in range(3)
        )
        torch.testing.assert_close(
            getattr(got, f"{axis}_std")[1], (second - mean**2).sqrt(), rtol=0, atol=1e-12
        )


def test_combine_windows_passes_one_window_per_clip_through():
    out = _outputs(3)
    assert combine_windows([Window(0, 0, 5), Window(1, 0, 9), Window(2, 0, 2)], out, 3) is out


def test_concat_outputs_puts_rows_back_in_order():
    full = _outputs(5, seed=3)
    parts = [([3, 0], _rows(full, [3, 0])), ([4], _rows(full, [4])), ([1, 2], _rows(full, [1, 2]))]
    got = concat_outputs(parts, 5)
    assert all(torch.equal(getattr(got, f), getattr(full, f)) for f in OUTPUT_FIELDS)
    assert concat_outputs([([0, 1, 2, 3, 4], full)], 5) is full


def _rows(out: DeRAMOSOutput, idx: list[int]) -> DeRAMOSOutput:
    return DeRAMOSOutput(**{f: getattr(out, f)[idx] for f in OUTPUT_FIELDS})


def test_encode_windows_groups_equal_lengths_and_matches_each_window_alone(model):
    enc = model.audio_encoder
    g = torch.Generator().manual_seed(1)
    waves = [0.1 * torch.randn(n, generator=g) for n in (SR // 4, 2 * SR, 3 * SR + 500, 2 * SR)]
    windows = plan_windows([w.shape[0] for w in waves], SR, SR // 2)  # 1 s windows every 0.5 s
    seen = []
    with torch.no_grad():
        for indices, frames in encode_windows(enc, waves, windows, 3, "cpu"):
            assert 1 <= len(indices) <= 3 and len({windows[i].length for i in indices}) == 1
            seen += indices
            for j, i in enumerate(indices):
                w = windows[i]
                seg = torch.nn.functional.pad(
                    waves[w.clip][w.start : w.stop], (0, max(0, enc.min_samples - w.length))
                )
                alone = enc(seg[None], torch.tensor([w.length]))
                assert torch.equal(frames.mask[j], alone.mask[0])
                torch.testing.assert_close(frames.frames[j], alone.frames[0], rtol=0, atol=1e-5)
    assert sorted(seen) == list(range(len(windows)))
    short = [i for i in seen if windows[i].length < enc.min_samples]
    assert short  # the 0.25 s clip was padded to min_samples with the padding masked
