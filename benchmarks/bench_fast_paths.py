"""Fast paths of the judge on the CPU: time per clip and score drift of each, in one interleaved run.

Variants (each scores the same clips with the same random weights):

- ``reference``: float32, MuQ's own conv subsampling and transformers' conformer attention
  (``encoder.fast_paths = False``): the scores every drift is measured against;
- ``folded BN``: the conv subsampling with BatchNorm folded into the convolutions;
- ``SDPA``: the conformer's self-attention through ``scaled_dot_product_attention``;
- ``fast paths``: both (the library default);
- ``bf16 autocast``: fast paths under ``torch.autocast(dtype=torch.bfloat16)``;
- ``bf16 encoder weights``: fast paths, encoders stored in bf16 (``DeRAMOS.set_encoder_dtype``), heads float32;
- ``compiled`` (``--compile``): fast paths + ``compile_judge`` (inductor), float32; the compile time
  (first call) is reported apart.

``--backward`` adds, per variant, the peak RSS increase during one ``MusicReward`` forward + backward
to the first clip (after one warm-up backward; method in ``common.py``): what the attention path keeps
for backward shows there. ``--variants`` limits the run to some variants.

Every variant is warmed up once, then the variants run in turn ``--repeats`` times (interleaved, so
load changes on a shared machine hit them alike); figures are medians. CPU time is this process's
user + system time. Drift is the largest |difference| of MI and TA against ``reference`` over the clips.

    .venv/bin/python benchmarks/bench_fast_paths.py --size paper --seconds 10 --clips 2 --repeats 3
    .venv/bin/python benchmarks/bench_fast_paths.py --size tiny --compile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, load_average, markdown_table, median, peak_memory, timed  # noqa: E402

import deramos_reward as dr  # noqa: E402
from deramos_reward.acceleration import compile_judge  # noqa: E402

VARIANTS = ("reference", "folded BN", "SDPA", "fast paths", "bf16 autocast", "bf16 encoder weights")


def clips(count: int, seconds: float, rate: int) -> torch.Tensor:
    """[count, T] noise bursts over a low tone: fixed, different per clip."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * rate)) / rate
    tone = torch.sin(2 * torch.pi * 110.0 * t)[None] * 0.2
    return tone + 0.05 * torch.randn(count, t.shape[0], generator=g)


def setups(model: dr.DeRAMOS, compile_: bool) -> dict:
    """variant name -> (model, context manager factory)."""
    enc = model.audio_encoder

    @contextlib.contextmanager
    def paths(folded: bool, sdpa: bool):
        enc.folded_subsampling, enc.sdpa_attention = folded, sdpa
        try:
            yield
        finally:
            enc.fast_paths = True

    out = {
        "reference": (model, lambda: paths(False, False)),
        "folded BN": (model, lambda: paths(True, False)),
        "SDPA": (model, lambda: paths(False, True)),
        "fast paths": (model, contextlib.nullcontext),
        "bf16 autocast": (model, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "bf16 encoder weights": (
            copy.deepcopy(model).set_encoder_dtype(torch.bfloat16),
            contextlib.nullcontext,
        ),
    }
    if compile_:
        out["compiled"] = (compile_judge(copy.deepcopy(model)), contextlib.nullcontext)
    return out


def backward_peak_mib(judge: dr.DeRAMOS, ctx, clip: torch.Tensor, prompt: str) -> float:
    """Peak RSS increase (MiB) of one reward forward + backward to ``clip`` [1, T], after a warm-up."""
    reward = dr.MusicReward(judge)
    wave = clip.clone().requires_grad_(True)

    def step() -> None:
        with ctx():
            (grad,) = torch.autograd.grad(reward(wave, judge.sample_rate, [prompt]).sum(), wave)

    step()
    return peak_memory(step)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=("tiny", "paper"), default="paper")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clips", type=int, default=2, help="clips per forward (one batch)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="add the compiled variant (slow to compile)")
    p.add_argument("--variants", nargs="+", choices=[*VARIANTS, "compiled"], help="run only these")
    p.add_argument("--backward", action="store_true", help="peak RSS of a reward forward + backward")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def measure(args, variants: dict, audio: torch.Tensor, prompts: list[str]) -> tuple[dict, dict, dict]:
    """-> (scores [clips, 2], first-call wall s, [(wall, cpu)] per repeat), each per variant."""

    def run(name: str) -> torch.Tensor:
        judge, ctx = variants[name]
        with torch.inference_mode(), ctx():
            out = judge(audio, prompts)
        return torch.stack([out.mi, out.ta], -1).float()

    scores, first, times = {}, {}, {name: [] for name in variants}
    for name in variants:  # warm-up (and compile) once each
        first[name], _, scores[name] = timed(lambda name=name: run(name))
    for rep in range(args.repeats):
        for name in variants:
            wall, cpu, _ = timed(lambda name=name: run(name))
            times[name].append((wall, cpu))
        print(f"  repeat {rep + 1} done (load {load_average()})", file=sys.stderr, flush=True)
    return scores, first, times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    head = header("Judge fast paths on the CPU")
    torch.manual_seed(0)
    cfg = dr.DeRAMOSConfig.tiny() if args.size == "tiny" else dr.DeRAMOSConfig.paper_architecture()
    model = dr.DeRAMOS(cfg).eval()
    audio = clips(args.clips, args.seconds, model.sample_rate)
    prompts = [f"prompt number {i}: a calm piano piece" for i in range(args.clips)]
    variants = {
        k: v for k, v in setups(model, args.compile).items() if not args.variants or k in args.variants
    }
    if "reference" not in variants:
        raise SystemExit("--variants must include reference (drift is measured against it)")
    scores, first, times = measure(args, variants, audio, prompts)
    memory = {}
    for name in variants if args.backward else ():
        judge, ctx = variants[name]
        memory[name] = backward_peak_mib(judge, ctx, audio[:1], prompts[0])
    rows, out = [], []
    base = median([c for _, c in times["reference"]])
    for name in variants:
        wall = median([w for w, _ in times[name]]) / args.clips
        cpu = median([c for _, c in times[name]]) / args.clips
        drift = (scores[name] - scores["reference"]).abs().amax(0).tolist()
        out.append(
            {
                "variant": name,
                "wall_s_per_clip": wall,
                "cpu_s_per_clip": cpu,
                "first_call_s": first[name],
                "max_abs_diff_mi": drift[0],
                "max_abs_diff_ta": drift[1],
                "times": times[name],
                "backward_peak_rss_mib": memory.get(name),
            }
        )
        rows.append(
            [
                name,
                f"{wall:.3g}",
                f"{cpu:.3g}",
                f"{base / args.clips / cpu:.2f}x",
                f"{first[name]:.1f}",
                f"{drift[0]:.1e}",
                f"{drift[1]:.1e}",
                *([f"{memory[name]:.0f}"] if args.backward else []),
            ]
        )
    print(head)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"- model: {args.size} size, {params:.1f} M parameters, random weights; {args.clips} clips of"
        f" {args.seconds:g} s in one batch; medians of {args.repeats} interleaved repeats\n"
    )
    columns = [
        "variant",
        "wall s/clip",
        "CPU s/clip",
        "speed-up (CPU)",
        "first call s (wall)",
        "max abs diff MI",
        "max abs diff TA",
        *(["reward backward peak RSS +MiB"] if args.backward else []),
    ]
    print(markdown_table(columns, rows))
    print(f"\n- load average at end: {load_average()}")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": out}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
