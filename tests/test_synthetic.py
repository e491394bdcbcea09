"""The synthetic MusicEval-format corpus: known orderings, round trip through the reader, determinism."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import soundfile as sf
from scipy import stats

from deramos_reward.data import load_dataset_split, load_musiceval
from deramos_reward.data.synthetic import (
    ATTRIBUTES,
    DEGRADATIONS,
    SPLIT_NAMES,
    make_corpus,
    render_clip,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("synth") / "corpus", seed=0)


def _digest(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_layout_and_sizes(corpus):
    assert len(corpus.systems) == 6 and len(corpus.prompts) == 24 and len(corpus.clips) == 144
    assert sorted(os.listdir(os.path.join(corpus.root, "sets"))) == [
        f"{s}_mos_list.txt" for s in sorted(SPLIT_NAMES)
    ]
    for split in SPLIT_NAMES:  # every split holds every system
        assert {c.system for c in corpus.split(split)} == set(corpus.systems)
    counts = [len(corpus.split(s)) for s in SPLIT_NAMES]
    assert counts == [96, 24, 24]
    clip = corpus.clips[0]
    audio, rate = sf.read(os.path.join(corpus.root, "wav", clip.wav_id + ".wav"))
    assert rate == 16_000 and audio.shape == (64_000,) and np.abs(audio).max() <= 0.91


def test_labels_on_the_rating_grid(corpus):
    for c in corpus.clips:
        for v in (c.mi, c.ta):
            assert 1.0 <= v <= 5.0 and abs(v * 5 - round(v * 5)) < 1e-9


def test_mi_follows_designed_quality(corpus):
    systems = sorted(corpus.systems)
    quality = [corpus.systems[s].quality for s in systems]
    mean_mi = [np.mean([c.mi for c in corpus.clips if c.system == s]) for s in systems]
    assert stats.spearmanr(quality, mean_mi)[0] > 0.9
    # names carry no quality: system numbering is not the quality order
    assert stats.spearmanr(range(len(systems)), quality)[0] < 0.9
    assert abs(stats.spearmanr(range(len(systems)), quality)[0]) < 1.0


def test_ta_lower_for_mismatched_clips(corpus):
    bad = [c for c in corpus.clips if c.mismatched]
    good = [c for c in corpus.clips if not c.mismatched]
    assert len(bad) >= 10 and len(good) >= 10
    assert np.mean([c.ta for c in bad]) < np.mean([c.ta for c in good]) - 1.0
    for c in corpus.clips:  # what was rendered differs from the prompt exactly on the listed attributes
        assert [a for a in ATTRIBUTES if c.rendered[a] != c.asked[a]] == c.mismatched
        assert c.asked["instrument"] in c.prompt


def test_reader_reads_the_corpus_back_exactly(corpus):
    for split in SPLIT_NAMES:
        examples = load_musiceval(corpus.root, split)
        clips = corpus.split(split)
        assert [(e.wav_id, e.prompt, e.mi, e.ta, e.system) for e in examples] == [
            (c.wav_id, c.prompt, c.mi, c.ta, c.system) for c in clips
        ]
        assert all(os.path.isfile(e.path) for e in examples)
    assert load_dataset_split(corpus.root, "dev") == load_musiceval(corpus.root, "dev")


@pytest.mark.parametrize("seed", [0, 3])
def test_each_degradation_grows_with_strength(seed):
    rendered = {"instrument": ("piano", "flute")[seed % 2], "tempo": "medium", "mood": "bright"}
    clean = render_clip(rendered, None, 2.0, 16_000, seed=seed)
    np.testing.assert_array_equal(clean, render_clip(rendered, None, 2.0, 16_000, seed=seed))
    for kind in DEGRADATIONS:
        errors = []
        for s in (0.0, 0.2, 0.6, 1.0):
            strength = {d: (s if d == kind else 0.0) for d in DEGRADATIONS}
            errors.append(np.mean((render_clip(rendered, strength, 2.0, 16_000, seed=seed) - clean) ** 2))
        assert errors[0] == 0.0  # same seed, no damage: the same melody
        if kind == "detune":  # detuning decorrelates the waveform quickly; it only has to change it
            assert min(errors[1:]) > 1e-3
        else:
            assert errors[1] < errors[2] < errors[3], kind
    # the prompt attributes change the audio: tempo changes where notes start
    fast = render_clip(dict(rendered, tempo="fast"), None, 2.0, 16_000, seed=seed)
    assert np.mean((fast - clean) ** 2) > 0.01


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_systems=3, n_prompts=4, clips_per_pair=2, seconds=0.5, splits=(0.5, 0.25, 0.25))
    a = make_corpus(tmp_path / "a", seed=7, **kw)
    b = make_corpus(tmp_path / "b", seed=7, **kw)
    c = make_corpus(tmp_path / "c", seed=8, **kw)
    da, db, dc = _digest(a.root), _digest(b.root), _digest(c.root)
    da.pop("synthetic_meta.json"), db.pop("synthetic_meta.json"), dc.pop("synthetic_meta.json")
    assert da == db
    assert da != dc
    assert [x.mi for x in a.clips] == [x.mi for x in b.clips]
    # several clips per (system, prompt) get distinct ids that the reader still parses
    ids = [x.wav_id for x in a.clips]
    assert len(set(ids)) == 24 and ids[1].endswith("_c2")
    assert {e.prompt for e in load_musiceval(a.root, "train")} <= set(a.prompts.values())


def test_overwrite_and_argument_errors(tmp_path):
    make_corpus(tmp_path / "x", n_systems=2, n_prompts=2, seconds=0.5)
    with pytest.raises(ValueError, match="already holds a corpus"):
        make_corpus(tmp_path / "x", n_systems=2, n_prompts=2, seconds=0.5)
    again = make_corpus(tmp_path / "x", n_systems=2, n_prompts=3, seconds=0.5, overwrite=True)
    assert len(os.listdir(os.path.join(again.root, "wav"))) == 6
    with pytest.raises(ValueError, match="n_systems must be >= 2"):
        make_corpus(tmp_path / "y", n_systems=1)
    with pytest.raises(ValueError, match="splits must be 3 fractions"):
        make_corpus(tmp_path / "y", splits=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="sample_rate"):
        make_corpus(tmp_path / "y", sample_rate=100)
    with pytest.raises(ValueError, match=r"rendered\['tempo'\]"):
        render_clip({"instrument": "piano", "tempo": "presto", "mood": "dark"}, None, 1.0, 16_000)
