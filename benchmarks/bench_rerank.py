"""Best-of-N reranking cost: generation vs scoring, and peak memory, for N = 1, 4, 8, 16.

Runs ``deramos_reward.integrations.transformers_musicgen.best_of_n`` (and its progressive variant)
with a random-weight transformers MusicGen (``--size small``: the architecture of
facebook/musicgen-small, ``tiny``: a few thousand parameters) and a random-weight DeRA-MOS judge
(``--judge paper``: MuQ-large + roberta-base dimensions, ``tiny``) wrapped in ``MusicReward``.

Generation time is the time spent inside ``model.generate`` (text encoder, decoder steps with
classifier-free guidance, EnCodec decoding); scoring time is the time inside
``MusicReward.evaluate`` (resampling 32 -> 24 kHz, MuQ, RoBERTa, heads). Both are reported as
wall-clock and as CPU time of this process (the steadier figure on a shared machine). Medians over
``--repeats``; within a repeat every (mode, N) runs once in a fixed order after one warm-up each.

Peak memory is the RSS increase during one further, untimed plain best-of-N call per N (see
``benchmarks/common.py``). Generation runs in sub-batches of ``--max-batch`` candidates and the
judge scores ``chunk_size`` clips per forward, so once N exceeds the sub-batch size peak memory
should stay flat: only the candidates' audio (N x duration x 32 kHz x 4 bytes) grows with N.

    .venv/bin/python benchmarks/bench_rerank.py --size small --judge paper --duration 1 --repeats 3
    .venv/bin/python benchmarks/bench_rerank.py --size tiny --judge tiny
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    header,
    keep_freed_memory,
    load_average,
    markdown_table,
    median,
    peak_memory,
    process_peak_rss_mb,
)

import deramos_reward as dr  # noqa: E402
from deramos_reward.integrations import best_of_n, progressive_best_of_n  # noqa: E402
from deramos_reward.integrations.musicgen.transformers import builders as tm  # noqa: E402

PROMPTS = ["a calm piano piece", "fast techno with heavy bass", "ambient synth pads", "a jazz trio"]


class Stopwatch:
    """Accumulates wall and CPU seconds spent inside a wrapped callable."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def reset(self) -> None:
        self.wall = self.cpu = 0.0

    def wrap(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - wall
                self.cpu += time.process_time() - cpu

        return timed


def build(args: argparse.Namespace):
    """-> (musicgen model, processor, MusicReward, generation stopwatch, scoring stopwatch)."""
    builder = tm.tiny_musicgen if args.size == "tiny" else tm.musicgen_small_architecture
    model, processor = builder(seed=0)
    torch.manual_seed(0)
    cfg = dr.DeRAMOSConfig.tiny() if args.judge == "tiny" else dr.DeRAMOSConfig.paper_architecture()
    reward = dr.MusicReward(dr.DeRAMOS(cfg), chunk_size=args.chunk_size)
    gen, score = Stopwatch(), Stopwatch()
    model.generate = gen.wrap(model.generate)
    reward.evaluate = score.wrap(reward.evaluate)
    return model, processor, reward, gen, score


def run_once(args, model, processor, reward, mode: str, n: int, seed: int):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16_judge else contextlib.nullcontext()
    prompts = PROMPTS[: args.prompts]
    common = dict(duration=args.duration, seed=seed, max_batch=args.max_batch)
    # bf16 only for the judge: the autocast region is entered inside reward.evaluate below
    with _judge_autocast(reward, ctx):
        if mode == "plain":
            return best_of_n(model, prompts, n, reward, processor=processor, **common)
        return progressive_best_of_n(
            model,
            prompts,
            n,
            reward,
            processor=processor,
            checkpoints=args.checkpoints,
            keep=args.keep,
            **common,
        )


@contextlib.contextmanager
def _judge_autocast(reward, ctx):
    """Run ``reward.evaluate`` (only) inside ``ctx``."""
    inner = reward.evaluate

    def evaluate(*a, **k):
        with ctx:
            return inner(*a, **k)

    reward.evaluate = evaluate
    try:
        yield
    finally:
        reward.evaluate = inner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=("tiny", "small"), default="small", help="MusicGen size")
    p.add_argument("--judge", choices=("tiny", "paper"), default="paper", help="DeRA-MOS size")
    p.add_argument("--ns", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--duration", type=float, default=1.0, help="seconds per candidate")
    p.add_argument("--max-batch", type=int, default=4, help="candidates per generate call")
    p.add_argument("--chunk-size", type=int, default=4, help="clips per judge forward")
    p.add_argument("--checkpoints", type=lambda s: tuple(float(x) for x in s.split(",")), default=(0.25, 0.5))
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--progressive-ns", type=int, nargs="*", default=[8], help="N values for progressive")
    p.add_argument("--bf16-judge", action="store_true", help="score under bf16 autocast")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--malloc", choices=("default", "keep"), default="default")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator = "glibc default"
    if args.malloc == "keep" and keep_freed_memory():
        allocator = "glibc, freed memory kept for reuse (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1)"
    head = header("Best-of-N reranking cost", allocator)
    model, processor, reward, gen, score = build(args)
    configs = [("plain", n) for n in args.ns] + [("progressive", n) for n in args.progressive_ns]
    # warm-up: kernels are built per shape; one call per distinct generation batch shape suffices
    warm = {("plain", min(n, args.max_batch)) for n in args.ns} | {
        ("progressive", n) for n in args.progressive_ns
    }
    for mode, n in sorted(warm):
        run_once(args, model, processor, reward, mode, n, seed=0)
    records: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    for rep in range(args.repeats):
        for mode, n in configs:
            gen.reset()
            score.reset()
            wall, cpu = time.perf_counter(), time.process_time()
            res = run_once(args, model, processor, reward, mode, n, seed=rep + 1)
            records[(mode, n)].append(
                {
                    "total_s": time.perf_counter() - wall,
                    "total_cpu_s": time.process_time() - cpu,
                    "generation_s": gen.wall,
                    "generation_cpu_s": gen.cpu,
                    "scoring_s": score.wall,
                    "scoring_cpu_s": score.cpu,
                    "frames": res.stats.get("generated_frames", None),
                }
            )
        print(f"  repeat {rep + 1} done (load {load_average()})", file=sys.stderr, flush=True)
    memory = {
        n: peak_memory(functools.partial(run_once, args, model, processor, reward, "plain", n, 0))
        for n in args.ns
    }

    rows, out = [], []
    for mode, n in configs:
        rec = records[(mode, n)]

        def med(key, rec=rec):
            return median([r[key] for r in rec])

        share_cpu = med("scoring_cpu_s") / med("generation_cpu_s")
        share_wall = med("scoring_s") / med("generation_s")
        out.append({"mode": mode, "n": n, "records": rec, "peak_rss_increase_mib": memory.get(n)})
        rows.append(
            [
                mode,
                n,
                f"{med('generation_s'):.2f}",
                f"{med('scoring_s'):.2f}",
                f"{med('generation_cpu_s'):.2f}",
                f"{med('scoring_cpu_s'):.2f}",
                f"{100 * share_cpu:.1f}% ({100 * share_wall:.1f}%)",
                f"{med('total_s'):.2f}",
                f"{memory[n]:.0f}" if mode == "plain" else "-",
            ]
        )
    columns = [
        "mode",
        "N",
        "generation s (wall)",
        "scoring s (wall)",
        "generation s (CPU)",
        "scoring s (CPU)",
        "scoring / generation, CPU (wall)",
        "total s (wall)",
        "peak RSS +MiB",
    ]
    params_gen = sum(p.numel() for p in model.parameters()) / 1e6
    params_judge = sum(p.numel() for p in reward.model.parameters()) / 1e6
    print(head)
    print(
        f"- MusicGen {args.size} ({params_gen:.1f} M parameters), judge {args.judge} ({params_judge:.1f} M)"
        f"{' under bf16 autocast' if args.bf16_judge else ''}; random weights\n"
        f"- {args.prompts} prompt(s), {args.duration:g} s candidates, generation sub-batch {args.max_batch},"
        f" judge chunk {args.chunk_size}; progressive: checkpoints {args.checkpoints}, keep {args.keep}\n"
        f"- medians of {args.repeats} repeats\n"
    )
    print(markdown_table(columns, rows))
    print(
        f"\n- process peak RSS (ru_maxrss, weights included): {process_peak_rss_mb():.0f} MiB;"
        f" load average at end: {load_average()}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": out}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
