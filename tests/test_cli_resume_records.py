"""Long jobs record what made them and refuse a resume with any of it changed, in one line naming it:
`rl` (both methods: the judge by the sha256 of its files, the reward's weights and shaping, the sampling,
the prompts), `rate` (the split fraction, the A/B draw) and `train --init` (the starting judge by its files,
so `./judge` and `judge` are the same one; a preset beside --init is refused)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from rating_helpers import write_clips

import deramos_reward as dr
from deramos_reward.cli import main
from deramos_reward.rating import RatingLog, build_items, read_clips


def _refused(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert code == 2 and len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    """Two different tiny judges, and a copy of the first in another folder."""
    root = tmp_path_factory.mktemp("judges")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).save_pretrained(root / name)
    copy = root / "copy"
    copy.mkdir()
    for f in (root / "a").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    return root


def _rl(judge, out, prompts, *extra: str) -> list[str]:
    argv = [
        "rl",
        "--backend",
        "transformers",
        "--musicgen",
        "tiny",
        "--judge",
        str(judge),
        "--prompts",
        str(prompts),
    ]
    argv += ["--out", str(out), "--max-steps", "1", "--num-generations", "2", "--prompts-per-step", "1"]
    return argv + ["--duration", "0.2", "--lora-r", "2", *extra]


@pytest.mark.parametrize("method", ["rl", "backprop"])
def test_rl_resume_refuses_another_judge_reward_sampling_or_prompts(method, judges, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("calm piano\nfast drums\n")
    out = tmp_path / "run"
    extra = ["--method", "backprop", "--num-generations", "1"] if method == "backprop" else []
    assert main(_rl(judges / "a", out, prompts, *extra)) == 0
    capsys.readouterr()
    record = json.loads((out / "rl_run.json").read_text())
    assert record["judge"]["sha256"] and record["reward.mi_weight"] == 0.5 and record["prompts"]["count"] == 2
    settings_before = (out / "settings.json").read_bytes()

    _refused(capsys, _rl(judges / "b", out, prompts, *extra), "judge:", str(judges / "b"), "--overwrite")
    _refused(
        capsys,
        _rl(judges / "a", out, prompts, *extra, "--mi-weight", "1"),
        "reward.mi_weight: 0.5 then, 1.0 now",
    )
    _refused(capsys, _rl(judges / "a", out, prompts, *extra, "--ta-weight", "2"), "reward.ta_weight")
    _refused(
        capsys,
        _rl(judges / "a", out, prompts, *extra, "--guidance-scale", "1"),
        "sampling.guidance_scale: 3.0 then, 1.0 now",
    )
    _refused(capsys, _rl(judges / "a", out, prompts, *extra, "--temperature", "0.7"), "sampling.temperature")
    _refused(capsys, _rl(judges / "a", out, prompts, *extra, "--sampling", "top_p=0.9"), "sampling.top_p")
    _refused(capsys, _rl(judges / "a", out, prompts, *extra, "--duration", "0.3"), "duration")
    if method == "rl":
        _refused(
            capsys,
            _rl(judges / "a", out, prompts, "--uncertainty-penalty", "0.5"),
            "reward.uncertainty_penalty",
        )
        _refused(
            capsys, _rl(judges / "a", out, prompts, "--no-normalize-per-axis"), "reward.normalize_per_axis"
        )
        _refused(
            capsys,
            _rl(judges / "a", out, prompts, "--method", "backprop", "--num-generations", "1"),
            "method:",
        )
    other = tmp_path / "other.txt"
    other.write_text("calm piano\nslow strings\n")
    _refused(capsys, _rl(judges / "a", out, other, *extra), "prompts:")
    assert (out / "settings.json").read_bytes() == settings_before  # nothing was written

    # the same judge files under another path are the same judge: the finished run has nothing to do
    assert main(_rl(judges / "copy", out, prompts, *extra)) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 1
    # --overwrite starts over with the other judge
    assert main(_rl(judges / "b", out, prompts, *extra, "--overwrite")) == 0
    capsys.readouterr()
    assert json.loads((out / "rl_run.json").read_text())["judge"]["path"] == str(judges / "b")


def test_rl_device_cpu_trains_on_the_cpu(judges, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("calm piano\n")
    before = os.environ.get("ACCELERATE_USE_CPU")
    assert main(_rl(judges / "a", tmp_path / "run", prompts, "--device", "cpu")) == 0
    assert os.environ.get("ACCELERATE_USE_CPU") == before  # set for the run only
    assert json.loads(capsys.readouterr().out)["global_step"] == 1


# ---- rate -------------------------------------------------------------------------------------------
def test_rate_resume_refuses_another_dev_fraction_and_a_moved_split(tmp_path):
    manifest = write_clips(tmp_path)
    clips = read_clips(manifest)
    items = build_items(clips, "mos")
    out = tmp_path / "ratings.jsonl"
    with RatingLog(out, "mos", clips, items, dev_fraction=0.2) as log:
        for _ in range(3):
            log.record("al", log.next_item("al").id, {"mi": 3, "ta": 4})
    assert json.loads((tmp_path / "ratings.jsonl.session.json").read_text()) == {
        "mode": "mos",
        "dev_fraction": 0.2,
    }
    with pytest.raises(
        ValueError, match=r"other settings \(dev_fraction \(--dev-fraction\): 0.2 then, 0.9 now\)"
    ):
        RatingLog(out, "mos", clips, items, dev_fraction=0.9).open()
    with RatingLog(out, "mos", clips, items, dev_fraction=0.2) as log:  # the same settings resume
        assert log.progress("al") == (3, 6)
    # a file of an earlier version (no record): a rated clip that would move to another split is refused
    (tmp_path / "ratings.jsonl.session.json").unlink()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows[0]["split"] = "dev" if rows[0]["split"] == "train" else "train"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="was rated in split .* this session would put it in"):
        RatingLog(out, "mos", clips, items, dev_fraction=0.2).open()


def test_rate_command_resume_with_another_dev_fraction_is_one_line(tmp_path, capsys):
    manifest = write_clips(tmp_path)
    clips = read_clips(manifest)
    out = tmp_path / "ratings.jsonl"
    with RatingLog(out, "mos", clips, build_items(clips, "mos"), dev_fraction=0.5) as log:
        log.record("al", log.next_item("al").id, {"mi": 3, "ta": 4})
    argv = ["rate", "--clips", str(manifest), "--out", str(out), "--port", "0", "--dev-fraction", "0.3"]
    _refused(capsys, argv, "was rated with other settings", "--dev-fraction", "0.5 then, 0.3 now")
    ab = tmp_path / "votes.jsonl"
    items = build_items(clips, "ab", 1, seed=0)
    session = {"max_pairs_per_prompt": 1}
    with RatingLog(ab, "ab", clips, items, seed=0, settings=session) as log:
        log.record("al", log.next_item("al").id, {"choice": "a"})
    argv = ["rate", "--clips", str(manifest), "--out", str(ab), "--port", "0", "--mode", "ab"]
    _refused(capsys, [*argv, "--max-pairs-per-prompt", "2"], "max_pairs_per_prompt")
    _refused(capsys, [*argv, "--max-pairs-per-prompt", "1", "--seed", "3"], "seed (--seed): 0 then, 3 now")


# ---- train --init -----------------------------------------------------------------------------------
@pytest.fixture
def rated(tmp_path):
    import soundfile as sf
    from conftest import tone

    rows = []
    for s, system in enumerate(("gen_a", "gen_b")):
        for i in range(4):
            name = f"{system}_{i}.wav"
            sf.write(tmp_path / name, tone(0.5, 16_000, 200 + 60 * i + 13 * s, seed=i + 5 * s), 16_000)
            split = "dev" if i == 3 else "train"
            rows.append({"path": name, "prompt": f"piece {i}", "mi": 1.5 + i, "ta": 2 + i * 0.5, "split": split,
                         "system": system})  # fmt: skip
    manifest = tmp_path / "ratings.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_train_init_is_compared_by_its_files_and_refused_beside_a_preset(
    rated, judges, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "adapted"
    argv = [
        "train",
        "--data",
        str(rated),
        "--out",
        str(out),
        "--max-epochs",
        "1",
        "--batch-size",
        "4",
        "--quiet",
    ]
    for preset in (["--tiny"], ["--model", "paper"]):
        _refused(capsys, [*argv, "--init", str(judges / "a"), *preset], "--init", "would be ignored")
    assert not out.exists()
    monkeypatch.chdir(judges)
    assert main([*argv, "--init", "a"]) == 0
    capsys.readouterr()
    assert main([*argv, "--init", "./a", "--max-epochs", "2"]) == 0  # the same files: resumed and extended
    capsys.readouterr()
    assert main([*argv, "--init", "copy", "--max-epochs", "2"]) == 0
    capsys.readouterr()
    _refused(capsys, [*argv, "--init", "b", "--max-epochs", "2"], "another --init checkpoint", "'b'")
