"""Property tests (hypothesis) over ``dr.score``, ``DeRAMOS.forward`` and ``MusicReward``.

Every generated case is classified *before* the call: a valid input must give finite scores in
[1, 5] (rewards: finite, with finite gradients); an invalid one must raise ValueError/TypeError
whose message names one of the problems the case carries. Never a crash, hang or NaN.

The profile is fixed (``derandomize=True``, a fixed ``max_examples``, no deadline), so CI runs the
same cases every time. ``CASES`` counts the cases tried; run with ``-s`` to see the total.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deramos_reward as dr
from deramos_reward.frontend import to_clips
from deramos_reward.reward import MusicReward
from deramos_reward.validation import MAX_ABS_SAMPLE

CASES: Counter[str] = Counter()


def fuzz(n: int):
    """The fuzz profile: ``n`` deterministic examples, no deadline, no example database."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).eval()


@pytest.fixture(scope="module")
def reward_fn():
    torch.manual_seed(0)  # its own scorer: MusicReward freezes the model it is given in place
    return MusicReward(dr.DeRAMOS(dr.DeRAMOSConfig.tiny()))


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_case_count():
    """One intra-op thread: the tiny model's ops are too small to gain from more, and on a busy
    CI runner OpenMP barriers between descheduled threads make each call up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    print(f"\nfuzz cases tried: {sum(CASES.values())} {dict(CASES)}")


# ---- what a case is made of ----------------------------------------------------------------
STANDARD_RATES = [
    8_000,
    11_025,
    16_000,
    22_050,
    24_000,
    32_000,
    44_100,
    48_000,
    88_200,
    96_000,
    176_400,
    192_000,
]
ODD_RATES = [8_001, 12_347, 99_991, 191_999]  # coprime with the model rate: approximated ratio
BAD_RATES = [7_999, 192_001, 0, -24_000, 24_000.5, float("nan"), float("inf")]
KINDS = ["silence", "noise", "full_scale_noise", "clipped", "dc", "sine", "impulse", "subnormal", "nyquist"]
DTYPES = ["float16", "bfloat16", "float32", "float64", "int16", "int32", "uint8"]
PROMPTS = [
    "calm piano",
    "🎸🔥 heavy riff 🤘🏽 with 👨‍👩‍👧 family emoji",
    "安静的钢琴曲，带有雨声",
    "موسيقى هادئة مع عود",  # Arabic (RTL)
    "שיר ערש שקט",  # Hebrew (RTL)
    "mixed \u202eRTL override\u202c and e\u0301\u0301\u0301 combining marks",
    "\u200b\u200d zero-width joiners",
    "tab\tnew\nline\rcarriage",
    "\x00 nul byte",
    "x" * 600,  # far over the 128-token limit
    "日本語の長いプロンプト、" * 40,
]
EMPTY_PROMPTS = ["", " ", "\n\t ", "\u3000\u2003"]  # ideographic / em spaces are whitespace too


def make_wave(kind: str, shape: tuple[int, ...], rate: int, seed: int) -> np.ndarray:
    """Synthetic float64 audio of ``shape`` (last axis time), nominally within [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = shape[-1]
    t = np.arange(n) / rate
    if kind == "silence":
        return np.zeros(shape)
    if kind == "noise":
        return 0.1 * rng.standard_normal(shape)
    if kind == "full_scale_noise":
        return rng.uniform(-1.0, 1.0, shape)
    if kind == "clipped":  # hard clipping: square-ish, most samples at +-1
        return np.clip(5.0 * rng.standard_normal(shape), -1.0, 1.0)
    if kind == "dc":
        return np.full(shape, rng.choice([-1.0, -0.5, 0.5, 1.0])) + 0.001 * rng.standard_normal(shape)
    if kind == "sine":
        return 0.8 * np.broadcast_to(np.sin(2 * np.pi * rng.uniform(20, rate / 2) * t), shape).copy()
    if kind == "impulse":
        x = np.zeros(shape)
        x[..., rng.integers(n)] = 1.0
        return x
    if kind == "subnormal":
        return 1e-40 * rng.standard_normal(shape)  # float32 subnormals, zero in float16
    if kind == "nyquist":
        return np.broadcast_to((-1.0) ** np.arange(n), shape).copy()
    raise AssertionError(kind)


def cast(x: np.ndarray, dtype: str, container: str) -> np.ndarray | torch.Tensor:
    """float64 audio -> ``dtype`` (PCM for integers) as numpy or torch."""
    if dtype == "int16":
        y = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    elif dtype == "int32":
        y = np.round(np.clip(x, -1, 1) * 2147483647).astype(np.int32)
    elif dtype == "uint8":
        y = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
    elif dtype == "bfloat16":
        return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    else:
        with np.errstate(over="ignore"):
            y = x.astype(dtype)
    return torch.from_numpy(y) if container == "torch" else y


@dataclass
class Case:
    audio: object
    prompts: object
    rate: object
    n_clips: int
    problems: dict[str, str] = field(default_factory=dict)  # problem -> regex its error must match


def corrupt(x: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    x = np.array(x, dtype=np.float64)
    if how == "loud":  # PCM-scale floats: finite but far beyond full scale
        return x * 1e5 + 2e4
    flat = x.reshape(-1)
    flat[rng.integers(flat.size)] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[how]
    return x


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (hypothesis favours boundary integers, so not integers == 0)."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def score_cases(draw) -> Case:
    """One ``dr.score`` call: mostly valid inputs, with rarer invalid rates, values and prompts."""
    problems: dict[str, str] = {}
    if draw(rarely(8)):
        rate = draw(st.sampled_from(BAD_RATES))
        problems["rate"] = r"sample_rate|whole number|between 8000 and 192000"
    else:
        rate = draw(st.sampled_from(STANDARD_RATES + ODD_RATES))
    n_rate = rate if "rate" not in problems else 24_000
    layout = draw(st.sampled_from(["list", "batch"]))
    n_clips = draw(st.integers(1, 3))
    channels = draw(st.integers(0, 8))  # 0: no channel axis
    dtype = draw(st.sampled_from(DTYPES))
    container = draw(st.sampled_from(["numpy", "torch"]))
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    longest = 3 * n_rate if n_rate <= 48_000 else n_rate  # up to 3 s (1 s above 48 kHz)
    length_st = st.integers(1, 64) | st.integers(65, 4_096) | st.integers(4_097, longest)

    def shape(length: int) -> tuple[int, ...]:
        return (channels, length) if channels else (length,)

    if layout == "batch":
        clips = [make_wave(kind, (n_clips, *shape(draw(length_st))), n_rate, seed)]
    else:
        clips = [make_wave(kind, shape(draw(length_st)), n_rate, seed + i) for i in range(n_clips)]
        if channels and any(c.shape[0] > c.shape[1] for c in clips):
            problems["layout"] = r"channels-first"
    corruption = draw(st.sampled_from([None] * 12 + ["nan", "inf", "-inf", "loud"]))
    if corruption is not None:
        target = int(rng.integers(len(clips)))
        clips[target] = corrupt(clips[target], corruption, rng)
        if dtype.startswith(("float", "bfloat")):
            # float16 overflows the loud case to inf, so either message is right
            problems["values"] = r"NaN or Inf|samples up to"
        # integer PCM clips NaN/Inf/loud values into range on the cast: still a valid input
    with np.errstate(invalid="ignore"):
        cast_clips = [cast(c, dtype, container) for c in clips]
    audio = cast_clips[0] if layout == "batch" else cast_clips

    prompt_st = st.sampled_from(PROMPTS) | st.text(min_size=1, max_size=300)
    prompts = draw(st.lists(prompt_st, min_size=n_clips, max_size=n_clips))
    if draw(rarely(5)):
        prompts[draw(st.integers(0, n_clips - 1))] = draw(st.sampled_from(EMPTY_PROMPTS))
    if any(not p.strip() for p in prompts):
        problems["prompt"] = r"is empty"
    if draw(rarely(10)):  # occasionally the wrong number of prompts
        prompts = prompts + ["one prompt too many"]
        problems["count"] = r"audio clips but \d+ texts"
    return Case(audio, prompts, rate, n_clips, problems)


def assert_scores(rows: list[dict[str, float]], n: int) -> None:
    assert len(rows) == n
    for row in rows:
        assert set(row) == {"mi", "ta"}
        for v in row.values():
            assert math.isfinite(v) and 1.0 <= v <= 5.0, rows


def assert_clear_error(err: BaseException, problems: dict[str, str]) -> None:
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
    assert problems, f"a valid input was refused: {type(err).__name__}: {err}"
    assert any(re.search(p, str(err)) for p in problems.values()), (str(err), problems)


# ---- dr.score --------------------------------------------------------------------------------
@fuzz(400)
@given(case=score_cases())
def test_score_gives_scores_in_range_or_a_clear_error(model, case):
    CASES["score (invalid)" if case.problems else "score (valid)"] += 1
    try:
        rows = dr.score(model, case.audio, case.prompts, sample_rate=case.rate, batch_size=2)
    except Exception as err:  # noqa: BLE001 - the property is about which exceptions escape
        assert_clear_error(err, case.problems)
        return
    assert not case.problems, f"accepted an invalid input: {case.problems}"
    assert_scores(rows, case.n_clips)


@fuzz(60)
@given(
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from(STANDARD_RATES),
    channels=st.integers(1, 8),
    length=st.integers(8, 8_000),  # at least as many samples as channels (channels-first)
    kind=st.sampled_from(KINDS),
)
def test_half_and_pcm_inputs_match_their_float32_values(model, seed, rate, channels, length, kind):
    """float16/bfloat16 go through the front-end in float32 (no half arithmetic on CPU); int16
    and offset-binary uint8 PCM are scaled exactly. Checked on the front-end's clips (the tiny
    random model is too flat for score differences to show) and on the scores."""
    CASES["dtype equivalence"] += 1
    x = make_wave(kind, (channels, length), rate, seed)
    half = x.astype(np.float16)
    bf16 = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    u8 = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
    items = [half, bf16, pcm, u8]
    refs = [
        half.astype(np.float32),
        bf16.float(),
        pcm / np.float32(32768),
        (u8.astype(np.float32) - 128) / 128,
    ]
    got = to_clips(items, rate, model.sample_rate).waves
    want = to_clips(refs, rate, model.sample_rate).waves
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, atol=1e-7, rtol=0)
    prompts = ["a"] * len(items)
    for g, r in zip(
        dr.score(model, items, prompts, sample_rate=rate), dr.score(model, refs, prompts, sample_rate=rate)
    ):
        assert g["mi"] == pytest.approx(r["mi"], abs=1e-6) and g["ta"] == pytest.approx(r["ta"], abs=1e-6)


@fuzz(60)
@given(
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from(STANDARD_RATES + ODD_RATES),
    n_clips=st.integers(1, 3),
    channels=st.integers(1, 8),
    length=st.integers(8, 12_000),  # at least as many samples as channels (channels-first)
    kind=st.sampled_from(KINDS),
)
def test_batched_and_per_clip_inputs_agree(model, seed, rate, n_clips, channels, length, kind):
    """A [B, C, T] tensor scores like the list of its [C, T] clips (and channel order is irrelevant)."""
    CASES["batch/list equivalence"] += 1
    x = make_wave(kind, (n_clips, channels, length), rate, seed).astype(np.float32)
    prompts = [f"clip {i}" for i in range(n_clips)]
    batched = dr.score(model, torch.from_numpy(x), prompts, sample_rate=rate)
    as_list = dr.score(model, [c[::-1].copy() for c in x], prompts, sample_rate=rate, batch_size=1)
    for b, a in zip(batched, as_list):
        assert b["mi"] == pytest.approx(a["mi"], abs=1e-5) and b["ta"] == pytest.approx(a["ta"], abs=1e-5)


LONG = "a slow ambient drone with distant bells and soft rain " * 6  # >> 128 tokens


@fuzz(80)
@given(
    head=st.sampled_from(PROMPTS[:9]) | st.text(min_size=1, max_size=40),
    tail=st.text(max_size=200),
)
def test_prompts_over_the_token_limit_are_truncated(model, head, tail):
    """Any prompt is scored; past the 128-token limit extra text changes nothing."""
    CASES["long prompts"] += 1
    clip = make_wave("noise", (4_000,), 16_000, 0).astype(np.float32)
    base = head + " " + LONG
    ids = model.text_encoder.tokenize([base, base + tail])["input_ids"]
    assert ids.shape[1] == model.text_encoder.max_tokens  # truncated, not an error
    rows = dr.score(model, [clip, clip], [base, base + tail], sample_rate=16_000)
    assert_scores(rows, 2)
    assert rows[0] == rows[1]


def test_ten_minutes_of_pcm_at_8khz(model):
    """The longest case: 10 min of stereo int16 at 8 kHz (40 windows of 30 s at 24 kHz)."""
    CASES["ten minutes"] += 1
    rate = 8_000
    x = make_wave("full_scale_noise", (2, 600 * rate), rate, 7) * 0.3
    x[:, : 120 * rate] = 0.0  # two silent minutes, then noise
    pcm = np.round(x * 32767).astype(np.int16)
    rows = dr.score(model, [pcm], ["field recording, long"], sample_rate=rate)
    assert_scores(rows, 1)


# ---- DeRAMOS.forward -------------------------------------------------------------------------
@fuzz(150)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([torch.float16, torch.float32, torch.float64]),
    n_clips=st.integers(1, 3),
    length=st.integers(1, 64) | st.integers(65, 48_000),
    kind=st.sampled_from(KINDS),
    trim=st.booleans(),
    prompt=st.sampled_from(PROMPTS) | st.text(min_size=1, max_size=200).filter(str.strip),
)
def test_forward_outputs_are_finite_and_padding_is_ignored(
    model, seed, dtype, n_clips, length, kind, trim, prompt
):
    CASES["forward"] += 1
    rng = np.random.default_rng(seed)
    audio = torch.from_numpy(make_wave(kind, (n_clips, length), 24_000, seed)).to(dtype)
    lengths = [int(rng.integers(1, length + 1)) for _ in range(n_clips)] if trim else [length] * n_clips
    texts = [prompt] * n_clips
    with torch.inference_mode():
        out = model(audio, texts, audio_lengths=lengths if trim else None)
        ref = model([a[:n] for a, n in zip(audio, lengths)], texts)
    n_bins = model.config.n_bins
    assert out.mi.shape == out.ta.shape == (n_clips,)
    assert out.mi_logits.shape == out.ta_logits.shape == (n_clips, n_bins)
    for f in ("mi", "ta", "mi_logits", "ta_logits", "audio_embedding", "text_embedding"):
        assert torch.isfinite(getattr(out, f)).all(), f
    assert ((out.mi >= 1) & (out.mi <= 5) & (out.ta >= 1) & (out.ta <= 5)).all()
    torch.testing.assert_close(out.mi, ref.mi, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.ta, ref.ta, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "audio,texts,lengths,error,match",
    [
        (torch.zeros(2, 100, dtype=torch.int16), ["a", "b"], None, TypeError, "floating tensor"),
        (torch.zeros(1, 2, 100), ["a"], None, ValueError, r"\[B, T\]"),
        (torch.zeros(2, 0), ["a", "b"], None, ValueError, "empty"),
        (torch.full((1, 100), float("nan")), ["a"], None, ValueError, "NaN or Inf"),
        (torch.full((1, 100), MAX_ABS_SAMPLE * 10), ["a"], None, ValueError, "samples up to"),
        (torch.zeros(2, 100), ["a"], None, ValueError, "2 audio clips but 1 texts"),
        (torch.zeros(2, 100), ["a", ""], None, ValueError, "empty"),
        (torch.zeros(2, 100), ["a", "b"], [0, 100], ValueError, r"audio_lengths\[0\]=0"),
        (torch.zeros(2, 100), ["a", "b"], [10, 101], ValueError, r"audio_lengths\[1\]=101"),
        (torch.zeros(2, 100), ["a", "b"], [10], ValueError, "audio_lengths has 1 entries"),
        ([np.zeros(100, np.float32)], ["a"], None, ValueError, "1-D tensor"),
        ([], [], None, ValueError, "no clips"),
    ],
)
def test_forward_rejects_bad_input_clearly(model, audio, texts, lengths, error, match):
    CASES["forward errors"] += 1
    with pytest.raises(error, match=match):
        model(audio, texts, audio_lengths=lengths)


