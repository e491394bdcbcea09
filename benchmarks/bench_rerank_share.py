"""Scoring share of best-of-N for several judge set-ups, on the same candidates, in one interleaved run.

Each repeat generates the N candidates once with ``deramos_reward.integrations.best_of_n`` (random-weight
MusicGen of musicgen-small's architecture; generation time = time inside ``model.generate``), then
scores those candidates with every judge set-up as ``best_of_n`` does (``MusicReward.evaluate`` under
``torch.no_grad``), in an order rotated from repeat to repeat. Set-ups (same random weights):

- ``before``: MuQ's own conv subsampling and conformer attention (``fast_paths = False``), 4 clips per
  judge forward (the set-up of the earlier reranking figures);
- ``fast paths``: folded-BatchNorm subsampling + SDPA attention, 4 clips per forward;
- ``after``: fast paths, 8 clips per forward (``MusicReward``'s default ``chunk_size``);
- ``bf16 weights``: as ``after`` with the encoders' weights in bf16 (``DeRAMOS.set_encoder_dtype``).

Shares are medians of scoring time over the median generation time, CPU time (this process's user +
system time, the steadier figure on a shared machine) and wall time. The largest score difference of
each set-up against ``before`` is reported too.

The compute floor: the judge's FLOPs per candidate (``torch.utils.flop_counter.FlopCounterMode`` over
one float32 forward: matrix products, linear layers, convolutions, attention) times N, over the core's
float32 matrix-product rate (median CPU time of ``[8 * frames, 1024] x [1024, 4096]`` products, the
shape of the conformer's feed-forward layers, on this thread count): the scoring time no float32 implementation of
the same arithmetic gets under, and its share of the generation time.

    .venv/bin/python benchmarks/bench_rerank_share.py --n 8 --duration 1 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rerank import PROMPTS, Stopwatch  # noqa: E402
from common import header, load_average, markdown_table, median  # noqa: E402

import deramos_reward as dr  # noqa: E402
from deramos_reward.integrations import best_of_n  # noqa: E402
from deramos_reward.integrations.musicgen.transformers import builders as tm  # noqa: E402


def setups(judge: dr.DeRAMOS) -> dict[str, tuple[dr.MusicReward, bool]]:
    """name -> (reward, fast paths on)."""
    half = copy.deepcopy(judge).set_encoder_dtype(torch.bfloat16)
    return {
        "before": (dr.MusicReward(judge, chunk_size=4), False),
        "fast paths": (dr.MusicReward(judge, chunk_size=4), True),
        "after": (dr.MusicReward(judge, chunk_size=8), True),
        "bf16 weights": (dr.MusicReward(half, chunk_size=8), True),
    }


def score(reward: dr.MusicReward, fast: bool, audio: torch.Tensor, prompts: list[str]):
    """-> (wall s, CPU s, [B, 2] scores) of one ``evaluate`` call, as best_of_n makes it."""
    reward.model.audio_encoder.fast_paths = fast
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = reward.evaluate(audio, 32_000, prompts)
    return time.perf_counter() - wall, time.process_time() - cpu, torch.stack([out.mi, out.ta], -1)


def compute_floor(judge: dr.DeRAMOS, n: int, duration: float) -> dict[str, float]:
    """FLOPs of N candidates and the float32 GEMM rate of this core -> the scoring-time floor."""
    from torch.utils.flop_counter import FlopCounterMode

    audio = 0.1 * torch.randn(1, 1, int(duration * 32_000), generator=torch.Generator().manual_seed(0))
    reward = dr.MusicReward(judge, chunk_size=1)
    with torch.no_grad():
        reward.evaluate(audio, 32_000, PROMPTS[:1])  # the prompt is encoded once per best-of-N call: cache it
        with FlopCounterMode(display=False) as counter:
            reward.evaluate(audio, 32_000, PROMPTS[:1])
    flops = float(counter.get_total_flops()) * n
    per = {k: float(sum(v.values())) / 1e9 for k, v in counter.get_flop_counts().items()}
    encoder, conformer = per.get("MuQEncoder", 0.0), per.get("MuQEncoder.backbone.model.conformer", 0.0)
    parts = {
        "conv subsampling + mel": encoder - conformer,
        "conformer": conformer,
        "heads": per.get("DeRAMOSHeads", 0.0),
    }
    rows = 8 * round(duration * 25)  # 8 clips of 25 frames per second
    a, b = torch.randn(rows, 1024), torch.randn(4096, 1024)
    times = []
    for _ in range(12):  # CPU time: waiting for a core on a loaded machine does not count
        cpu = time.process_time()
        torch.nn.functional.linear(a, b)
        times.append(time.process_time() - cpu)
    rate = 2 * rows * 1024 * 4096 / median(times[2:])
    return {"gflop": flops / 1e9, "gemm_gflops": rate / 1e9, "floor_s": flops / rate, "gflop_per_clip": parts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--max-batch", type=int, default=4, help="candidates per generate call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    head = header("Best-of-N scoring share, judge set-ups on the same candidates")
    model, processor = tm.musicgen_small_architecture(seed=0)
    torch.manual_seed(0)
    judge = dr.DeRAMOS(dr.DeRAMOSConfig.paper_architecture())
    rewards = setups(judge)
    gen = Stopwatch()
    model.generate = gen.wrap(model.generate)
    names = list(rewards)
    prompts = PROMPTS[:1] * args.n
    gen_times, times, scores = [], {k: [] for k in names}, {}
    for rep in range(args.repeats + 1):  # repeat 0 warms every kernel up and is not counted
        gen.reset()
        res = best_of_n(
            model, PROMPTS[:1], args.n, rewards["before"][0], processor=processor, seed=rep,
            duration=args.duration, max_batch=args.max_batch, return_candidates=True,
        )  # fmt: skip
        audio = res.candidates.reshape(-1, *res.candidates.shape[2:])
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            wall, cpu, s = score(*rewards[name], audio, prompts)
            if rep:
                times[name].append((wall, cpu))
            scores.setdefault(name, []).append(s)
        if rep:
            gen_times.append((gen.wall, gen.cpu))
        print(f"  repeat {rep} done (load {load_average()})", file=sys.stderr, flush=True)
    g_wall, g_cpu = median([w for w, _ in gen_times]), median([c for _, c in gen_times])
    floor = compute_floor(judge, args.n, args.duration)
    rows, out = [], []
    for name in names:
        wall, cpu = median([w for w, _ in times[name]]), median([c for _, c in times[name]])
        diff = max(float((a - b).abs().max()) for a, b in zip(scores[name], scores["before"]))
        out.append({"setup": name, "scoring_wall_s": wall, "scoring_cpu_s": cpu, "max_abs_diff": diff})
        rows.append([name, f"{cpu:.2f}", f"{wall:.2f}", f"{100 * cpu / g_cpu:.1f}% ({100 * wall / g_wall:.1f}%)",
                     f"{floor['gflop'] / cpu:.0f}", f"{diff:.1e}"])  # fmt: skip
    print(head)
    print(
        f"- MusicGen small architecture, paper-size judge, random weights; 1 prompt x N = {args.n},"
        f" {args.duration:g} s candidates, generation sub-batch {args.max_batch}\n"
        f"- generation (median of {args.repeats}): {g_cpu:.2f} s CPU, {g_wall:.2f} s wall\n"
    )
    columns = ["judge set-up", "scoring s (CPU)", "scoring s (wall)", "scoring / generation, CPU (wall)",
               "GFLOP/s (CPU time)", "max abs diff vs before"]  # fmt: skip
    print(markdown_table(columns, rows))
    print(
        f"\n- compute floor: {floor['gflop']:.0f} GFLOP for the {args.n} candidates (float32 counted work);"
        f" the core's float32 GEMM rate {floor['gemm_gflops']:.0f} GFLOP/s -> at least {floor['floor_s']:.2f} s,"
        f" {100 * floor['floor_s'] / g_cpu:.1f}% of the generation CPU time\n- GFLOP per candidate: "
        + ", ".join(f"{k} {v:.1f}" for k, v in floor["gflop_per_clip"].items())
    )
    print(f"\n- load average at end: {load_average()}")
    if args.json:
        doc = {"args": {k: str(v) for k, v in vars(args).items()}, "generation": gen_times, "results": out}
        doc["floor"] = floor
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
