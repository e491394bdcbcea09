"""Corpus v2 (SoundFont-rendered): what each attribute and artefact does, the designed labels,
MusicEval layout read back exactly, and byte-for-byte determinism."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf
from scipy import stats

from deramos_reward.data import load_musiceval
from deramos_reward.data.rendered import (
    ARTEFACTS,
    ATTRIBUTES,
    CHOICES,
    INSTRUMENTS,
    compose,
    make_rendered_corpus,
    prompt_text,
    render_clip,
)
from deramos_reward.data.soundfont import Note, SoundFontRenderer
from deramos_reward.data.synthetic import SPLIT_NAMES

RATE = 16_000
ATTRS = {"instrument": "piano", "tempo": "medium", "mood": "happy", "style": "melody"}


@pytest.fixture(scope="module")
def renderer():
    return SoundFontRenderer(RATE)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_rendered_corpus(
        tmp_path_factory.mktemp("rendered") / "corpus",
        n_systems=4,
        n_prompts=6,
        clips_per_pair=2,
        seconds=1.0,
        sample_rate=RATE,
        seed=0,
    )


def _digest(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ---- the SoundFont renderer -----------------------------------------------------------------------
def test_renderer_plays_real_instruments_deterministically(renderer):
    notes = [Note(0.1 * i, 0.3, 60 + 2 * i, 100, program=0) for i in range(5)]
    piano = renderer.render(notes, 1.0)
    assert piano.shape == (RATE,) and np.abs(piano).max() > 0.01
    renderer.render([Note(0.0, 1.0, 40, 90, program=73)], 1.0)  # something else in between
    np.testing.assert_array_equal(piano, renderer.render(notes, 1.0))  # reset: no state carried over
    flute = renderer.render([Note(n.start, n.duration, n.key, n.velocity, program=73) for n in notes], 1.0)
    assert np.corrcoef(piano, flute)[0, 1] < 0.5  # another program is another sound
    # a note sounds where it starts and not before
    late = renderer.render([Note(0.5, 0.2, 60, 100, program=0)], 1.0)
    assert np.abs(late[: RATE // 2 - 10]).max() == 0.0 and np.abs(late[RATE // 2 :]).max() > 0.01
    drums = renderer.render([Note(0.0, 0.1, 36, 120, program=None)], 1.0)
    assert np.abs(drums).max() > 0.01
    with pytest.raises(ValueError, match="velocity"):
        renderer.render([Note(0.0, 0.1, 60, 0)], 1.0)


# ---- composition: every attribute is audible ------------------------------------------------------
def _onsets_per_second(notes: list[Note], seconds: float) -> float:
    return len({round(n.start, 4) for n in notes if n.program is not None and n.start < seconds}) / seconds


def test_attributes_shape_the_notes():
    rng = np.random.default_rng
    rate = {
        t: _onsets_per_second(compose({**ATTRS, "style": "arpeggio", "tempo": t}, 4.0, rng(1)), 4.0)
        for t in CHOICES["tempo"]
    }
    assert rate["slow"] < rate["medium"] < rate["fast"]
    happy = np.mean(
        [n.key for n in compose({**ATTRS, "mood": "happy"}, 4.0, rng(2)) if n.program is not None]
    )
    sad = np.mean([n.key for n in compose({**ATTRS, "mood": "sad"}, 4.0, rng(2)) if n.program is not None])
    assert happy > sad + 6  # happy sits higher (and in major), sad lower (and in minor)
    for style in CHOICES["style"]:
        notes = compose({**ATTRS, "style": style}, 4.0, rng(3))
        assert any(n.program is None for n in notes) == (style == "melody")  # only melodies have drums
        chords = max(sum(1 for m in notes if m.start == n.start and m.program is not None) for n in notes)
        assert (chords >= 3) == (style == "chords")  # block chords: 3+ notes at once
    organ = compose({**ATTRS, "instrument": "organ"}, 2.0, rng(4))
    assert {n.program for n in organ} == {INSTRUMENTS["organ"], None}


def test_prompts_name_every_attribute_in_varied_words():
    texts = {prompt_text({**ATTRS, "instrument": "flute"}, v) for v in range(9)}
    assert len(texts) == 9 and all("flute" in t.lower() for t in texts)
    assert "happy" in prompt_text(ATTRS, 0) and "cheerful" in prompt_text(ATTRS, 1)


@pytest.mark.parametrize(
    "attrs", [{**ATTRS, "style": "arpeggio"}, {**ATTRS, "style": "chords", "instrument": "strings"}]
)
def test_each_artefact_grows_with_strength(attrs, renderer):
    clean = render_clip(attrs, None, 2.0, RATE, seed=5, renderer=renderer)
    assert clean.shape == (2 * RATE,) and np.abs(clean).max() == pytest.approx(0.9)
    for kind in ARTEFACTS:
        errors = []
        for s in (0.0, 0.3, 0.6, 1.0):
            strength = {a: (s if a == kind else 0.0) for a in ARTEFACTS}
            damaged = render_clip(attrs, strength, 2.0, RATE, seed=5, renderer=renderer)
            errors.append(float(np.mean((damaged - clean) ** 2)))
        assert errors[0] == 0.0, kind  # the same seed without damage is the same clip
        if kind == "jitter":  # shifted onsets decorrelate the waveform quickly: it only has to change
            assert min(errors[1:]) > 1e-4
        else:
            assert errors[1] < errors[2] < errors[3], (kind, errors)


def test_render_clip_input_errors(renderer):
    with pytest.raises(ValueError, match=r"attrs\['tempo'\]"):
        render_clip({**ATTRS, "tempo": "presto"}, None, 1.0, RATE, renderer=renderer)
    with pytest.raises(ValueError, match="exactly"):
        render_clip({"instrument": "piano"}, None, 1.0, RATE, renderer=renderer)
    with pytest.raises(ValueError, match="strength"):
        render_clip(ATTRS, {"noise": 2.0}, 1.0, RATE, renderer=renderer)
    with pytest.raises(ValueError, match="renderer runs at"):
        render_clip(ATTRS, None, 1.0, 24_000, renderer=renderer)


# ---- the corpus ------------------------------------------------------------------------------------
def test_layout_labels_and_reader_round_trip(corpus):
    assert len(corpus.systems) == 4 and len(corpus.prompts) == 6 and len(corpus.clips) == 48
    assert sorted(os.listdir(os.path.join(corpus.root, "sets"))) == [
        f"{s}_mos_list.txt" for s in sorted(SPLIT_NAMES)
    ]
    for split in SPLIT_NAMES:
        assert {c.system for c in corpus.split(split)} == set(corpus.systems)
        examples = load_musiceval(corpus.root, split)
        assert [(e.wav_id, e.prompt, e.mi, e.ta, e.system) for e in examples] == [
            (c.wav_id, c.prompt, c.mi, c.ta, c.system) for c in corpus.split(split)
        ]
    audio, rate = sf.read(os.path.join(corpus.root, "wav", corpus.clips[0].wav_id + ".wav"))
    assert rate == RATE and audio.shape == (RATE,) and 0.85 < np.abs(audio).max() <= 0.91
    for c in corpus.clips:
        assert c.wav_id.endswith(("_c1", "_c2"))
        for v in (c.mi, c.ta):
            assert 1.0 <= v <= 5.0 and abs(v * 5 - round(v * 5)) < 1e-9  # MusicEval's 0.2 grid
        # what was played differs from what was asked exactly on the listed attributes
        assert [a for a in ATTRIBUTES if c.rendered[a] != c.asked[a]] == c.mismatched
        assert c.true_ta == pytest.approx(
            1 + 4 * (0.9 * (4 - len(c.mismatched)) / 4 + 0.1 * (1 - c.severity))
        )
        assert c.true_mi == pytest.approx(1 + 4 * (1 - c.severity))
        assert c.asked["instrument"] in c.prompt.lower()
    meta = json.loads(open(os.path.join(corpus.root, "synthetic_meta.json")).read())
    assert meta["generator"] == "rendered" and len(meta["clips"]) == 48


def test_labels_follow_the_design(corpus):
    systems = sorted(corpus.systems)
    quality = [corpus.systems[s].quality for s in systems]
    mi = [np.mean([c.mi for c in corpus.clips if c.system == s]) for s in systems]
    assert stats.spearmanr(quality, mi)[0] > 0.7
    wrong = [len(c.mismatched) for c in corpus.clips]
    assert stats.spearmanr(wrong, [c.ta for c in corpus.clips])[0] < -0.5
    assert max(wrong) >= 1 and min(wrong) == 0


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_systems=2, n_prompts=3, clips_per_pair=1, seconds=1.0, sample_rate=RATE)
    a = make_rendered_corpus(tmp_path / "a", seed=3, **kw)
    b = make_rendered_corpus(tmp_path / "b", seed=3, **kw)
    c = make_rendered_corpus(tmp_path / "c", seed=4, **kw)
    da, db, dc = (_digest(x.root) for x in (a, b, c))
    for d in (da, db, dc):
        d.pop("synthetic_meta.json")  # it holds the absolute root
    assert da == db and da != dc
    assert [x.wav_id for x in a.clips][0] == "audiomos2025-track1-S001_P001"  # one clip per pair: no _c


def test_corpus_argument_errors(tmp_path):
    kw = dict(n_systems=2, n_prompts=2, clips_per_pair=1, seconds=1.0, sample_rate=RATE)
    make_rendered_corpus(tmp_path / "x", **kw)
    with pytest.raises(ValueError, match="already holds a corpus"):
        make_rendered_corpus(tmp_path / "x", **kw)
    assert len(make_rendered_corpus(tmp_path / "x", overwrite=True, **kw).clips) == 4
    for bad, words in (
        ({"n_systems": 1}, "n_systems must be >= 2"),
        ({"splits": (0.5, 0.5, 0.5)}, "splits must be 3 fractions"),
        ({"seconds": 0.2}, "seconds"),
        ({"seed": -1}, "seed"),
    ):
        with pytest.raises(ValueError, match=words):
            make_rendered_corpus(tmp_path / "y", **{**kw, **bad})
