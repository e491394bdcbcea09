"""Reward backpropagation vs online RL (GRPO) on the same learnable reward, both tiny MusicGen backends.

Both trainers fine-tune a LoRA adapter (same rank, same targets) on the same tiny MusicGen, with the same
prompts, the same samples per step (``prompts_per_step x num_generations``), the same sampling (no
guidance, temperature 1, no top-k) and ``beta = 0`` (no KL anchor, so the comparison is about learning
speed; the KL each run ends at is reported as its cost). The reward is
``LowBandEnergyReward(4000 Hz)``: the fraction of the audio's spectral energy below 4 kHz, a
differentiable function of the audio that a LoRA adapter can raise.

Every ``--eval-every`` steps (and at step 0) the policy is scored on fresh samples: ``--eval-prompts``
held-out prompts x ``--eval-generations`` samples with fixed seeds (the same noise for every run and
step), reward mean and standard error, plus the exact per-code KL(policy || reference) over those
samples. Training time excludes these evaluations; CPU time is this process's user + system time.

Reported per backend and method (mean +- standard error over seeds), RL may run more steps than
backprop (``--steps-rl``: its steps are cheaper) so that both curves reach the same wall time:

- at equal samples (the fewer samples of the two methods): the reward gain over step 0, the gain per
  100 samples, the training wall / CPU time spent to get there, the gain per CPU-minute and the KL;
- at equal wall time (the shorter of the two methods' mean training times): the reward gain, read
  from each run's curve (linear interpolation between evaluations);
- the gain at the end of each method's run.

The models are the tiny builders with ``head_std=0.5`` (a peaked next-code distribution) and codebook
vectors x10 (the random codec's output is otherwise mostly a code-independent pattern).

    .venv/bin/python benchmarks/bench_backprop_vs_rl.py --libraries transformers --seeds 0 1 2 3 4 \
        --steps 16 --steps-rl 40 --lr-backprop 3e-2 --lr-rl 3e-2 --json /tmp/bp_vs_rl_transformers.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, markdown_table  # noqa: E402

from deramos_reward.integrations.musicgen.audiocraft import builders as ac  # noqa: E402
from deramos_reward.integrations.musicgen.transformers import builders as tm  # noqa: E402
from deramos_reward.integrations.rewards.synthetic import LowBandEnergyReward  # noqa: E402
from deramos_reward.integrations.training.backprop.config import MusicBackpropConfig
from deramos_reward.integrations.training.backprop.trainer import MusicRewardBackpropTrainer, evaluate_policy

REWARD = LowBandEnergyReward(cutoff_hz=4000.0)
BUILT: dict[str, tuple] = {}


def learnable(library: str):
    """A fresh tiny MusicGen (see the module docstring) and its processor (None for AudioCraft)."""
    import copy

    if library not in BUILT:
        if library == "transformers":
            model, processor = tm.tiny_musicgen(0, head_std=0.5)
            books = [layer.codebook.embed for layer in model.audio_encoder.quantizer.layers]
        else:
            model, processor = ac.tiny_musicgen(0, head_std=0.5), None
            books = [layer.codebook for layer in model.compression_model.quantizer.vq.layers]
        with torch.no_grad():
            for book in books:
                book.mul_(10.0)
        BUILT[library] = (model, processor)
    return copy.deepcopy(BUILT[library])


def make_trainer(method: str, library: str, seed: int, args: argparse.Namespace):
    model, processor = learnable(library)
    prompts = [f"train prompt {i}" for i in range(args.train_prompts)]
    eval_prompts = [f"held-out prompt {i}" for i in range(args.eval_prompts)]
    common = dict(
        learning_rate=args.lr_backprop if method == "backprop" else args.lr_rl,
        num_generations=args.generations,
        prompts_per_step=args.prompts_per_step,
        duration=args.duration,
        beta=0.0,
        max_steps=args.steps if method == "backprop" else (args.steps_rl or args.steps),
        lr_scheduler_type="constant",
        logging_steps=1,
        save_steps=10**6,
        eval_steps=args.eval_every,
        report_to="none",
        seed=seed,
        lora_r=args.lora_r,
        guidance_scale=1.0,  # both methods sample and optimise the same unguided policy
    )
    if method == "backprop":
        config = MusicBackpropConfig(**common)
        return MusicRewardBackpropTrainer(
            model, REWARD, prompts, config, processor=processor, eval_prompts=eval_prompts
        )
    from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer

    config = MusicRLConfig(**common, advantage="grpo", disable_dropout=True)
    return MusicRLTrainer(model, REWARD, prompts, config, processor=processor, eval_prompts=eval_prompts)


def run_one(method: str, library: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one run; -> its evaluation curve and totals."""
    trainer = make_trainer(method, library, seed, args)
    eval_prompts = trainer.eval_prompts
    frames = trainer.backend.frames_for(args.duration)
    curve: list[dict] = []
    excluded = {"wall": 0.0, "cpu": 0.0}
    start = {"wall": time.perf_counter(), "cpu": time.process_time()}

    def evaluate(*_, **__) -> dict:
        w0, c0 = time.perf_counter(), time.process_time()
        out = evaluate_policy(
            trainer.backend,
            REWARD,
            eval_prompts,
            frames=frames,
            num_generations=args.eval_generations,
            seed=12345,
        )
        w1, c1 = time.perf_counter(), time.process_time()
        curve.append(
            {
                "wall_s": w0 - start["wall"] - excluded["wall"],
                "cpu_s": c0 - start["cpu"] - excluded["cpu"],
                **out,
            }
        )
        excluded["wall"] += w1 - w0
        excluded["cpu"] += c1 - c0
        return {f"eval/{k}": v for k, v in out.items()}

    trainer.evaluate = (
        evaluate  # both trainers call self.evaluate() at step 0, every eval_steps and at the end
    )
    trainer.train()
    # evaluations happen at step 0, every eval_every steps and at the last step
    total = trainer.args.max_steps
    steps = [0, *range(args.eval_every, total, args.eval_every), total]
    for point, step in zip(curve, steps):
        point["samples"] = step * args.prompts_per_step * args.generations
    return {"method": method, "library": library, "seed": seed, "curve": curve}


