"""Usage and input errors of `generate`, `pairs`, `rl`, `rate` and `agreement`, as a new user makes them:
each is one line with exit status 2, found before anything is written (no folder, no settings file, no
partial file, no empty ratings file), and the corrected command then runs."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from rating_helpers import write_clips

from deramos_reward.cli import main
from deramos_reward.cli.musicgen import parse_sampling
from deramos_reward.integrations.musicgen.factory import check_sampling
from deramos_reward.rating import RatingLog, build_items, read_clips


def _one_line_exit_2(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"deramos {argv[0]}: error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def _nothing_in(folder: Path, *keep: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


def _musicgen(command: str, checkpoint, out, backend: str = "transformers", *extra: str) -> list[str]:
    judge = "--judge" if command == "rl" else "--reward"
    argv = [
        command,
        "--backend",
        backend,
        "--musicgen",
        "tiny",
        judge,
        str(checkpoint),
        "--prompt",
        "calm piano",
    ]
    argv += ["--duration", "0.2", "--out", str(out)]
    if command == "rl":
        argv += ["--max-steps", "1", "--num-generations", "2", "--prompts-per-step", "1"]
    else:
        argv += ["--n", "2"]
    return argv + list(extra)


# ---- --sampling: the chosen library's own options, by its own names ----------------------------
SAMPLING_CASES = [
    ("transformers", "top_kk=5", ["'top_kk'", "did you mean 'top_k'", "transformers MusicGen"]),
    ("transformers", "guidance_scale=abc", ["guidance_scale must be a number", "'abc'"]),
    ("transformers", "cfg_coef=3", ["'cfg_coef'", "transformers MusicGen calls it 'guidance_scale'"]),
    ("transformers", "use_sampling=True", ["transformers MusicGen calls it 'do_sample'"]),
    ("transformers", "max_new_tokens=20", ["'max_new_tokens'", "--duration"]),
    ("transformers", "num_return_sequences=2", ["'num_return_sequences'", "--n"]),
    ("transformers", "do_sample=yes", ["do_sample must be True or False"]),
    ("transformers", "temperature=0", ["temperature must be > 0"]),
    ("transformers", "top_p=1.5", ["top_p must be in [0, 1]"]),
    ("transformers", "top_k=2.5", ["top_k must be an integer >= 0"]),
    ("transformers", "num_beams=2", ["'num_beams' is not a sampling option of transformers MusicGen"]),
    ("audiocraft", "guidance_scale=3", ["AudioCraft MusicGen calls it 'cfg_coef'"]),
    ("audiocraft", "do_sample=True", ["AudioCraft MusicGen calls it 'use_sampling'"]),
    ("audiocraft", "top_k=abc", ["AudioCraft MusicGen", "top_k must be an integer >= 0"]),
    ("audiocraft", "cfg_coeff=3", ["did you mean 'cfg_coef'"]),
    ("audiocraft", "duration=3", ["'duration'", "--duration"]),
]


@pytest.mark.parametrize("backend, option, needles", SAMPLING_CASES)
def test_sampling_options_are_checked_against_the_library(backend, option, needles):
    with pytest.raises(ValueError) as err:
        check_sampling(backend, parse_sampling([option]))
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


@pytest.mark.parametrize("command", ["generate", "pairs", "rl"])
@pytest.mark.parametrize("option", ["top_kk=5", "guidance_scale=abc", "cfg_coef=3", "max_new_tokens=9"])
def test_a_bad_sampling_option_is_one_line_and_leaves_nothing(
    command, option, tiny_checkpoint, tmp_path, capsys
):
    out = tmp_path / "out"
    _one_line_exit_2(
        capsys, _musicgen(command, tiny_checkpoint, out, "transformers", "--sampling", option), "--sampling"
    )
    _nothing_in(tmp_path)


def test_good_sampling_options_of_each_library_pass():
    assert check_sampling("transformers", {"guidance_scale": 3, "top_k": 250, "do_sample": True}) == {
        "guidance_scale": 3,
        "top_k": 250,
        "do_sample": True,
    }
    assert check_sampling("audiocraft", {"cfg_coef": 3.0, "use_sampling": True, "temp": 1.0, "top_p": 0.0})


def test_rl_sampling_from_a_config_file_is_checked_too(tiny_checkpoint, tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"generation_kwargs": {"cfg_coef": 1.0}}))
    argv = _musicgen("rl", tiny_checkpoint, tmp_path / "out", "transformers", "--config", str(config))
    _one_line_exit_2(capsys, argv, "'cfg_coef'", "guidance_scale")
    _nothing_in(tmp_path, "c.json")


# ---- generate / pairs: options that cannot work together -------------------------------------------
@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--progressive", "--checkpoints", "1.5"], ["--checkpoints", "(0, 1)", "'1.5'"]),
        (["--progressive", "--checkpoints", "0.5,0.25"], ["increasing"]),
        (["--progressive", "--checkpoints", "a,b"], ["--checkpoints"]),
        (["--progressive", "--checkpoints", ""], ["--checkpoints"]),
        (["--progressive", "--keep", "0"], ["--keep must be in (0, 1]"]),
        (["--progressive"], ["--checkpoints 0.25,0.5 cut the 10 code frames", "at least 4"]),  # 0.2 s
        (["--keep", "0.3"], ["--keep only applies with --progressive"]),
        (["--checkpoints", "0.5"], ["--checkpoints only applies with --progressive"]),
        (["--mi-weight", "0", "--ta-weight", "0"], ["both 0", "constant"]),
        (["--mi-weight", "nan"], ["--mi-weight must be a finite number"]),
        (["--duration", "0.01"], ["--duration 0.01", "shorter than one code frame"]),
        (["--duration", "0.06"], ["--duration 0.06 gives 3 code frames", "at least 4"]),
        (["--duration", "inf"], ["--duration must be a positive number"]),
    ],
)
def test_generate_refuses_options_that_cannot_work(extra, needles, tiny_checkpoint, tmp_path, capsys):
    _one_line_exit_2(
        capsys, _musicgen("generate", tiny_checkpoint, tmp_path / "out", "transformers", *extra), *needles
    )
    _nothing_in(tmp_path)


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--mi-weight", "0", "--ta-weight", "0"], ["both 0", "constant"]),
        (["--duration", "0.06"], ["gives 3 code frames"]),
        (["--margin", "inf"], ["--margin must be a finite number"]),
        (["--sampling", "cfg_coef=2"], ["guidance_scale"]),
    ],
)
def test_pairs_refuses_options_that_cannot_work(extra, needles, tiny_checkpoint, tmp_path, capsys):
    _one_line_exit_2(
        capsys, _musicgen("pairs", tiny_checkpoint, tmp_path / "out", "transformers", *extra), *needles
    )
    _nothing_in(tmp_path)  # no pairs folder, no out.partial.jsonl


def test_a_failed_first_group_leaves_no_folder_and_the_fixed_command_runs(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    import deramos_reward.integrations.rerank as rerank

    def broken(*args, **kwargs):
        raise RuntimeError("the first group fails")

    out = tmp_path / "out"
    monkeypatch.setattr(rerank, "best_of_n", broken)
    for command in ("generate", "pairs"):
        with pytest.raises(RuntimeError):
            main(_musicgen(command, tiny_checkpoint, out))
        _nothing_in(tmp_path)  # neither the folder nor pairs' partial file
    monkeypatch.undo()
    assert main(_musicgen("generate", tiny_checkpoint, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000.wav", "scores.json"]


# ---- rl: its run folder ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--method", "backprop", "--mi-weight", "0", "--ta-weight", "0"], ["both 0", "constant"]),
        (["--duration", "0.01"], ["shorter than one code frame"]),
        (["--device", "gpu"], ["'gpu' is not a device"]),
        (["--device", "mps"], ["--device"]),
        (["--eval-prompts", "missing.txt"], ["--eval-prompts file"]),
        (["--grad-accum", "3"], ["2 samples per step", "--grad-accum 3"]),
        (["--sampling", "temperature=0.5"], ["generation_kwargs must be free of 'temperature'"]),
        (["--mi-weight", "nan"], ["--mi-weight"]),
        (["--sampling", "guidance_scale=3"], ["--sampling guidance_scale", "--guidance-scale"]),
    ],
)
def test_rl_usage_errors_leave_no_run_folder(extra, needles, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    _one_line_exit_2(
        capsys, _musicgen("rl", tiny_checkpoint, tmp_path / "out", "transformers", *extra), *needles
    )
    _nothing_in(tmp_path)


def test_rl_never_writes_into_a_folder_of_other_files(tiny_checkpoint, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        _one_line_exit_2(
            capsys, _musicgen("rl", tiny_checkpoint, mine, "transformers", *extra), "no run of deramos rl"
        )
    _nothing_in(mine, "notes.txt")


def test_rl_help_shows_no_other_commands_notes(capsys):
    with pytest.raises(SystemExit):
        main(["rl", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "dpo:" not in text and "--epochs" not in text and "sigmoid or ipo" not in text
    assert "--device DEVICE" in text and "--overwrite" in text
    with pytest.raises(SystemExit):
        main(["dpo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "-1 = train for --epochs" in text and "grpo" not in text


# ---- rate -------------------------------------------------------------------------------------------
@pytest.fixture
def clips(tmp_path) -> Path:
    return write_clips(tmp_path / "data")


def _rate(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["rate", "--clips", str(manifest), "--out", str(out), "--port", "0", *extra]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--dev-fraction", "2"], ["--dev-fraction must be in [0, 1)", "2.0"]),
        (["--dev-fraction", "-0.1"], ["--dev-fraction"]),
        (["--dev-fraction", "nan"], ["--dev-fraction"]),
        (["--seed", "-1"], ["--seed must be >= 0"]),
        (["--min-margin", "nan"], ["--min-margin"]),
        (["--port", "70000"], ["--port must be in 0..65535"]),
        (["--host", "203.0.113.7"], ["cannot serve on --host 203.0.113.7"]),  # not this machine's
        (["--host", "no-such-host.invalid"], ["cannot serve on --host no-such-host.invalid"]),
    ],
)
def test_rate_errors_are_one_line_and_create_no_ratings_file(extra, needles, clips, tmp_path, capsys):
    out = tmp_path / "ratings.jsonl"
    _one_line_exit_2(capsys, _rate(clips, out, *extra), *needles)
    assert not out.exists() and not out.with_name("ratings.jsonl.session.json").exists()


def test_rate_on_a_port_in_use_is_one_line(clips, tmp_path, capsys):
    out = tmp_path / "ratings.jsonl"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["rate", "--clips", str(clips), "--out", str(out), "--port", str(port)]
        _one_line_exit_2(capsys, argv, f"--port {port}", "in use", "another --port")
    assert not out.exists()


def test_rate_refuses_a_second_server_and_the_other_mode_in_one_line(clips, tmp_path, capsys):
    out = tmp_path / "ratings.jsonl"
    items = read_clips(clips)
    with RatingLog(out, "mos", items, build_items(items, "mos")) as log:  # the first server's log
        log.record("al", log.next_item("al").id, {"mi": 3, "ta": 4})
        _one_line_exit_2(capsys, _rate(clips, out), "another deramos rate is writing")
    _one_line_exit_2(capsys, _rate(clips, out, "--mode", "ab"), "holds MOS ratings", "--mode mos")
    assert len(out.read_text().splitlines()) == 1


def test_rate_out_in_a_missing_folder_is_one_line(clips, tmp_path, capsys):
    _one_line_exit_2(capsys, _rate(clips, tmp_path / "nope" / "r.jsonl"), "folder of --out")
    assert not (tmp_path / "nope").exists()


# ---- agreement --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--n-boot", "0"], ["--n-boot must be >= 1"]),
        (["--n-boot", "-3"], ["--n-boot must be >= 1"]),
        (["--level", "1.5"], ["--level must be in (0, 1)"]),
        (["--level", "0"], ["--level must be in (0, 1)"]),
        (["--level", "nan"], ["--level"]),
        (["--batch-size", "0"], ["--batch-size must be >= 1"]),
        (["--seed", "-2"], ["--seed must be >= 0"]),
        (["--mi-weight", "0", "--ta-weight", "0"], ["constant"]),
    ],
)
def test_agreement_options_out_of_range_are_one_line(extra, needles, clips, tmp_path, capsys):
    ratings = tmp_path / "ratings.jsonl"
    row = {"path": "data/clips/gen_a/p0.wav", "prompt": "p", "mi": 3, "ta": 4, "system": "gen_a"}
    ratings.write_text(json.dumps({**row, "split": "train", "rater": "al", "id": "x@al"}) + "\n")
    out = tmp_path / "report.json"
    _one_line_exit_2(capsys, ["agreement", str(ratings), "--out", str(out), *extra], *needles)
    assert not out.exists()


def test_an_rl_start_that_fails_inside_the_trainer_leaves_nothing(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):

    def broken(*args, **kwargs):  # after the trainer wrote settings.json, before any checkpoint
        raise RuntimeError("the first step fails")

    import deramos_reward.integrations.training.common.trainer as trainer_base

    monkeypatch.setattr(trainer_base, "resolve_checkpoint", broken)
    given = tmp_path / "given"
    given.mkdir()  # a folder the user made for the run: it stays, empty
    for out in (tmp_path / "new", given):
        with pytest.raises(RuntimeError):
            main(_musicgen("rl", tiny_checkpoint, out))
    _nothing_in(tmp_path, "given")
    _nothing_in(given)
    monkeypatch.undo()
    capsys.readouterr()
    assert main(_musicgen("rl", tiny_checkpoint, given, "transformers", "--guidance-scale", "1")) == 0
