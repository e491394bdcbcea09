"""Corpus v2: General-MIDI music rendered with a real SoundFont, with designed MI and TA.

Prompts ask for four attributes, in varied wording, e.g. "A cheerful flute melody over a drum
groove at a brisk tempo":

- instrument: piano, guitar, organ, strings, flute (GM programs played from the SoundFont);
- tempo: slow, medium, fast (64 / 100 / 150 BPM, +-3 %);
- mood: happy (major key, higher register, louder) or sad (minor key, lower, softer);
- style: arpeggio (broken chords), chords (block chords over a bass note) or melody (a tune over
  a kick / snare / hi-hat groove).
The key's root, the chord progression, the tune and the dynamics vary per clip.

Quality (MI) comes from generation artefacts at a per-clip severity ``s = 1 - q + noise``
(``q`` the system's designed quality): codec-like band limiting with spectral holes, hiss,
clipping, wrong notes, timing jitter, dropouts and a loop that repeats. Each system has its own
mix of them; true MI is ``1 + 4 (1 - s)``.

Alignment (TA): each system renders each asked attribute wrongly with its own probability;
true TA is ``1 + 4 (0.9 k / 4 + 0.1 (1 - s))`` with ``k`` the number of attributes obeyed (listeners
judge alignment mostly, but not only, by content).

Labels are the mean of 5 simulated integer ratings (steps of 0.2) as in MusicEval; the layout,
the file names (``audiomos2025-track1-S###_P###[_c<k>].wav``) and ``synthetic_meta.json`` are those
of ``deramos_reward.data.synthetic`` (system ids are assigned in random order of quality).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import soundfile as sf

from .musiceval import MUSICEVAL_PREFIX
from .soundfont import Note, SoundFontRenderer
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

INSTRUMENTS = {"piano": 0, "guitar": 25, "organ": 19, "strings": 48, "flute": 73}
TEMPOS = {"slow": 64.0, "medium": 100.0, "fast": 150.0}
MOODS = ("happy", "sad")
STYLES = ("arpeggio", "chords", "melody")
ATTRIBUTES = ("instrument", "tempo", "mood", "style")
ARTEFACTS = ("codec", "noise", "clipping", "wrong_notes", "jitter", "dropout", "loop")
_SIGNAL_ARTEFACTS = ["codec", "noise", "clipping", "dropout"]
_MUSIC_ARTEFACTS = ["wrong_notes", "jitter", "loop"]
# the size `make demo` builds: 8 systems x 24 prompts x 4 clips of 3 s = 768 clips (544 / 112 / 112)
DEMO_CORPUS = dict(n_systems=8, n_prompts=24, clips_per_pair=4, seconds=3.0, sample_rate=24_000)
CHOICES = {"instrument": tuple(INSTRUMENTS), "tempo": tuple(TEMPOS), "mood": MOODS, "style": STYLES}

_SCALES = {"happy": (0, 2, 4, 5, 7, 9, 11), "sad": (0, 2, 3, 5, 7, 8, 10)}
_PROGRESSIONS = {"happy": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4)), "sad": ((0, 5, 2, 6), (0, 3, 6, 2))}
_ROOTS = {"happy": (62, 70), "sad": (45, 53)}  # key root range: D4-A#4 vs A2-E3
_VELOCITY = {"happy": 100, "sad": 62}
_NOTES_PER_BEAT = {"slow": 1, "medium": 2, "fast": 2}
_WORDS = {
    "tempo": {
        "slow": ("slow", "unhurried", "slow, relaxed"),
        "medium": ("moderate", "medium", "steady, walking"),
        "fast": ("fast", "brisk", "quick, lively"),
    },
    "mood": {
        "happy": ("happy", "cheerful", "bright, uplifting"),
        "sad": ("sad", "melancholic", "dark, gloomy"),
    },
    "style": {
        "arpeggio": ("arpeggios", "broken-chord arpeggios", "flowing arpeggiated chords"),
        "chords": ("strummed chords", "block chords", "sustained chord progression"),
        "melody": ("melody over a drum groove", "tune with drums", "lead melody with a beat"),
    },
}
_TEMPLATES = (
    "A {mood} {instrument} piece playing {style} at a {tempo} tempo",
    "{Tempo} {mood} {style} on {instrument}",
    "{Instrument} {style}, {mood} mood, {tempo} pace",
)


def prompt_text(attrs: dict[str, str], variant: int = 0) -> str:
    """The prompt for one attribute set (keys ``ATTRIBUTES``), in one of 9 wordings."""
    words = {a: _WORDS[a][attrs[a]][variant % 3] for a in ("tempo", "mood", "style")}
    words["instrument"] = attrs["instrument"]
    return _TEMPLATES[(variant // 3) % len(_TEMPLATES)].format(
        **words, **{k.capitalize(): v.capitalize() for k, v in words.items()}
    )


def check_attributes(attrs: dict[str, str], name: str = "attrs") -> None:
    """Raise ValueError unless ``attrs`` maps each of ``ATTRIBUTES`` to one of its ``CHOICES``."""
    if not isinstance(attrs, dict) or set(attrs) != set(ATTRIBUTES):
        raise ValueError(f"{name} must map exactly {ATTRIBUTES} to values, got {attrs!r}")
    for key, allowed in CHOICES.items():
        if attrs[key] not in allowed:
            raise ValueError(f"{name}[{key!r}] must be one of {allowed}, got {attrs[key]!r}")


# ---- composition ----------------------------------------------------------------------------
def _harmony(mood: str, beats: int, rng: np.random.Generator) -> tuple[int, np.ndarray, list[list[int]]]:
    """A random key of the mood's mode: (root MIDI key, scale [7], one triad per 2 beats)."""
    scale = np.array(_SCALES[mood])
    root = int(rng.integers(*_ROOTS[mood]))
    prog = _PROGRESSIONS[mood][int(rng.integers(len(_PROGRESSIONS[mood])))]
    chords = []
    for i in range((beats + 1) // 2):
        d = prog[i % len(prog)]
        chords.append([root + 12 * ((d + j) // 7) + int(scale[(d + j) % 7]) for j in (0, 2, 4)])
    return root, scale, chords


def compose(attrs: dict[str, str], seconds: float, rng: np.random.Generator) -> list[Note]:
    """The notes of one clean clip of ``attrs`` (validated by ``check_attributes``), ``seconds`` long."""
    beat = 60.0 / (TEMPOS[attrs["tempo"]] * rng.uniform(0.97, 1.03))
    beats = int(np.ceil(seconds / beat)) + 1
    root, scale, chords = _harmony(attrs["mood"], beats, rng)
    program = INSTRUMENTS[attrs["instrument"]]
    base = _VELOCITY[attrs["mood"]] + int(rng.integers(-8, 9))
    offset = float(rng.uniform(0.0, 0.15))

    def vel(accent: int = 0) -> int:
        return int(np.clip(base + accent + rng.integers(-6, 7), 20, 127))

    notes: list[Note] = []
    per_beat = _NOTES_PER_BEAT[attrs["tempo"]]  # slow music also moves in longer notes
    if attrs["style"] == "arpeggio":
        pattern = (0, 1, 2, 3, 2, 1)
        for i in range(per_beat * beats):
            chord = chords[i // (2 * per_beat)]
            key = [*chord, chord[0] + 12][pattern[i % 6]]
            start, length = offset + i * beat / per_beat, 1.5 * beat / per_beat
            notes.append(Note(start, length, key, vel(12 * (i % (2 * per_beat) == 0)), program))
    elif attrs["style"] == "chords":
        for b in range(beats):
            chord, t = chords[b // 2], offset + b * beat
            notes += [Note(t, beat * 0.9, k + 12, vel(12 * (b % 2 == 0)), program) for k in chord]
            if b % 2 == 0:
                notes.append(Note(t, beat * 1.9, chord[0] - 12, vel(12), program))
    else:  # a tune on the scale over a kick / snare / hi-hat groove
        degree, t = int(rng.integers(0, 7)), offset
        while t < seconds:
            step = beat / per_beat if rng.random() < 0.6 else 2 * beat / per_beat
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 1, 1, 2]), 0, 13))
            key = root + 12 + 12 * (degree // 7) + int(scale[degree % 7])
            notes.append(Note(t, step * 0.95, key, vel(), program))
            t += step
        for b in range(beats):
            t = offset + b * beat
            notes.append(Note(t, 0.1, 36 if b % 2 == 0 else 38, vel(12), None))
            notes += [Note(t + h * beat / 2, 0.05, 42, vel(-20 - 10 * h), None) for h in (0, 1)]
    return notes


# ---- artefacts --------------------------------------------------------------------------------
def perform(notes: Sequence[Note], strength: dict[str, float], rng: np.random.Generator) -> list[Note]:
    """Score-level artefacts: wrong notes (a semitone or a tritone off) and onset jitter.

    The random draws do not depend on the strengths: the same ``rng`` state with other strengths
    damages the same notes, more or less.
    """
    out = []
    for note in notes:
        wrong, shift, jitter = rng.random(), rng.choice([-1, 1, 6]), rng.normal()
        key = note.key
        if note.program is not None and wrong < 0.5 * strength["wrong_notes"]:
            key = int(np.clip(key + shift, 0, 127))
        start = max(0.0, note.start + 0.06 * strength["jitter"] * jitter)
        out.append(Note(start, note.duration, key, note.velocity, note.program))
    return out


def _codec(x: np.ndarray, sr: int, strength: float, frame: int = 1024) -> np.ndarray:
    """Low-bitrate-codec look-alike: low-pass at ``sr/2 (1 - 0.85 s)`` and holes where bins are weak.

    Frames of ``frame`` samples at 50 % overlap under a sqrt-Hann window on both sides (the
    product sums to 1, so strength 0 gives the input back); a bin weaker than ``s`` times its
    frame's mean magnitude is zeroed, as a codec starved of bits drops quiet partials.
    """
    hop = frame // 2
    n = x.size
    padded = np.pad(x, (hop, hop + (-n) % hop + hop))
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop] * window
    spec = np.fft.rfft(frames, axis=1)
    spec[:, np.fft.rfftfreq(frame, 1.0 / sr) > (sr / 2) * (1.0 - 0.85 * strength)] = 0.0
    mag = np.abs(spec)
    spec[mag < strength * mag.mean(axis=1, keepdims=True)] = 0.0
    out = np.zeros(padded.size)
    parts = np.fft.irfft(spec, frame, axis=1) * window
    for i, part in enumerate(parts):
        out[i * hop : i * hop + frame] += part
    return out[hop : hop + n]


def degrade(x: np.ndarray, sr: int, strength: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Audio-level artefacts at strengths in [0, 1]: a repeating loop, dropouts, codec, clipping, hiss.

    x: [T] float -> [T] float64 with peak 0.9. Draws do not depend on the strengths.
    """
    n = x.size
    x = x / (np.max(np.abs(x)) + 1e-9)
    loop_at, loop_len = rng.uniform(0.8, 1.0), rng.uniform(0.3, 0.8)
    gaps = [(rng.uniform(0.04, 0.2), rng.random()) for _ in range(4)]
    hiss = rng.standard_normal(n)
    if strength["loop"] > 0.1:  # the generator gets stuck: from `stop` on, the segment before it repeats
        stop = max(int((1.0 - 0.75 * strength["loop"]) * loop_at * n), min(n, int(0.15 * sr)))
        seg = x[max(0, stop - int(loop_len * sr)) : stop].copy()
        x[stop:] = np.resize(seg, n - stop)
    for length, where in gaps[: int(round(4 * strength["dropout"]))]:
        i0 = int(where * max(1, n - length * sr))
        x[i0 : i0 + int(length * sr)] = 0.0
    if strength["codec"] > 0.02:
        x = _codec(x, sr, strength["codec"])
    x = np.clip(x * (1.0 + 10.0 * strength["clipping"]) / (np.max(np.abs(x)) + 1e-9), -1.0, 1.0)
    rms = np.sqrt(np.mean(x**2)) + 1e-9
    x = x + rms * 10 ** (-(50.0 - 38.0 * strength["noise"]) / 20) * hiss  # SNR 50 dB down to 12 dB
    return 0.9 * x / (np.max(np.abs(x)) + 1e-9)


def render_clip(
    attrs: dict[str, str],
    strength: dict[str, float] | None,
    seconds: float,
    sample_rate: int,
    seed: int | tuple[int, ...] = 0,
    renderer: SoundFontRenderer | None = None,
) -> np.ndarray:
    """One rendered clip: [round(seconds * sample_rate)] float64, peak 0.9.

    Args:
        attrs: what is played, ``{"instrument", "tempo", "mood", "style"}`` (see ``CHOICES``).
        strength: artefact strength in [0, 1] per kind in ``ARTEFACTS`` (None = clean). The same
            seed with other strengths plays the same music, damaged differently.
        renderer: a ``SoundFontRenderer`` at ``sample_rate`` to reuse (built when None).
    """
    check_attributes(attrs)
    strength = dict.fromkeys(ARTEFACTS, 0.0) if strength is None else strength
    if set(strength) != set(ARTEFACTS) or not all(0.0 <= float(v) <= 1.0 for v in strength.values()):
        raise ValueError(f"strength must map each of {ARTEFACTS} to a value in [0, 1], got {strength!r}")
    renderer = renderer or SoundFontRenderer(sample_rate)
    if renderer.sample_rate != sample_rate:
        raise ValueError(f"renderer runs at {renderer.sample_rate} Hz, not sample_rate={sample_rate}")
    music, play, damage = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    notes = perform(compose(attrs, seconds, music), strength, play)
    return degrade(renderer.render(notes, seconds), sample_rate, strength, damage)


# ---- the corpus -------------------------------------------------------------------------------
def _design_systems(n: int, rng: np.random.Generator) -> dict[str, SystemSpec]:
    """Qualities in [0.1, 0.95] and per-attribute mismatch rates in [0.02, 0.7], in random orders.

    Each system has 3 main artefacts (weight 1.4): two that damage the signal (codec, noise,
    clipping, dropout) and one that damages the music (wrong notes, jitter, loop); the others leave
    weak traces (weight 0.3).
    """
    qualities = np.linspace(0.95, 0.1, n)[rng.permutation(n)]
    mismatch = np.linspace(0.02, 0.7, n)[rng.permutation(n)]
    systems = {}
    for i in range(n):
        main = {*rng.choice(_SIGNAL_ARTEFACTS, size=2, replace=False), rng.choice(_MUSIC_ARTEFACTS)}
        weights = {a: 1.4 if a in main else 0.3 for a in ARTEFACTS}
        sid = f"S{i + 1:03d}"
        systems[sid] = SystemSpec(sid, float(qualities[i]), float(mismatch[i]), weights)
    return systems


def _design_prompts(n: int, rng: np.random.Generator) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """n prompts whose attribute values are balanced (each value of each attribute ~equally often)."""
    columns = {}
    for attr, values in CHOICES.items():
        reps = np.resize(np.arange(len(values)), n)
        columns[attr] = [values[i] for i in reps[rng.permutation(n)]]
    attrs, texts = {}, {}
    for j in range(n):
        pid = f"P{j + 1:03d}"
        attrs[pid] = {a: columns[a][j] for a in ATTRIBUTES}
        texts[pid] = prompt_text(attrs[pid], int(rng.integers(0, 9)))
    return attrs, texts


def _clip(spec: SystemSpec, asked: dict[str, str], rng: np.random.Generator) -> tuple[dict, list, float]:
    """What a system plays for a prompt: (rendered attributes, wrong attributes, severity)."""
    severity = float(np.clip(1.0 - spec.quality + rng.normal(0.0, 0.05), 0.0, 1.0))
    rendered, wrong = dict(asked), []
    for attr in ATTRIBUTES:
        if rng.random() < spec.mismatch_rate:
            others = [v for v in CHOICES[attr] if v != asked[attr]]
            rendered[attr] = others[int(rng.integers(len(others)))]
            wrong.append(attr)
    return rendered, wrong, severity


def make_rendered_corpus(
    root: str | os.PathLike,
    n_systems: int = 8,
    n_prompts: int = 24,
    clips_per_pair: int = 2,
    seconds: float = 3.0,
    sample_rate: int = 24_000,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
    raters: int = 5,
    rater_noise: float = 0.45,
    overwrite: bool = False,
) -> SyntheticCorpus:
    """Render a MusicEval-format corpus under ``root`` and return its design (see the module doc).

    Writes ``wav/<wav_id>.wav`` (mono PCM-16), ``prompt_info.txt``, ``sets/{train,dev,test}_mos_list.txt``
    and ``synthetic_meta.json``. Clips are split per system with fractions ``splits``, so every
    split holds every system. The same arguments give the same corpus, byte for byte.

    Args:
        n_systems: simulated generators. n_prompts: prompts, attribute values balanced.
        clips_per_pair: clips per system and prompt (``_c<k>`` is appended to ids when > 1).
        raters, rater_noise: simulated listeners per clip and the std of their noise.
        overwrite: replace an existing corpus at ``root`` (otherwise an error).
    """
    check_corpus_args(
        n_systems, n_prompts, clips_per_pair, seconds, sample_rate, splits, seed, raters, min_seconds=1.0
    )
    root = os.path.abspath(os.fspath(root))
    renderer = SoundFontRenderer(sample_rate)  # fails early when the [demo] extra is missing
    wav_dir = empty_corpus_dirs(root, overwrite)
    design = np.random.default_rng([seed, 0])
    systems = _design_systems(n_systems, design)
    attrs, prompts = _design_prompts(n_prompts, design)
    corpus = SyntheticCorpus(root, sample_rate, systems, prompts)
    for si, (sid, spec) in enumerate(systems.items()):
        pairs = [(pid, k) for pid in prompts for k in range(clips_per_pair)]
        split_of = split_names(len(pairs), tuple(splits), np.random.default_rng([seed, 1, si]))
        for (pid, k), split in zip(pairs, split_of):
            rng = np.random.default_rng([seed, 2, si, int(pid[1:]), k])
            rendered, wrong, severity = _clip(spec, attrs[pid], rng)
            strength = {a: float(min(1.0, severity * w)) for a, w in spec.degradation_weights.items()}
            audio = render_clip(
                rendered, strength, seconds, sample_rate, (seed, 3, si, int(pid[1:]), k), renderer
            )
            wav_id = f"{MUSICEVAL_PREFIX}{sid}_{pid}" + (f"_c{k + 1}" if clips_per_pair > 1 else "")
            sf.write(os.path.join(wav_dir, wav_id + ".wav"), audio.astype(np.float32), sample_rate, "PCM_16")
            true_mi = 1.0 + 4.0 * (1.0 - severity)
            true_ta = 1.0 + 4.0 * (
                0.9 * (len(ATTRIBUTES) - len(wrong)) / len(ATTRIBUTES) + 0.1 * (1.0 - severity)
            )
            corpus.clips.append(
                ClipInfo(
                    wav_id, sid, pid, prompts[pid], split, dict(attrs[pid]), rendered, wrong, severity,
                    true_mi, true_ta, listener_rating(true_mi, rng, raters, rater_noise),
                    listener_rating(true_ta, rng, raters, rater_noise),
                )
            )  # fmt: skip
    write_corpus_tables(corpus, "rendered")
    return corpus
