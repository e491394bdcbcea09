"""Corpus v3 ("holdout"): a second generator, written apart from ``rendered``, for cross-corpus tests.

The judge trained on one generator's clips is tested on another's: here the music, the
instruments, the artefacts and the prompt wording are all made by other code than in
``rendered`` (no SoundFont, no General MIDI), while the prompts still ask for things one hears.

Prompts ask for three heard attributes, e.g. "A quick tune in a minor key on the grand piano":

- instrument: piano, guitar, organ, strings, flute, each synthesised in numpy by its own method
  (piano: stiff-string partials with a hammer knock and a two-slope decay; guitar: a plucked
  string, Karplus-Strong comb filter; organ: drawbar harmonics with tremolo; strings: a detuned
  ensemble of band-limited sawtooths with a slow attack and vibrato; flute: a near-sine with breath
  noise and vibrato);
- tempo: slow (60-76 BPM), medium (92-112) or fast (132-160), drawn per clip; slow music also
  moves in longer notes;
- mode: major or minor. The tonic is drawn from G3-F#4 for both modes, so register and loudness
  say nothing about the mode: only the intervals do.
The music is a chord progression of the key (bass note + broken chord) under a melody that lands
on each chord's third, with a hi-hat tick on the beat.

Quality (MI): a per-clip severity ``s = 1 - q + noise`` (``q`` the system's designed quality)
drives artefacts none of the other generators makes: mains hum, wow and flutter (a wobbling
playback speed), bit crushing, aliasing (decimation without a filter), crackle and a muddy reverb.
Each system has two main artefacts; true MI is ``1 + 4 (1 - s)``.

Alignment (TA): each system plays each asked attribute wrongly with its own probability; true TA
is ``1 + 4 (0.85 k / 3 + 0.15 (1 - s))`` with ``k`` the attributes obeyed.

Prompts are assigned to systems at random: every system answers its own random draw of
``prompts_per_system`` prompts from a shared pool. The layout (MusicEval's), the labels (mean of
simulated integer ratings) and ``synthetic_meta.json`` are those of ``deramos_reward.data.synthetic``.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve, lfilter

from ..validation import check_positive_int
from .musiceval import MUSICEVAL_PREFIX
from .synthetic import (
    ClipInfo,
    SyntheticCorpus,
    SystemSpec,
    check_corpus_args,
    empty_corpus_dirs,
    listener_rating,
    split_names,
    write_corpus_tables,
)

INSTRUMENTS = ("piano", "guitar", "organ", "strings", "flute")
TEMPOS = {"slow": (60.0, 76.0), "medium": (92.0, 112.0), "fast": (132.0, 160.0)}
MODES = ("major", "minor")
ATTRIBUTES = ("instrument", "tempo", "mode")
CHOICES = {"instrument": INSTRUMENTS, "tempo": tuple(TEMPOS), "mode": MODES}
ARTEFACTS = ("hum", "wow", "bitcrush", "alias", "crackle", "reverb")

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Both modes move through the same scale degrees, so only the intervals tell them apart; none visits
# the relative key's tonic (vi in major, III in minor), which would blur the mode of a 3 s clip.
_PROGRESSIONS = dict.fromkeys(("major", "minor"), ((0, 3, 4, 0), (0, 5, 3, 0), (0, 3, 0, 4)))
_NOTES_PER_BEAT = {"slow": 1, "medium": 2, "fast": 2}
_WORDS = {
    "instrument": {
        "piano": ("piano", "grand piano"),
        "guitar": ("guitar", "nylon-string guitar"),
        "organ": ("organ", "electric organ"),
        "strings": ("strings", "string section"),
        "flute": ("flute", "solo flute"),
    },
    "tempo": {
        "slow": ("slow", "calm, slow", "gentle, slow"),
        "medium": ("medium-tempo", "moderate", "mid-tempo"),
        "fast": ("fast", "quick", "lively, fast"),
    },
    "mode": {
        "major": ("a major key", "a bright major key", "a happy major key"),
        "minor": ("a minor key", "a sad minor key", "a gloomy minor key"),
    },
}
_TEMPLATES = (
    "A {tempo} tune in {mode} on the {instrument}",
    "{Instrument} music, {tempo}, in {mode}",
    "{Tempo} piece for {instrument} written in {mode}",
)


def prompt_text(attrs: dict[str, str], variant: int = 0) -> str:
    """The prompt for ``{"instrument", "tempo", "mode"}`` in one of 18 wordings (``variant``)."""
    check_attributes(attrs)
    words = {
        "instrument": _WORDS["instrument"][attrs["instrument"]][variant % 2],
        "tempo": _WORDS["tempo"][attrs["tempo"]][(variant // 2) % 3],
        "mode": _WORDS["mode"][attrs["mode"]][(variant // 2) % 3],
    }
    text = _TEMPLATES[(variant // 6) % len(_TEMPLATES)]
    return text.format(**words, **{k.capitalize(): v[:1].upper() + v[1:] for k, v in words.items()})


def check_attributes(attrs: dict[str, str], name: str = "attrs") -> None:
    """Raise ValueError unless ``attrs`` maps each of ``ATTRIBUTES`` to one of its ``CHOICES``."""
    if not isinstance(attrs, dict) or set(attrs) != set(ATTRIBUTES):
        raise ValueError(f"{name} must map exactly {ATTRIBUTES} to values, got {attrs!r}")
    for key, allowed in CHOICES.items():
        if attrs[key] not in allowed:
            raise ValueError(f"{name}[{key!r}] must be one of {allowed}, got {attrs[key]!r}")


# ---- instruments -------------------------------------------------------------------------------
def _envelope(n: int, sr: int, attack: float, release: float, hold: int) -> np.ndarray:
    """Linear attack over ``attack`` s, flat until sample ``hold``, linear release over ``release`` s: [n]."""
    i = np.arange(n)
    up = np.minimum(1.0, i / max(1.0, attack * sr))
    down = np.clip(1.0 - (i - hold) / max(1.0, release * sr), 0.0, 1.0)
    return up * down


def _additive(f0: np.ndarray | float, amps: np.ndarray, ratios: np.ndarray, sr: int, n: int) -> np.ndarray:
    """Sum of partials ``amps[k] sin(2 pi ratios[k] phase)`` for an f0 (Hz, scalar or per-sample [n])."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(np.asarray(f0, dtype=float), (n,))) / sr
    keep = ratios * np.max(f0) < 0.45 * sr
    return (amps[keep, None] * np.sin(ratios[keep, None] * phase[None, :])).sum(axis=0)


