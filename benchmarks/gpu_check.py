"""One unattended GPU check of deramos-reward, at the paper's size, with random weights, offline.

    bash benchmarks/gpu_check.sh             # first CUDA GPU, at most 8 minutes, writes gpu_check_out/
    bash benchmarks/gpu_check.sh --smoke     # the same code paths at tiny size on the CPU (tests run it)

Sections, in this order, each with its own time budget (a section that runs out stops measuring
and says so; the next one starts):

1. ``environment``: GPU, versions, precision flags; a bf16 matrix product (8192^3) as the measured
   matrix-unit ceiling, beside the datasheet's dense bf16 peak.
2. ``judge``: DeRA-MOS throughput (``DeRAMOS(audio, prompts)``, one prompt per batch) for 10 s and
   30 s clips, float32 / bf16 autocast / bf16 encoder weights / compiled (bf16 weights +
   ``compile_judge``), batch 1, 2, 4, ... until out of memory, the budget or the cap: clips/s,
   x realtime, peak memory, TFLOP/s and its share of the bf16 peak. Then, per (clip, variant), the
   largest batch run and the largest batch that fits by linear extrapolation of peak memory.
3. ``determinism``: the largest score difference across batch sizes (batch 1 vs all clips at once)
   and across two identical runs, in float32, bf16 autocast and bf16 weights.
4. ``reward_backward``: ``MusicReward`` forward + backward to the audio (32 kHz, resampled), float32
   and bf16 autocast, batch 1, 2, 4, ...: clips/s and peak memory.
5. ``best_of_n``: musicgen-small-shaped transformers MusicGen + the paper-size judge (float32),
   N = 1, 4, 8, 16 and progressive N = 8: generation vs scoring time.
6. ``train_steps``: one DPO step and one GRPO step (LoRA on musicgen-small's decoder): time and peak
   memory (entries of ``TRAINERS``).

Results go to ``OUT/results.json`` and ``OUT/results.md`` (default OUT: ``gpu_check_out``),
rewritten atomically after every measurement: a run stopped part-way keeps what it measured.

FLOPs are counted, not estimated: see ``FLOP_METHOD``.
"""

from __future__ import annotations

import time

START = time.monotonic()  # the 8-minute budget counts from here, imports included

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_runtime import Clock, Device, Results, SimulatedOOM, is_oom, median  # noqa: E402

from deramos_reward.integrations.training.dpo.pairs import build_pairs  # noqa: E402

FLOP_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode over one eager float32 forward of one clip (batch 1, "
    "one prompt): 2 FLOPs per multiply-add of every matrix product, linear layer, convolution and "
    "attention product, from the operands' shapes; elementwise ops, normalisation, softmax and the "
    "STFT are not counted. The audio encoder and heads' count is per clip, the text encoder's per "
    "batch (each batch shares one prompt, encoded once). Compiled and bf16 variants do the same "
    "counted work. TFLOP/s = (FLOPs per clip x batch + text FLOPs) / seconds per batch; '% of bf16 "
    "peak' divides by the GPU's dense bf16 datasheet peak, '% of matmul' by the measured 8192^3 bf16 "
    "matrix product."
)

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s; first match wins.
PEAK_BF16_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10", 125.0),
)

PROMPT = "an upbeat jazz trio with walking bass and brushed drums"


