"""`deramos agreement` and its statistics against independent computations, and the whole A/B loop:
tiny MusicGen candidates -> votes -> exported pairs -> `deramos dpo`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rating_helpers import write_clips
from scipy import stats

import deramos_reward as dr
from deramos_reward.cli import main
from deramos_reward.metrics import bootstrap_srcc
from deramos_reward.rating import (
    RatingLog,
    ab_report,
    bootstrap_alpha,
    build_items,
    export_pairs,
    krippendorff_alpha,
    mos_report,
    read_clips,
)
from deramos_reward.rating.candidates import write_candidates

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the worked example: 4 observers,
# 12 units, values 1-5 with missing data; published alpha: nominal 0.743, interval 0.849.
_N = None
KRIPPENDORFF_EXAMPLE = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, _N, _N, _N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _N, 3],
    [_N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _N],
]


def _units(table):
    return [[row[u] for row in table if row[u] is not None] for u in range(len(table[0]))]


def test_krippendorff_alpha_matches_the_published_example():
    units = _units(KRIPPENDORFF_EXAMPLE)
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[3, 3], [1, 1], [5, 5, 5]]) == 1.0
    assert math.isnan(krippendorff_alpha([[2, 2], [2, 2]]))  # no variation: undefined
    assert math.isnan(krippendorff_alpha([[1], [2]]))  # no unit with two values
    with pytest.raises(ValueError, match="metric"):
        krippendorff_alpha(units, "ordinalish")


def test_bootstrap_intervals_bracket_the_estimate_and_repeat():
    units = _units(KRIPPENDORFF_EXAMPLE)
    low, high = bootstrap_alpha(units, "interval", n_boot=500, seed=1)
    assert low < krippendorff_alpha(units) < high <= 1.0
    assert bootstrap_alpha(units, "interval", n_boot=500, seed=1) == (low, high)
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    low, high = bootstrap_srcc(x, y, n_boot=500)
    assert low < stats.spearmanr(x, y)[0] < high
    assert all(math.isnan(v) for v in bootstrap_srcc([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_srcc(x, y, n_boot=0)


def _mos_rows():
    rows, rng = [], np.random.default_rng(3)
    for c in range(12):
        system = f"s{c % 4}"
        for r, rater in enumerate(("al", "bo", "cy")):
            if (c + r) % 5 == 0:
                continue  # not every rater rates every clip
            mi = int(np.clip(round(1 + c % 4 + rng.normal(0, 0.6)), 1, 5))
            ta = int(np.clip(round(5 - c % 3 + rng.normal(0, 0.6)), 1, 5))
            rows.append(
                {
                    "path": f"clips/{c}.wav",
                    "prompt": "p",
                    "mi": mi,
                    "ta": ta,
                    "system": system,
                    "rater": rater,
                    "id": f"c{c}@{rater}",
                }
            )
    return rows


def test_mos_report_against_an_independent_computation():
    rows = _mos_rows()
    judge = {f"c{c}": (1.0 + (c % 4) + 0.1 * c, 2.0 + 0.2 * c) for c in range(12)}
    report = mos_report(rows, judge, n_boot=300, seed=0)
    assert (report["ratings"], report["clips"], report["raters"], report["systems"]) == (len(rows), 12, 3, 4)
    for k, axis in enumerate(("MI", "TA")):
        key = axis.lower()
        means = [np.mean([r[key] for r in rows if r["id"].startswith(f"c{c}@")]) for c in range(12)]
        pred = [judge[f"c{c}"][k] for c in range(12)]
        utt = report["judge"][axis]["utterance"]
        assert utt["SRCC"] == pytest.approx(stats.spearmanr(pred, means)[0])
        assert utt["LCC"] == pytest.approx(stats.pearsonr(pred, means)[0])
        assert utt["SRCC_ci"][0] <= utt["SRCC"] <= utt["SRCC_ci"][1]
        sys_pred = [np.mean([pred[c] for c in range(12) if c % 4 == s]) for s in range(4)]
        sys_true = [np.mean([means[c] for c in range(12) if c % 4 == s]) for s in range(4)]
        assert report["judge"][axis]["system"]["SRCC"] == pytest.approx(
            stats.spearmanr(sys_pred, sys_true)[0]
        )
        units = [[r[key] for r in rows if r["id"].startswith(f"c{c}@")] for c in range(12)]
        assert report["agreement"][axis]["alpha"] == pytest.approx(krippendorff_alpha(units))
        assert report["agreement"][axis]["units"] == 12


def _vote(item_first, item_second, shown_first, choice, rater, systems=("s0", "s1")):
    a_id, b_id = (item_first, item_second) if shown_first else (item_second, item_first)
    sys_of = {item_first: systems[0], item_second: systems[1]}
    return {
        "item": f"{item_first}|{item_second}",
        "prompt": "p",
        "a": {"id": a_id, "path": f"{a_id}.wav", "system": sys_of[a_id]},
        "b": {"id": b_id, "path": f"{b_id}.wav", "system": sys_of[b_id]},
        "choice": choice,
        "rater": rater,
    }


def test_ab_report_against_hand_counts():
    rows = [
        _vote("x", "y", True, "a", "al"),  # x wins
        _vote("x", "y", False, "b", "bo"),  # x shown as B, picked: x wins
        _vote("x", "y", True, "tie", "cy"),
        _vote("y", "z", True, "b", "al", ("s1", "s2")),  # z wins
        _vote("y", "z", False, "b", "bo", ("s1", "s2")),  # y shown as B: y wins
    ]
    judge = {"x": (4.0, 3.0), "y": (3.0, 3.5), "z": (2.0, 2.0)}  # mi+ta: x 7, y 6.5, z 4
    report = ab_report(rows, judge, n_boot=200)
    assert (report["votes"], report["items"], report["raters"], report["ties"]) == (5, 2, 3, 1)
    # item x|y: outcomes first, first, tie -> 2 agreeing ordered pairs of 6; y|z: second, first -> 0 of 2
    assert report["agreement"]["percent_agreement"] == pytest.approx(2 / 8)
    assert report["agreement"]["alpha"] == pytest.approx(
        krippendorff_alpha([["first", "first", "tie"], ["second", "first"]], "nominal")
    )
    # non-tie votes: x>y (judge agrees), x>y (agrees), z>y (disagrees), y>z (agrees)
    assert report["judge"]["score"]["accuracy"] == pytest.approx(3 / 4)
    assert report["judge"]["MI"]["accuracy"] == pytest.approx(3 / 4)
    assert report["judge"]["TA"]["accuracy"] == pytest.approx(1 / 4)  # x vs y: 3.0 < 3.5
    assert report["judge"]["score"]["votes"] == 4


def _rate_all(manifest, out, mode, answer_of):
    clips = read_clips(manifest)
    items = build_items(clips, mode)
    with RatingLog(out, mode, clips, items) as log:
        for rater in ("al", "bo", "cy"):
            for item in items:
                log.record(rater, item.id, answer_of(rater, log.shown(rater, item)))
    return clips


def test_agreement_cli_scores_with_the_judge(tmp_path, tiny_checkpoint, capsys):
    manifest = write_clips(tmp_path)
    ratings, votes = tmp_path / "ratings.jsonl", tmp_path / "votes.jsonl"
    clips = _rate_all(
        manifest, ratings, "mos", lambda r, shown: {"mi": 1 + shown[0].index % 5, "ta": 2 + len(r) % 3}
    )
    _rate_all(
        manifest, votes, "ab", lambda r, shown: {"choice": "a" if shown[0].index < shown[1].index else "b"}
    )
    model = dr.DeRAMOS.from_pretrained(tiny_checkpoint)
    scores = dr.score(model, [c.file for c in clips], [c.prompt for c in clips])
    judge = {c.id: (s["mi"], s["ta"]) for c, s in zip(clips, scores)}

    out = tmp_path / "mos_report.json"
    assert (
        main(
            ["agreement", str(ratings), "--model", str(tiny_checkpoint), "--n-boot", "200", "--out", str(out)]
        )
        == 0
    )
    assert "Krippendorff alpha" in capsys.readouterr().out
    report = json.loads(out.read_text())
    means = [1 + c.index % 5 for c in clips]
    assert report["judge"]["MI"]["utterance"]["SRCC"] == pytest.approx(
        stats.spearmanr([judge[c.id][0] for c in clips], means)[0], abs=1e-6
    )
    assert report["agreement"]["MI"]["alpha"] == 1.0  # every rater gave the same MI

    out = tmp_path / "ab_report.json"
    assert (
        main(["agreement", str(votes), "--model", str(tiny_checkpoint), "--n-boot", "200", "--out", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    items = build_items(clips, "ab")
    hits = []
    for item in items:  # every rater preferred the earlier clip of the manifest
        winner, loser = (judge[clips[i].id] for i in item.clips)
        hits.append(1.0 if sum(winner) > sum(loser) else 0.5 if sum(winner) == sum(loser) else 0.0)
    assert report["judge"]["score"]["accuracy"] == pytest.approx(np.mean(hits))
    assert report["agreement"]["percent_agreement"] == 1.0 and report["votes"] == 3 * len(items)

    assert main(["agreement", str(tmp_path / "none.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ab_votes_on_musicgen_candidates_feed_deramos_dpo(tmp_path):
    from deramos_reward.integrations.musicgen.transformers import builders as tm
    from deramos_reward.integrations.musicgen.transformers.logprobs import generate_with_codes

    model, processor = tm.tiny_musicgen(seed=0)
    prompts = [p for p in ("rock guitar with drums", "soft piano ballad") for _ in range(3)]
    audio, codes = generate_with_codes(model, processor, prompts, max_new_tokens=9, seed=0, do_sample=True)
    manifest = write_candidates(
        tmp_path / "ab", prompts, audio, codes, model.config.audio_encoder.sampling_rate
    )
    votes = tmp_path / "votes.jsonl"
    clips = _rate_all(
        manifest, votes, "ab", lambda r, shown: {"choice": "a" if shown[0].index > shown[1].index else "b"}
    )
    assert len(clips) == 6 and clips[0].file.endswith(".wav")
    pairs = export_pairs(clips, manifest, votes, tmp_path / "pairs")
    assert len(pairs) == 6  # 3 pairs per prompt, each won by the later candidate
    for row in pairs:  # scores = vote shares of the item's clips in manifest order
        assert row["scores"] == [0.0, 1.0] and (row["chosen_index"], row["rejected_index"]) == (1, 0)
        assert row["chosen_score"] == 1.0 and row["rejected_score"] == 0.0 and row["margin"] == 1.0
    first = pairs[0]
    item = [c for c in clips if c.prompt == first["prompt"]][:2]  # the first item: clips 0 and 1
    assert first["chosen_codes"] == codes[item[1].index].tolist()
    assert first["rejected_codes"] == codes[item[0].index].tolist()
    argv = ["dpo", "--backend", "transformers", "--musicgen", "tiny", "--pairs", str(tmp_path / "pairs")]
    argv += [
        "--out",
        str(tmp_path / "adapter"),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--logging-steps",
        "1",
    ]
    assert main(argv) == 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
