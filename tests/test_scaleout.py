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


def test_rl_command_on_two_processes_does_the_work_of_one(tmp_path, monkeypatch):
    """`deramos rl` with --prompts-per-step 2 on 2 processes (one prompt group each) saves the adapter
    of 1 process that samples both groups; each process samples and scores its own group only."""
    done, work = launch_two(tmp_path, _rl_argv(tmp_path, tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    one = run_one(monkeypatch, _rl_argv(tmp_path, tmp_path / "one"))
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


def test_backprop_command_reporting_to_tensorboard_on_two_processes_does_the_work_of_one(
    tmp_path, monkeypatch
):
    """`deramos rl --method backprop --report-to tensorboard` with 2 processes x 1 prompt per step saves
    the adapter of 1 process x 2 prompts, each process decoding and scoring its own prompt's clips; only
    rank 0 writes TensorBoard events."""
    done, work = launch_two(
        tmp_path, [*_backprop_argv(tmp_path, tmp_path / "two"), "--report-to", "tensorboard"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = run_one(monkeypatch, _backprop_argv(tmp_path, tmp_path / "one"))
    assert_half_each(work, one)
    assert one["clips"] == 4 and sorted(work[0]["prompts"] + work[1]["prompts"]) == sorted(one["prompts"])
    assert_same_adapter(adapter(tmp_path / "two" / "adapter"), adapter(tmp_path / "one" / "adapter"))
    assert len(list((tmp_path / "two").rglob("events.out.tfevents.*"))) == 1  # rank 0's
    assert not list((tmp_path / "one").rglob("events.out.tfevents.*"))  # report_to defaults to none


# ---------------------------------------------------------------------------------- several GPUs
CONFIGS = ROOT / "examples" / "accelerate"

PLUGIN = """
import json, os, sys
from accelerate.utils import FullyShardedDataParallelPlugin
from deramos_reward.integrations.musicgen.transformers import builders as tm
model, _ = tm.tiny_musicgen(seed=0)
plugin = FullyShardedDataParallelPlugin()  # from the environment accelerate launch set
plugin.set_auto_wrap_policy(model)  # resolves the class names on the model (raises when one is missing)
units = [n for n, m in model.named_modules() if plugin.auto_wrap_policy(module=m, recurse=False, nonwrapped_numel=0)]
seen = {"use_fsdp": os.environ.get("ACCELERATE_USE_FSDP"), "version": plugin.fsdp_version, "units": units,
        "world": os.environ["WORLD_SIZE"], "state_dict": str(plugin.state_dict_type)}
with open(os.path.join(sys.argv[1], "plugin" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump(seen, f)
"""


def test_the_fsdp_config_reaches_accelerates_plugin_and_shards_musicgens_decoder_layers(tmp_path):
    """`accelerate launch --config_file examples/accelerate/fsdp2_musicgen.yaml` (2 CPU processes here):
    each process's FSDP plugin is FSDP2 and wraps exactly MusicGen's decoder layers (the tiny model is
    built from the classes of musicgen-small/medium/large). FSDP itself needs GPUs in accelerate."""
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launcher += [str(CONFIGS / "fsdp2_musicgen.yaml"), "--num_processes", "2"]
    launcher += ["--main_process_port", str(_free_port()), str(script), str(tmp_path)]
    done = subprocess.run(launcher, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(2):
        seen = json.loads((tmp_path / f"plugin{rank}.json").read_text())
        assert seen["use_fsdp"] == "true" and seen["version"] == 2 and seen["world"] == "2"
        assert seen["units"] == ["decoder.model.decoder.layers.0", "decoder.model.decoder.layers.1"]
        assert seen["state_dict"].endswith("FULL_STATE_DICT")


def test_the_deepspeed_config_parses():
    """The ZeRO-3 config loads with accelerate's loader and names a DeepSpeed JSON that sets the
    micro-batch size (the RL and backprop trainers prepare no dataloader to take it from)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / "deepspeed_zero3_musicgen.yaml"))
    assert str(config.distributed_type).endswith("DEEPSPEED") and config.num_processes == 4
    ds = json.loads((ROOT / config.deepspeed_config["deepspeed_config_file"]).read_text())
    assert ds["zero_optimization"]["stage"] == 3 and isinstance(ds["train_micro_batch_size_per_gpu"], int)
    fsdp = load_config_from_file(str(CONFIGS / "fsdp2_musicgen.yaml"))
    assert str(fsdp.distributed_type).endswith("FSDP") and fsdp.fsdp_config["fsdp_version"] == 2


def test_the_readme_shows_the_configs_as_shipped():
    readme = (ROOT / "README.md").read_text()
    for name in ("fsdp2_musicgen.yaml", "deepspeed_zero3_musicgen.yaml", "deepspeed_zero3_musicgen.json"):
        assert (CONFIGS / name).read_text().strip() in readme, name


SHARDED = """
import sys, torch, torch.distributed as dist
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from deramos_reward.integrations.musicgen.transformers import builders as tm
from deramos_reward.integrations.training.common.checkpoints import save_adapter

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()


def lora_decoder():
    model, _ = tm.tiny_musicgen(seed=0)
    torch.manual_seed(1)
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    return get_peft_model(model.decoder, LoraConfig(r=4, lora_alpha=8, target_modules=targets))


def loss(decoder, rows):  # mean over the rows of a batch of 4: codes [4*K, S], text states [4, 3, D]
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 128, (4, 4, 6), generator=g)
    text = torch.randn(4, 3, decoder.base_model.model.model.decoder.layers[0].encoder_attn.k_proj.in_features,
                       generator=g)
    out = decoder(input_ids=codes[rows].reshape(-1, 6), encoder_hidden_states=text[rows])
    return out.logits.logsumexp(-1).mean()


full = lora_decoder()
loss(full, slice(0, 4)).backward()
sharded = lora_decoder()
for layer in sharded.base_model.model.model.decoder.layers:
    fully_shard(layer)
fully_shard(sharded)
loss(sharded, slice(2 * rank, 2 * rank + 2)).backward()  # half the batch each; FSDP averages the gradients
full_grads = {n: p.grad for n, p in full.named_parameters() if p.requires_grad}
grads = {n: p.grad.full_tensor() for n, p in sharded.named_parameters() if p.requires_grad}
kinds = sorted({type(p).__name__ for p in sharded.parameters()})
# the package's save_adapter on every process: it gathers the shards, the main process writes
save_adapter(sharded, sys.argv[2])
if rank == 0:
    full.save_pretrained(sys.argv[3])
    out = {"grad/" + n: g for n, g in grads.items()} | {"full/" + n: g for n, g in full_grads.items()}
    save_file(out, sys.argv[1])
    print(kinds)
dist.destroy_process_group()
"""


def test_a_peft_lora_musicgen_decoder_shards_with_fsdp2_on_the_cpu(tmp_path):
    """What FSDP needs of peft, with torch's FSDP2 (fully_shard) on 2 gloo processes, each decoder layer one
    unit: the LoRA parameters are sharded (DTensor), 2 processes x half the batch give the LoRA gradient of
    the full batch, and the package's save_adapter (which gathers the shards on every process) writes the
    adapter peft writes for the unsharded model, key for key."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(script), str(tmp_path / "out.safetensors"), str(tmp_path / "sharded"), str(tmp_path / "full")],
        env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DTensor" in done.stdout
    out = load_file(str(tmp_path / "out.safetensors"))
    names = [k[len("full/") :] for k in out if k.startswith("full/")]
    assert len(names) == 40 and all("lora_" in n for n in names)
    for n in names:  # float32 sums in another order: measured gap 9e-11, gradients up to 6e-4
        torch.testing.assert_close(out["grad/" + n], out["full/" + n], rtol=1e-5, atol=1e-9)
    assert max(float(out["full/" + n].abs().max()) for n in names) > 1e-5
    saved = load_file(str(tmp_path / "sharded" / "adapter_model.safetensors"))
    unsharded = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    assert saved.keys() == unsharded.keys() and len(saved) == 40
    for k in saved:
        assert torch.equal(saved[k], unsharded[k])
