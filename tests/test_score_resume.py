"""`deramos score` over a manifest loses nothing: SIGKILL + restart, torn lines, bad files, CSV.

The reference is an uninterrupted run of the same command; resumed runs must give the same rows
(every input exactly once, in input order, bit-identical scores: each run uses one thread and
``--batch-size 1``, so no clip's arithmetic depends on where the run was cut).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch
from conftest import tone

from deramos_reward.cli import main, provenance
from deramos_reward.jsonl import append_rows, read_rows

N_GOOD = 90
PROMPTS = [
    "calm piano",
    "lo-fi beat \u2028 with a line separator",  # U+2028 and U+0085 are written unescaped in JSON
    "next line \x85 control",
    "🎻 string quartet, 安静",
    "موسيقى هادئة",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as in the subprocesses (OMP_NUM_THREADS=1), so in-process runs give
    bit-identical scores to them; the tiny model gains nothing from more threads anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """N_GOOD short files at assorted rates/channels + a corrupt and a missing file, and a manifest."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "wav").mkdir()
    entries = []
    for i in range(N_GOOD):
        rate = (8_000, 16_000, 22_050, 44_100)[i % 4]
        audio = tone(0.2 + 0.01 * (i % 7), rate, 150 + 7 * i, channels=2 if i % 3 == 0 else 0, seed=i)
        name = f"wav/clip{i:03d}.{'flac' if i % 5 == 0 else 'wav'}"
        sf.write(root / name, audio.T if audio.ndim == 2 else audio, rate)
        entries.append({"path": name, "prompt": PROMPTS[i % len(PROMPTS)]})
        if i == 10:
            (root / "wav" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
            entries.append({"path": "wav/corrupt.wav", "prompt": "x"})
        if i == 40:
            entries.append({"path": "wav/missing.wav", "prompt": "y"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    return root, manifest, entries


def _args(checkpoint, manifest, out, *extra):
    return ["score", "--model", str(checkpoint), "--manifest", str(manifest), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, corpus, tmp_path_factory):
    """Rows of an uninterrupted run (in this process, one thread like the subprocesses)."""
    _, manifest, _ = corpus
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    assert main(_args(tiny_checkpoint, manifest, out, "--batch-size", "1")) == 1  # 2 bad inputs
    return read_rows(out)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return env


def _kill_after_rows(argv, watch, min_rows, cwd):
    """Start the CLI, SIGKILL it once ``watch`` holds ``min_rows`` complete lines; -> lines at kill."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deramos_reward.cli", *argv],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while proc.poll() is None:
            if watch.exists() and watch.read_bytes().count(b"\n") >= min_rows:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended before it could be killed: {err.decode()[-500:]}"
    )
    return watch.read_bytes().count(b"\n")


def _check_complete(rows, reference, entries):
    assert [r["index"] for r in rows] == list(range(len(entries)))  # each input exactly once, in order
    assert rows == reference
    errors = {r["path"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {"wav/corrupt.wav", "wav/missing.wav"}
    assert "could not be read as audio" in errors["wav/corrupt.wav"]
    assert "does not exist" in errors["wav/missing.wav"]
    assert all(1 <= r["mi"] <= 5 and 1 <= r["ta"] <= 5 for r in rows if "error" not in r)


def test_sigkill_then_same_command_scores_every_input_once(tiny_checkpoint, corpus, reference, tmp_path):
    root, manifest, entries = corpus
    out = tmp_path / "out.jsonl"
    argv = _args(tiny_checkpoint, manifest, out, "--batch-size", "1")
    at_kill = _kill_after_rows(argv, out, 3, root)
    assert 3 <= at_kill < len(entries)
    # a kill inside a write leaves a torn last line: add one, the restart must cut it
    with open(out, "ab") as f:
        f.write(b'{"index": %d, "path": "wav/cl' % at_kill)
    proc = subprocess.run(
        [sys.executable, "-m", "deramos_reward.cli", *argv], cwd=root, env=_env(), capture_output=True
    )
    assert proc.returncode == 1, proc.stderr.decode()[-800:]  # the corrupt and missing files
    assert f"2 of {len(entries)} inputs failed" in proc.stderr.decode()
    text = out.read_bytes()
    assert text.endswith(b"\n") and b'"wav/cl\n' not in text
    _check_complete(read_rows(out), reference, entries)


def test_sigkill_with_csv_output_then_same_command(tiny_checkpoint, corpus, reference, tmp_path):
    root, manifest, entries = corpus
    out = tmp_path / "scores.csv"
    argv = _args(tiny_checkpoint, manifest, out, "--batch-size", "1")
    partial = tmp_path / "scores.csv.partial.jsonl"
    _kill_after_rows(argv, partial, 3, root)
    assert not out.exists()  # the CSV only appears, whole, at the end
    assert main(argv) == 1  # the same command, in this process
    assert not partial.exists()
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [e["path"] for e in entries]
    assert [r["prompt"] for r in rows] == [e["prompt"] for e in entries]
    for row, ref in zip(rows, reference):
        if "error" in ref:
            assert row["error"] == ref["error"] and row["mi"] == row["ta"] == ""
        else:  # CSV keeps repr(float): the exact value
            assert (float(row["mi"]), float(row["ta"]), row["error"]) == (ref["mi"], ref["ta"], "")


def test_rerun_of_a_finished_job_loads_no_model(tiny_checkpoint, corpus, reference, tmp_path, monkeypatch):
    _, manifest, entries = corpus
    out_jsonl, out_csv = tmp_path / "o.jsonl", tmp_path / "o.csv"
    append_rows(out_jsonl, reference)
    fields = ["path", "prompt", "mi", "ta", "error", "warning"]  # what a real run writes
    rows_csv = [{k: r.get(k, "") for k in fields} for r in reference]
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows_csv)
    # the record a real run keeps beside its output: which model wrote the rows
    record = {"command": "deramos score", "model": provenance.checkpoint_identity(str(tiny_checkpoint))}
    for out in (out_jsonl, out_csv):
        provenance.write(out.with_name(out.name + ".meta.json"), record)
    before = out_jsonl.read_bytes(), out_csv.read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished job must not load the model")

    monkeypatch.setattr("deramos_reward.model.DeRAMOS.from_pretrained", refuse)
    assert main(_args(tiny_checkpoint, manifest, out_jsonl)) == 1
    assert main(_args(tiny_checkpoint, manifest, out_csv)) == 1
    assert (out_jsonl.read_bytes(), out_csv.read_bytes()) == before


def test_retry_errors_rescores_fixed_inputs_and_keeps_one_row_each(tiny_checkpoint, tmp_path):
    sf.write(tmp_path / "a.wav", tone(0.5, 16_000), 16_000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": p, "prompt": "piano"}) + "\n" for p in ["a.wav", "late.wav", "a.wav"])
    )
    out = tmp_path / "out.jsonl"
    assert main(_args(tiny_checkpoint, manifest, out)) == 1
    assert "does not exist" in read_rows(out)[1]["error"]
    sf.write(tmp_path / "late.wav", tone(0.7, 16_000, 300), 16_000)
    assert main(_args(tiny_checkpoint, manifest, out)) == 1  # without the flag errors are final
    assert main(_args(tiny_checkpoint, manifest, out, "--retry-errors")) == 0
    rows = read_rows(out)
    assert [r["index"] for r in rows] == [0, 1, 2] and all("error" not in r for r in rows)
    assert rows[0]["mi"] == rows[2]["mi"] and rows[1]["mi"] != rows[0]["mi"]


def test_output_of_another_manifest_is_refused(tiny_checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", tone(0.5, 16_000), 16_000)
    sf.write(tmp_path / "b.wav", tone(0.5, 16_000, 600), 16_000)
    out = tmp_path / "out.jsonl"
    m1, m2 = tmp_path / "m1.jsonl", tmp_path / "m2.jsonl"
    m1.write_text(json.dumps({"path": "a.wav", "prompt": "p"}) + "\n")
    m2.write_text(json.dumps({"path": "b.wav", "prompt": "p"}) + "\n")
    assert main(_args(tiny_checkpoint, m1, out)) == 0
    before = out.read_bytes()
    assert main(_args(tiny_checkpoint, m2, out)) == 2
    assert "holds a row for another input" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_a_clip_that_fails_inside_the_model_is_one_error_row(tiny_checkpoint, tmp_path, monkeypatch):
    """A batch whose forward fails is retried clip by clip, so only the culprit gets an error."""
    import deramos_reward.scoring as scoring

    rates = [16_000, 8_000, 16_000, 16_000]
    for i, rate in enumerate(rates):
        sf.write(tmp_path / f"{i}.wav", tone(0.3 if rate == 8_000 else 0.4, rate, 200 + 50 * i), rate)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"{i}.wav", "prompt": "p"}) + "\n" for i in range(4)))
    ref_out, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    assert main(_args(tiny_checkpoint, manifest, ref_out, "--batch-size", "4")) == 0
    real = scoring.score_clips
    poison = 2_400 * 3  # the 8 kHz clip (0.3 s) at 24 kHz; the others have 9600 samples

    def flaky(model, waves, *args, **kwargs):
        if any(w.shape[0] == poison for w in waves):
            raise RuntimeError("simulated out-of-memory")
        return real(model, waves, *args, **kwargs)

    monkeypatch.setattr(scoring, "score_clips", flaky)
    assert main(_args(tiny_checkpoint, manifest, out, "--batch-size", "4")) == 1
    rows, ref = read_rows(out), read_rows(ref_out)
    assert rows[1]["error"] == "scoring failed: RuntimeError: simulated out-of-memory"
    for i in (0, 2, 3):  # scored alone instead of in a batch of three: batch-size noise only (1e-5, as in
        # tests/test_determinism.py; 1.2e-6 was seen on this machine)
        assert rows[i]["mi"] == pytest.approx(ref[i]["mi"], abs=1e-5)
        assert rows[i]["ta"] == pytest.approx(ref[i]["ta"], abs=1e-5)


def test_jsonl_rows_round_trip_and_torn_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"index": i, "prompt": p, "mi": 1.0 + i / 3} for i, p in enumerate(PROMPTS)]
    append_rows(path, rows[:2])
    append_rows(path, rows[2:])
    assert read_rows(path) == rows
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"index": 9, "pro')
    assert read_rows(path, repair=False) == rows and path.read_bytes() != whole  # skipped, not cut
    assert read_rows(path) == rows and path.read_bytes() == whole  # cut
    path.write_bytes(whole + b"not json\n")
    with pytest.raises(ValueError, match=r"rows.jsonl:6: not valid JSON"):
        read_rows(path)
    path.write_bytes(b"[1, 2]\n")
    with pytest.raises(ValueError, match="expected a JSON object"):
        read_rows(path)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        append_rows(tmp_path / "nan.jsonl", [{"mi": float("nan")}])
    assert not (tmp_path / "nan.jsonl").exists()
    assert read_rows(tmp_path / "missing.jsonl") == []
