"""`generate --progressive` says in scores.json which score is a pruned candidate's partial score and which a
full clip's: every candidate has `score_of` and `scored_frames`, and the chosen clip is the best full clip."""

from __future__ import annotations

import json

from deramos_reward.cli import main


def test_scores_json_tells_partial_scores_from_full_ones(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    argv = ["generate", "--backend", "transformers", "--musicgen", "tiny", "--reward", str(tiny_checkpoint)]
    argv += [
        "--prompt",
        "calm piano",
        "--prompt",
        "fast drums",
        "--n",
        "3",
        "--duration",
        "0.4",
        "--seed",
        "1",
    ]
    argv += ["--progressive", "--checkpoints", "0.5", "--keep", "0.5", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "scores.json").read_text())
    assert "partial scores are not comparable" in report["score_of"]
    assert report["stats"]["stage_frames"] == [10, 20]
    for r in report["results"]:
        kinds = [(c["pruned"], c["score_of"], c["scored_frames"]) for c in r["candidates"]]
        assert sorted(kinds) == [(False, "full clip", 20)] * 2 + [(True, "partial clip", 10)]  # ceil(0.5 * 3)
        full = [c["score"] for c in r["candidates"] if c["score_of"] == "full clip"]
        chosen = r["candidates"][r["chosen"]]
        assert chosen["score_of"] == "full clip" and r["score"] == chosen["score"] == max(full)
