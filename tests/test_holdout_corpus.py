"""Corpus v3 (holdout generator): each asked attribute is heard (key finding, beat counting, timbre),
artefacts grow with strength, prompts go to systems at random, MusicEval layout, determinism."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf
from scipy import signal, stats

from deramos_reward.data import load_musiceval
from deramos_reward.data.holdout import (
    ARTEFACTS,
    ATTRIBUTES,
    CHOICES,
    INSTRUMENTS,
    TEMPOS,
    make_holdout_corpus,
    prompt_text,
    render_clip,
)
from deramos_reward.data.synthetic import SPLIT_NAMES

RATE = 16_000


def clip(seed: int = 0, strength=None, seconds: float = 3.0, **attrs) -> np.ndarray:
    return render_clip(
        {"instrument": "flute", "tempo": "medium", "mode": "major", **attrs}, strength, seconds, RATE, seed
    )


def chroma(x: np.ndarray) -> np.ndarray:
    """Energy per pitch class [12] (C = 0) from 100-1500 Hz spectral magnitudes."""
    f, _, z = signal.stft(x, RATE, nperseg=4096)
    mag = np.abs(z).sum(axis=1)
    keep = (f > 100) & (f < 1500)
    pc = np.round(12 * np.log2(f[keep] / 440.0) + 9).astype(int) % 12
    return np.bincount(pc, weights=mag[keep] ** 2, minlength=12)


def beats_per_minute(x: np.ndarray) -> float:
    """Hi-hat clicks per minute: peaks of the > 6 kHz energy envelope (5 ms frames)."""
    high = signal.sosfilt(signal.butter(4, 6000, "highpass", fs=RATE, output="sos"), x)
    env = np.sqrt(np.mean(high[: high.size // 80 * 80].reshape(-1, 80) ** 2, axis=1))
    peaks, _ = signal.find_peaks(env, height=0.3 * env.max(), distance=int(0.25 / 0.005))
    return 60.0 * (len(peaks) - 1) / ((peaks[-1] - peaks[0]) * 0.005)


# ---- every asked attribute is heard ---------------------------------------------------------------
@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_minor_lowers_the_third_sixth_and_seventh_by_a_semitone(instrument):
    """Same seed, other mode: the same tonic, rhythm and degrees. The pitch classes that gain energy
    in minor lie each one semitone below one that loses energy (3 -> b3, 6 -> b6, 7 -> b7; every
    harmonic of a lowered note moves down a semitone too), and the tonic's energy stays."""
    for seed in range(2):
        major, minor = (chroma(clip(seed, instrument=instrument, mode=m)) for m in ("major", "minor"))
        d = minor / minor.sum() - major / major.sum()
        gained, lost = np.argsort(d)[-3:], np.argsort(d)[:3]
        assert sorted((gained + 1) % 12) == sorted(lost), (instrument, seed, d.round(3))
        assert d[gained].sum() > 0.04  # guitar: 0.07, the others more


@pytest.mark.parametrize("tempo", list(TEMPOS))
def test_the_beat_falls_in_the_tempo_range(tempo):
    """Counted from the hi-hat clicks, which stand out above 6 kHz over plucked and bowed strings
    (a flute's breath noise and an organ's tremolo blur this simple detector, not the beat)."""
    low, high = TEMPOS[tempo]
    for instrument in ("guitar", "strings"):
        for seed in range(2):
            bpm = beats_per_minute(clip(seed, instrument=instrument, tempo=tempo, seconds=4.0))
            assert low - 3 <= bpm <= high + 3, (instrument, seed, bpm)


def test_instruments_are_told_apart_by_spectrum_and_envelope():
    """Nearest centroid on (spectral shape, envelope movement), fitted on 2 clips per instrument: new
    clips in other modes and tempos land on their own instrument's centroid (19 of 20 measured)."""

    def timbre(x):
        _, _, z = signal.stft(x, RATE, nperseg=512)
        power = np.log(np.abs(z) ** 2 + 1e-10)  # [freqs, frames]
        env = power.mean(axis=0)
        shape = power.mean(axis=1) - power.mean()
        return np.concatenate([shape, [10 * np.mean(np.abs(np.diff(env))), 3 * np.std(env)]])

    centroid = {i: np.mean([timbre(clip(s, instrument=i)) for s in (0, 1)], axis=0) for i in INSTRUMENTS}
    hits = []
    for ins in INSTRUMENTS:
        for seed in (5, 6):
            for mode, tempo in (("major", "slow"), ("minor", "fast")):
                f = timbre(clip(seed, instrument=ins, mode=mode, tempo=tempo))
                hits.append(min(centroid, key=lambda k: np.sum((centroid[k] - f) ** 2)) == ins)
    assert np.mean(hits) >= 0.9, hits


@pytest.mark.parametrize("artefact", ARTEFACTS)
def test_each_artefact_grows_with_strength(artefact):
    clean = clip(7, instrument="piano")
    damage = []
    for level in (0.3, 1.0):
        strength = {a: (level if a == artefact else 0.0) for a in ARTEFACTS}
        x = clip(7, strength, instrument="piano")
        assert x.shape == clean.shape and np.isfinite(x).all() and np.abs(x).max() == pytest.approx(0.9)
        damage.append(np.linalg.norm(x - clean))
    assert 1e-3 < damage[0] < damage[1]


