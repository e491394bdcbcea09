"""Multi-process scoring: shards, part files, merging, and a real 2-process `accelerate launch`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.distributed as dist
from conftest import tone
from hypothesis import given, settings
from hypothesis import strategies as st

from deramos_reward.cli import main, provenance
from deramos_reward.jsonl import append_rows, read_rows
from deramos_reward.sharding import (
    Shard,
    device_for,
    find_parts,
    init_distributed,
    part_path,
    shard_from_env,
    take,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread, like the launched processes (accelerate sets OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_shard_from_env():
    assert shard_from_env({}) == Shard(0, 1, 0)
    assert shard_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Shard(3, 4, 1)
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "4"}).local_rank == 2
    with pytest.raises(ValueError, match="RANK=4, WORLD_SIZE=4"):
        shard_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' must be an integer"):
        shard_from_env({"WORLD_SIZE": "two"})


def test_without_a_launcher_no_process_group_is_started(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    shard = init_distributed()
    assert shard == Shard(0, 1, 0) and not shard.distributed and not dist.is_initialized()


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(n=st.integers(0, 200), world=st.integers(1, 9))
def test_take_gives_every_item_to_exactly_one_rank(n, world):
    items = list(range(n))
    shares = [take(items, Shard(r, world)) for r in range(world)]
    assert sorted(i for share in shares for i in share) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced


def test_part_files_and_devices(tmp_path):
    out = tmp_path / "odd [name]*.jsonl"  # glob metacharacters in the output name
    shard = Shard(1, 3, 1)
    assert part_path(out, shard).name == "odd [name]*.jsonl.part-00001-of-00003.jsonl"
    for s in (Shard(0, 3), shard, Shard(0, 2)):
        part_path(out, s).write_text("")
    (tmp_path / "odd [name]*.jsonl.part-x-of-y.jsonl").write_text("")  # not a part file
    (tmp_path / "other.jsonl.part-00000-of-00002.jsonl").write_text("")
    assert [p.name for p in find_parts(out)] == [
        "odd [name]*.jsonl.part-00000-of-00002.jsonl",
        "odd [name]*.jsonl.part-00000-of-00003.jsonl",
        "odd [name]*.jsonl.part-00001-of-00003.jsonl",
    ]
    assert device_for("cuda", Shard(1, 2, 1)) == "cuda:1"
    assert device_for("cuda:0", Shard(1, 2, 1)) == "cuda:0"
    assert device_for("cpu", Shard(1, 2, 1)) == "cpu"
    assert device_for("cuda", Shard(0, 1, 0)) == "cuda"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard_corpus")
    entries = []
    for i in range(13):
        rate = (16_000, 44_100, 8_000)[i % 3]
        sf.write(root / f"c{i:02d}.wav", tone(0.25 + 0.05 * (i % 4), rate, 220 + 30 * i, seed=i), rate)
        entries.append({"path": f"c{i:02d}.wav", "prompt": ["piano", "drums", "синти 🎹"][i % 3]})
    entries.insert(5, {"path": "gone.wav", "prompt": "piano"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    return root, manifest, entries


def _args(checkpoint, manifest, out):
    return [
        "score",
        "--model",
        str(checkpoint),
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--batch-size",
        "1",
    ]


@pytest.fixture(scope="module")
def single_process_rows(tiny_checkpoint, corpus, tmp_path_factory):
    _, manifest, _ = corpus
    out = tmp_path_factory.mktemp("single") / "out.jsonl"
    assert main(_args(tiny_checkpoint, manifest, out)) == 1  # gone.wav
    return read_rows(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_same_rows_as_one(tiny_checkpoint, corpus, single_process_rows, tmp_path):
    """`accelerate launch` with 2 CPU processes (its torchrun launcher; `--cpu` alone runs one)."""
    root, manifest, entries = corpus
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "deramos_reward.cli",
    ]  # fmt: skip
    proc = subprocess.run(
        [*launcher, *_args(tiny_checkpoint, manifest, out), "--device", "cpu"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0 and "1 of 14 inputs failed" in proc.stderr, proc.stderr[-2000:]
    rows = read_rows(out)
    assert rows == single_process_rows  # same rows, same order, same scores
    assert [r["index"] for r in rows] == list(range(len(entries)))
    assert find_parts(out) == []  # rank 0 merged and removed the parts
    assert "scoring (rank 0 of 2)" in proc.stderr  # really two ranks


def test_leftover_parts_of_a_killed_multiprocess_run_are_resumed_and_merged(
    tiny_checkpoint, corpus, single_process_rows, tmp_path, monkeypatch
):
    """Parts from a killed 3-process run (one with a torn line) are reused by a 1-process rerun."""
    _, manifest, entries = corpus
    out = tmp_path / "out.jsonl"
    ref = single_process_rows
    sentinel = dict(ref[3], mi=4.25)  # proves the row on disk is reused, not recomputed
    # what the killed ranks left: the record of the model (each rank writes it before its first rows)
    record = {"command": "deramos score", "model": provenance.checkpoint_identity(str(tiny_checkpoint))}
    provenance.write(out.with_name(out.name + ".meta.json"), record)
    append_rows(part_path(out, Shard(0, 3)), [ref[0], sentinel])
    append_rows(part_path(out, Shard(2, 3)), [ref[2], ref[5]])
    with open(part_path(out, Shard(2, 3)), "ab") as f:
        f.write(b'{"index": 8, "pa')  # killed mid-write
    scored: list[str] = []
    import deramos_reward.cli.score as score_cli

    real = score_cli.score_jobs

    def spy(model, jobs, *args, **kwargs):
        scored.extend(j["path"] for j in jobs)
        yield from real(model, jobs, *args, **kwargs)

    monkeypatch.setattr(score_cli, "score_jobs", spy)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert main(_args(tiny_checkpoint, manifest, out)) == 1
    assert scored == [e["path"] for i, e in enumerate(entries) if i not in (0, 2, 3, 5)]
    rows = read_rows(out)
    assert rows == [sentinel if i == 3 else r for i, r in enumerate(ref)]
    assert find_parts(out) == [] and Path(str(out) + ".partial.jsonl").exists() is False


def test_several_processes_need_an_output_file(tiny_checkpoint, corpus, monkeypatch, capsys):
    """Checked before joining the process group, so a misuse fails fast instead of waiting."""
    _, manifest, _ = corpus
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["score", "--model", str(tiny_checkpoint), "--manifest", str(manifest)]) == 2
    assert "--out is required with several processes" in capsys.readouterr().err
    assert not dist.is_initialized()
