"""Online RL step time, split into generation, scoring and update (``MusicRLTrainer``).

One RL step = ``--prompts`` prompt groups of ``--generations`` samples of ``--duration`` seconds:

- generation: ``backend.generate`` per prompt group (text encoder, decoder steps, codec decoding);
- scoring: the reward (``MusicReward`` on a random-weight DeRA-MOS judge: resampling, MuQ, RoBERTa,
  heads) plus the shaping and advantages;
- update: teacher-forced log-probs under the reference (adapter disabled, no gradient; once per batch
  for ``--kl-estimator k3``, next to each micro-batch for ``exact``) and one forward + backward + AdamW
  step of the LoRA adapter.

``--guidance-scale`` is the policy's classifier-free guidance (1, the default here: the unguided policy,
no unconditional pass anywhere; 3: the guided policy MusicGen is deployed with, twice the decoder work
in sampling and in every teacher-forced pass).

Models (random weights, built offline): ``--size tiny`` (the tiny MusicGen of ``--library``) or
``small`` (the architecture of facebook/musicgen-small); ``--judge tiny`` or ``paper`` (MuQ-large +
roberta-base dimensions). The first ``--warmup`` steps are not reported; the table has one row per
timed step (wall-clock seconds, as the trainer logs them) and the process's peak RSS.

    .venv/bin/python benchmarks/bench_rl.py --size tiny --judge tiny --steps 5
    .venv/bin/python benchmarks/bench_rl.py --size small --judge paper --duration 1 --generations 4 --prompts 1 --steps 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, markdown_table, process_peak_rss_mb  # noqa: E402

import deramos_reward as dr  # noqa: E402
from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer  # noqa: E402

PROMPTS = ["a calm piano piece", "fast techno with heavy bass", "ambient synth pads", "a jazz trio"]


def build_model(library: str, size: str):
    """-> (model, processor)."""
    if library == "transformers":
        from deramos_reward.integrations.musicgen.transformers import builders as tm

        build = tm.tiny_musicgen if size == "tiny" else tm.musicgen_small_architecture
        return build(seed=0)
    from deramos_reward.integrations.musicgen.audiocraft import builders as ac

    build = ac.tiny_musicgen if size == "tiny" else ac.musicgen_small_architecture
    return build(seed=0), None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--library", choices=("transformers", "audiocraft"), default="transformers")
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--judge", choices=("tiny", "paper"), default="tiny")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per sample (default 1)")
    parser.add_argument("--generations", type=int, default=8, help="samples per prompt (default 8)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (default 4)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps (default 1)")
    parser.add_argument("--beta", type=float, default=0.04, help="KL weight; 0 skips the reference pass")
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="the policy's guidance (default 1)")
    parser.add_argument("--kl-estimator", choices=("exact", "k3"), default="k3", help="(default k3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model, processor = build_model(args.library, args.size)
    torch.manual_seed(0)
    cfg = dr.DeRAMOSConfig.tiny() if args.judge == "tiny" else dr.DeRAMOSConfig.paper_architecture()
    reward = dr.MusicReward(dr.DeRAMOS(cfg).eval())
    config = MusicRLConfig(
        num_generations=args.generations,
        prompts_per_step=args.prompts,
        max_steps=args.warmup + args.steps,
        duration=args.duration,
        beta=args.beta,
        guidance_scale=args.guidance_scale,
        kl_estimator=args.kl_estimator,
        logging_steps=1,
        report_to="none",
    )
    prompts = (PROMPTS * args.prompts)[: max(args.prompts, len(PROMPTS))]
    trainer = MusicRLTrainer(model, reward, prompts, config, processor=processor)
    built = time.perf_counter() - start
    cpu = time.process_time()
    trainer.train()
    cpu = (time.process_time() - cpu) / (args.warmup + args.steps)
    rows = [r for r in trainer.log_history if "time/generation" in r][args.warmup :]
    keys = ("time/generation", "time/scoring", "time/update")
    table = [[r["step"], *(f"{r[k]:.3f}" for k in keys), f"{sum(r[k] for k in keys):.3f}"] for r in rows]
    print(header(f"RL step: {args.library} MusicGen {args.size}, {args.judge} judge"))
    print(
        f"- {args.prompts} prompt(s) x {args.generations} samples x {args.duration} s "
        f"({trainer.frames} frames), beta {args.beta} ({args.kl_estimator} KL), guidance "
        f"{args.guidance_scale:g}, models built in {built:.1f} s, "
        f"peak RSS {process_peak_rss_mb():.0f} MiB"
    )
    print(
        f"- CPU time per step (process_time over all steps, warm-up included; other processes' load "
        f"barely moves it): {cpu:.3f} s"
    )
    print()
    print(markdown_table(["step", "generation s", "scoring s", "update s", "total s"], table))


if __name__ == "__main__":
    main()
