"""The `deramos` command's error contract: its own usage and input errors (also those found deep in
the library: a bad audio file, manifest or config value, a missing optional extra, an unknown or
absent --device) are one line with exit status 2; anything else is a bug and keeps its traceback.
Also: every option's help shows its default, and `examples/demo.py --help` only prints help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import tone

import deramos_reward as dr
from deramos_reward.cli import build_parser, main, user_error_message
from deramos_reward.cli.options import CommandError, resolve_device

ROOT = Path(__file__).resolve().parents[1]
OWN_COMMANDS = ("score", "train", "eval")


def _one_line_exit_2(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"deramos {argv[0]}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def rated(tmp_path):
    """Two systems x 4 clips with ratings on 1-5 and train/dev splits, as a JSONL manifest."""
    rows = []
    for s, system in enumerate(("gen_a", "gen_b")):
        (tmp_path / system).mkdir()
        for i in range(4):
            name = f"{system}/c{i}.wav"
            sf.write(tmp_path / name, tone(0.5, 16_000, 200 + 60 * i + 13 * s, seed=i + 5 * s), 16_000)
            split = "dev" if i == 3 else "train"
            rows.append(
                {
                    "path": name,
                    "prompt": f"piece {i}",
                    "mi": 1.5 + i + s * 0.3,
                    "ta": 2 + i * 0.5,
                    "split": split,
                }
            )
    manifest = tmp_path / "ratings.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, rows


# ---- devices ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", OWN_COMMANDS)
@pytest.mark.parametrize(
    "device, needle",
    [("gpu", "'gpu' is not a device"), ("cuda", "no CUDA GPU is available"), ("mps", "MPS is not available")],
)
def test_unknown_or_absent_device_is_one_line(
    command, device, needle, rated, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    manifest, _ = rated
    argv = {
        "score": [
            "score",
            "--model",
            str(tiny_checkpoint),
            "--manifest",
            str(manifest),
            "--out",
            str(tmp_path / "o" / "s.jsonl"),
        ],
        "train": ["train", "--data", str(manifest), "--out", str(tmp_path / "o"), "--tiny"],
        "eval": ["eval", "--model", str(tiny_checkpoint), "--data", str(manifest), "--split", "dev"],
    }[command]
    _one_line_exit_2(capsys, [*argv, "--device", device], needle)
    assert not (tmp_path / "o").exists()  # a failed start leaves no folder behind


def test_auto_device_is_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(CommandError, match="only 2 CUDA GPU"):
        resolve_device("cuda:2")


def test_device_error_in_a_subprocess_has_no_traceback(tiny_checkpoint, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.3, 16_000), 16_000)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deramos_reward.cli",
            "score",
            "--model",
            str(tiny_checkpoint),
            "--prompt",
            "x",
            str(wav),
            "--device",
            "gpu",
        ],
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_train_config_cuda_without_a_gpu_is_refused_not_run_on_cpu(rated, tmp_path, monkeypatch):
    from deramos_reward.training import TrainConfig, train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(dr.errors.InputError, match="no CUDA GPU"):
        train(TrainConfig(model="tiny", device="cuda", max_epochs=1), rated[0], tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---- errors found deep in the library -------------------------------------------------------------
def test_input_errors_from_inside_the_library_are_one_line(rated, tmp_path, capsys):
    manifest, rows = rated
    out = str(tmp_path / "run")
    # a corrupt audio file named by the manifest: found by the data checks, before anything is written
    (tmp_path / "gen_a" / "c1.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    _one_line_exit_2(
        capsys, ["train", "--data", str(manifest), "--out", out, "--tiny"], "c1.wav", "could not be read"
    )
    assert not Path(out).exists()
    # a bad config value, from a --config file
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"batch_size": 0}))
    _one_line_exit_2(
        capsys, ["train", "--data", str(manifest), "--out", out, "--config", str(bad)], "batch_size"
    )
    # a config value of the wrong type
    bad.write_text(json.dumps({"gather_balr": "yes"}))
    _one_line_exit_2(
        capsys, ["train", "--data", str(manifest), "--out", out, "--config", str(bad)], "gather_balr"
    )
    # a manifest line of the wrong form, read by eval
    manifest.write_text(manifest.read_text() + '{"path": "gen_a/c0.wav", "Prompt": "x"}\n')
    _one_line_exit_2(
        capsys, ["eval", "--model", "nowhere", "--data", str(manifest)], "ratings.jsonl:9", "'Prompt'"
    )


def test_audio_that_goes_bad_after_the_checks_leaves_no_run_folder(rated, tmp_path, capsys):
    manifest, _ = rated
    sf.write(
        tmp_path / "gen_b" / "c2.wav", torch.full((8000,), float("nan")).numpy(), 16_000, subtype="FLOAT"
    )
    out = tmp_path / "run"
    _one_line_exit_2(
        capsys, ["train", "--data", str(manifest), "--out", str(out), "--tiny", "--quiet"], "c2.wav", "NaN"
    )
    assert not out.exists()


def test_a_folder_is_reported_as_a_folder(rated, tiny_checkpoint, tmp_path, capsys):
    manifest, _ = rated
    _one_line_exit_2(
        capsys,
        ["score", "--model", str(tiny_checkpoint), "--manifest", str(tmp_path)],
        "is a folder; expected a file",
    )
    code = main(["score", "--model", str(tiny_checkpoint), "--prompt", "x", str(tmp_path / "gen_a")])
    row = json.loads(capsys.readouterr().out)
    assert code == 1 and "is a folder; expected a file" in row["error"]
    manifest.write_text(json.dumps({"path": "gen_a", "prompt": "x", "mi": 3, "ta": 3}) + "\n")
    _one_line_exit_2(
        capsys,
        ["train", "--data", str(manifest), "--out", str(tmp_path / "r"), "--tiny"],
        "is a folder, not an audio file",
    )
    _one_line_exit_2(
        capsys,
        ["train", "--data", str(manifest), "--out", str(tmp_path / "r"), "--model", str(tmp_path)],
        "is a folder",
    )


def test_a_missing_local_encoder_names_the_hub_id_to_download(rated, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dr.DeRAMOSConfig.tiny().to_dict()
    cfg["text_encoder"].update(name_or_path="roberta-local", backbone=None)
    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps(cfg))
    line = _one_line_exit_2(
        capsys,
        [
            "train",
            "--data",
            str(rated[0]),
            "--out",
            str(tmp_path / "r"),
            "--model",
            str(model_json),
            "--quiet",
        ],
        "huggingface-cli download FacebookAI/roberta-base --local-dir roberta-local",
        "HF_HUB_OFFLINE",
    )
    assert "TypeError" not in line and "Error:" not in line.split("error: ", 1)[1]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "module, argv_tail, extra",
    [
        ("accelerate", ["train"], "deramos-reward[train]"),
        ("matplotlib", ["eval", "--plot"], "deramos-reward[plot]"),
    ],
)
def test_a_missing_extra_is_named(
    module, argv_tail, extra, rated, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    manifest, _ = rated
    if argv_tail[0] == "train":
        argv = ["train", "--data", str(manifest), "--out", str(tmp_path / "r"), "--tiny"]
    else:
        argv = ["eval", "--model", str(tiny_checkpoint), "--data", str(manifest), "--split", "dev", "--plot"]
    _one_line_exit_2(capsys, argv, module, extra)
    assert not (tmp_path / "r").exists()


def test_a_bare_import_of_an_extra_is_named_too():
    err = ModuleNotFoundError("No module named 'peft'", name="peft")
    assert "deramos-reward[rl]" in user_error_message(err)
    assert user_error_message(ModuleNotFoundError("No module named 'helpers'", name="helpers")) is None


def test_an_internal_bug_keeps_its_traceback(rated, tiny_checkpoint, monkeypatch):
    import deramos_reward.cli.score as score

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(score, "read_jobs", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["score", "--model", str(tiny_checkpoint), "--manifest", str(rated[0])])
    monkeypatch.setattr(score, "read_jobs", lambda args: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        main(["score", "--model", str(tiny_checkpoint), "--manifest", str(rated[0])])


def test_a_permission_error_on_the_output_is_one_line(rated, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import errno

    import deramos_reward.cli.provenance as provenance

    out = tmp_path / "locked" / "s.jsonl"

    def denied(path, data):  # what writing into a folder without write permission raises
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(provenance, "atomic_write_bytes", denied)
    argv = ["score", "--model", str(tiny_checkpoint), "--manifest", str(rated[0]), "--out", str(out)]
    _one_line_exit_2(capsys, argv, "Permission denied", "s.jsonl.meta.json")


# ---- help ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [*OWN_COMMANDS, "generate", "pairs", "dpo", "rate", "agreement"])
def test_every_option_has_help_and_shows_its_default(command, capsys):
    p = build_parser()._subparsers._group_actions[0].choices[command]
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in p._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        if action.default not in (None, False, []):
            assert f"(default: {action.default})" in text or "default" in action.help, action.option_strings
    assert "--device DEVICE" in text and "auto = a CUDA GPU when there is one, else the CPU" in text
    if command in ("score", "eval"):
        assert (
            "(default: auto)" in text
            and "--batch-size BATCH_SIZE clips per forward pass (default: 16)" in text
        )


def test_demo_help_prints_help_and_runs_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "usage:" in proc.stdout and "--out" in proc.stdout
    assert list(tmp_path.iterdir()) == []