def interpolate(curve: list[dict], key: str, x: float, value: str = "reward") -> float:
    """``value`` of ``curve`` where ``curve[key] == x`` (linear between points; clamped at the ends)."""
    xs, ys = [p[key] for p in curve], [p[value] for p in curve]
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-12)
    return ys[-1]


def mean_se(values: list[float], digits: int = 4) -> str:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{m:+.{digits}f} ± {se:.{digits}f}"


def summarise(runs: list[dict], library: str) -> list[list[object]]:
    """One table row per method for ``library``: read at the samples both reached and at the training
    wall time both reached (the smaller of the methods' mean final values)."""
    mine = {m: [r for r in runs if r["library"] == library and r["method"] == m] for m in ("backprop", "rl")}
    mine = {m: rs for m, rs in mine.items() if rs}
    samples = min(r["curve"][-1]["samples"] for rs in mine.values() for r in rs)
    budget = min(statistics.fmean(r["curve"][-1]["wall_s"] for r in rs) for rs in mine.values())
    rows = []
    for method, rs in mine.items():
        start = [r["curve"][0]["reward"] for r in rs]
        gains = [interpolate(r["curve"], "samples", samples) - r0 for r, r0 in zip(rs, start)]
        cpu = [interpolate(r["curve"], "samples", samples, "cpu_s") for r in rs]
        wall = [interpolate(r["curve"], "samples", samples, "wall_s") for r in rs]
        at_time = [interpolate(r["curve"], "wall_s", budget) - r0 for r, r0 in zip(rs, start)]
        rows.append(
            [
                method,
                len(rs),
                f"{statistics.fmean(start):.4f}",
                samples,
                mean_se(gains),
                mean_se([100 * g / samples for g in gains]),
                f"{statistics.fmean(wall):.1f} / {statistics.fmean(cpu):.1f}",
                mean_se([g / (c / 60) for g, c in zip(gains, cpu)], 3),
                mean_se([interpolate(r["curve"], "samples", samples, "kl") for r in rs], 2),
                f"{budget:.1f}",
                mean_se(at_time),
                f"{rs[0]['curve'][-1]['samples']}: "
                + mean_se([r["curve"][-1]["reward"] - r0 for r, r0 in zip(rs, start)]),
            ]
        )
    return rows


COLUMNS = [
    "method",
    "seeds",
    "reward at step 0",
    "samples",
    "gain at equal samples",
    "gain / 100 samples",
    "train s wall / CPU",
    "gain / CPU-min",
    "KL at equal samples (nats/code)",
    "equal wall s",
    "gain at equal wall time",
    "samples: gain at the end of the run",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--libraries", nargs="+", default=["transformers", "audiocraft"])
    p.add_argument("--methods", nargs="+", default=["backprop", "rl"], choices=["backprop", "rl"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument(
        "--steps-rl", type=int, default=None, help="RL steps (default --steps); RL steps are cheaper"
    )
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--duration", type=float, default=0.3)
    p.add_argument("--train-prompts", type=int, default=8)
    p.add_argument("--eval-prompts", type=int, default=8)
    p.add_argument("--eval-generations", type=int, default=4)
    p.add_argument("--lr-backprop", type=float, default=3e-2)
    p.add_argument("--lr-rl", type=float, default=3e-2)
    p.add_argument("--lora-r", type=int, default=4)
    p.add_argument("--json", type=Path, help="write every run's curve here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(header("Reward backpropagation vs online RL (GRPO), tiny MusicGen"))
    print(
        f"- {args.steps} steps (RL: {args.steps_rl or args.steps}) x {args.prompts_per_step} prompts x {args.generations} samples of {args.duration} s; "
        f"lr backprop {args.lr_backprop}, RL {args.lr_rl}; LoRA r {args.lora_r}; beta 0; constant LR\n"
        f"- eval every {args.eval_every} steps: {args.eval_prompts} held-out prompts x {args.eval_generations} "
        "fixed-seed samples"
    )
    runs = []
    for library in args.libraries:
        for seed in args.seeds:
            for method in args.methods:
                run = run_one(method, library, seed, args)
                runs.append(run)
                last = run["curve"][-1]
                print(
                    f"  {library} seed {seed} {method}: reward {run['curve'][0]['reward']:.4f} -> "
                    f"{last['reward']:.4f} (SEM {last['reward_sem']:.4f}), KL {last['kl']:.3f}, "
                    f"train {last['wall_s']:.1f} s wall / {last['cpu_s']:.1f} s CPU",
                    file=sys.stderr,
                )
    for library in args.libraries:
        print(f"\n##### {library}\n")
        print(markdown_table(COLUMNS, summarise(runs, library)))
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
