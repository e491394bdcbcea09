"""A synthetic MusicEval-format corpus with a known quality ordering (tests, demo, ablation).

Prompts name an instrument (timbre), a tempo (note rate and beat) and a mood (major scale in a
high register vs minor scale in a low one), e.g. "A slow piano piece with a dark mood".
Every system renders every prompt as music-like audio (a melody on the scale with per-instrument
harmonics and envelopes, over a kick drum on the beat), synthesized in numpy.

- Quality: each system has a designed quality ``q``; a clip's degradation severity is
  ``s = 1 - q`` plus a little per-clip jitter. Severity drives detuning, dropouts, clipping,
  band-limiting and noise (each weighted per system, so systems sound different), and the
  clip's true MI is ``1 + 4 (1 - s)``.
- Alignment: with a per-system probability a clip renders one or two of the prompt's attributes
  wrongly (another instrument/tempo/mood); true TA is ``1 + 4 (0.8 m + 0.2 (1 - s))`` with
  ``m = 1 - 0.5 * (number of wrong attributes)``.
- Labels: the mean of 5 simulated integer ratings (true score + rater noise, rounded, clipped to
  1-5), so they move in steps of 0.2 as in MusicEval.

System ids ``S001..`` are assigned in a random order, unrelated to quality, and file names
are ``audiomos2025-track1-S00x_P00y.wav``: nothing about quality is in a name.
``make_corpus`` also writes ``synthetic_meta.json`` (the designed truth) beside the corpus.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np
import soundfile as sf

from ..validation import check_non_negative_int, check_positive_int
from .musiceval import MUSICEVAL_PREFIX

INSTRUMENTS = ("piano", "organ", "guitar", "flute")
TEMPOS = ("slow", "medium", "fast")
MOODS = ("bright", "dark")
ATTRIBUTES = ("instrument", "tempo", "mood")
SPLIT_NAMES = ("train", "dev", "test")
DEGRADATIONS = ("detune", "dropout", "clipping", "bandlimit", "noise")

_BEATS_PER_SECOND = {"slow": 1.1, "medium": 2.0, "fast": 2.8}
_NOTES_PER_BEAT = {"slow": 1, "medium": 1, "fast": 2}
_SCALES = {"bright": (0, 2, 4, 5, 7, 9, 11), "dark": (0, 2, 3, 5, 7, 8, 10)}
_BASE_MIDI = {"bright": 67, "dark": 48}  # G4 major vs C3 minor
_TEMPLATES = (
    "A {tempo_word}-tempo {instrument} piece with a {mood} mood",
    "{Mood_words} {instrument} melody at a {tempo_word} tempo",
    "Solo {instrument} playing a {tempo_word} tune in a {key} key",
)
_TEMPO_WORDS = {"slow": "slow", "medium": "moderate", "fast": "fast"}
_MOOD_WORDS = {"bright": "Bright, happy", "dark": "Dark, melancholic"}
_KEYS = {"bright": "major", "dark": "minor"}


@dataclass
class SystemSpec:
    """A simulated generator: quality in [0, 1], prompt-mismatch rate, degradation weights."""

    system: str
    quality: float
    mismatch_rate: float
    degradation_weights: dict[str, float]


@dataclass
class ClipInfo:
    """Everything designed about one clip (what the labels were simulated from)."""

    wav_id: str
    system: str
    prompt_id: str
    prompt: str
    split: str
    asked: dict[str, str]
    rendered: dict[str, str]
    mismatched: list[str]
    severity: float
    true_mi: float
    true_ta: float
    mi: float
    ta: float


@dataclass
class SyntheticCorpus:
    """What ``make_corpus`` wrote: root folder, per-system design and per-clip truth."""

    root: str
    sample_rate: int
    systems: dict[str, SystemSpec]
    prompts: dict[str, str]
    clips: list[ClipInfo] = field(default_factory=list)

    def split(self, name: str) -> list[ClipInfo]:
        """Clips of one split, in the order of ``sets/{name}_mos_list.txt``."""
        return [c for c in self.clips if c.split == name]

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_text(instrument: str, tempo: str, mood: str, template: int = 0) -> str:
    """The prompt for one attribute triple, in one of three phrasings."""
    return _TEMPLATES[template % len(_TEMPLATES)].format(
        tempo=tempo,
        tempo_word=_TEMPO_WORDS[tempo],
        instrument=instrument,
        mood=mood,
        Mood_words=_MOOD_WORDS[mood],
        key=_KEYS[mood],
    )


def _partials(
    instrument: str, f0: float, t: np.ndarray, dur: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One note of ``instrument`` at ``f0`` Hz over times ``t`` [L] (seconds) -> [L]."""
    if instrument == "piano":
        amps, decay, attack = 1.0 / np.arange(1, 9) ** 1.3, 2.5 / max(dur, 0.2), 0.005
    elif instrument == "guitar":
        amps, decay, attack = 1.0 / np.arange(1, 9) ** 0.9, 7.0, 0.002
    elif instrument == "organ":
        amps, decay, attack = np.array([1.0, 0.9, 0.7, 0.55, 0.45, 0.3, 0.25, 0.2]), 0.0, 0.03
    else:  # flute
        amps, decay, attack = np.array([1.0, 0.22, 0.07, 0.02, 0, 0, 0, 0]), 0.0, 0.08
    k = np.arange(1, 9)[:, None]
    freq = f0 * k
    if instrument == "flute":  # frequency vibrato: f (1 + 0.006 sin(2 pi 5 t))
        phase = 2 * np.pi * freq * (t - 0.006 * np.cos(2 * np.pi * 5.0 * t) / (2 * np.pi * 5.0))
    else:
        phase = 2 * np.pi * freq * t
    keep = (freq < 0.45 * sample_rate).astype(float)
    env_k = np.exp(-t * decay * (1.0 + 0.35 * (k - 1)))
    wave = (amps[:, None] * keep * env_k * np.sin(phase)).sum(axis=0)
    env = np.minimum(1.0, t / attack) * np.clip((dur - t) / 0.03, 0.0, 1.0)
    if instrument == "flute":  # breath
        wave = wave + 0.04 * rng.standard_normal(t.size)
    return wave * env


