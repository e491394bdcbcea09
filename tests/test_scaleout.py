"""Scale-out of the fine-tuning commands, on the CPU.

``deramos dpo`` and ``deramos rl`` run under ``accelerate launch`` with 2 CPU processes (gloo). The processes
together do the work of one process with the global batch: the adapter they save is the adapter of one
process with twice the per-process batch, and each process runs half of the decoder work and scores half
of the clips (counted in each process by wrapping MusicGen's decoder and the judge, never the trainers).

The accelerate configs the README gives for several GPUs (FSDP, DeepSpeed ZeRO-3) are checked here as
far as a CPU allows: they parse with accelerate's own loader, the README shows them verbatim, and the
layer class they shard by is MusicGen's. accelerate turns FSDP on only for GPU-type processes (a CPU
launch runs DDP instead), so sharded training itself is not run here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import deramos_reward as dr
from deramos_reward.cli import main

TESTS = Path(__file__).parent
ROOT = TESTS.parent
# How close "the same adapter" is (lr 1e-2, 2 Adam steps; adapter weights reach 0.25). 2 processes x 1
# row and 1 process x 2 rows differ in float32 rounding (an all-reduce mean of 2 gradients instead of a
# batch mean), ~1e-7 relative. Adam divides each gradient coordinate by sqrt(v) + eps (1e-8): where a
# coordinate's gradient is near eps, that rounding is magnified up to lr/eps = 1e6 times, so a few
# coordinates differ by ~1e-5 (measured: dpo 5.6e-8, rl 2.4e-6 / 9.5e-6 / 1.1e-5 over three runs) while the
# trained weights (lora_B, zero at the start) agree to 3e-7 (dpo) / 1.6e-5 (rl) of their norm.
# A run on other data differs by about one Adam step (lr): one process alone with the per-process
# batch is off by 3e-2 (max) and 0.86 (lora_B norm) for dpo.
MAX_GAP = 1e-4  # 1 % of one Adam step
REL_GAP = 1e-3  # of the norm of the trained lora_B weights

# Run by `accelerate launch` in each process: count this process's work, run the command as
# `python -m deramos_reward.cli` does, then write the counts to DIR/work{RANK}.json.
LAUNCHED = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from test_scaleout import count_work
from deramos_reward.cli import main
work = count_work(setattr)
code = main(sys.argv[3:])
with open(os.path.join(sys.argv[2], "work" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump(work, f)
sys.exit(code)
"""


