"""Progressive best-of-N against plain best-of-N at equal N: generation compute and time.

Both modes run the same MusicGen, judge, prompts, N and seed. Per mode the script reports:

- ``frames``: code frames generated (``result.stats``; plain = P * N * frames per clip);
- ``decoder calls`` and ``decoder positions``: counted with a forward hook on the decoder (the
  transformers ``MusicgenForCausalLM`` / the AudioCraft ``LMModel``): calls = sequential forward
  passes, positions = sum over calls of batch rows x new positions. Positions include the
  classifier-free-guidance copies, the delay-pattern steps of every call and the one parallel pass
  over each continued prefix, so they are the honest compute count;
- wall time, split into generation (inside the generator) and scoring (inside the reward).

Timings are medians over ``--repeats``; in each repeat the two modes run back to back in
alternating order. Models have random weights (``--size tiny`` or ``small`` = the architecture of
facebook/musicgen-small; judge ``tiny`` or ``paper`` = MuQ-large + roberta-base dimensions).

    .venv/bin/python benchmarks/bench_progressive.py --backend transformers --size small --duration 2
    .venv/bin/python benchmarks/bench_progressive.py --backend audiocraft --size tiny --n 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, markdown_table, median  # noqa: E402

import deramos_reward as dr  # noqa: E402
from deramos_reward.integrations import best_of_n, musicgen_backend, progressive_best_of_n  # noqa: E402

PROMPTS = ["a calm piano piece", "fast techno with heavy bass", "ambient synth pads", "a jazz trio"]


class Counter:
    """Decoder forward calls and positions (rows x new positions), via a forward hook."""

    def __init__(self, module: torch.nn.Module, rows_positions):
        self.calls = 0
        self.positions = 0
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)
        self.rows_positions = rows_positions

    def _hook(self, module, args, kwargs, output):
        self.calls += 1
        self.positions += self.rows_positions(args, kwargs)

    def reset(self) -> None:
        self.calls = self.positions = 0


class Timer:
    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def build(backend: str, size: str):
    """-> (run(mode, prompts, n, reward, seed) -> result, counter, generation timer)."""
    gen_timer = Timer()
    if backend == "transformers":
        from deramos_reward.integrations.musicgen.transformers import builders as tm

        model, processor = (tm.tiny_musicgen if size == "tiny" else tm.musicgen_small_architecture)(seed=0)
        if size == "tiny":  # zero codebooks decode every sequence alike; random ones make candidates differ
            with torch.no_grad():
                for layer in model.audio_encoder.quantizer.layers:
                    layer.codebook.embed.normal_()
        k = model.decoder.num_codebooks

        def positions(args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            return ids.shape[0] // k * ids.shape[1]

        counter = Counter(model.decoder, positions)
        model.generate = gen_timer.wrap(model.generate)
        backend = musicgen_backend(model, processor)

        def run(mode, prompts, n, reward, seed, duration, checkpoints, keep, max_batch):
            if mode == "plain":
                return best_of_n(
                    backend, prompts, n, reward, duration=duration, seed=seed, max_batch=max_batch
                )
            return progressive_best_of_n(
                backend, prompts, n, reward, duration=duration, checkpoints=checkpoints, keep=keep,
                seed=seed, max_batch=max_batch,
            )  # fmt: skip

    else:
        from deramos_reward.integrations.musicgen.audiocraft import builders as ac

        musicgen = (ac.tiny_musicgen if size == "tiny" else ac.musicgen_small_architecture)(seed=0)

        def positions(args, kwargs):
            seq = args[0] if args else kwargs["sequence"]
            return seq.shape[0] * seq.shape[-1]

        counter = Counter(musicgen.lm, positions)
        musicgen._generate_tokens = gen_timer.wrap(musicgen._generate_tokens)
        musicgen.generate_audio = gen_timer.wrap(musicgen.generate_audio)
        backend = musicgen_backend(musicgen)

        def run(mode, prompts, n, reward, seed, duration, checkpoints, keep, max_batch):
            if mode == "plain":
                return best_of_n(
                    backend, prompts, n, reward, duration=duration, seed=seed, max_batch=max_batch
                )
            return progressive_best_of_n(
                backend, prompts, n, reward, duration=duration, checkpoints=checkpoints, keep=keep,
                seed=seed, max_batch=max_batch,
            )  # fmt: skip

    return run, counter, gen_timer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("transformers", "audiocraft"), default="transformers")
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--judge", choices=("tiny", "paper"), default="tiny")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--checkpoints", default="0.25,0.5")
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=16, help="candidates per generate call")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoints = tuple(float(f) for f in args.checkpoints.split(","))
    prompts = PROMPTS[: args.prompts]

    torch.manual_seed(0)
    cfg = dr.DeRAMOSConfig.tiny() if args.judge == "tiny" else dr.DeRAMOSConfig.paper_architecture()
    reward = dr.MusicReward(dr.DeRAMOS(cfg))
    score_timer = Timer()
    reward.evaluate = score_timer.wrap(reward.evaluate)
    run, counter, gen_timer = build(args.backend, args.size)

    # warm-up (kernels are built per shape), not timed
    for mode in ("plain", "progressive"):
        start = time.perf_counter()
        run(mode, prompts[:1], 2, reward, 0, args.duration, checkpoints, args.keep, args.max_batch)
        print(f"warm-up {mode}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    records: dict[str, list[dict]] = {"plain": [], "progressive": []}
    for rep in range(args.repeats):
        for mode in ("plain", "progressive") if rep % 2 == 0 else ("progressive", "plain"):
            counter.reset()
            gen_timer.seconds = score_timer.seconds = 0.0
            start = time.perf_counter()
            res = run(
                mode, prompts, args.n, reward, rep, args.duration, checkpoints, args.keep, args.max_batch
            )
            total = time.perf_counter() - start
            frames = res.stats.get("generated_frames", len(prompts) * args.n * int(res.codes.shape[-1]))
            records[mode].append(
                {
                    "total": total,
                    "generation": gen_timer.seconds,
                    "scoring": score_timer.seconds,
                    "calls": counter.calls,
                    "positions": counter.positions,
                    "frames": frames,
                    "best": float(res.scores.gather(1, res.index[:, None]).mean()),
                }
            )
            print(f"repeat {rep} {mode}: {records[mode][-1]}", file=sys.stderr, flush=True)

    def med(mode, key):
        return median([r[key] for r in records[mode]])

    rows = []
    for mode in ("plain", "progressive"):
        rows.append(
            [
                mode,
                int(med(mode, "frames")),
                int(med(mode, "calls")),
                int(med(mode, "positions")),
                f"{med(mode, 'generation'):.2f}",
                f"{med(mode, 'scoring'):.2f}",
                f"{med(mode, 'total'):.2f}",
            ]
        )
    ratio = {
        k: med("progressive", k) / med("plain", k) for k in ("frames", "positions", "generation", "total")
    }
    rows.append(
        [
            "progressive / plain",
            f"{ratio['frames']:.2f}",
            "",
            f"{ratio['positions']:.2f}",
            f"{ratio['generation']:.2f}",
            "",
            f"{ratio['total']:.2f}",
        ]
    )
    print(
        header(f"Progressive vs plain best-of-N ({args.backend}, MusicGen {args.size}, judge {args.judge})")
    )
    print(
        f"- {len(prompts)} prompts x N={args.n}, {args.duration} s clips, checkpoints {checkpoints}, "
        f"keep {args.keep}, max_batch {args.max_batch}, medians of {args.repeats} repeats\n"
    )
    print(
        markdown_table(
            ["mode", "frames", "decoder calls", "decoder positions", "generation s", "scoring s", "total s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