def _piano(f0: float, n: int, hold: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    k = np.arange(1, 11, dtype=float)
    ratios = k * np.sqrt(1.0 + 4e-4 * k**2)  # a stiff string's stretched partials
    t = np.arange(n) / sr
    tone = np.zeros(n)
    for r, a in zip(ratios, k**-1.1):
        tone += (
            a * np.sin(2 * np.pi * r * f0 * t) * (0.6 * np.exp(-t * 3.0 * r**0.5) + 0.4 * np.exp(-t * 0.7))
        )
    knock = rng.standard_normal(n) * np.exp(-t / 0.004) * 0.3
    return (tone + knock) * _envelope(n, sr, 0.002, 0.08, hold)


def _guitar(f0: float, n: int, hold: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    # loop delay sr / f0 = L + 0.5 (the averaging filter) + frac (linear interpolation)
    period = max(2, int(sr / f0 - 0.5))
    frac = sr / f0 - 0.5 - period
    excitation = np.zeros(n)
    burst = rng.uniform(-1.0, 1.0, sr // 20)[: min(period, n)]  # as many draws whatever the pitch
    excitation[: burst.size] = np.convolve(burst, [0.5, 0.5], mode="same")  # a softer pluck
    a = np.zeros(period + 3)
    a[0] = 1.0
    a[period : period + 3] = -0.996 * 0.5 * np.array([1.0 - frac, 1.0, frac])
    return lfilter([1.0], a, excitation) * _envelope(n, sr, 0.0, 0.05, hold)


def _organ(f0: float, n: int, hold: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    ratios = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    amps = np.array([0.5, 1.0, 0.7, 0.45, 0.35, 0.2, 0.15])
    t = np.arange(n) / sr
    tremolo = 1.0 + 0.15 * np.sin(2 * np.pi * 6.2 * t + rng.uniform(0, 2 * np.pi))
    return _additive(f0, amps, ratios, sr, n) * tremolo * _envelope(n, sr, 0.006, 0.03, hold)


def _strings(f0: float, n: int, hold: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    k = np.arange(1, 25, dtype=float)
    amps = (1.0 / k) / (1.0 + (k * f0 / 2500.0) ** 2)  # a sawtooth, low-passed
    out = np.zeros(n)
    for cents in (-8.0, 0.0, 7.0):
        vibrato = 1.0 + 0.004 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
        out += _additive(f0 * 2 ** (cents / 1200) * vibrato, amps, k, sr, n)
    return out / 3.0 * _envelope(n, sr, 0.12, 0.15, hold)


def _flute(f0: float, n: int, hold: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    vibrato = 1.0 + 0.005 * np.sin(2 * np.pi * 5.0 * t) * np.minimum(1.0, t / 0.3)
    tone = _additive(f0 * vibrato, np.array([1.0, 0.3, 0.1, 0.04]), np.arange(1.0, 5.0), sr, n)
    breath = lfilter([1.0, -0.9], [1.0], rng.standard_normal(n)) * 0.06  # high-passed noise
    return (tone + breath) * _envelope(n, sr, 0.06, 0.08, hold)


_VOICES = {"piano": _piano, "guitar": _guitar, "organ": _organ, "strings": _strings, "flute": _flute}


def note(instrument: str, midi: float, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of ``instrument`` held ``seconds`` (plus its release or ring): [samples] float64."""
    f0 = 440.0 * 2 ** ((midi - 69.0) / 12.0)
    hold = int(seconds * sr)
    ring = 1.0 if instrument in ("piano", "guitar") else 0.2
    return _VOICES[instrument](f0, hold + int(ring * sr), hold, sr, rng)


# ---- music ---------------------------------------------------------------------------------------
def compose(attrs: dict[str, str], seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A clean clip of ``attrs`` (instrument, tempo, mode): [round(seconds * sr)] float64, RMS 0.1."""
    check_attributes(attrs)
    n = int(round(seconds * sr))
    beat = 60.0 / rng.uniform(*TEMPOS[attrs["tempo"]])
    per_beat = _NOTES_PER_BEAT[attrs["tempo"]]
    scale = np.array(_SCALES[attrs["mode"]])
    tonic = int(rng.integers(55, 67))  # G3..F#4 whatever the mode
    prog = _PROGRESSIONS[attrs["mode"]][int(rng.integers(len(_PROGRESSIONS[attrs["mode"]])))]
    out = np.zeros(n + 2 * sr)

    def pitch(degree: int) -> int:
        return tonic + 12 * (degree // 7) + int(scale[degree % 7])

    def add(midi: float, start: float, length: float, gain: float) -> None:
        tone = note(attrs["instrument"], midi, length, sr, rng)
        i0 = int(start * sr)
        out[i0 : i0 + tone.size] += gain * tone[: out.size - i0]

    start = float(rng.uniform(0.0, 0.1))
    beats = int(np.ceil((seconds - start) / beat))
    for b in range(beats):
        t, root = start + b * beat, prog[(b // 2) % len(prog)]
        chord = [pitch(root + j) for j in (0, 2, 4)]
        if b % 2 == 0:
            add(chord[0] - 12, t, 2 * beat * 0.95, 0.5)
        for i in range(per_beat):
            add(chord[(b * per_beat + i) % 3], t + i * beat / per_beat, beat / per_beat * 0.9, 0.35)
        third = root + 2 if b % 2 == 0 else root + int(rng.choice([0, 2, 4, 5]))
        add(pitch(third + 7), t, beat * 0.95, 0.6)  # the melody, an octave up
    tick = np.arange(int(0.03 * sr))
    hat = rng.standard_normal(tick.size) * np.exp(-tick / (0.008 * sr))
    hat = np.diff(hat, prepend=0.0)  # a bright click
    for b in range(beats):
        i0 = int((start + b * beat) * sr)
        out[i0 : i0 + hat.size] += 0.15 * hat[: out.size - i0]
    out = out[:n]
    return 0.1 * out / (np.sqrt(np.mean(out**2)) + 1e-9)


# ---- artefacts -------------------------------------------------------------------------------
def degrade(x: np.ndarray, sr: int, strength: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Hum, wow/flutter, muddy reverb, aliasing, bit crushing and crackle at strengths in [0, 1].

    x: [T] float -> [T] float64 with peak 0.9. The random draws do not depend on the strengths.
    """
    n = x.size
    t = np.arange(n) / sr
    wow_phase, flutter_phase = rng.uniform(0, 2 * np.pi, 2)
    tail = rng.standard_normal(int(1.5 * sr))
    clicks = rng.random(n)
    click_sign = rng.choice([-1.0, 1.0], n)
    s = strength
    if s["wow"] > 0:  # playback speed wobbles by up to 2.5 % (wow 0.8 Hz) and 0.6 % (flutter 9 Hz)
        drift = 0.025 * s["wow"] * np.sin(2 * np.pi * 0.8 * t + wow_phase) / (2 * np.pi * 0.8)
        drift += 0.006 * s["wow"] * np.sin(2 * np.pi * 9.0 * t + flutter_phase) / (2 * np.pi * 9.0)
        x = np.interp(np.clip(t + drift, 0, t[-1]), t, x)
    if s["reverb"] > 0.02:  # a dark, long room mixed in: the notes smear into each other
        decay = np.exp(-np.arange(tail.size) / sr * 6.9 / (0.4 + 2.0 * s["reverb"]))
        room = lfilter([0.2], [1.0, -0.8], tail * decay)
        wet = fftconvolve(x, room / (np.sqrt(np.sum(room**2)) + 1e-9))[:n]
        x = x + 1.5 * s["reverb"] * wet * np.sqrt(np.mean(x**2)) / (np.sqrt(np.mean(wet**2)) + 1e-9)
    x = x / (np.max(np.abs(x)) + 1e-9)
    factor = 1 + int(round(6 * s["alias"]))
    if factor > 1:  # sample-and-hold at sr / factor, no anti-alias filter
        x = np.repeat(x[::factor], factor)[:n]
    if s["bitcrush"] > 0.05:
        levels = 2.0 ** (15.0 - 12.0 * s["bitcrush"])
        x = np.round(x * levels) / levels
    x = x + 0.9 * click_sign * (clicks < 30.0 * s["crackle"] / sr)  # up to 30 clicks a second
    hum = sum(np.sin(2 * np.pi * 50.0 * h * t) / h for h in (1, 2, 3, 5))
    rms = np.sqrt(np.mean(x**2)) + 1e-9
    x = x + rms * 10 ** (-(40.0 - 36.0 * s["hum"]) / 20) * hum  # SNR 40 dB down to 4 dB
    return 0.9 * x / (np.max(np.abs(x)) + 1e-9)


def render_clip(
    attrs: dict[str, str],
    strength: dict[str, float] | None,
    seconds: float,
    sample_rate: int,
    seed: int | tuple[int, ...] = 0,
) -> np.ndarray:
    """One clip: [round(seconds * sample_rate)] float64, peak 0.9.

    Args:
        attrs: what is played, ``{"instrument", "tempo", "mode"}`` (see ``CHOICES``).
        strength: artefact strength in [0, 1] per kind in ``ARTEFACTS`` (None = clean). The same
            seed with other strengths plays the same music, damaged differently.
    """
    check_attributes(attrs)
    strength = dict.fromkeys(ARTEFACTS, 0.0) if strength is None else strength
    if set(strength) != set(ARTEFACTS) or not all(0.0 <= float(v) <= 1.0 for v in strength.values()):
        raise ValueError(f"strength must map each of {ARTEFACTS} to a value in [0, 1], got {strength!r}")
    music, damage = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return degrade(compose(attrs, seconds, sample_rate, music), sample_rate, strength, damage)


# ---- the corpus ----------------------------------------------------------------------------------
def _design(
    n_systems: int, n_prompts: int, rng: np.random.Generator
) -> tuple[dict[str, SystemSpec], dict[str, dict[str, str]], dict[str, str]]:
    """Systems (quality, mismatch rate, two main artefacts) and a prompt pool with balanced attributes."""
    qualities = np.linspace(0.95, 0.1, n_systems)[rng.permutation(n_systems)]
    mismatch = np.linspace(0.03, 0.6, n_systems)[rng.permutation(n_systems)]
    systems = {}
    for i in range(n_systems):
        main = set(rng.choice(ARTEFACTS, size=2, replace=False).tolist())
        weights = {a: 1.3 if a in main else 0.25 for a in ARTEFACTS}
        sid = f"S{i + 1:03d}"
        systems[sid] = SystemSpec(sid, float(qualities[i]), float(mismatch[i]), weights)
    columns = {
        a: np.resize(np.arange(len(v)), n_prompts)[rng.permutation(n_prompts)] for a, v in CHOICES.items()
    }
    attrs, texts = {}, {}
    for j in range(n_prompts):
        pid = f"P{j + 1:03d}"
        attrs[pid] = {a: CHOICES[a][int(columns[a][j])] for a in ATTRIBUTES}
        texts[pid] = prompt_text(attrs[pid], int(rng.integers(0, 18)))
    return systems, attrs, texts


def _clip(spec: SystemSpec, asked: dict[str, str], rng: np.random.Generator) -> tuple[dict, list, float]:
    """What a system plays for a prompt: (played attributes, wrong attributes, severity)."""
    severity = float(np.clip(1.0 - spec.quality + rng.normal(0.0, 0.05), 0.0, 1.0))
    played, wrong = dict(asked), []
    for attr in ATTRIBUTES:
        if rng.random() < spec.mismatch_rate:
            others = [v for v in CHOICES[attr] if v != asked[attr]]
            played[attr] = others[int(rng.integers(len(others)))]
            wrong.append(attr)
    return played, wrong, severity


def make_holdout_corpus(
    root: str | os.PathLike,
    n_systems: int = 8,
    n_prompts: int = 30,
    prompts_per_system: int = 12,
    clips_per_pair: int = 2,
    seconds: float = 3.0,
    sample_rate: int = 22_050,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
    raters: int = 5,
    rater_noise: float = 0.45,
    overwrite: bool = False,
) -> SyntheticCorpus:
    """Write a MusicEval-format corpus of this generator under ``root`` and return its design.

    Writes ``wav/<wav_id>.wav`` (mono PCM-16), ``prompt_info.txt`` (the prompts some system
    answered), ``sets/{train,dev,test}_mos_list.txt`` and ``synthetic_meta.json`` (with
    ``"generator": "holdout"``). Each system answers ``prompts_per_system`` prompts drawn at random
    from a pool of ``n_prompts``, ``clips_per_pair`` clips each; its clips are split with fractions
    ``splits``, so every split holds every system. The same arguments give the same corpus, byte for byte.
    """
    check_corpus_args(
        n_systems, n_prompts, clips_per_pair, seconds, sample_rate, splits, seed, raters, min_seconds=1.0
    )
    check_positive_int(prompts_per_system, "prompts_per_system")
    if prompts_per_system > n_prompts:
        raise ValueError(f"prompts_per_system ({prompts_per_system}) must not exceed n_prompts ({n_prompts})")
    root = os.path.abspath(os.fspath(root))
    wav_dir = empty_corpus_dirs(root, overwrite)
    design = np.random.default_rng([seed, 10])
    systems, attrs, texts = _design(n_systems, n_prompts, design)
    drawn = {
        sid: sorted(design.choice(n_prompts, prompts_per_system, replace=False).tolist()) for sid in systems
    }
    used = sorted({j for js in drawn.values() for j in js})
    corpus = SyntheticCorpus(
        root, sample_rate, systems, {f"P{j + 1:03d}": texts[f"P{j + 1:03d}"] for j in used}
    )
    for si, (sid, spec) in enumerate(systems.items()):
        pairs = [(f"P{j + 1:03d}", k) for j in drawn[sid] for k in range(clips_per_pair)]
        split_of = split_names(len(pairs), tuple(splits), np.random.default_rng([seed, 11, si]))
        for (pid, k), split in zip(pairs, split_of):
            rng = np.random.default_rng([seed, 12, si, int(pid[1:]), k])
            played, wrong, severity = _clip(spec, attrs[pid], rng)
            strength = {a: float(min(1.0, severity * w)) for a, w in spec.degradation_weights.items()}
            audio = render_clip(played, strength, seconds, sample_rate, (seed, 13, si, int(pid[1:]), k))
            wav_id = f"{MUSICEVAL_PREFIX}{sid}_{pid}" + (f"_c{k + 1}" if clips_per_pair > 1 else "")
            sf.write(os.path.join(wav_dir, wav_id + ".wav"), audio.astype(np.float32), sample_rate, "PCM_16")
            true_mi = 1.0 + 4.0 * (1.0 - severity)
            true_ta = 1.0 + 4.0 * (0.85 * (3 - len(wrong)) / 3 + 0.15 * (1.0 - severity))
            corpus.clips.append(
                ClipInfo(
                    wav_id, sid, pid, texts[pid], split, dict(attrs[pid]), played, wrong, severity,
                    true_mi, true_ta, listener_rating(true_mi, rng, raters, rater_noise),
                    listener_rating(true_ta, rng, raters, rater_noise),
                )
            )  # fmt: skip
    write_corpus_tables(corpus, "holdout")
    return corpus
