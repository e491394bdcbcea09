"""`deramos score` as a new user meets it: the output records which model made it (a rerun with
another model is refused, --overwrite starts over), audio that is scored but looks wrong gets a
warning (truncated files, integer PCM stored as float), the progress bar counts seconds of audio
(advancing inside a long clip), and a failed start leaves no files or folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone

import deramos_reward as dr
from deramos_reward.cli import main
from deramos_reward.jsonl import read_rows
from deramos_reward.scoring import score_clips


def _manifest(tmp_path, names):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"path": n, "prompt": "calm piano"}) + "\n" for n in names))
    return path


def _score(model, manifest, out, *extra):
    return main(["score", "--model", str(model), "--manifest", str(manifest), "--out", str(out), *extra])


def test_a_rerun_with_another_model_is_refused_and_overwrite_starts_over(tiny_checkpoint, tmp_path, capsys):
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, tone(0.4, 16_000, 300 if name == "a.wav" else 500), 16_000)
    manifest = _manifest(tmp_path, ["a.wav"])
    torch.manual_seed(5)
    other = tmp_path / "other"
    dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).save_pretrained(other)
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"scores.{suffix}"
        assert _score(tiny_checkpoint, manifest, out) == 0
        record = json.loads((tmp_path / f"scores.{suffix}.meta.json").read_text())
        assert record["model"]["path"] == str(tiny_checkpoint) and len(record["model"]["sha256"]) == 64
        before = out.read_bytes()
        manifest.write_text(
            manifest.read_text() + json.dumps({"path": "b.wav", "prompt": "calm piano"}) + "\n"
        )
        capsys.readouterr()
        assert _score(other, manifest, out) == 2  # another model: refused, nothing scored
        err = capsys.readouterr().err
        assert (
            "made with other settings (model:" in err and "--overwrite" in err and len(err.splitlines()) == 1
        )
        assert out.read_bytes() == before
        # the same model from another folder (a copy) resumes: same files, same model
        copy = tmp_path / f"copy-{suffix}"
        copy.mkdir()
        for f in tiny_checkpoint.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        assert _score(copy, manifest, out) == 0
        assert _score(other, manifest, out, "--overwrite") == 0
        expected = dr.score(
            dr.DeRAMOS.from_pretrained(other),
            [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")],
            ["calm piano"] * 2,
        )
        if suffix == "jsonl":
            got = [(r["mi"], r["ta"]) for r in read_rows(out)]
        else:
            import csv

            with open(out, newline="") as f:
                got = [(float(r["mi"]), float(r["ta"])) for r in csv.DictReader(f)]
        assert np.allclose(got, [(r["mi"], r["ta"]) for r in expected], atol=1e-5)
        assert json.loads((tmp_path / f"scores.{suffix}.meta.json").read_text())["model"]["path"] == str(
            other
        )
        manifest = _manifest(tmp_path, ["a.wav"])


def test_output_without_a_record_is_not_resumed_blindly(tiny_checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", tone(0.4, 16_000), 16_000)
    manifest = _manifest(tmp_path, ["a.wav"])
    out = tmp_path / "scores.jsonl"
    out.write_text(
        json.dumps({"index": 0, "path": "a.wav", "prompt": "calm piano", "mi": 3.0, "ta": 3.0}) + "\n"
    )
    assert _score(tiny_checkpoint, manifest, out) == 2
    assert "no record of the model" in capsys.readouterr().err


def test_truncated_and_pcm_as_float_audio_are_scored_with_a_warning(tiny_checkpoint, tmp_path, capsys):
    wave = tone(1.0, 16_000)
    wave = 0.5 * wave / np.abs(wave).max()  # peak 0.5
    sf.write(tmp_path / "full.wav", wave, 16_000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])  # a download cut in half
    sf.write(
        tmp_path / "pcm.wav", (wave * 6000).astype(np.float32), 16_000, subtype="FLOAT"
    )  # int16 as float
    sf.write(tmp_path / "hot.wav", (wave * 3).astype(np.float32), 16_000, subtype="FLOAT")  # a hot mix: fine
    manifest = _manifest(tmp_path, ["full.wav", "cut.wav", "pcm.wav", "hot.wav"])
    out = tmp_path / "scores.jsonl"
    assert _score(tiny_checkpoint, manifest, out) == 0
    rows = read_rows(out)
    assert all(1 <= r["mi"] <= 5 for r in rows)
    assert "warning" not in rows[0] and "warning" not in rows[3]
    assert "is truncated: its header announces 1.00 s but it holds 0.50 s" in rows[1]["warning"]
    assert "integer PCM stored as float" in rows[2]["warning"] and "pcm.wav" in rows[2]["warning"]
    assert "2 of 4 inputs have warnings" in capsys.readouterr().err


def test_progress_counts_seconds_and_moves_inside_a_long_clip(tiny_model, tiny_checkpoint, tmp_path, capsys):
    # a 40 s clip is two windows (0-30 s, 15-40 s): progress comes in two steps that add up to 40 s
    steps = []
    wave = torch.from_numpy(tone(40.0, 24_000))
    score_clips(tiny_model, [wave], ["calm piano"], on_progress=steps.append)
    assert len(steps) == 2 and sum(steps) == pytest.approx(40.0) and 0 < steps[0] < 40
    # the command's bar counts seconds of audio over the whole job
    sf.write(tmp_path / "long.wav", tone(40.0, 8_000), 8_000)
    sf.write(tmp_path / "short.wav", tone(2.0, 8_000), 8_000)
    manifest = _manifest(tmp_path, ["long.wav", "short.wav"])
    assert _score(tiny_checkpoint, manifest, tmp_path / "s.jsonl") == 0
    bar = capsys.readouterr().err
    assert "42.0/42.0" in bar and "2 clips" in bar


def test_a_failed_start_leaves_no_folder(tiny_checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", tone(0.4, 16_000), 16_000)
    manifest = _manifest(tmp_path, ["a.wav"])
    out = tmp_path / "new" / "scores.jsonl"
    assert _score(tmp_path / "no-such-model", manifest, out) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert _score(tiny_checkpoint, manifest, out) == 0 and len(read_rows(out)) == 1
