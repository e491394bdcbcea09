"""`deramos train` / `deramos eval`: config from flags, answer.txt ids, metrics JSON against an
independent recomputation, scatter PNGs, and one-line errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import deramos_reward as dr
from deramos_reward.cli import main
from deramos_reward.data import make_corpus
from deramos_reward.metrics import bootstrap_system_srcc, evaluate

PRE = "audiomos2025-track1-"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 16 kHz audio: eval must resample to the model's 24 kHz like training does
    return make_corpus(
        tmp_path_factory.mktemp("cli") / "corpus",
        n_systems=4,
        n_prompts=8,
        seconds=1.5,
        sample_rate=16_000,
        splits=(0.5, 0.25, 0.25),
        seed=3,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "model"
    dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).save_pretrained(path)
    return path


def _labels(root):
    """(ids, mi, ta, systems) read straight from sets/test_mos_list.txt."""
    ids, mi, ta = [], [], []
    with open(os.path.join(root, "sets", "test_mos_list.txt")) as f:
        for line in f:
            name, a, b = line.strip().split(",")
            ids.append(name[: -len(".wav")])
            mi.append(float(a))
            ta.append(float(b))
    systems = [i[len(PRE) :].split("_")[0] for i in ids]
    return ids, np.array(mi), np.array(ta), systems


def test_eval_writes_answer_metrics_and_plots(corpus, checkpoint, tmp_path, capsys):
    answer, out, plots = tmp_path / "answer.txt", tmp_path / "m" / "metrics.json", tmp_path / "plots"
    code = main(
        [
            "eval",
            "--model",
            str(checkpoint),
            "--data",
            corpus.root,
            "--split",
            "test",
            "--answer",
            str(answer),
            "--out",
            str(out),
            "--plot",
            "--plot-dir",
            str(plots),
            "--n-boot",
            "300",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "SRCC" in printed and "KTAU" in printed and "bootstrap CI" in printed

    ids, mi_true, ta_true, systems = _labels(corpus.root)
    lines = answer.read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ids  # wav ids without extension, list order
    pred = np.array([[float(x) for x in line.split(",")[1:]] for line in lines])
    assert pred.shape == (len(ids), 2) and ((pred >= 1) & (pred <= 5)).all()

    # the same scores as the public scorer on the files
    model = dr.DeRAMOS.from_pretrained(checkpoint)
    rows = dr.score(
        model,
        [os.path.join(corpus.root, "wav", i + ".wav") for i in ids],
        [c.prompt for c in corpus.split("test")],
    )
    np.testing.assert_allclose(pred[:, 0], [r["mi"] for r in rows], atol=1e-5)
    np.testing.assert_allclose(pred[:, 1], [r["ta"] for r in rows], atol=1e-5)

    report = json.loads(out.read_text())
    scored = {"MI": np.array([r["mi"] for r in rows]), "TA": np.array([r["ta"] for r in rows])}
    for k, (p, t) in {"MI": (scored["MI"], mi_true), "TA": (scored["TA"], ta_true)}.items():
        expected = evaluate(p, t, systems)
        for level in ("utterance", "system"):
            for metric in ("MSE", "LCC", "SRCC", "KTAU"):
                assert report["metrics"][k][level][metric] == pytest.approx(
                    expected[level][metric], abs=1e-5
                ), (k, level, metric)
        lo, hi = bootstrap_system_srcc(p, t, systems, n_boot=300, seed=0)
        assert report["system_srcc_ci"][k] == pytest.approx([lo, hi], abs=1e-6)
    assert (
        report["n_clips"] == len(ids)
        and report["n_systems"] == len(set(systems))
        and report["split"] == "test"
    )

    from matplotlib.image import imread

    for axis in ("MI", "TA"):
        png = plots / f"scatter_{axis}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(png).shape[:2] == (450, 450)


def test_eval_unlabeled_split_gives_answer_only(corpus, checkpoint, tmp_path, capsys):
    ids, *_ = _labels(corpus.root)
    os.makedirs(tmp_path / "c", exist_ok=True)
    for name in ("wav", "prompt_info.txt"):
        os.symlink(os.path.join(corpus.root, name), tmp_path / "c" / name)
    os.makedirs(tmp_path / "c" / "sets")
    (tmp_path / "c" / "sets" / "eval_mos_list.txt").write_text("".join(f"{i}.wav\n" for i in ids))
    answer = tmp_path / "answer.txt"
    assert (
        main(
            [
                "eval",
                "--model",
                str(checkpoint),
                "--data",
                str(tmp_path / "c"),
                "--split",
                "eval",
                "--answer",
                str(answer),
                "--quiet",
            ]
        )
        == 0
    )
    assert [line.split(",")[0] for line in answer.read_text().splitlines()] == ids
    assert (
        main(
            [
                "eval",
                "--model",
                str(checkpoint),
                "--data",
                str(tmp_path / "c"),
                "--split",
                "eval",
                "--out",
                str(tmp_path / "m.json"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "labeled split" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_train_cli_builds_the_config_from_file_and_flags(corpus, tmp_path, capsys):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"lr": 0.002, "batch_size": 8, "loss": {"alpha": 0.5}, "patience": 3}))
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            corpus.root,
            "--out",
            str(out),
            "--config",
            str(base),
            "--tiny",
            "--max-epochs",
            "1",
            "--beta",
            "0.1",
            "--contrast",
            "2.5",
            "--seed",
            "7",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["lr"], saved["batch_size"], saved["max_epochs"], saved["seed"], saved["model"]) == (
        0.002,
        8,
        1,
        7,
        "tiny",
    )
    assert (saved["loss"]["alpha"], saved["loss"]["beta"], saved["patience"]) == (0.5, 0.1, 3)
    assert (saved["loss"]["use_contrast"], saved["loss"]["gamma"]) == (True, 2.5)
    assert "best_combined" in capsys.readouterr().out
    assert dr.DeRAMOS.from_pretrained(out / "best_loss").config == dr.DeRAMOSConfig.tiny()
    # --objective replaces the loss with an ablation preset
    code = main(
        [
            "train",
            "--data",
            corpus.root,
            "--out",
            str(tmp_path / "r2"),
            "--tiny",
            "--objective",
            "regression",
            "--max-epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--quiet",
            "--feature-cache",
            str(out / "features"),
        ]
    )  # same clips and encoders: reuse the features
    assert code == 0
    loss = json.loads((tmp_path / "r2" / "train_config.json").read_text())["loss"]
    assert loss["objective"] == "regression" and not loss["use_balr"] and not loss["use_sama"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--tiny", "--model", "paper"], "either --tiny or --model"),
        (["--tiny", "--objective", "fancy"], "unknown loss preset 'fancy'"),
        (["--tiny", "--lr", "-1"], "lr must be a positive number"),
        (["--tiny", "--config", "missing.json"], "does not exist"),
    ],
)
def test_train_cli_errors_are_one_line(corpus, tmp_path, capsys, argv, words):
    code = main(["train", "--data", corpus.root, "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