def _melody(
    rendered: dict[str, str], n: int, sr: int, cents_std: float, rng: np.random.Generator
) -> np.ndarray:
    """A melody + kick drum for the rendered attributes: [n] samples."""
    tempo, mood, instrument = rendered["tempo"], rendered["mood"], rendered["instrument"]
    beat = 1.0 / _BEATS_PER_SECOND[tempo]
    note_len = beat / _NOTES_PER_BEAT[tempo]
    scale = np.array(_SCALES[mood])
    out = np.zeros(n)
    degree = int(rng.integers(0, 7))
    ring = 1.6 if instrument in ("piano", "guitar") else 1.0
    start = 0.0
    while start < n / sr:
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, 13))
        midi = _BASE_MIDI[mood] + 12 * (degree // 7) + scale[degree % 7]
        f0 = 440.0 * 2 ** ((midi - 69) / 12 + rng.normal(0.0, cents_std) / 1200)
        i0 = int(start * sr)
        dur = note_len * ring
        length = min(int(dur * sr), n - i0)
        t = np.arange(length) / sr
        out[i0 : i0 + length] += _partials(instrument, f0, t, dur, sr, rng)
        start += note_len
    out /= np.sqrt(np.mean(out**2)) + 1e-9
    # kick drum on every beat
    kick_t = np.arange(int(0.15 * sr)) / sr
    # frequency 45 + 60 exp(-t / 30 ms) Hz: a falling sweep, decaying in 50 ms
    sweep = 45 * kick_t + 60 * 0.03 * (1 - np.exp(-kick_t / 0.03))
    kick = np.sin(2 * np.pi * sweep) * np.exp(-kick_t / 0.05)
    for b in np.arange(0.0, n / sr, beat):
        i0 = int(b * sr)
        m = min(kick.size, n - i0)
        out[i0 : i0 + m] += 1.2 * kick[:m]
    return out


def _degrade(x: np.ndarray, sr: int, strength: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Dropouts, clipping, band-limiting and noise at per-kind strengths in [0, 1]."""
    n = x.size
    x = x / (np.max(np.abs(x)) + 1e-9)
    for _ in range(int(round(5 * strength["dropout"]))):
        length = int(rng.uniform(0.06, 0.25) * sr)
        i0 = int(rng.integers(0, max(1, n - length)))
        x[i0 : i0 + length] = 0.0
    drive = 1.0 + 10.0 * strength["clipping"]
    x = np.clip(x * drive, -1.0, 1.0)
    cutoff = (sr / 2) * np.exp(-3.0 * strength["bandlimit"])
    if strength["bandlimit"] > 0:
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(n, 1.0 / sr)
        x = np.fft.irfft(spec / (1.0 + (freqs / cutoff) ** 8), n)
    rms = np.sqrt(np.mean(x**2)) + 1e-9
    x = x + 0.8 * strength["noise"] * rms * rng.standard_normal(n)
    return 0.9 * x / (np.max(np.abs(x)) + 1e-9)


def render_clip(
    rendered: dict[str, str],
    strength: dict[str, float] | None,
    seconds: float,
    sample_rate: int,
    seed: int | tuple[int, ...] = 0,
) -> np.ndarray:
    """Synthesize one clip: [round(seconds * sample_rate)] float64, peak 0.9.

    Args:
        rendered: ``{"instrument", "tempo", "mood"}`` actually played.
        strength: degradation strength in [0, 1] per kind in ``DEGRADATIONS`` (None = clean).
        seed: the melody and the degradations' randomness; the same seed with different
            strengths gives the same melody, degraded differently.
    """
    for attr, values in (("instrument", INSTRUMENTS), ("tempo", TEMPOS), ("mood", MOODS)):
        if rendered.get(attr) not in values:
            raise ValueError(f"rendered[{attr!r}] must be one of {values}, got {rendered.get(attr)!r}")
    strength = dict.fromkeys(DEGRADATIONS, 0.0) if strength is None else strength
    if set(strength) != set(DEGRADATIONS) or not all(0.0 <= v <= 1.0 for v in strength.values()):
        raise ValueError(f"strength must map each of {DEGRADATIONS} to a value in [0, 1], got {strength!r}")
    n = int(round(seconds * sample_rate))
    melody_rng, damage_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    audio = _melody(rendered, n, sample_rate, 70.0 * strength["detune"], melody_rng)
    return _degrade(audio, sample_rate, strength, damage_rng)


def listener_rating(true: float, rng: np.random.Generator, raters: int, noise: float) -> float:
    """The MOS ``raters`` simulated listeners give a clip whose true score is ``true``: each vote is
    ``true`` plus Gaussian noise of std ``noise``, rounded to 1-5; the mean is rounded to 0.1."""
    votes = np.clip(np.rint(true + rng.normal(0.0, noise, raters)), 1, 5)
    return round(float(votes.mean()), 1)


def check_corpus_args(
    n_systems, n_prompts, clips_per_pair, seconds, sample_rate, splits, seed, raters, min_seconds=0.5
) -> None:
    """The arguments of a corpus maker (``make_corpus``, ``make_rendered_corpus``), or ValueError/TypeError."""
    for name, value in (
        ("n_systems", n_systems),
        ("n_prompts", n_prompts),
        ("clips_per_pair", clips_per_pair),
        ("raters", raters),
    ):
        check_positive_int(value, name)
    if n_systems < 2:
        raise ValueError(f"n_systems must be >= 2 so systems can differ in quality, got {n_systems}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not min_seconds <= seconds <= 60:
        raise ValueError(f"seconds must be between {min_seconds:g} and 60, got {seconds!r}")
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int)
        or not 8_000 <= sample_rate <= 48_000
    ):
        raise ValueError(f"sample_rate must be an int between 8000 and 48000 Hz, got {sample_rate!r}")
    splits = tuple(splits)
    if len(splits) != 3 or any(f < 0 for f in splits) or abs(sum(splits) - 1.0) > 1e-6 or splits[0] <= 0:
        raise ValueError(
            f"splits must be 3 fractions (train, dev, test) >= 0 summing to 1, train > 0; got {splits!r}"
        )
    check_non_negative_int(seed, "seed")


def split_names(n: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[str]:
    """A split name for each of one system's ``n`` clips, in the random order ``rng`` draws: rounded
    ``fractions`` (train, dev, test), with dev and test at least 1 when asked for and ``n >= 3``."""
    dev = int(round(fractions[1] * n))
    test = int(round(fractions[2] * n))
    if n >= 3:
        dev = max(dev, 1) if fractions[1] > 0 else 0
        test = max(test, 1) if fractions[2] > 0 else 0
    dev, test = min(dev, n - 1), min(test, max(0, n - 1 - dev))
    names = np.repeat(np.array(SPLIT_NAMES), [n - dev - test, dev, test])
    return [str(name) for name in names[rng.permutation(n)]]


def make_corpus(
    root: str | os.PathLike,
    n_systems: int = 6,
    n_prompts: int = 24,
    clips_per_pair: int = 1,
    seconds: float = 4.0,
    sample_rate: int = 16_000,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
    raters: int = 5,
    rater_noise: float = 0.45,
    overwrite: bool = False,
) -> SyntheticCorpus:
    """Write a synthetic MusicEval-format corpus under ``root`` and return its design.

    Writes ``wav/<wav_id>.wav`` (mono PCM-16 at ``sample_rate``), ``prompt_info.txt``,
    ``sets/{train,dev,test}_mos_list.txt`` (``wavname,MI,TA``; a split with fraction 0 gets no file) and ``synthetic_meta.json``.
    Clips are split per system with fractions ``splits`` (train, dev, test), so every split holds
    every system. Wav ids are ``audiomos2025-track1-S###_P###`` (with ``_c<k>`` appended when
    ``clips_per_pair > 1``). The same ``seed`` gives the same corpus, byte for byte.

    Args:
        n_systems: simulated generators; qualities are evenly spaced in [0.1, 0.95] and assigned to
            system ids in random order. n_prompts: prompts (24 covers every attribute triple once).
        raters, rater_noise: simulated listeners per clip and the std of their noise (score units).
        overwrite: replace an existing corpus at ``root``; otherwise an existing ``wav/`` or
            ``sets/`` there is an error.
    """
    check_corpus_args(n_systems, n_prompts, clips_per_pair, seconds, sample_rate, splits, seed, raters)
    root = os.path.abspath(os.fspath(root))
    wav_dir = empty_corpus_dirs(root, overwrite)
    systems, prompts, attrs = _design(seed, n_systems, n_prompts)
    corpus = SyntheticCorpus(root, sample_rate, systems, prompts)
    listeners = _Listeners(raters, rater_noise)
    for si, spec in enumerate(systems.values()):
        pairs = [(pid, k) for pid in prompts for k in range(clips_per_pair)]
        split_of = split_names(len(pairs), tuple(splits), np.random.default_rng([seed, 1, si]))
        for (pid, k), split in zip(pairs, split_of):
            wav_id = f"{MUSICEVAL_PREFIX}{spec.system}_{pid}" + (f"_c{k + 1}" if clips_per_pair > 1 else "")
            clip, audio = _simulate_clip(
                spec,
                attrs[pid],
                np.random.default_rng([seed, 2, si, int(pid[1:]), k]),
                listeners,
                seconds,
                sample_rate,
                (seed, 3, si, int(pid[1:]), k),
                wav_id=wav_id,
                system=spec.system,
                prompt_id=pid,
                prompt=prompts[pid],
                split=split,
            )
            sf.write(
                os.path.join(wav_dir, wav_id + ".wav"),
                audio.astype(np.float32),
                sample_rate,
                subtype="PCM_16",
            )
            corpus.clips.append(clip)
    write_corpus_tables(corpus)
    return corpus


def empty_corpus_dirs(root: str, overwrite: bool) -> str:
    """Create ``root/wav`` and ``root/sets``, replacing existing ones only when ``overwrite``; -> ``root/wav``."""
    wav_dir, sets_dir = os.path.join(root, "wav"), os.path.join(root, "sets")
    if os.path.exists(wav_dir) or os.path.exists(sets_dir):
        if not overwrite:
            raise ValueError(
                f"{root!r} already holds a corpus (wav/ or sets/); pass overwrite=True to replace it"
            )
        shutil.rmtree(wav_dir, ignore_errors=True)
        shutil.rmtree(sets_dir, ignore_errors=True)
    os.makedirs(wav_dir)
    os.makedirs(sets_dir)
    return wav_dir


def _design(
    seed: int, n_systems: int, n_prompts: int
) -> tuple[dict[str, SystemSpec], dict[str, str], dict[str, dict[str, str]]]:
    """The systems (quality, mismatch rate, degradation weights) and the prompts with their attributes."""
    design = np.random.default_rng([seed, 0])
    qualities = np.linspace(0.95, 0.1, n_systems)[design.permutation(n_systems)]
    mismatch = np.linspace(0.05, 0.5, n_systems)[design.permutation(n_systems)]
    systems = {}
    for i in range(n_systems):
        sid = f"S{i + 1:03d}"
        weights = {k: float(w) for k, w in zip(DEGRADATIONS, design.uniform(0.5, 1.5, len(DEGRADATIONS)))}
        systems[sid] = SystemSpec(sid, float(qualities[i]), float(mismatch[i]), weights)
    combos = [(ins, tem, moo) for ins in INSTRUMENTS for tem in TEMPOS for moo in MOODS]
    order = design.permutation(len(combos))
    prompts, attrs = {}, {}
    for j in range(n_prompts):
        ins, tem, moo = combos[order[j % len(combos)]]
        pid = f"P{j + 1:03d}"
        attrs[pid] = {"instrument": ins, "tempo": tem, "mood": moo}
        prompts[pid] = prompt_text(ins, tem, moo, template=j)
    return systems, prompts, attrs


@dataclass
class _Listeners:
    """Simulated raters: ``count`` per clip, each off by Gaussian noise of std ``noise`` (score units)."""

    count: int
    noise: float


def _simulate_clip(
    spec: SystemSpec,
    asked: dict[str, str],
    rng: np.random.Generator,
    listeners: _Listeners,
    seconds: float,
    sample_rate: int,
    audio_seed: tuple[int, ...],
    **identity: str,
) -> tuple[ClipInfo, np.ndarray]:
    """System ``spec``'s rendering of the attributes ``asked`` -> (the clip's truth and labels, audio [T]).

    ``rng`` draws the severity, the mismatched attributes and the ratings; ``audio_seed`` the
    melody. ``identity``: the clip's ``wav_id``, ``system``, ``prompt_id``, ``prompt``, ``split``.
    """
    severity = float(np.clip(1.0 - spec.quality + rng.normal(0.0, 0.04), 0.0, 1.0))
    rendered = dict(asked)
    wrong: list[str] = []
    if rng.random() < spec.mismatch_rate:
        count = 1 if rng.random() < 0.75 else 2
        chosen = set(rng.choice(ATTRIBUTES, size=count, replace=False).tolist())
        wrong = [a for a in ATTRIBUTES if a in chosen]
        choices = {"instrument": INSTRUMENTS, "tempo": TEMPOS, "mood": MOODS}
        for attr in wrong:
            others = [v for v in choices[attr] if v != asked[attr]]
            rendered[attr] = others[int(rng.integers(0, len(others)))]
    strength = {d: float(min(1.0, severity * w)) for d, w in spec.degradation_weights.items()}
    audio = render_clip(rendered, strength, seconds, sample_rate, seed=audio_seed)
    true_mi = 1.0 + 4.0 * (1.0 - severity)
    true_ta = 1.0 + 4.0 * (0.8 * (1.0 - 0.5 * len(wrong)) + 0.2 * (1.0 - severity))
    clip = ClipInfo(
        **identity,
        asked=dict(asked),
        rendered=rendered,
        mismatched=wrong,
        severity=severity,
        true_mi=true_mi,
        true_ta=true_ta,
        mi=listener_rating(true_mi, rng, listeners.count, listeners.noise),
        ta=listener_rating(true_ta, rng, listeners.count, listeners.noise),
    )
    return clip, audio


def write_corpus_tables(corpus: SyntheticCorpus, generator: str | None = None) -> None:
    """``prompt_info.txt``, ``sets/{split}_mos_list.txt`` (non-empty splits) and ``synthetic_meta.json``
    (the design, with ``generator`` named when given) under ``corpus.root``."""
    with open(os.path.join(corpus.root, "prompt_info.txt"), "w", encoding="utf-8") as f:
        f.write("id\ttext\n")
        f.writelines(f"{pid}\t{text}\n" for pid, text in corpus.prompts.items())
    for name in SPLIT_NAMES:
        if not corpus.split(name):
            continue
        with open(os.path.join(corpus.root, "sets", f"{name}_mos_list.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{c.wav_id}.wav,{c.mi:.1f},{c.ta:.1f}\n" for c in corpus.split(name))
    meta = corpus.to_dict() if generator is None else {"generator": generator, **corpus.to_dict()}
    with open(os.path.join(corpus.root, "synthetic_meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
