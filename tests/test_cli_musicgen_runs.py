"""`deramos generate`, `deramos pairs` and `deramos dpo` as a new user meets them: one --device with
clear errors, one progress bar over the whole job, no folders left by a failed start, a rerun with
another judge or other inputs refused (or started over with --overwrite), missing extras and
unloadable models named, and every saved or printed reward saying its weights and normalisation."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import deramos_reward as dr
from deramos_reward.cli import main
from deramos_reward.integrations.training.dpo.pairs import PAIRS_SETTINGS, build_pairs, save_pairs


def _musicgen_command(command, checkpoint, out, n, seed, *extra):
    return main(
        [
            command, "--backend", "transformers", "--musicgen", "tiny", "--reward", str(checkpoint),
            "--prompt", "a calm piano piece", "--prompt", "fast drums", "--n", str(n), "--duration", "0.2",
            "--seed", str(seed), "--max-batch", str(n), "--out", str(out), *extra,
        ]
    )  # fmt: skip


def _generate(checkpoint, out, *extra):
    return _musicgen_command("generate", checkpoint, out, 2, 0, *extra)


def _pairs(checkpoint, out, *extra):
    return _musicgen_command("pairs", checkpoint, out, 3, 1, *extra)


def _dpo(pairs, out, *extra):
    return main(
        [
            "dpo", "--backend", "transformers", "--musicgen", "tiny", "--pairs", str(pairs), "--out", str(out),
            "--max-steps", "1", "--batch-size", "2", "--logging-steps", "1", *extra,
        ]
    )  # fmt: skip


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def other_judge(tmp_path_factory):
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("judge") / "other"
    dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).save_pretrained(path)
    return path


@pytest.mark.parametrize("command", ["generate", "pairs", "dpo"])
def test_device_and_model_errors_are_one_line_and_leave_no_folder(
    command, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    run = {"generate": _generate, "pairs": _pairs}.get(command)
    if command == "dpo":
        save_pairs(
            build_pairs(
                ["a", "b"], torch.randint(0, 64, (2, 2, 4, 5)), torch.tensor([[1.0, 2.0], [2.0, 1.0]])
            ),
            tmp_path / "p",
        )
        run = lambda _ckpt, o, *e: _dpo(tmp_path / "p", o, *e)  # noqa: E731
    for device, needle in [("gpu", "'gpu' is not a device"), ("cuda", "no CUDA GPU is available")]:
        assert run(tiny_checkpoint, out, "--device", device) == 2
        assert needle in _one_line(capsys)
    assert not out.exists() and not (tmp_path / "out.partial.jsonl").exists()


@pytest.mark.parametrize("command", ["generate", "pairs"])
def test_an_unloadable_musicgen_is_named_and_leaves_no_folder(
    command, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [
        "--backend",
        "transformers",
        "--musicgen",
        "nobody/no-such-musicgen",
        "--reward",
        str(tiny_checkpoint),
    ]
    argv += ["--prompt", "x", "--n", "2", "--duration", "0.2", "--out", str(tmp_path / "out")]
    assert main([command, *argv]) == 2
    line = _one_line(capsys)
    assert "'nobody/no-such-musicgen'" in line and "--backend transformers" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial.jsonl").exists()


def test_generate_shows_one_bar_records_the_reward_and_refuses_another_judge(
    tiny_checkpoint, other_judge, tmp_path, capsys
):
    out = tmp_path / "out"
    assert _generate(tiny_checkpoint, out) == 0
    err = capsys.readouterr().err
    assert "generate: 100%" in err and "2/2" in err and "batch" not in err  # one bar, over prompts
    assert "score = reward: 0.5*MI + 0.5*TA, not normalised: a MOS on 1-5" in err
    report = json.loads((out / "scores.json").read_text())
    assert report["reward"]["mi_weight"] == report["reward"]["ta_weight"] == 0.5
    assert report["reward"]["normalize"] == "none" and report["reward"]["range"] == [1.0, 5.0]
    assert report["settings"]["reward"]["sha256"] and report["settings"]["reward"]["path"] == str(
        tiny_checkpoint
    )
    before = (out / "scores.json").read_bytes()
    assert _generate(other_judge, out) == 2  # same path arguments otherwise; another judge
    line = _one_line(capsys)
    assert "other arguments (reward:" in line and "--overwrite" in line
    assert (out / "scores.json").read_bytes() == before
    assert _generate(other_judge, out, "--overwrite", "--mi-weight", "1", "--ta-weight", "1") == 0
    report = json.loads((out / "scores.json").read_text())
    assert report["settings"]["reward"]["path"] == str(other_judge)
    assert report["reward"]["text"] == "1*MI + 1*TA, not normalised: 2 to 10"
    assert all(
        c["score"] == pytest.approx(c["mi"] + c["ta"]) for r in report["results"] for c in r["candidates"]
    )


def test_pairs_refuses_another_judge_and_starts_over_when_asked(
    tiny_checkpoint, other_judge, tmp_path, capsys
):
    out = tmp_path / "pairs"
    assert _pairs(tiny_checkpoint, out) == 0
    err = capsys.readouterr().err
    assert "pairs: 100%" in err and "2/2" in err and "batch" not in err
    assert "scores = reward: 0.5*MI + 0.5*TA, not normalised: a MOS on 1-5" in err
    settings = json.loads((out / PAIRS_SETTINGS).read_text())
    assert settings["reward_function"]["normalize"] == "none" and settings["reward"]["sha256"]
    assert _pairs(other_judge, out) == 2
    line = _one_line(capsys)
    assert "made with other settings (reward:" in line and "--overwrite" in line
    assert _pairs(other_judge, out, "--overwrite") == 0
    assert json.loads((out / PAIRS_SETTINGS).read_text())["reward"]["path"] == str(other_judge)
    capsys.readouterr()
    # an interrupted run's candidates (made with the first judge) are not mixed with another judge's
    generation = {k: v for k, v in settings.items() if k not in ("margin", "max_pairs_per_prompt")}
    (tmp_path / "late.partial.jsonl").write_text(json.dumps({"settings": generation}) + "\n")
    assert _pairs(other_judge, tmp_path / "late") == 2
    assert "holds a run with other arguments (reward:" in _one_line(capsys)


def test_dpo_reruns_are_checked_against_what_made_the_adapter(tmp_path, capsys, monkeypatch):
    codes = torch.randint(0, 128, (4, 3, 4, 5))
    scores = torch.tensor([[1.0, 2.0, 3.0]] * 4)
    save_pairs(build_pairs(["a", "b", "c", "d"], codes, scores), tmp_path / "pairs")
    out = tmp_path / "adapter"
    assert _dpo(tmp_path / "pairs", out) == 0
    record = json.loads((out / "dpo_run.json").read_text())
    assert record["pairs"]["sha256"] and record["config"]["beta"] == 0.1
    capsys.readouterr()

    import deramos_reward.integrations.training.dpo.trainer as dpo_module

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(dpo_module, "MusicDPOTrainer", refuse)
    assert _dpo(tmp_path / "pairs", out) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert _dpo(tmp_path / "pairs", out, "--beta", "0.2") == 2
    assert "adapter made from other inputs (config:" in _one_line(capsys)
    monkeypatch.undo()
    assert _dpo(tmp_path / "pairs", out, "--beta", "0.2", "--overwrite") == 0
    assert json.loads((out / "dpo_run.json").read_text())["config"]["beta"] == 0.2
    capsys.readouterr()
    # a folder that is not an adapter of deramos dpo is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert _dpo(tmp_path / "pairs", mine, *extra) == 2
        assert "never replaced" in _one_line(capsys)
    assert (mine / "notes.txt").read_text() == "keep me"
    # pairs made with another MusicGen (codes outside this one's codebooks) are named before training
    save_pairs(
        build_pairs(["a"], torch.full((1, 2, 4, 5), 500), torch.tensor([[1.0, 2.0]])), tmp_path / "big"
    )
    assert _dpo(tmp_path / "big", tmp_path / "x") == 2
    assert "outside 0..127" in _one_line(capsys) and not (tmp_path / "x").exists()


@pytest.mark.parametrize("command, module", [("pairs", "datasets"), ("dpo", "peft")])
def test_a_missing_extra_is_named_before_any_work(
    command, module, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    if command == "pairs":
        code = _pairs(tiny_checkpoint, tmp_path / "out")
    else:
        code = _dpo(tmp_path / "pairs", tmp_path / "out")
    line = _one_line(capsys)
    assert code == 2 and f"'{module}'" in line and "deramos-reward[rl]" in line
    assert not (tmp_path / "out").exists()


def test_a_reward_describes_its_weights_and_normalisation():
    from deramos_reward.reward import describe_reward

    judge = dr.DeRAMOS(dr.DeRAMOSConfig.tiny())  # its own: MusicReward freezes the judge it wraps
    plain = dr.MusicReward(judge).describe()
    assert (plain["mi_weight"], plain["ta_weight"], plain["normalize"], plain["range"]) == (
        0.5,
        0.5,
        "none",
        [1.0, 5.0],
    )
    z = dr.MusicReward(judge, mi_weight=1, ta_weight=0, normalize="zscore", stats=(3.0, 0.5)).describe()
    assert (
        z["formula"] == "(1*MI + 0*TA - 3) / 0.5"
        and z["range"] is None
        and z["stats"] == {"mean": 3.0, "std": 0.5}
    )
    rank = describe_reward(0.5, 0.5, "rank")
    assert rank["range"] == [0.0, 1.0] and rank["text"].startswith("rank of 0.5*MI + 0.5*TA")
    assert describe_reward(-1, 2)["range"] == [-3.0, 9.0]
