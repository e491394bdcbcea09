"""Scoring throughput and peak memory: ``dr.score`` against the reference call pattern.

The reference call pattern is how the authors' code scores clips: every clip padded (or cropped)
to exactly 30 s, one clip per forward pass, the prompt re-encoded for every clip, no masks. It is
implemented below with the model's own encoders and heads (``reference_scores``), so both patterns
run the same weights and kernels on the same inputs and differ only in how they call them.

For clips that need no padding (30 s) the two patterns compute the same thing, so their scores
must agree to float rounding; the script prints the largest difference and fails if it exceeds
``--tolerance``. For shorter clips the reference scores padding as audio, so its scores differ by
design (printed for information).

Timings are medians over ``--repeats`` runs; within a repeat every configuration runs once, in a
fixed interleaved order, so slow phases of a shared machine hit all of them alike. Each
configuration is warmed up once first (oneDNN builds its kernels per shape). Peak memory is the
RSS increase during one further, untimed call per configuration (see ``benchmarks/common.py``).

    .venv/bin/python benchmarks/bench_score.py --size tiny
    .venv/bin/python benchmarks/bench_score.py --size paper --clips 2 --batch-sizes 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    header,
    keep_freed_memory,
    load_average,
    machine,
    markdown_table,
    median,
    peak_memory,
    process_peak_rss_mb,
    timed,
)

import deramos_reward as dr  # noqa: E402

SR = 24_000


def build_model(size: str, seed: int = 0) -> dr.DeRAMOS:
    """``tiny`` or ``paper`` (MuQ-large + roberta-base dimensions), random weights, eval mode."""
    torch.manual_seed(seed)
    cfg = dr.DeRAMOSConfig.tiny() if size == "tiny" else dr.DeRAMOSConfig.paper_architecture()
    return dr.DeRAMOS(cfg).eval()


def make_inputs(
    n: int, seconds: float, clips_per_prompt: int, seed: int = 0
) -> tuple[list[torch.Tensor], list[str]]:
    """``n`` mono clips of ``seconds`` at 24 kHz (tones + noise) and their prompts [n]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    waves, prompts = [], []
    for i in range(n):
        freqs = rng.uniform(110, 880, size=3)
        wave = sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs) * np.exp(-(t % 0.5) * 2)
        wave = wave + 0.02 * rng.standard_normal(t.shape)
        waves.append(torch.from_numpy(wave.astype(np.float32)))
        prompts.append(f"prompt {i // clips_per_prompt}: a {('calm', 'fast', 'dark', 'bright')[i % 4]} piece")
    return waves, prompts


def reference_scores(
    model: dr.DeRAMOS, waves: list[torch.Tensor], prompts: list[str]
) -> list[dict[str, float]]:
    """The authors' call pattern: pad/crop each clip to 30 s, one clip per forward, re-encode its prompt.

    waves: mono clips [T_i] at ``model.sample_rate``; returns one ``{"mi", "ta"}`` per clip.
    """
    n = model.window_samples
    rows = []
    with torch.no_grad():
        for wave, prompt in zip(waves, prompts):
            x = nn.functional.pad(wave[:n], (0, max(0, n - wave.shape[0])))
            text = model.text_encoder.encode([prompt], model.device)
            frames = model.audio_encoder(x[None].to(model.device))  # no lengths: padding is "audio"
            out = model.heads(frames, text)
            rows.append({"mi": float(out.mi[0]), "ta": float(out.ta[0])})
    return rows