def test_prompts_name_each_attribute():
    for v in range(18):
        for ins in INSTRUMENTS:
            text = prompt_text({"instrument": ins, "tempo": "slow", "mode": "minor"}, v).lower()
            assert ins.rstrip("s") in text and "slow" in text and "minor key" in text
    assert (
        len({prompt_text({"instrument": "organ", "tempo": "fast", "mode": "major"}, v) for v in range(18)})
        == 18
    )


def test_render_clip_input_errors():
    with pytest.raises(ValueError, match="mode"):
        render_clip({"instrument": "flute", "tempo": "fast", "mode": "dorian"}, None, 1.0, RATE)
    with pytest.raises(ValueError, match="must map exactly"):
        render_clip({"instrument": "flute", "tempo": "fast"}, None, 1.0, RATE)
    with pytest.raises(ValueError, match="strength"):
        render_clip({"instrument": "flute", "tempo": "fast", "mode": "major"}, {"hum": 2.0}, 1.0, RATE)


# ---- the corpus -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_holdout_corpus(
        tmp_path_factory.mktemp("holdout") / "corpus",
        n_systems=4,
        n_prompts=12,
        prompts_per_system=5,
        clips_per_pair=2,
        seconds=1.0,
        sample_rate=RATE,
        seed=0,
    )


def test_layout_labels_and_reader_round_trip(corpus):
    assert len(corpus.systems) == 4 and len(corpus.clips) == 4 * 5 * 2
    for split in SPLIT_NAMES:
        assert {c.system for c in corpus.split(split)} == set(corpus.systems)
        examples = load_musiceval(corpus.root, split)
        assert [(e.wav_id, e.prompt, e.mi, e.ta, e.system) for e in examples] == [
            (c.wav_id, c.prompt, c.mi, c.ta, c.system) for c in corpus.split(split)
        ]
    audio, rate = sf.read(os.path.join(corpus.root, "wav", corpus.clips[0].wav_id + ".wav"))
    assert rate == RATE and audio.shape == (RATE,) and 0.85 < np.abs(audio).max() <= 0.91
    for c in corpus.clips:
        for v in (c.mi, c.ta):
            assert 1.0 <= v <= 5.0 and abs(v * 5 - round(v * 5)) < 1e-9  # MusicEval's 0.2 grid
        assert [a for a in ATTRIBUTES if c.rendered[a] != c.asked[a]] == c.mismatched
        assert all(c.rendered[a] in CHOICES[a] for a in ATTRIBUTES)
        assert c.true_ta == pytest.approx(
            1 + 4 * (0.85 * (3 - len(c.mismatched)) / 3 + 0.15 * (1 - c.severity))
        )
        assert c.true_mi == pytest.approx(1 + 4 * (1 - c.severity))
        assert corpus.prompts[c.prompt_id] == c.prompt
    meta = json.loads(open(os.path.join(corpus.root, "synthetic_meta.json")).read())
    assert meta["generator"] == "holdout" and len(meta["clips"]) == 40


def test_prompts_are_assigned_to_systems_at_random(corpus):
    drawn = {s: {c.prompt_id for c in corpus.clips if c.system == s} for s in corpus.systems}
    assert all(len(p) == 5 for p in drawn.values())
    assert len({frozenset(p) for p in drawn.values()}) == 4  # no two systems answer the same prompts
    assert set(corpus.prompts) == set().union(*drawn.values())


def test_labels_follow_the_design(corpus):
    systems = sorted(corpus.systems)
    quality = [corpus.systems[s].quality for s in systems]
    mi = [np.mean([c.mi for c in corpus.clips if c.system == s]) for s in systems]
    assert stats.spearmanr(quality, mi)[0] > 0.7
    wrong = [len(c.mismatched) for c in corpus.clips]
    assert stats.spearmanr(wrong, [c.ta for c in corpus.clips])[0] < -0.5
    assert max(wrong) >= 1 and min(wrong) == 0


def _digest(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name != "synthetic_meta.json":  # it holds the absolute root
                with open(os.path.join(folder, name), "rb") as f:
                    out[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(
                        f.read()
                    ).hexdigest()
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_systems=2, n_prompts=3, prompts_per_system=2, clips_per_pair=1, seconds=1.0, sample_rate=RATE)
    a, b, c = (make_holdout_corpus(tmp_path / n, seed=s, **kw) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    assert _digest(a.root) == _digest(b.root) != _digest(c.root)


def test_corpus_argument_errors(tmp_path):
    kw = dict(n_systems=2, n_prompts=3, prompts_per_system=2, clips_per_pair=1, seconds=1.0, sample_rate=RATE)
    make_holdout_corpus(tmp_path / "x", **kw)
    with pytest.raises(ValueError, match="already holds a corpus"):
        make_holdout_corpus(tmp_path / "x", **kw)
    for bad, words in (
        ({"prompts_per_system": 4}, "must not exceed n_prompts"),
        ({"prompts_per_system": 0}, "prompts_per_system"),
        ({"n_systems": 1}, "n_systems must be >= 2"),
        ({"seconds": 0.5}, "seconds"),
    ):
        with pytest.raises(ValueError, match=words):
            make_holdout_corpus(tmp_path / "y", **{**kw, **bad})
