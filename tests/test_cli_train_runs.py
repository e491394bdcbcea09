"""`deramos train` / `deramos eval` on the layouts users have: one system, constant ratings, tiny
splits (undefined metrics become null with the reason stated once, and the checkpoints follow a
defined quantity), ratings on another scale, and a run folder reused with other settings or data
(refused, or started over with --overwrite; extended by raising --max-epochs)."""

from __future__ import annotations

import json
import logging

import pytest
import soundfile as sf
from conftest import tone

from deramos_reward.cli import main
from deramos_reward.metrics import evaluate


def _strict_json(text: str):
    """json.loads that refuses NaN/Infinity (what other JSON readers do)."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _corpus(tmp_path, systems=("one",), dev_per_system=2, train_per_system=6, mi=None):
    """Clips in one folder per system, ratings varied (or all ``mi``), train/dev splits."""
    rows = []
    for s, system in enumerate(systems):
        (tmp_path / system).mkdir(exist_ok=True)
        for i in range(train_per_system + dev_per_system):
            name = f"{system}/c{i}.wav"
            sf.write(tmp_path / name, tone(0.4, 16_000, 180 + 40 * i + 11 * s, seed=i + 7 * s), 16_000)
            rows.append(
                {
                    "path": name,
                    "prompt": f"a piece number {i % 3}",
                    "mi": mi if mi is not None else 1.0 + (i * 0.45 + s * 0.2) % 4,
                    "ta": 1.5 + (i * 0.35 + s * 0.25) % 3,
                    "split": "train" if i < train_per_system else "dev",
                }
            )
    manifest = tmp_path / "ratings.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, rows


def _expected_epoch(values, higher):
    """The first epoch with the best defined value (None = undefined; epoch 1 when none is)."""
    best = 0
    for k, v in enumerate(values):
        b = values[best]
        if v is not None and (b is None or (v > b if higher else v < b)):
            best = k
    return best + 1


def _train(manifest, out, *extra):
    return main(
        [
            "train",
            "--data",
            str(manifest),
            "--out",
            str(out),
            "--tiny",
            "--batch-size",
            "4",
            "--quiet",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "layout, follows",
    [
        (  # ratings of one model's clips, all in one folder, no "system" field
            dict(systems=("one",)),
            {
                "best_mi_sys_srcc": "MI utterance SRCC",
                "best_combined": "(MI utterance SRCC + TA utterance SRCC) / 2",
            },
        ),
        (  # every clip rated the same MI
            dict(systems=("a", "b", "c"), mi=3.0),
            {"best_mi_sys_srcc": "validation loss", "best_combined": "TA system SRCC"},
        ),
        (  # a validation split of one clip
            dict(systems=("one",), dev_per_system=1),
            {"best_mi_sys_srcc": "validation loss", "best_combined": "validation loss"},
        ),
    ],
)
def test_training_works_when_validation_metrics_are_undefined(layout, follows, tmp_path, capsys, caplog):
    manifest, rows = _corpus(tmp_path, **layout)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="deramos_reward.training.trainer"):
        assert _train(manifest, run, "--max-epochs", "2") == 0, capsys.readouterr().err
    log = [_strict_json(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    summary = _strict_json((run / "summary.json").read_text())
    for name, quantity in follows.items():
        assert summary["selection"][name]["quantity"] == quantity
        assert summary["selection"][name]["fallback"].endswith("undefined")
        assert summary["best"][name]["quantity"] == quantity
    assert summary["selection"]["best_loss"] == {"quantity": "validation loss", "fallback": None}
    # the undefined metrics are null in the log, the reason is stated once (not per epoch)
    notes = [r.getMessage() for r in caplog.records]
    assert any("logged as null" in n for n in notes) and len(notes) == len(set(notes)) <= 4
    assert all(r["mi_sys_srcc"] is None for r in log)
    # each checkpoint holds the epoch that was best on its (fallback) quantity
    for name, quantity in follows.items():
        values = [r["selection"][name] for r in log]
        assert summary["best"][name]["epoch"] == _expected_epoch(values, quantity != "validation loss")
    printed = capsys.readouterr().out
    assert all(f"{q} = " in printed for q in follows.values())


def test_eval_writes_null_for_undefined_metrics_and_says_why_once(tmp_path, tiny_checkpoint, capsys):
    manifest, rows = _corpus(tmp_path, systems=("one",))
    out, answer = tmp_path / "metrics.json", tmp_path / "answer.txt"
    argv = ["eval", "--model", str(tiny_checkpoint), "--data", str(manifest), "--split", "dev"]
    assert main([*argv, "--out", str(out), "--answer", str(answer), "--quiet"]) == 0
    printed = capsys.readouterr().out
    report = _strict_json(out.read_text())
    for axis in ("MI", "TA"):
        system = report["metrics"][axis]["system"]
        assert (system["LCC"], system["SRCC"], system["KTAU"]) == (None, None, None)
        assert report["undefined"][axis]["system"] == "only 1 system"
        assert report["system_srcc_ci"][axis] == [None, None]
    assert printed.count("only 1 system") == 1  # MI and TA share one line
    # the defined metrics match an independent computation from the written predictions
    dev = [r for r in rows if r["split"] == "dev"]
    pred = [line.split(",") for line in answer.read_text().splitlines()]
    expected = evaluate([float(p[1]) for p in pred], [r["mi"] for r in dev], ["one"] * len(dev))
    assert report["metrics"]["MI"]["utterance"]["MSE"] == pytest.approx(
        expected["utterance"]["MSE"], abs=1e-6
    )
    assert report["metrics"]["MI"]["utterance"]["SRCC"] == pytest.approx(
        expected["utterance"]["SRCC"], abs=1e-6
    )


def test_eval_of_unlabeled_clips_needs_answer(tmp_path, tiny_checkpoint, capsys):
    manifest, rows = _corpus(tmp_path, systems=("one",))
    manifest.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k not in ("mi", "ta")}) + "\n" for r in rows)
    )
    code = main(["eval", "--model", str(tiny_checkpoint), "--data", str(manifest), "--split", "dev"])
    err = capsys.readouterr().err
    assert code == 2 and "give --answer FILE" in err and len(err.strip().splitlines()) == 1


def test_ratings_outside_the_scale_are_refused_and_another_scale_is_mapped(tmp_path, capsys):
    manifest, rows = _corpus(tmp_path, systems=("a", "b"))
    rows[3]["mi"], rows[5]["ta"] = 7.0, -2.0
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = _train(manifest, tmp_path / "run", "--max-epochs", "1")
    err = capsys.readouterr().err
    assert code == 2 and "ratings.jsonl:4: MI rating 7 is outside the rating scale 1-5" in err
    assert "--rating-scale LOW HIGH" in err and not (tmp_path / "run").exists()
    # the same corpus rated 0-10: mapped onto 1-5 (0 -> 1, 10 -> 5)
    for r in rows:
        r["mi"], r["ta"] = (r["mi"] + 2) * 1.0, (r["ta"] + 2) * 1.0
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _train(manifest, tmp_path / "run", "--max-epochs", "1", "--rating-scale", "0", "10") == 0
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["rating_scale"] == [0.0, 10.0]
    from deramos_reward.data import load_dataset_split

    mapped = load_dataset_split(manifest, "train", (0, 10))
    assert [e.mi for e in mapped] == pytest.approx(
        [1 + 4 * r["mi"] / 10 for r in rows if r["split"] == "train"]
    )


def test_a_run_folder_resumes_extends_refuses_and_starts_over(tmp_path, capsys):
    manifest, rows = _corpus(tmp_path, systems=("a", "b"), train_per_system=4)
    run = tmp_path / "run"
    assert _train(manifest, run, "--max-epochs", "1") == 0
    # raising --max-epochs extends the finished run: epoch 1 is kept, epoch 2 is new
    first = (run / "log.jsonl").read_text().splitlines()
    assert _train(manifest, run, "--max-epochs", "2") == 0
    log = (run / "log.jsonl").read_text().splitlines()
    assert log[0] == first[0] and [json.loads(x)["resumed_at"] for x in log] == [1, 2]
    capsys.readouterr()
    # fewer epochs than it holds, another setting, other ratings: one line, exit 2, nothing changed
    before = (run / "log.jsonl").read_bytes()
    for extra, needle in [
        (["--max-epochs", "1"], "already holds 2 epochs"),
        (["--max-epochs", "2", "--lr", "0.01"], "differs in ['lr']"),
    ]:
        assert _train(manifest, run, *extra) == 2
        err = capsys.readouterr().err
        assert needle in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    rows[0]["mi"] = 4.9
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _train(manifest, run, "--max-epochs", "2") == 2
    assert "other train data" in capsys.readouterr().err
    assert (run / "log.jsonl").read_bytes() == before
    # --overwrite starts over with the new data (the feature cache stays: it is keyed by content)
    assert _train(manifest, run, "--max-epochs", "1", "--overwrite") == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert (
        [r["epoch"] for r in log] == [1]
        and not (run / "best_loss").samefile(tmp_path)
        and (run / "features").is_dir()
    )


def test_a_musiceval_score_outside_1_to_5_names_its_line(tmp_path, capsys):
    from deramos_reward.data import make_corpus

    corpus = make_corpus(
        tmp_path / "c", n_systems=2, n_prompts=4, seconds=0.5, splits=(0.5, 0.5, 0.0), seed=1
    )
    listing = tmp_path / "c" / "sets" / "train_mos_list.txt"
    lines = listing.read_text().splitlines()
    name = lines[1].split(",")[0]
    lines[1] = f"{name},7.0,3.0"
    listing.write_text("\n".join(lines) + "\n")
    code = main(["train", "--data", corpus.root, "--out", str(tmp_path / "run"), "--tiny", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "train_mos_list.txt:2: MI rating 7 is outside the rating scale 1-5" in err
