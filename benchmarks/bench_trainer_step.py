"""CPU seconds per optimizer step of the three MusicGen fine-tuning trainers (DPO, online RL, reward
backpropagation), for comparing two versions of the package on the same machine.

Each trainer runs ``--steps`` optimizer steps on a random-weight transformers MusicGen (``--size tiny``
or ``small``, the musicgen-small architecture) with a judge-free reward (``LowBandEnergyReward``), after
a warm-up run of one step; the figure is the process's CPU time (``time.process_time``) around
``train()`` divided by the steps, which a loaded machine disturbs far less than wall-clock time. Only
public names are imported, so the same script runs on older checkouts too:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trainer_step.py --size tiny --steps 6
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from deramos_reward.integrations import transformers_musicgen as tm
from deramos_reward.integrations.backprop import MusicBackpropConfig, MusicRewardBackpropTrainer
from deramos_reward.integrations.dpo import MusicDPOConfig, MusicDPOTrainer
from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer

try:  # integrations/ laid out by concept (musicgen/, rewards/, training/)
    from deramos_reward.integrations.dpo import musicgen_pairs
    from deramos_reward.integrations.rewards import LowBandEnergyReward
except ImportError:  # earlier checkouts
    from deramos_reward.integrations.audio_rewards import LowBandEnergyReward
    from deramos_reward.integrations.preference import musicgen_pairs

PROMPTS = ["calm piano", "fast drums", "ambient pad", "rock guitar"]


def _model(size: str):
    if size == "tiny":
        return tm.tiny_musicgen(0, head_std=0.5)
    return tm.musicgen_small_architecture(0)


def _trainer(kind: str, size: str, steps: int, duration: float, pairs):
    model, processor = _model(size)
    common = {"max_steps": steps, "logging_steps": 1, "learning_rate": 1e-3, "report_to": "none"}
    if kind == "dpo":
        config = MusicDPOConfig(
            per_device_train_batch_size=2, **{k: v for k, v in common.items() if k != "report_to"}
        )
        return MusicDPOTrainer(model, pairs, config, processor=processor)
    online = {
        "num_generations": 2,
        "prompts_per_step": 1,
        "duration": duration,
        "guidance_scale": 1.0,
        **common,
    }
    if kind == "rl":
        return MusicRLTrainer(
            model, LowBandEnergyReward(), PROMPTS, MusicRLConfig(**online), processor=processor
        )
    return MusicRewardBackpropTrainer(
        model, LowBandEnergyReward(), PROMPTS, MusicBackpropConfig(**online), processor=processor
    )


def measure(kind: str, size: str, steps: int, duration: float) -> float:
    pairs = None
    if kind == "dpo":
        model, processor = _model(size)
        pairs = musicgen_pairs(
            model, PROMPTS, 2, LowBandEnergyReward(), processor=processor, duration=duration, seed=0
        )
    _trainer(kind, size, 1, duration, pairs).train()  # warm-up: first-call costs
    trainer = _trainer(kind, size, steps, duration, pairs)
    start = time.process_time()
    trainer.train()
    return (time.process_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--duration", type=float, default=0.4)
    parser.add_argument("--kinds", nargs="+", default=["dpo", "rl", "backprop"])
    args = parser.parse_args()
    out = {"size": args.size, "threads": torch.get_num_threads()}
    for kind in args.kinds:
        out[kind] = round(measure(kind, args.size, args.steps, args.duration), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