def count_work(patch: Callable[[object, str, object], None]) -> dict:
    """Wrap MusicGen's decoder stack and the judge (with ``patch(cls, name, fn)``) to count, in this
    process: decoder positions run (``[B*K, S]`` input ids -> B*S), clips the judge scored, the prompts
    of the clips the reward scored, and the process-group sizes seen. Returns the dict the wrappers fill."""
    import torch.distributed as dist
    from transformers.models.musicgen import modeling_musicgen as mm

    work = {"decoder_positions": 0, "clips": 0, "prompts": [], "world_sizes": []}
    decoder_forward, judge_forward = mm.MusicgenDecoder.forward, dr.DeRAMOS.forward_clips
    reward_evaluate = dr.MusicReward.evaluate

    def seen_world() -> None:
        size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if size not in work["world_sizes"]:
            work["world_sizes"].append(size)

    def decoder(self, input_ids=None, *args, **kwargs):
        embeds = kwargs.get("inputs_embeds")
        if input_ids is not None:
            work["decoder_positions"] += input_ids.shape[0] // self.num_codebooks * input_ids.shape[-1]
        elif embeds is not None:
            work["decoder_positions"] += embeds.shape[0] * embeds.shape[1]
        seen_world()
        return decoder_forward(self, input_ids, *args, **kwargs)

    def judge(self, waves, *args, **kwargs):
        work["clips"] += len(waves)
        seen_world()
        return judge_forward(self, waves, *args, **kwargs)

    def reward(self, audio, sample_rate, prompts, *args, **kwargs):
        work["prompts"].extend([prompts] if isinstance(prompts, str) else list(prompts))
        return reward_evaluate(self, audio, sample_rate, prompts, *args, **kwargs)

    patch(mm.MusicgenDecoder, "forward", decoder)
    patch(dr.DeRAMOS, "forward_clips", judge)
    patch(dr.MusicReward, "evaluate", reward)
    return work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(tmp_path: Path, argv: list[str]) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``accelerate launch --multi_gpu --num_processes 2`` of ``deramos ARGV`` on the CPU (gloo);
    -> the finished process and each rank's work counts."""
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    done = subprocess.run(
        [*launcher, str(script), str(TESTS), str(tmp_path), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    work = [
        json.loads(path.read_text())
        for path in (tmp_path / f"work{rank}.json" for rank in range(2))
        if path.is_file()
    ]
    return done, work


def run_one(monkeypatch, argv: list[str]) -> dict:
    """``deramos ARGV`` in this process; -> its work counts."""
    with monkeypatch.context() as m:
        work = count_work(m.setattr)
        assert main(argv) == 0
    return work


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def adapter_gap(got: dict, want: dict) -> tuple[float, float]:
    """-> (largest difference of any adapter weight, norm of the lora_B difference / norm of lora_B)."""
    assert got.keys() == want.keys() and len(want) == 40  # LoRA A and B on 20 decoder projections
    most = max(float((got[k] - want[k]).abs().max()) for k in want)
    b_got, b_want = (torch.cat([x[k].flatten() for k in sorted(x) if "lora_B" in k]) for x in (got, want))
    return most, float((b_got - b_want).norm() / b_want.norm())


def assert_same_adapter(got: dict, want: dict) -> None:
    """The same adapter up to the float noise described at MAX_GAP, and one that trained."""
    most, relative = adapter_gap(got, want)
    assert most <= MAX_GAP and relative <= REL_GAP, (most, relative)
    assert max(float(want[k].abs().max()) for k in want if "lora_B" in k) > 0.01  # it trained


def assert_half_each(work: list[dict], one: dict) -> None:
    """Two processes in one group, each with half of the one process's work."""
    assert len(work) == 2, "a process wrote no work counts"
    assert [w["world_sizes"] for w in work] == [[2], [2]] and one["world_sizes"] == [1]
    assert one["decoder_positions"] > 0
    for w in work:
        assert 2 * w["decoder_positions"] == one["decoder_positions"], (w, one)
        assert 2 * w["clips"] == one["clips"], (w, one)


# ---------------------------------------------------------------------------------- deramos dpo
def _pairs(tmp_path: Path) -> Path:
    from deramos_reward.integrations.training.dpo.pairs import build_pairs, save_pairs

    g = torch.Generator().manual_seed(6)
    codes = torch.randint(0, 128, (4, 2, 4, 5), generator=g)  # 4 prompts x (chosen, rejected), K=4, S=5
    prompts = ["calm piano", "fast drums", "ambient pad", "rock guitar"]
    save_pairs(build_pairs(prompts, codes, torch.tensor([[1.0, 0.0]] * 4)), tmp_path / "pairs")
    return tmp_path / "pairs"


def _dpo_argv(pairs: Path, out: Path, batch: int) -> list[str]:
    return [
        "dpo", "--backend", "transformers", "--musicgen", "tiny", "--pairs", str(pairs), "--out", str(out),
        "--max-steps", "2", "--lr", "1e-2", "--logging-steps", "1", "--seed", "5", "--device", "cpu",
        "--batch-size", str(batch),
    ]  # fmt: skip


def test_dpo_command_on_two_processes_does_the_work_of_one(tmp_path, monkeypatch, capsys):
    """`deramos dpo` with 2 processes x 1 pair per step saves the adapter of 1 process x 2 pairs per
    step, and each process runs half of the decoder positions; 1 process x 1 pair differs."""
    pairs = _pairs(tmp_path)
    done, work = launch_two(tmp_path, _dpo_argv(pairs, tmp_path / "two", batch=1))
    assert done.returncode == 0, done.stderr[-3000:]
    one = run_one(monkeypatch, _dpo_argv(pairs, tmp_path / "one", batch=2))
    assert_half_each(work, one)
    assert one["clips"] == 0  # DPO scores no audio
    assert_same_adapter(adapter(tmp_path / "two"), adapter(tmp_path / "one"))
    summary = json.loads(done.stdout)  # printed by rank 0 only: one JSON document
    assert summary["global_step"] == 2
    assert summary["loss"] == pytest.approx(json.loads(capsys.readouterr().out)["loss"], abs=1e-6)
    # the tolerance tells the right run from a near miss: one process with the per-process batch alone
    run_one(monkeypatch, _dpo_argv(pairs, tmp_path / "alone", batch=1))
    most, relative = adapter_gap(adapter(tmp_path / "alone"), adapter(tmp_path / "two"))
    assert most > 10 * MAX_GAP and relative > 10 * REL_GAP, (most, relative)


# ---------------------------------------------------------------------------------- deramos rl
def _rl_argv(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    judge = tmp_path / "judge"
    if not judge.exists():
        torch.manual_seed(0)
        dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).save_pretrained(judge)
        (tmp_path / "prompts.txt").write_text("calm piano\nfast drums\nambient pad\nrock guitar\n")
    return [
        "rl", "--backend", "transformers", "--musicgen", "tiny", "--judge", str(judge),
        "--prompts", str(tmp_path / "prompts.txt"), "--out", str(out), "--max-steps", "2", "--lr", "1e-2",
        "--num-generations", "2", "--prompts-per-step", "2", "--duration", "0.2", "--logging-steps", "1",
        "--num-iterations", "2", "--guidance-scale", "1", "--seed", "5", "--device", "cpu", *extra,
    ]  # fmt: skip


def _no_trackers(tmp_path: Path) -> list[str]:
    config = tmp_path / "no_trackers.json"
    config.write_text(json.dumps({"report_to": "none"}))
    return ["--config", str(config)]


def test_rl_command_on_two_processes_does_the_work_of_one(tmp_path, monkeypatch):
    """`deramos rl` with --prompts-per-step 2 on 2 processes (one prompt group each) saves the adapter
    of 1 process that samples both groups; each process samples and scores its own group only."""
    extra = _no_trackers(tmp_path)
    done, work = launch_two(tmp_path, _rl_argv(tmp_path, tmp_path / "two", *extra))
    assert done.returncode == 0, done.stderr[-3000:]
    one = run_one(monkeypatch, _rl_argv(tmp_path, tmp_path / "one", *extra))
    assert_half_each(work, one)
    assert one["clips"] == 4 and len(one["prompts"]) == 4 and len(set(one["prompts"])) == 2
    assert sorted(work[0]["prompts"] + work[1]["prompts"]) == sorted(one["prompts"])
    assert not set(work[0]["prompts"]) & set(work[1]["prompts"])  # each process its own group
    assert_same_adapter(adapter(tmp_path / "two" / "adapter"), adapter(tmp_path / "one" / "adapter"))
    rows = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in ref]  # rank 0 logs, once per step
    assert [r["reward"] for r in rows] == pytest.approx([r["reward"] for r in ref], abs=1e-6)


def _backprop_argv(tmp_path: Path, out: Path) -> list[str]:
    """The rl command line as `--method backprop` takes it: one clip per prompt, no RL-only options."""
    argv = _rl_argv(tmp_path, out, "--method", "backprop", "--truncate-frames", "4")
    at = argv.index("--num-iterations")
    del argv[at : at + 2]
    argv[argv.index("--num-generations") + 1] = "1"
    return argv


def _trackers() -> list:
    """The trackers accelerate finds installed (what report_to='all', the default, turns on)."""
    from accelerate.tracking import get_available_trackers

    return list(get_available_trackers())


@pytest.mark.xfail(
    condition=bool(_trackers()),
    strict=True,
    raises=AssertionError,
    reason="with a tracker on (report_to='all' and tensorboardX installed), the trainers' run log closes with "
    "accelerator.end_training(), which destroys the process group; save_adapter's barrier then fails on "
    "every rank. --method backprop has no way to turn trackers off. Remove this mark once it is fixed.",
)
def test_backprop_command_with_its_trackers_on_two_processes_does_the_work_of_one(tmp_path, monkeypatch):
    """`deramos rl --method backprop` as users run it (report_to='all': every tracker installed) with 2
    processes x 1 prompt per step saves the adapter of 1 process x 2 prompts, each process decoding and
    scoring its own prompt's clips; rank 0 writes the tracker's files (TensorBoard events)."""
    done, work = launch_two(tmp_path, _backprop_argv(tmp_path, tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    one = run_one(monkeypatch, _backprop_argv(tmp_path, tmp_path / "one"))
    assert_half_each(work, one)
    assert one["clips"] == 4 and sorted(work[0]["prompts"] + work[1]["prompts"]) == sorted(one["prompts"])
    assert_same_adapter(adapter(tmp_path / "two" / "adapter"), adapter(tmp_path / "one" / "adapter"))
    tensorboard = "tensorboard" in [str(t) for t in _trackers()]
    assert bool(list((tmp_path / "two").rglob("events.out.tfevents.*"))) == tensorboard