def our_scores(
    model: dr.DeRAMOS, waves: list[torch.Tensor], prompts: list[str], batch_size: int, bf16: bool = False
) -> list[dict[str, float]]:
    """The library's path: ``dr.score`` (length-sorted batches, no padding, prompt cache)."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        return dr.score(model, waves, prompts, sample_rate=SR, batch_size=batch_size)


def max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return max(max(abs(x["mi"] - y["mi"]), abs(x["ta"] - y["ta"])) for x, y in zip(a, b))


def run(args: argparse.Namespace) -> dict:
    model = build_model(args.size)
    params = sum(p.numel() for p in model.parameters())
    results = []
    ref_warm = False
    for seconds in args.seconds:
        waves, prompts = make_inputs(args.clips, seconds, args.clips_per_prompt)
        configs = [("reference", 1, False)] + [("dr.score", bs, False) for bs in args.batch_sizes]
        if args.bf16:
            configs.append(("dr.score + bf16 autocast", max(args.batch_sizes), True))
        # warm-up: one call per configuration on as few clips as fill one batch
        for name, bs, bf16 in configs:
            if name == "reference":
                if not ref_warm:  # always 30 s, whatever the clip length: one warm-up suffices
                    reference_scores(model, waves[:1], prompts[:1])
                    ref_warm = True
            else:
                our_scores(model, waves[:bs], prompts[:bs], bs, bf16)
        calls = [
            functools.partial(reference_scores, model, waves, prompts)
            if name == "reference"
            else functools.partial(our_scores, model, waves, prompts, bs, bf16)
            for name, bs, bf16 in configs
        ]
        times: dict[int, list[float]] = {k: [] for k in range(len(configs))}
        cpu: dict[int, list[float]] = {k: [] for k in range(len(configs))}
        scores: dict[int, list[dict[str, float]]] = {}
        for _ in range(args.repeats):
            for k, call in enumerate(calls):
                sec, cpu_sec, scores[k] = timed(call)
                times[k].append(sec)
                cpu[k].append(cpu_sec)
            print(f"  {seconds:g} s repeat done (load {load_average()})", file=sys.stderr, flush=True)
        # memory: one more call per configuration, untimed, on the same clips
        mems = [peak_memory(call) for call in calls]
        ref_time, ref_cpu = median(times[0]), median(cpu[0])
        fp32_ours = next(k for k, (n, _, b) in enumerate(configs) if n != "reference" and not b)
        for k, (name, bs, _) in enumerate(configs):
            t, c = median(times[k]), median(cpu[k])
            results.append(
                {
                    "size": args.size,
                    "seconds": seconds,
                    "pattern": name,
                    "batch_size": bs,
                    "clips": args.clips,
                    "median_s": t,
                    "times_s": times[k],
                    "median_cpu_s": c,
                    "cpu_s": cpu[k],
                    "cpu_speedup_vs_reference": ref_cpu / c,
                    "clips_per_s": args.clips / t,
                    "peak_rss_increase_mib": mems[k],
                    "speedup_vs_reference": ref_time / t,
                    "max_abs_diff_vs_reference": max_diff(scores[k], scores[0]),
                    "max_abs_diff_vs_fp32": max_diff(scores[k], scores[fp32_ours]),
                    "needs_padding": seconds * SR < model.window_samples,
                }
            )
    return {
        "machine": machine(),
        "params": params,
        "results": results,
        "process_peak_rss_mib": process_peak_rss_mb(),
        "load_average_end": load_average(),
    }


def report(args: argparse.Namespace, out: dict) -> str:
    rows = []
    for r in out["results"]:
        diff = r["max_abs_diff_vs_reference"]
        diff_text = (
            "-"
            if r["pattern"] == "reference"
            else f"{diff:.1e}" + (" (padded)" if r["needs_padding"] else "")
        )
        rows.append(
            [
                f"{r['seconds']:g} s",
                r["pattern"],
                r["batch_size"],
                f"{r['clips_per_s']:.3g}",
                f"{r['median_s'] / r['clips']:.3g}",
                f"{r['median_cpu_s'] / r['clips']:.3g}",
                f"{r['peak_rss_increase_mib']:.0f}",
                f"{r['speedup_vs_reference']:.2f}x",
                f"{r['cpu_speedup_vs_reference']:.2f}x",
                diff_text,
            ]
        )
    columns = [
        "clip",
        "call pattern",
        "batch",
        "clips/s",
        "wall s/clip",
        "CPU s/clip",
        "peak RSS +MiB",
        "speed-up (wall)",
        "speed-up (CPU)",
        "max abs diff vs reference",
    ]
    lines = [
        args.header,
        f"- model: {args.size} size, {out['params'] / 1e6:.1f} M parameters, random weights",
        f"- {args.clips} clips per length, {args.clips_per_prompt} clip(s) per prompt, median of {args.repeats} repeats",
        "",
        markdown_table(columns, rows),
        "",
        f"- process peak RSS (ru_maxrss, weights included): {out['process_peak_rss_mib']:.0f} MiB;"
        f" load average at end: {out['load_average_end']}",
    ]
    return "\n".join(lines)


def front_end(args: argparse.Namespace) -> str:
    """Time MuQEncoder.features against the plain torchaudio MelSpectrogram + AmplitudeToDB path."""
    import torchaudio

    encoder = build_model("tiny").audio_encoder
    mel, to_db = encoder.mel, encoder.to_db

    def plain(w: torch.Tensor) -> torch.Tensor:
        return (to_db(mel(w))[..., :-1] - encoder.mel_mean) / encoder.mel_std

    assert isinstance(mel, torchaudio.transforms.MelSpectrogram)
    waves = torch.stack(make_inputs(args.clips, max(args.seconds), 1)[0])
    times: dict[str, list[float]] = {"torchaudio (complex abs + pow)": [], "MuQEncoder.features": []}
    with torch.inference_mode():
        diff = float((plain(waves) - encoder.features(waves)).abs().max())
        for _ in range(args.repeats):
            for name, fn in zip(times, (plain, encoder.features)):
                times[name].append(timed(functools.partial(fn, waves))[0])
    rows = [[name, f"{median(t):.3f}"] for name, t in times.items()]
    return "\n".join(
        [
            args.header,
            f"- {args.clips} clips x {max(args.seconds):g} s in one batch, median of {args.repeats} repeats;"
            f" max abs difference {diff:.1e}",
            "",
            markdown_table(["mel front-end", "wall s"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    p.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 30.0])
    p.add_argument("--clips", type=int, default=8, help="clips per length")
    p.add_argument("--clips-per-prompt", type=int, default=1, help="clips sharing one prompt")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--bf16", action="store_true", help="also time dr.score under bf16 autocast")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |Δscore| allowed for unpadded clips")
    p.add_argument(
        "--malloc",
        choices=("default", "keep"),
        default="default",
        help="'keep': glibc keeps freed memory for reuse (= MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647)",
    )
    p.add_argument("--front-end", action="store_true", help="only time the mel front-end, old vs new")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator = "glibc default"
    if args.malloc == "keep":
        if not keep_freed_memory():
            raise SystemExit("--malloc keep needs glibc")
        allocator = "glibc, freed memory kept for reuse (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1)"
    args.header = header("Scoring throughput", allocator)  # machine, command and load at the start
    if args.front_end:
        print(front_end(args))
        return 0
    out = run(args)
    print(report(args, out))
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **out}, indent=2)
        )
    bad = [
        r
        for r in out["results"]
        if not r["needs_padding"]
        and r["pattern"] == "dr.score"
        and not r["max_abs_diff_vs_reference"] <= args.tolerance
    ]
    if bad or any(not math.isfinite(r["median_s"]) for r in out["results"]):
        print(
            f"FAIL: unpadded clips differ from the reference by more than {args.tolerance}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
