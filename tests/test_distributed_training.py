"""Two CPU processes (gloo): BALR over the gathered global batch has the single-process gradient,
and `accelerate launch` training with gather_balr matches one process on the same global batches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import deramos_reward as dr
from deramos_reward.data import load_dataset_split, make_corpus
from deramos_reward.losses import listwise_ranking_loss
from deramos_reward.training import TrainConfig, cached_feature_set, predict_features, train
from deramos_reward.training.distributed import gather, gather_with_grad

SCORES = torch.tensor([3.1, 2.0, 4.4, 1.7, 2.9, 3.8, 1.2, 4.9], dtype=torch.float64)
LABELS = torch.tensor([3.0, 2.2, 4.0, 1.0, 3.4, 4.6, 1.8, 4.2], dtype=torch.float64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    n = SCORES.numel() // world
    local = SCORES[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    target = LABELS[rank * n : (rank + 1) * n]
    gathered = gather_with_grad(local)
    loss = listwise_ranking_loss(gathered, gather(target))
    loss.backward()
    shard = local.detach().clone().requires_grad_(True)
    shard_loss = listwise_ranking_loss(shard, target)  # BALR over this process's shard only
    shard_loss.backward()
    save_file(
        {
            "gathered": gathered.detach(),
            "loss": loss.detach().reshape(1),
            "grad": local.grad,
            "shard_loss": shard_loss.detach().reshape(1),
            "shard_grad": shard.grad,
        },
        os.path.join(out, f"rank{rank}.safetensors"),
    )
    dist.destroy_process_group()


def test_gather_with_grad_gives_the_global_balr_and_its_gradient(tmp_path):
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    full = SCORES.clone().requires_grad_(True)
    ref_loss = listwise_ranking_loss(full, LABELS)
    ref_loss.backward()
    grads, shard_grads = [], []
    for rank in range(2):
        got = load_file(tmp_path / f"rank{rank}.safetensors")
        assert torch.equal(got["gathered"], SCORES)  # rank order
        torch.testing.assert_close(got["loss"][0], ref_loss.detach())  # every process: the global loss
        assert abs(float(got["shard_loss"][0]) - float(ref_loss)) > 0.05  # a shard's BALR is another loss
        grads.append(got["grad"])
        shard_grads.append(got["shard_grad"])
    # each process gets the sum over processes (2x the global gradient); DDP's mean makes it exact
    torch.testing.assert_close(torch.cat(grads) / 2, full.grad)
    assert (torch.cat(shard_grads) - full.grad).abs().max() > 0.05


# ---- end to end under accelerate launch --------------------------------------------------------
LAUNCHED = textwrap.dedent(
    """
    import sys
    import accelerate
    from safetensors.torch import save_file
    from deramos_reward.training import TrainConfig, train

    config, data, out = TrainConfig.load(sys.argv[1]), sys.argv[2], sys.argv[3]
    result = train(config, data, out)
    state = accelerate.PartialState()
    weights = {k: v.detach().cpu().contiguous() for k, v in result.model.heads.state_dict().items()}
    save_file(weights, f"{out}/rank{state.process_index}-of-{state.num_processes}.safetensors")
    """
)


def test_accelerate_launch_two_processes_matches_one_process(tmp_path):
    corpus = make_corpus(
        tmp_path / "corpus",
        n_systems=4,
        n_prompts=12,
        seconds=1.5,
        sample_rate=24_000,
        splits=(0.5, 0.25, 0.25),
        seed=5,
    )
    model_cfg = dr.DeRAMOSConfig.tiny()
    model_cfg.dropout = 0.0  # no per-process dropout streams: the two runs compute the same thing
    config = TrainConfig(
        model=model_cfg.to_dict(),
        lr=1e-3,
        batch_size=8,
        max_epochs=3,
        patience=0,
        seed=3,
        gather_balr=True,
        device="cpu",
        progress=False,
        feature_cache=str(tmp_path / "features"),
    )
    one = train(config, corpus.root, tmp_path / "one")  # also fills the feature cache both runs share
    (tmp_path / "train.json").write_text(config.to_json())
    (tmp_path / "launched.py").write_text(LAUNCHED)
    accelerate_cli = Path(sys.executable).parent / "accelerate"
    cmd = [
        str(accelerate_cli),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(tmp_path / "launched.py"),
        str(tmp_path / "train.json"),
        corpus.root,
        str(tmp_path / "two"),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [load_file(tmp_path / "two" / f"rank{r}-of-2.safetensors") for r in range(2)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # DDP keeps the processes in lockstep
    two = TrainConfig.load(tmp_path / "two" / "train_config.json")
    assert two == config
    import json

    rows_two = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_two] == [1, 2, 3] and all(r["steps"] == 3 for r in rows_two)
    for a, b in zip(rows_two, one.history):
        # with gather_balr the loss of 2 x 4 clips is the loss of the same 8 clips in one process
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_parts"]["balr"] == pytest.approx(b["train_parts"]["balr"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # ... and ends with a model that scores like the single-process one
    last = dr.DeRAMOS.from_pretrained(tmp_path / "two" / "last" / "model")
    dev = cached_feature_set(
        last, load_dataset_split(corpus.root, "dev"), config.feature_cache, "dev", progress=False
    )
    got = predict_features(last.heads, dev, 64, "cpu")
    want = predict_features(one.model.heads, dev, 64, "cpu")
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    assert (got[0] - predict_features(dr.DeRAMOS(model_cfg).heads, dev, 64, "cpu")[0]).abs().max() > 1e-3