# ---- MusicReward -----------------------------------------------------------------------------
@fuzz(120)
@given(
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from(STANDARD_RATES + ODD_RATES[:2]),
    dtype=st.sampled_from([torch.float16, torch.float32, torch.float64]),
    n_clips=st.integers(1, 3),
    channels=st.integers(0, 4),
    length=st.integers(1, 64) | st.integers(65, 24_000),
    kind=st.sampled_from(KINDS),
    prompt=st.sampled_from(PROMPTS) | st.text(min_size=1, max_size=150),
    empty_prompt=rarely(8),
    corruption=st.sampled_from([None] * 10 + ["nan", "inf", "loud"]),
)
def test_reward_and_its_gradient_are_finite_or_a_clear_error(
    reward_fn, seed, rate, dtype, n_clips, channels, length, kind, prompt, empty_prompt, corruption
):
    prompt = EMPTY_PROMPTS[seed % len(EMPTY_PROMPTS)] if empty_prompt else prompt
    shape = (n_clips, channels, length) if channels else (n_clips, length)
    x = make_wave(kind, shape, rate, seed)
    problems = {}
    if corruption is not None:
        x = corrupt(x, corruption, np.random.default_rng(seed))
        problems["values"] = r"NaN or Inf|samples up to"
    if not prompt.strip():
        problems["prompt"] = "is empty"
    CASES["reward (invalid)" if problems else "reward (valid)"] += 1
    audio = torch.from_numpy(x).to(dtype).requires_grad_(True)
    try:
        out = reward_fn.evaluate(audio, rate, prompt)
        out.reward.sum().backward()
    except Exception as err:  # noqa: BLE001
        assert_clear_error(err, problems)
        return
    assert not problems, f"accepted an invalid input: {problems}"
    assert out.reward.shape == (n_clips,) and torch.isfinite(out.reward).all()
    assert ((out.mi >= 1) & (out.mi <= 5) & (out.ta >= 1) & (out.ta <= 5)).all()
    torch.testing.assert_close(out.reward, 0.5 * out.mi + 0.5 * out.ta)  # default weights 0.5, 0.5
    assert audio.grad is not None and torch.isfinite(audio.grad).all()
