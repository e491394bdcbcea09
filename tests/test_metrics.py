"""Evaluation metrics against scipy/numpy computed independently, on data with systems."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from deramos_reward import metrics as M


@pytest.fixture
def rated():
    """8 systems x 10 clips; labels on the 0.2 grid (ties), predictions = labels + noise."""
    rng = np.random.default_rng(3)
    systems = np.repeat([f"S{i:03d}" for i in rng.permutation(8) + 1], 10)
    quality = {s: rng.uniform(1.5, 4.5) for s in sorted(set(systems))}  # sorted: set order varies per process
    true = np.clip(np.round([quality[s] + rng.normal(0, 0.5) for s in systems], 0) / 1.0, 1, 5)
    true = np.round(true * 5) / 5
    pred = true + rng.normal(0, 0.6, true.size)
    order = rng.permutation(true.size)  # systems interleaved
    return pred[order], true[order], list(systems[order])


def _kendall_tau_b(x, y):
    """Textbook tau-b: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2))."""
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


def test_utterance_metrics_against_scipy(rated):
    pred, true, _ = rated
    m = M.utterance_metrics(pred, true)
    assert m["MSE"] == pytest.approx(np.mean((pred - true) ** 2), rel=1e-12)
    assert m["LCC"] == pytest.approx(np.corrcoef(pred, true)[0, 1], rel=1e-10)
    assert m["SRCC"] == pytest.approx(
        np.corrcoef(stats.rankdata(pred), stats.rankdata(true))[0, 1], rel=1e-10
    )
    assert m["KTAU"] == pytest.approx(_kendall_tau_b(pred, true), rel=1e-10)
    assert len(set(true)) < len(true)  # the data has ties, so tau-b differs from tau-a


def test_system_metrics_use_per_system_means(rated):
    pred, true, systems = rated
    names = sorted(set(systems))
    sp = np.array([np.mean([p for p, s in zip(pred, systems) if s == n]) for n in names])
    st = np.array([np.mean([t for t, s in zip(true, systems) if s == n]) for n in names])
    m = M.system_metrics(pred, true, systems)
    assert m["MSE"] == pytest.approx(np.mean((sp - st) ** 2), rel=1e-10)
    assert m["LCC"] == pytest.approx(stats.pearsonr(sp, st)[0], rel=1e-10)
    assert m["SRCC"] == pytest.approx(stats.spearmanr(sp, st)[0], rel=1e-10)
    assert m["KTAU"] == pytest.approx(_kendall_tau_b(sp, st), rel=1e-10)
    ids, mp, mt = M.system_means(pred, true, systems)
    assert ids == list(dict.fromkeys(systems))
    np.testing.assert_allclose(mp, sp[[names.index(i) for i in ids]])
    # averaging removes clip noise: system level correlates better than utterance level here
    assert m["SRCC"] > M.utterance_metrics(pred, true)["SRCC"]


def test_evaluate_both_and_tensor_inputs(rated):
    pred, true, systems = rated
    res = M.evaluate(torch.tensor(pred), torch.tensor(true), systems)
    assert set(res) == {"utterance", "system"}
    assert res["utterance"] == M.utterance_metrics(pred, true)
    both = M.evaluate_both(pred, true, true, true, np.array(systems))
    assert both["MI"] == M.evaluate(pred, true, systems)
    assert both["TA"]["utterance"]["SRCC"] == pytest.approx(1.0) and both["TA"]["system"]["MSE"] == 0.0


def test_constant_inputs_give_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = M.utterance_metrics([3.0, 3.0, 3.0], [1.0, 2.0, 4.0])
        one = M.utterance_metrics([2.0], [4.0])
        sys_m = M.system_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], ["a", "a", "a"])
    assert m["MSE"] == pytest.approx(np.mean(np.array([2.0, 1.0, -1.0]) ** 2))
    assert all(math.isnan(m[k]) for k in ("LCC", "SRCC", "KTAU"))
    assert one["MSE"] == 4.0 and math.isnan(one["SRCC"])
    assert math.isnan(sys_m["LCC"])


def test_bootstrap_resamples_systems(rated):
    pred, true, systems = rated
    low, high = M.bootstrap_system_srcc(pred, true, systems, n_boot=300, seed=5)
    # independent replay of the documented procedure with scipy's spearmanr
    ids, sp, st = M.system_means(pred, true, systems)
    draws = np.random.default_rng(5).integers(0, len(ids), size=(300, len(ids)))
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for d in draws:
            r = stats.spearmanr(sp[d], st[d])[0]
            if np.isfinite(r):
                values.append(r)
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), rel=1e-10)
    assert -1.0 <= low <= high <= 1.0
    assert M.bootstrap_system_srcc(pred, true, systems, n_boot=300, seed=5) == (low, high)
    # a worse predictor gets a wider interval reaching lower
    noisy = true + np.random.default_rng(1).normal(0, 3.0, true.size)
    nlow, nhigh = M.bootstrap_system_srcc(noisy, true, systems, n_boot=300, seed=5)
    assert nhigh - nlow > high - low and nlow < low
    narrow = M.bootstrap_system_srcc(pred, true, systems, n_boot=300, seed=5, level=0.5)
    assert low <= narrow[0] <= narrow[1] <= high


def test_bootstrap_perfect_and_degenerate():
    true = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 2.5])
    systems = ["a", "b", "c", "d", "e", "f"]
    assert M.bootstrap_system_srcc(true, true, systems, n_boot=200) == (1.0, 1.0)
    low, high = M.bootstrap_system_srcc(true[:2], true[:2], systems[:2])
    assert math.isnan(low) and math.isnan(high)


def test_format_table(rated):
    pred, true, systems = rated
    both = M.evaluate_both(pred, true, pred, true, systems)
    text = M.format_table(both)
    lines = text.splitlines()
    assert lines[0].split() == ["axis", "level", "MSE", "LCC", "SRCC", "KTAU"]
    assert len(lines) == 6  # header, rule, MI x 2, TA x 2
    row = lines[2].split()
    assert row[:2] == ["MI", "utterance"]
    assert float(row[4]) == pytest.approx(both["MI"]["utterance"]["SRCC"], abs=5e-4)
    one = M.format_table(M.evaluate([1, 1, 1], [1, 2, 3], ["a", "b", "c"]))
    assert "nan" in one and one.splitlines()[2].split()[0] == "-"


def test_input_errors():
    with pytest.raises(ValueError, match="pred has 3 values but true has 2"):
        M.utterance_metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="true contains NaN"):
        M.utterance_metrics([1, 2], [1, float("nan")])
    with pytest.raises(ValueError, match="system_ids has 2 entries"):
        M.system_metrics([1, 2, 3], [1, 2, 3], ["a", "b"])
    with pytest.raises(TypeError, match="system_ids"):
        M.evaluate([1, 2], [1, 2], "ab")
    with pytest.raises(ValueError, match="pred must be 1-D"):
        M.utterance_metrics([[1, 2]], [[1, 2]])
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_system_srcc([1, 2, 3], [1, 2, 3], ["a", "b", "c"], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        M.bootstrap_system_srcc([1, 2, 3], [1, 2, 3], ["a", "b", "c"], level=95)
