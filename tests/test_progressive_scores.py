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


def test_the_readme_ab_line_has_the_ids_rate_writes(tmp_path):
    """The README's A/B example line carries the item and clip ids of `write_candidates` + `deramos rate`."""
    import re
    from pathlib import Path

    import torch

    from deramos_reward.rating import RatingLog, build_items, read_clips
    from deramos_reward.rating.candidates import write_candidates

    manifest = write_candidates(
        tmp_path, ["calm piano"] * 2, torch.zeros(2, 1, 800), torch.zeros(2, 4, 3).long(), 16_000
    )
    clips = read_clips(manifest)
    out = tmp_path / "votes.jsonl"
    with RatingLog(out, "ab", clips, build_items(clips, "ab")) as log:
        log.record("alice", log.next_item("alice").id, {"choice": "a"})
    line = json.loads(out.read_text())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = json.loads(re.search(r'^\{"item": .*$', readme, flags=re.M).group(0).replace(", ...}", "}"))
    assert example["item"] == line["item"] == "wav/c00000|wav/c00001"
    assert {example["a"]["id"], example["b"]["id"]} == {line["a"]["id"], line["b"]["id"]}
