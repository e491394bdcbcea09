"""score() and `deramos score`: rows, prompt caching, formats, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone

import deramos_reward as dr
from deramos_reward.cli import main
from deramos_reward.frontend import resample
from deramos_reward.prompt_cache import PromptCache


def test_score_rows_match_the_model_on_resampled_mono(tiny_model):
    stereo_44k = tone(1.0, 44_100, channels=2)
    rows = dr.score(tiny_model, [stereo_44k], ["calm piano"], sample_rate=44_100)
    mono = resample(torch.tensor(stereo_44k).mean(0), 44_100, 24_000)
    direct = tiny_model([mono], ["calm piano"])
    assert rows == [
        {
            "mi": pytest.approx(float(direct.mi[0]), abs=1e-6),
            "ta": pytest.approx(float(direct.ta[0]), abs=1e-6),
        }
    ]


def test_batch_size_does_not_change_scores(tiny_model):
    clips = [tone(s, 16_000, 100 * (i + 2), seed=i) for i, s in enumerate([0.7, 2.0, 1.1, 2.0, 3.3])]
    prompts = ["a", "b", "a", "c", "b"]
    one = dr.score(tiny_model, clips, prompts, sample_rate=16_000, batch_size=1)
    many = dr.score(tiny_model, clips, prompts, sample_rate=16_000, batch_size=4)
    for x, y in zip(one, many):
        assert x["mi"] == pytest.approx(y["mi"], abs=1e-5) and x["ta"] == pytest.approx(y["ta"], abs=1e-5)


def test_each_distinct_prompt_is_encoded_once(tiny_model):
    cache = PromptCache(tiny_model.text_encoder)
    clips = [tone(0.5, 24_000, seed=i) for i in range(6)]
    dr.score(
        tiny_model,
        clips,
        ["x", "y", "x", "y", "x", "z"],
        sample_rate=24_000,
        batch_size=2,
        prompt_cache=cache,
    )
    assert cache.encoded_count == 3
    dr.score(tiny_model, clips[:2], ["x", "z"], sample_rate=24_000, prompt_cache=cache)
    assert cache.encoded_count == 3


def test_score_rejects_mismatched_counts_and_bad_args(tiny_model):
    with pytest.raises(ValueError, match="got 2 audio clips but 1 texts"):
        dr.score(tiny_model, [tone(0.5, 24_000)] * 2, ["one"], sample_rate=24_000)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        dr.score(tiny_model, [tone(0.5, 24_000)], ["one"], sample_rate=24_000, batch_size=0)
    with pytest.raises(TypeError, match="model must be a deramos_reward.DeRAMOS"):
        dr.score("model", [tone(0.5, 24_000)], ["one"], sample_rate=24_000)
    with pytest.raises(TypeError, match=r"texts\[0\] must be a string"):
        dr.score(tiny_model, [tone(0.5, 24_000)], [3], sample_rate=24_000)


@pytest.fixture()
def audio_files(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 44_100, 300), 44_100)
    sf.write(tmp_path / "b.flac", tone(1.2, 16_000, 500, channels=2).T, 16_000)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    return tmp_path


def test_cli_prompt_mode_jsonl_matches_api(tiny_model, tiny_checkpoint, audio_files, capsys):
    files = [str(audio_files / "a.wav"), str(audio_files / "b.flac")]
    assert main(["score", "--model", str(tiny_checkpoint), "--prompt", "calm piano", *files]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    api = dr.score(dr.DeRAMOS.from_pretrained(tiny_checkpoint), files, ["calm piano"] * 2)
    assert [r["path"] for r in rows] == files
    for row, ref in zip(rows, api):
        assert row["mi"] == pytest.approx(ref["mi"], abs=1e-6) and row["ta"] == pytest.approx(
            ref["ta"], abs=1e-6
        )


def test_cli_manifest_to_csv_reports_bad_rows_and_exit_code(tiny_checkpoint, audio_files):
    manifest = audio_files / "in.jsonl"
    entries = [("a.wav", "piano"), ("bad.wav", "piano"), ("b.flac", "drums"), ("missing.wav", "x")]
    manifest.write_text("".join(json.dumps({"path": p, "prompt": q}) + "\n" for p, q in entries))
    out = audio_files / "out.csv"
    assert (
        main(["score", "--model", str(tiny_checkpoint), "--manifest", str(manifest), "--out", str(out)]) == 1
    )
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [p for p, _ in entries]
    assert rows[0]["error"] == "" and 1 <= float(rows[0]["mi"]) <= 5
    assert "could not be read as audio" in rows[1]["error"] and rows[1]["mi"] == ""
    assert "does not exist" in rows[3]["error"]
    assert not (audio_files / "out.csv.partial.jsonl").exists()


def test_cli_errors_are_one_line_without_traceback(tiny_checkpoint, audio_files):
    cases = [
        (["--model", str(audio_files / "nope"), "--prompt", "x", "a.wav"], "does not exist"),
        (["--model", str(tiny_checkpoint), "a.wav"], "--prompt is required"),
        (["--model", str(tiny_checkpoint), "--prompt", "x"], "no input"),
    ]
    for args, needle in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "deramos_reward.cli", "score", *args],
            capture_output=True,
            text=True,
            cwd=audio_files,
        )
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_cli_empty_prompt_is_a_row_error(tiny_checkpoint, audio_files):
    manifest = audio_files / "in.jsonl"
    manifest.write_text(json.dumps({"path": "a.wav", "prompt": " "}) + "\n")
    out = audio_files / "out.jsonl"
    assert (
        main(["score", "--model", str(tiny_checkpoint), "--manifest", str(manifest), "--out", str(out)]) == 1
    )
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "is empty" in row["error"] and "mi" not in row


def test_score_accepts_integer_pcm_and_many_channels(tiny_model):
    pcm = (np.clip(tone(0.5, 8_000, channels=8), -1, 1) * 32767).astype(np.int16)
    (row,) = dr.score(tiny_model, [pcm], ["eight channel test"], sample_rate=8_000)
    assert 1 <= row["mi"] <= 5 and 1 <= row["ta"] <= 5