def import_project():
    """Import ``deramos_reward`` (installed, or this source checkout) with ``deramos_reward.integrations``.

    In a checkout that was never pip-installed, ``integrations/`` is mapped to
    ``deramos_reward.integrations`` as pyproject's package-dir does.
    """
    sys.path.insert(0, str(ROOT))
    import deramos_reward

    try:
        import deramos_reward.integrations  # noqa: F401
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location(
            "deramos_reward.integrations",
            ROOT / "integrations" / "__init__.py",
            submodule_search_locations=[str(ROOT / "integrations")],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        deramos_reward.integrations = module
    return deramos_reward


@dataclass
class Plan:
    """Sizes and budgets of one run (``full_plan`` on a GPU, ``smoke_plan`` on the CPU)."""

    smoke: bool
    judge: str  # "paper" or "tiny"
    musicgen: str  # "small" or "tiny"
    time_limit_s: float
    budgets: dict[str, float]
    clip_seconds: tuple[float, ...] = (10.0, 30.0)
    max_batch: int = 1024
    simulate_oom_batch: int | None = None  # smoke: raise SimulatedOOM from this batch on
    compile_backend: str = "inductor"
    compile_max_batch: int = 64
    compile_min_s: float = 60.0  # left in the judge budget to start a compile
    min_seconds: float = 1.0  # timed calls per measurement: at least min_reps and min_seconds...
    min_reps: int = 3
    max_reps: int = 10  # ...and at most max_reps
    reward_seconds: float = 10.0
    best_of_ns: tuple[int, ...] = (1, 4, 8, 16)
    best_of_seconds: float = 5.0
    progressive_n: int = 8
    gen_batch: int = 16
    train_seconds: float = 10.0
    train_batch: int = 4
    train_steps: int = 2
    det_clips: int = 8
    det_seconds: float = 10.0
    matmul_size: int = 8192
    threads: int | None = None  # intra-op CPU threads (None: torch's default)


def full_plan() -> Plan:
    budgets = {"environment": 20, "judge": 220, "determinism": 25, "reward_backward": 40}
    budgets |= {"best_of_n": 80, "train_steps": 40}
    return Plan(smoke=False, judge="paper", musicgen="small", time_limit_s=465, budgets=budgets)


def smoke_plan() -> Plan:
    budgets = {"environment": 60, "judge": 240, "determinism": 60, "reward_backward": 60}
    budgets |= {"best_of_n": 120, "train_steps": 120}
    return Plan(
        smoke=True,
        judge="tiny",
        musicgen="tiny",
        time_limit_s=900,
        budgets=budgets,
        clip_seconds=(1.0, 2.0),
        max_batch=8,
        simulate_oom_batch=4,
        compile_backend="eager",
        compile_max_batch=2,
        compile_min_s=0.0,
        min_seconds=0.0,
        min_reps=1,
        max_reps=1,
        threads=1,
        reward_seconds=1.0,
        best_of_seconds=0.5,
        gen_batch=8,
        train_seconds=0.3,
        train_batch=2,
        train_steps=1,
        det_clips=3,
        det_seconds=1.0,
        matmul_size=256,
    )


def _columns(spec: str) -> list[tuple[str, str, str]]:
    """Lines ``column title | row key | number format`` -> [(title, key, format)]."""
    rows = [tuple(part.strip() for part in line.split("|")) for line in spec.splitlines() if line.strip()]
    bad = [row for row in rows if len(row) != 3]
    if bad:
        raise ValueError(f"table columns must read 'title | key | format', got {bad}")
    return rows


_RUN = "clip s | clip_s | {{:g}}\n{0} | {0} | {{}}\nbatch | batch | {{}}\nstatus | status | {{}}\n"
_SPEED = """
ms / batch | ms_per_batch | {:.4g}
clips/s | clips_per_s | {:.4g}
x realtime | x_realtime | {:.4g}
peak GiB | peak_gib | {:.3g}
"""

# Markdown tables: section -> (title, [(column, row key, number format)]).
TABLES = {
    "environment": ("Environment", _columns("item | item | {}\nvalue | value | {}")),
    "judge": (
        "Judge throughput",
        _columns(
            _RUN.format("variant")
            + _SPEED
            + """
TFLOP/s | tflops | {:.3g}
% of bf16 peak | pct_of_bf16_peak | {:.1f}
% of matmul | pct_of_matmul | {:.1f}
first call s | first_call_s | {:.3g}
"""
        ),
    ),
    "judge_limits": (
        "Judge: largest batch",
        _columns("""
clip s | clip_s | {:g}
variant | variant | {}
largest batch run | largest_batch | {}
stopped by | stopped_by | {}
best clips/s | best_clips_per_s | {:.4g}
at batch | best_batch | {}
largest batch that fits (extrapolated) | fits_estimate | {}
"""),
    ),
    "determinism": (
        "Determinism",
        _columns("""
precision | precision | {}
clips | clips | {}
clip s | clip_s | {:g}
max diff across batch sizes, MI | batch_mi | {:.2e}
max diff across batch sizes, TA | batch_ta | {:.2e}
max diff across runs, MI | runs_mi | {:.2e}
max diff across runs, TA | runs_ta | {:.2e}
"""),
    ),
    "reward_backward": (
        "MusicReward forward + backward (gradient to the audio)",
        _columns(_RUN.format("precision") + _SPEED),
    ),
    "best_of_n": (
        "Best-of-N reranking (generation vs scoring)",
        _columns("""
mode | mode | {}
N | n | {}
clip s | clip_s | {:g}
generation s | generation_s | {:.3g}
scoring s | scoring_s | {:.3g}
scoring / generation % | scoring_pct | {:.1f}
total s | total_s | {:.3g}
frames generated | frames | {}
peak GiB | peak_gib | {:.3g}
"""),
    ),
    "train_steps": (
        "Training steps",
        _columns("""
step | step | {}
model | model | {}
batch | batch | {}
clip s | clip_s | {:g}
status | status | {}
s / step | s_per_step | {:.3g}
peak GiB | peak_gib | {:.3g}
first step s | first_step_s | {:.3g}
"""),
    ),
}


@dataclass
class Context:
    plan: Plan
    dev: Device
    clock: Clock
    results: Results
    dr: object  # the deramos_reward package
    cache: dict = field(default_factory=dict)
    peak_tflops: float | None = None
    matmul_tflops: float | None = None


# ---------------------------------------------------------------------------------------- models
def judge(ctx: Context):
    """The float32 judge on the device (built once, seed 0)."""
    if "judge" not in ctx.cache:
        dr = ctx.dr
        cfg = dr.DeRAMOSConfig.tiny() if ctx.plan.judge == "tiny" else dr.DeRAMOSConfig.paper_architecture()
        torch.manual_seed(0)
        ctx.cache["judge"] = dr.DeRAMOS(cfg).eval().to(ctx.dev.device)
    return ctx.cache["judge"]


def judge_bf16(ctx: Context):
    """The same judge with its encoders' weights in bf16 (heads float32)."""
    if "judge_bf16" not in ctx.cache:
        ctx.cache["judge_bf16"] = copy.deepcopy(judge(ctx)).set_encoder_dtype(torch.bfloat16)
    return ctx.cache["judge_bf16"]


def musicgen(ctx: Context):
    """(transformers MusicGen, processor) of musicgen-small's shape (or tiny) on the device."""
    if "musicgen" not in ctx.cache:
        from deramos_reward.integrations.musicgen.transformers import builders as tm

        build = tm.tiny_musicgen if ctx.plan.musicgen == "tiny" else tm.musicgen_small_architecture
        model, processor = build(seed=0)
        ctx.cache["musicgen"] = (model.to(ctx.dev.device), processor)
    return ctx.cache["musicgen"]


def autocast(ctx: Context, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(ctx.dev.device.type, dtype=torch.bfloat16)


def noise(ctx: Context, batch: int, samples: int, seed: int = 0, channels: int | None = None) -> torch.Tensor:
    """Random audio [batch, (channels,) samples] on the device, amplitude ~0.1 (never zeros)."""
    g = torch.Generator(device=ctx.dev.device).manual_seed(seed)
    shape = (batch, samples) if channels is None else (batch, channels, samples)
    return 0.1 * torch.randn(shape, generator=g, device=ctx.dev.device)


# ---------------------------------------------------------------------------------- measurement
def measure(ctx: Context, make_fn: Callable[[int], Callable[[], object]], batch: int) -> dict:
    """``fn = make_fn(batch)`` (inputs allocated), a warm-up call (its time: ``first_call_s``) and timed
    calls -> status, median seconds, peak memory. Running out of memory anywhere in that is a result."""
    if ctx.plan.simulate_oom_batch is not None and batch >= ctx.plan.simulate_oom_batch:
        try:
            raise SimulatedOOM(f"simulated out of memory at batch {batch} (smoke run)")
        except SimulatedOOM as err:
            return {"status": "out of memory", "error": str(err), "simulated": True}
    try:
        ctx.dev.reset_peak()
        fn = make_fn(batch)
        first, _ = ctx.dev.call(fn)
        times = ctx.dev.repeat(fn, ctx.plan.min_seconds, ctx.plan.min_reps, ctx.plan.max_reps)
    except Exception as err:  # noqa: BLE001 - out-of-memory is a result, anything else is re-raised
        if not is_oom(err):
            raise
        message = str(err).splitlines()[0][:200]
        fn = None  # drop the failed call's inputs before freeing the cache
    else:
        return {
            "status": "ok",
            "seconds": median(times),
            "reps": len(times),
            "first_call_s": first,
            "peak_gib": ctx.dev.peak_gib(),
            "spent_s": first + sum(times),
        }
    ctx.dev.clear()
    return {"status": "out of memory", "error": message}


def throughput_row(m: dict, batch: int, seconds: float, flops: dict | None, ctx: Context) -> dict:
    """Per-batch timing -> clips/s, x realtime, TFLOP/s and shares of the peaks."""
    row = {
        "batch": batch,
        "status": m["status"],
        "peak_gib": m.get("peak_gib"),
        "first_call_s": m.get("first_call_s"),
    }
    if m["status"] != "ok":
        row["error"] = m.get("error")
        if m.get("simulated"):
            row["simulated"] = True  # the smoke plan's stand-in for running out of memory
        return row
    clips_per_s = batch / m["seconds"]
    row |= {
        "ms_per_batch": 1e3 * m["seconds"],
        "clips_per_s": clips_per_s,
        "x_realtime": clips_per_s * seconds,
    }
    if flops:
        tflops = (flops["per_clip"] * batch + flops["per_batch"]) / m["seconds"] / 1e12
        row["tflops"] = tflops
        row["pct_of_bf16_peak"] = 100 * tflops / ctx.peak_tflops if ctx.peak_tflops else None
        row["pct_of_matmul"] = 100 * tflops / ctx.matmul_tflops if ctx.matmul_tflops else None
    return row


def ladder(ctx: Context, section: str, make_fn, seconds: float, flops, fields: dict, batches) -> dict:
    """Measure ``make_fn(batch)`` for growing batches until out of memory, the budget or the list's end.

    Returns ``{largest_batch, stopped_by, best_batch, best_clips_per_s, fits_estimate}``.
    """
    ok: list[dict] = []
    stopped, cost, last = "batch cap", None, None
    share = fields.pop("budget_end")
    for batch in batches:
        left = share - time.monotonic()
        if cost is not None and cost * batch / last > left:
            stopped = "time budget"
            break
        m = measure(ctx, make_fn, batch)
        row = fields | throughput_row(m, batch, seconds, flops, ctx)
        ctx.results.add_row(section, row)
        status = f"{row['status']} (simulated)" if row.get("simulated") else row["status"]
        print(
            f"  {section} {fields} batch {batch}: {status} {row.get('clips_per_s', 0):.3g} clips/s",
            flush=True,
        )
        if m["status"] != "ok":
            stopped = m["status"]
            break
        ok.append(row)
        cost, last = m["spent_s"], batch
    best = max(ok, key=lambda r: r["clips_per_s"], default={})
    return {
        "largest_batch": ok[-1]["batch"] if ok else 0,
        "stopped_by": stopped,
        "best_batch": best.get("batch"),
        "best_clips_per_s": best.get("clips_per_s"),
        "fits_estimate": fits_estimate(ctx, ok),
    }


def fits_estimate(ctx: Context, rows: list[dict]) -> int | None:
    """Largest batch whose peak memory fits in 95 % of the GPU, from the last two batches' peaks."""
    total = ctx.dev.total_gib()
    if total is None or len(rows) < 2 or rows[-1]["peak_gib"] is None:
        return None
    (b1, p1), (b2, p2) = [(r["batch"], r["peak_gib"]) for r in rows[-2:]]
    per_clip = (p2 - p1) / (b2 - b1)
    if per_clip <= 0:
        return None
    return int((0.95 * total - (p2 - per_clip * b2)) // per_clip)


def powers_of_two(cap: int) -> list[int]:
    return [2**i for i in range(int(math.log2(cap)) + 1)]


# ------------------------------------------------------------------------------------- sections
def environment(ctx: Context) -> None:
    """Versions, GPU, precision flags and the measured bf16 matrix-product ceiling."""
    dev = ctx.dev
    info = {"device": str(dev.device), "python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("torch", "torchaudio", "transformers", "muq", "peft", "accelerate", "datasets", "numpy"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    spec = importlib.util.find_spec("transformers")
    info["transformers from"] = str(Path(spec.origin).parent.parent) if spec and spec.origin else "-"
    info["cuda"] = torch.version.cuda
    info["float32 matmul precision"] = torch.get_float32_matmul_precision()
    info["cudnn allow_tf32 / benchmark"] = (
        f"{torch.backends.cudnn.allow_tf32} / {torch.backends.cudnn.benchmark}"
    )
    if dev.cuda:
        props = torch.cuda.get_device_properties(dev.device)
        info |= {
            "gpu": props.name,
            "compute capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory GiB": round(props.total_memory / 2**30, 1),
            "cudnn": torch.backends.cudnn.version(),
        }
        ctx.peak_tflops = next((peak for key, peak in PEAK_BF16_TFLOPS if key in props.name), None)
    info["datasheet dense bf16 peak TFLOP/s"] = ctx.peak_tflops
    ctx.matmul_tflops = matmul_ceiling(ctx)
    info["measured matmul TFLOP/s"] = round(ctx.matmul_tflops, 1)
    info["git commit"] = git_commit()
    for item, value in info.items():
        ctx.results.section("environment")["rows"].append({"item": item, "value": value})
    ctx.results.doc["meta"] |= {
        "gpu": info.get("gpu", "none (CPU)"),
        "torch": info["torch"],
        "bf16 peak TFLOP/s (datasheet)": ctx.peak_tflops,
        "matmul TFLOP/s (measured)": info["measured matmul TFLOP/s"],
    }
    ctx.results.save()


def matmul_ceiling(ctx: Context) -> float:
    """TFLOP/s of a square bf16 matrix product on random data (float32 on the CPU), median of 10."""
    n = ctx.plan.matmul_size
    dtype = torch.bfloat16 if ctx.dev.cuda else torch.float32
    a = torch.randn(n, n, device=ctx.dev.device, dtype=dtype)
    b = torch.randn(n, n, device=ctx.dev.device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = [ctx.dev.call(lambda: a @ b)[0] for _ in range(10)]
    return 2 * n**3 / median(times) / 1e12


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def count_flops(ctx: Context, seconds: float) -> dict[str, float]:
    """FLOPs of one eager float32 judge forward on one clip, split into per clip (audio encoder,
    heads) and per batch (the shared prompt's text encoding): see FLOP_METHOD."""
    from torch.utils.flop_counter import FlopCounterMode

    model = judge(ctx)
    audio = noise(ctx, 1, int(seconds * model.sample_rate))
    model.window_batch_size = 1
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(audio, [PROMPT])
    total = float(counter.get_total_flops())
    text = sum(
        float(sum(ops.values()))
        for name, ops in counter.get_flop_counts().items()
        if name.endswith(".text_encoder")
    )
    return {"per_clip": total - text, "per_batch": text}


def judge_variants(ctx: Context) -> list[tuple[str, Callable, bool]]:
    """(name, model factory, bf16 autocast) for each judge variant."""

    def compiled():
        from deramos_reward.acceleration import compile_judge

        if "judge_compiled" not in ctx.cache:
            model = copy.deepcopy(judge_bf16(ctx))
            ctx.cache["judge_compiled"] = compile_judge(model, backend=ctx.plan.compile_backend)
        return ctx.cache["judge_compiled"]

    return [
        ("float32", lambda: judge(ctx), False),
        ("bf16 autocast", lambda: judge(ctx), True),
        ("bf16 weights", lambda: judge_bf16(ctx), False),
        ("compiled (bf16 weights)", compiled, False),
    ]


def judge_throughput(ctx: Context) -> None:
    plan = ctx.plan
    variants = judge_variants(ctx)
    flops = {s: count_flops(ctx, s) for s in plan.clip_seconds}
    ctx.results.update("judge", flops={str(s): f for s, f in flops.items()}, flop_method=FLOP_METHOD)
    # eager variants for every clip length first, compiled ones last (compiling may overrun its share)
    todo = [(s, v) for eager in (True, False) for s in plan.clip_seconds for v in variants
            if v[0].startswith("compiled") != eager]  # fmt: skip
    weight = [2.0 if v[0].startswith("compiled") else 1.0 for _, v in todo]  # of the remaining time
    best_bf16: dict[float, int] = {}
    for k, (seconds, (name, factory, amp)) in enumerate(todo):
        compiled = name.startswith("compiled")
        end = time.monotonic() + ctx.clock.left() * weight[k] / sum(weight[k:])
        if compiled and ctx.clock.left() < plan.compile_min_s:
            summary = {"largest_batch": 0, "stopped_by": "time budget (compile needs more)"}
        else:
            try:
                summary = judge_ladder(
                    ctx, name, factory, amp, seconds, flops[seconds], end, compiled, best_bf16
                )
            except Exception as err:  # noqa: BLE001 - one variant failing must not stop the others
                traceback.print_exc()
                summary = {"largest_batch": 0, "stopped_by": f"error: {type(err).__name__}: {str(err)[:200]}"}
        if name == "bf16 weights":
            best_bf16[seconds] = summary.get("best_batch") or 1
        ctx.results.add_row("judge_limits", {"clip_s": seconds, "variant": name} | summary)


def judge_ladder(ctx, name, factory, amp, seconds, flops, end, compiled, best_bf16) -> dict:
    model = factory()
    samples = int(seconds * model.sample_rate)
    if compiled:  # one batch size: each new shape compiles again
        batches = [min(best_bf16.get(seconds, 1), ctx.plan.compile_max_batch)]
    else:
        batches = powers_of_two(ctx.plan.max_batch)

    def make_fn(batch: int):
        audio = noise(ctx, batch, samples, seed=batch)
        prompts = [PROMPT] * batch
        model.window_batch_size = batch  # one encoder pass per call

        def fn():
            with torch.inference_mode(), autocast(ctx, amp):
                return model(audio, prompts).mi

        return fn

    fields = {"clip_s": seconds, "variant": name, "budget_end": end}
    return ladder(ctx, "judge", make_fn, seconds, flops, fields, batches)


def determinism(ctx: Context) -> None:
    """Largest |score difference| across batch sizes and across two identical runs."""
    plan = ctx.plan
    base = judge(ctx)
    clips = noise(ctx, plan.det_clips, int(plan.det_seconds * base.sample_rate), seed=1234)
    prompts = [f"{PROMPT} ({i})" for i in range(plan.det_clips)]
    setups = [
        ("float32", lambda: base, False),
        ("bf16 autocast", lambda: base, True),
        ("bf16 weights", lambda: judge_bf16(ctx), False),
    ]
    for precision, factory, amp in setups:
        model = factory()

        def scores(rows: slice, model=model, amp=amp) -> torch.Tensor:
            model.window_batch_size = plan.det_clips
            with torch.inference_mode(), autocast(ctx, amp):
                out = model(clips[rows], prompts[rows])
            return torch.stack([out.mi, out.ta], -1).double().cpu()

        all_at_once = scores(slice(None))
        again = scores(slice(None))
        one_by_one = torch.cat([scores(slice(i, i + 1)) for i in range(plan.det_clips)])
        batch_diff = (all_at_once - one_by_one).abs().amax(0).tolist()
        run_diff = (all_at_once - again).abs().amax(0).tolist()
        row = {
            "precision": precision,
            "clips": plan.det_clips,
            "clip_s": plan.det_seconds,
            "batch_mi": batch_diff[0],
            "batch_ta": batch_diff[1],
            "runs_mi": run_diff[0],
            "runs_ta": run_diff[1],
        }
        ctx.results.add_row("determinism", row)
        print(f"  determinism {precision}: batch {batch_diff}, runs {run_diff}", flush=True)


def reward_backward(ctx: Context) -> None:
    """``MusicReward`` forward + backward to 32 kHz audio, float32 and bf16 autocast."""
    dr, plan = ctx.dr, ctx.plan
    model = judge(ctx)
    rate = 32_000
    samples = int(plan.reward_seconds * rate)
    for k, (precision, amp) in enumerate((("float32", False), ("bf16 autocast", True))):
        end = time.monotonic() + ctx.clock.left() / (2 - k)

        def make_fn(batch: int, amp=amp):
            reward = dr.MusicReward(model, chunk_size=batch)
            model.window_batch_size = batch
            audio = noise(ctx, batch, samples, seed=batch, channels=1).requires_grad_(True)
            prompts = [PROMPT] * batch

            def fn():
                with autocast(ctx, amp):
                    r = reward(audio, rate, prompts)
                (grad,) = torch.autograd.grad(r.sum(), audio)
                return grad

            return fn

        fields = {"clip_s": plan.reward_seconds, "precision": precision, "budget_end": end}
        ladder(
            ctx, "reward_backward", make_fn, plan.reward_seconds, None, fields, powers_of_two(plan.max_batch)
        )


class SyncStopwatch:
    """Wall seconds spent inside a wrapped callable, the device synchronised around each call."""

    def __init__(self, dev: Device):
        self.dev, self.seconds = dev, 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            spent, result = self.dev.call(lambda: fn(*args, **kwargs))
            self.seconds += spent
            return result

        return timed


def best_of_n(ctx: Context) -> None:
    """Generation vs scoring time of best-of-N (plain N = 1, 4, 8, 16; progressive at N = 8)."""
    from deramos_reward.integrations import best_of_n, musicgen_backend, progressive_best_of_n

    dr, plan = ctx.dr, ctx.plan
    model, processor = musicgen(ctx)
    reward = dr.MusicReward(judge(ctx), chunk_size=plan.gen_batch)
    judge(ctx).window_batch_size = plan.gen_batch
    gen, score = SyncStopwatch(ctx.dev), SyncStopwatch(ctx.dev)
    model.generate, reward.evaluate = gen.wrap(model.generate), score.wrap(reward.evaluate)
    common = dict(duration=plan.best_of_seconds, max_batch=plan.gen_batch)
    runs = [("plain", n) for n in plan.best_of_ns] + [("progressive", plan.progressive_n)]
    try:
        best_of_n(model, [PROMPT], 1, reward, processor=processor, seed=0, **common)  # warm-up
        for mode, n in runs:
            if ctx.clock.left() <= 0:
                ctx.results.add_row(
                    "best_of_n",
                    {"mode": mode, "n": n, "clip_s": plan.best_of_seconds, "frames": "skipped: time budget"},
                )
                continue
            gen.seconds = score.seconds = 0.0
            ctx.dev.reset_peak()
            fn = best_of_n if mode == "plain" else progressive_best_of_n
            total, res = ctx.dev.call(
                lambda fn=fn, n=n: fn(model, [PROMPT], n, reward, processor=processor, seed=1, **common)
            )
            frames = res.stats.get(
                "generated_frames", n * musicgen_backend(model, processor).frames_for(plan.best_of_seconds)
            )
            row = {
                "mode": mode,
                "n": n,
                "clip_s": plan.best_of_seconds,
                "generation_s": gen.seconds,
                "scoring_s": score.seconds,
                "scoring_pct": 100 * score.seconds / gen.seconds,
                "total_s": total,
                "frames": frames,
                "peak_gib": ctx.dev.peak_gib(),
            }
            ctx.results.add_row("best_of_n", row)
            print(
                f"  best-of-N {mode} N={n}: generation {gen.seconds:.3g} s, scoring {score.seconds:.3g} s",
                flush=True,
            )
    finally:
        del model.generate  # back to the class's method (train_steps uses the model next)


# Training steps: (label, factory). A factory takes (ctx, policy, max_steps) and returns a trainer
# with .train() and .policy; the first call gets the plain model.
def dpo_trainer(ctx: Context, policy, max_steps: int):
    from deramos_reward.integrations import musicgen_backend
    from deramos_reward.integrations.dpo import MusicDPOTrainer
    from deramos_reward.integrations.training.dpo.config import MusicDPOConfig

    plan = ctx.plan
    model, processor = musicgen(ctx)
    k, card = model.decoder.num_codebooks, model.config.decoder.vocab_size
    frames = musicgen_backend(model, processor).frames_for(plan.train_seconds)
    count = plan.train_batch * max_steps
    g = torch.Generator().manual_seed(max_steps)
    codes = torch.randint(0, card, (count, 2, k, frames), generator=g)
    pairs = build_pairs([f"{PROMPT} ({i})" for i in range(count)], codes, torch.tensor([[1.0, 0.0]] * count))
    config = MusicDPOConfig(
        per_device_train_batch_size=plan.train_batch, max_steps=max_steps, logging_steps=1
    )
    return MusicDPOTrainer(policy, pairs, config, processor=processor)


def rl_trainer(ctx: Context, policy, max_steps: int):
    """GRPO: one prompt x ``train_batch`` samples per step, scored by the paper-size judge."""
    import deramos_reward as dr
    from deramos_reward.integrations.rl import MusicRLConfig, MusicRLTrainer

    plan = ctx.plan
    _, processor = musicgen(ctx)
    reward = dr.MusicReward(judge(ctx), chunk_size=plan.gen_batch)
    config = MusicRLConfig(
        num_generations=plan.train_batch,
        prompts_per_step=1,
        duration=plan.train_seconds,
        max_steps=max_steps,
        logging_steps=1,
    )
    return MusicRLTrainer(policy, reward, [PROMPT], config, processor=processor)


TRAINERS = [("DPO (LoRA r=8)", dpo_trainer), ("RL: GRPO (LoRA r=8)", rl_trainer)]


def train_steps(ctx: Context) -> None:
    """Per entry of TRAINERS: one warm-up step, then ``train_steps`` timed steps on the warmed policy."""
    plan = ctx.plan
    model, _ = musicgen(ctx)
    name = "musicgen-small shape" if plan.musicgen == "small" else "tiny MusicGen"
    for label, factory in TRAINERS:
        if label != TRAINERS[0][0]:  # a fresh model: the previous trainer's adapter sits in this one
            ctx.cache.pop("musicgen", None)
            model, _ = musicgen(ctx)
        row = {"step": label, "model": name, "batch": plan.train_batch, "clip_s": plan.train_seconds}
        try:
            first, warm = ctx.dev.call(lambda factory=factory, model=model: _trained(factory(ctx, model, 1)))
            ctx.dev.reset_peak()
            policy = warm.policy
            spent, _ = ctx.dev.call(
                lambda factory=factory, policy=policy: _trained(factory(ctx, policy, plan.train_steps))
            )
            row |= {
                "status": "ok",
                "s_per_step": spent / plan.train_steps,
                "peak_gib": ctx.dev.peak_gib(),
                "first_step_s": first,
            }
        except Exception as err:  # noqa: BLE001 - recorded, next entry runs
            row["status"] = (
                "out of memory" if is_oom(err) else f"error: {type(err).__name__}: {str(err)[:200]}"
            )
            traceback.print_exc()
        ctx.results.add_row("train_steps", row)
        print(f"  {label}: {row['status']} {row.get('s_per_step', 0):.3g} s/step", flush=True)


def _trained(trainer):
    trainer.train()
    return trainer


@dataclass
class Section:
    name: str
    run: Callable[[Context], None]
    min_s: float = 10.0  # kept free for this section while earlier ones run


SECTIONS = [
    Section("environment", environment),
    Section("judge", judge_throughput, 60),
    Section("determinism", determinism),
    Section("reward_backward", reward_backward),
    Section("best_of_n", best_of_n, 30),
    Section("train_steps", train_steps, 20),
]


def run_sections(ctx: Context, names: list[str]) -> None:
    chosen = [s for s in SECTIONS if s.name in names]
    for i, sec in enumerate(chosen):
        reserve = sum(s.min_s for s in chosen[i + 1 :])
        ctx.clock.begin_section(ctx.plan.budgets[sec.name], reserve)
        if ctx.clock.left() <= 0:
            ctx.results.update(sec.name, status="skipped: time budget")
            continue
        print(f"[{ctx.clock.elapsed():6.1f} s] {sec.name} (budget {ctx.clock.left():.0f} s)", flush=True)
        ctx.results.update(sec.name, status="running")
        start = time.monotonic()
        try:
            sec.run(ctx)
            status = "done" if ctx.clock.left() > 0 else "done (time budget reached)"
        except Exception as err:  # noqa: BLE001 - a failed section is recorded; the next one runs
            traceback.print_exc()
            status = f"error: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        ctx.results.update(sec.name, status=status, seconds=time.monotonic() - start)
        ctx.dev.clear()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the same code paths, fast")
    p.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="output folder")
    p.add_argument("--device", help="default: cuda (cpu with --smoke)")
    p.add_argument("--sections", nargs="+", choices=[s.name for s in SECTIONS], help="run only these")
    p.add_argument("--time-limit", type=float, help="overall seconds (default 465; smoke 900)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = smoke_plan() if args.smoke else full_plan()
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU is visible; run with --smoke (tiny, CPU) or --device cpu", file=sys.stderr)
        return 2
    if args.time_limit is not None:
        plan.time_limit_s = args.time_limit
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    dr = import_project()
    meta = {
        "command": " ".join(shlex.quote(a) for a in ["benchmarks/gpu_check.sh", *(argv or sys.argv[1:])]),
        "smoke": plan.smoke,
        **(
            {"simulated": f"out of memory from batch {plan.simulate_oom_batch} on (smoke run; not measured)"}
            if plan.simulate_oom_batch is not None
            else {}
        ),
        "judge": plan.judge,
        "musicgen": plan.musicgen,
        "device": device,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "time limit s": plan.time_limit_s,
        "flop_method": FLOP_METHOD,
    }
    results = Results(args.out, meta, TABLES)
    clock = Clock(plan.time_limit_s - (time.monotonic() - START))
    ctx = Context(plan=plan, dev=Device(device), clock=clock, results=results, dr=dr)
    results.save()
    run_sections(ctx, args.sections or [s.name for s in SECTIONS])
    results.doc["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results.doc["meta"]["wall s"] = round(time.monotonic() - START, 1)
    results.save()
    print(results.markdown())
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
