"""Readers (MusicEval layout, JSONL manifest), RatedClips and collate on files written here."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from deramos_reward.data import (
    DataFormatError,
    Example,
    MissingDataError,
    RatedBatch,
    RatedClips,
    collate,
    load_dataset_split,
    load_manifest,
    load_musiceval,
    prompt_id_of,
    system_of,
)

PRE = "audiomos2025-track1-"


def _wav(path, seconds=0.25, rate=16_000, channels=1, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, data, rate, subtype="FLOAT")
    return data


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "MusicEval"
    for name in ("S002_P001", "S002_P002", "S003_P001", "S001_P007", "S004_P002"):
        _wav(str(root / "wav" / f"{PRE}{name}.wav"))
    _write(str(root / "prompt_info.txt"), 'id\ttext\nP001\tcalm piano\nP002\t"fast, loud drums"\n\n')
    _write(str(root / "demo_prompt_info.txt"), f"id\ttext\n{PRE}S001_P007.wav\tdemo: a jazz trio\n")
    _write(
        str(root / "sets" / "train_mos_list.txt"),
        f"{PRE}S002_P001.wav,3.2,4.0\n{PRE}S003_P001,2.4,1.8\n\n{PRE}S001_P007.wav,4.6,3.0\n",
    )
    _write(str(root / "sets" / "test_mos_list.txt"), f"{PRE}S002_P002.wav\n{PRE}S004_P002\n")
    return root


def test_id_rules():
    assert system_of(f"{PRE}S002_P044.wav") == "S002"
    assert prompt_id_of(f"{PRE}S002_P044.wav") == "P044"
    assert prompt_id_of(f"{PRE}S002_P044_c2") == "P044"
    assert system_of("S010_P3") == "S010" and prompt_id_of("S010_P3") == "P3"
    assert prompt_id_of(f"{PRE}S002_demo") is None


def test_musiceval_reader(corpus):
    train = load_musiceval(corpus, "train")
    root = os.path.abspath(corpus)
    assert train == [
        Example(f"{PRE}S002_P001", f"{root}/wav/{PRE}S002_P001.wav", "calm piano", 3.2, 4.0, "S002"),
        Example(f"{PRE}S003_P001", f"{root}/wav/{PRE}S003_P001.wav", "calm piano", 2.4, 1.8, "S003"),
        Example(f"{PRE}S001_P007", f"{root}/wav/{PRE}S001_P007.wav", "demo: a jazz trio", 4.6, 3.0, "S001"),
    ]
    test = load_musiceval(str(corpus), "test")
    assert [(e.prompt, e.mi, e.ta, e.labeled) for e in test] == [("fast, loud drums", None, None, False)] * 2
    assert load_dataset_split(corpus, "train") == train


TRAIN = "sets/train_mos_list.txt"


@pytest.mark.parametrize(
    ("edits", "error", "pattern"),
    [
        (
            {TRAIN: f"{PRE}S002_P001.wav,3.2,4.0\n{PRE}S009_P001.wav,3,3\n"},
            MissingDataError,
            r"train_mos_list.txt:2: audio file .*S009_P001.wav",
        ),
        (
            {"prompt_info.txt": "P001\tcalm\n", TRAIN: f"{PRE}S004_P002.wav,3,3\n"},
            DataFormatError,
            r"train_mos_list.txt:1: prompt id 'P002' .* is not in .*prompt_info.txt",
        ),
        (
            {TRAIN: f"\n{PRE}S002_P001.wav,3.2\n"},
            DataFormatError,
            r"train_mos_list.txt:2: expected 'wavname,MI,TA'",
        ),
        (
            {TRAIN: f"{PRE}S002_P001.wav,good,4\n"},
            DataFormatError,
            r"train_mos_list.txt:1: MI score 'good' is not a number",
        ),
        (
            {TRAIN: f"{PRE}S002_P001.wav,3,4\n{PRE}S002_P001,3,4\n"},
            DataFormatError,
            r"train_mos_list.txt:2: clip .* listed twice \(first on line 1\)",
        ),
        (
            {"prompt_info.txt": "P001 calm piano\n"},
            DataFormatError,
            r"prompt_info.txt:1: expected 'id<TAB>text'",
        ),
        ({"prompt_info.txt": "P001\tcalm\nP001\tloud\n"}, DataFormatError, r"prompt_info.txt:2: id 'P001'"),
        ({TRAIN: "\n"}, DataFormatError, r"lists no clips"),
    ],
)
def test_musiceval_errors_name_file_and_line(corpus, edits, error, pattern):
    for name, text in edits.items():
        _write(str(corpus / name), text)
    with pytest.raises(error, match=pattern):
        load_musiceval(corpus, "train")


def test_missing_pieces(corpus, tmp_path):
    with pytest.raises(MissingDataError, match="split 'dev'"):
        load_musiceval(corpus, "dev")
    with pytest.raises(MissingDataError, match="is not a folder"):
        load_musiceval(tmp_path / "nowhere", "train")
    with pytest.raises(MissingDataError, match="neither a MusicEval folder nor a manifest"):
        load_dataset_split(tmp_path / "nowhere", "train")
    os.remove(corpus / "prompt_info.txt")
    with pytest.raises(FileNotFoundError, match="prompt_info.txt"):  # also a ValueError
        load_musiceval(corpus, "train")
    with pytest.raises(ValueError, match="split is required"):
        load_dataset_split(corpus, None)


def test_wav_without_prompt_token_or_demo_entry(corpus):
    _wav(str(corpus / "wav" / f"{PRE}S005_intro.wav"))
    _write(str(corpus / "sets" / "train_mos_list.txt"), f"{PRE}S005_intro.wav,3,3\n")
    with pytest.raises(DataFormatError, match=r"train_mos_list.txt:1: cannot find a prompt id"):
        load_musiceval(corpus, "train")
    _write(str(corpus / "demo_prompt_info.txt"), f"{PRE}S005_intro\tan intro\n")
    assert load_musiceval(corpus, "train")[0].prompt == "an intro"


@pytest.fixture
def manifest(tmp_path):
    _wav(str(tmp_path / "gen_a" / "one.wav"))
    _wav(str(tmp_path / "gen_b" / "two.wav"))
    _wav(str(tmp_path / "abs.wav"))
    lines = [
        {"path": "gen_a/one.wav", "prompt": "p1", "mi": 3.5, "ta": 4},
        {"path": "gen_b/two.wav", "prompt": "p2", "mi": None, "system": "model-x"},
        {"path": str(tmp_path / "abs.wav"), "prompt": "p3", "mi": 1.2, "ta": 2.0, "id": "clip3"},
    ]
    path = tmp_path / "ratings.jsonl"
    _write(str(path), "\n".join(json.dumps(x) for x in lines) + "\n\n")
    return path


def test_manifest_reader(manifest, tmp_path):
    ex = load_dataset_split(manifest, "train")
    assert ex == [
        Example("gen_a/one", str(tmp_path / "gen_a" / "one.wav"), "p1", 3.5, 4.0, "gen_a"),
        Example("gen_b/two", str(tmp_path / "gen_b" / "two.wav"), "p2", None, None, "model-x"),
        Example("clip3", str(tmp_path / "abs.wav"), "p3", 1.2, 2.0, tmp_path.name),
    ]
    # without split fields every split sees every line
    assert load_dataset_split(manifest, "dev") == ex == load_manifest(manifest)


def test_manifest_splits(tmp_path):
    _wav(str(tmp_path / "a.wav"))
    _wav(str(tmp_path / "b.wav"))
    rows = [
        {"path": "a.wav", "prompt": "x", "split": "train"},
        {"path": "b.wav", "prompt": "y", "split": "dev"},
    ]
    path = tmp_path / "m.jsonl"
    _write(str(path), "".join(json.dumps(r) + "\n" for r in rows))
    assert [e.wav_id for e in load_dataset_split(path, "dev")] == ["b"]
    assert [e.wav_id for e in load_dataset_split(path, None)] == ["a", "b"]
    with pytest.raises(DataFormatError, match=r"no lines with split 'test'; it has \['dev', 'train'\]"):
        load_dataset_split(path, "test")
    rows[1].pop("split")
    _write(str(path), "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFormatError, match=r"m.jsonl:2: this line has no 'split'"):
        load_dataset_split(path, "train")


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ('{"path": "a.wav", "prompt": "x"', r"m.jsonl:2: not valid JSON"),
        ('["a.wav", "x"]', r"m.jsonl:2: expected a JSON object"),
        ('{"path": "a.wav", "prompt": "x", "MI": 3}', r"m.jsonl:2: unknown key\(s\) \['MI'\]"),
        ('{"path": "missing.wav", "prompt": "x"}', r"m.jsonl:2: audio file .*missing.wav"),
        ('{"path": "a.wav"}', r"m.jsonl:2: missing required key 'prompt'"),
        ('{"path": "a.wav", "prompt": ""}', r"m.jsonl:2: 'prompt' must be a non-empty string"),
        ('{"path": "a.wav", "prompt": "x", "mi": "3.5"}', r"m.jsonl:2: 'mi' must be a finite number"),
        ('{"path": "a.wav", "prompt": "x", "id": "a"}', r"m.jsonl:2: clip id 'a' already used on line 1"),
    ],
)
def test_manifest_errors_name_line(tmp_path, line, pattern):
    _wav(str(tmp_path / "a.wav"))
    path = tmp_path / "m.jsonl"
    _write(str(path), '{"path": "a.wav", "prompt": "ok"}\n' + line + "\n")
    with pytest.raises(DataFormatError, match=pattern):
        load_manifest(path)


def test_rated_clips_resample_downmix_and_collate(tmp_path):
    stereo = _wav(str(tmp_path / "s.wav"), seconds=0.5, rate=8_000, channels=2, seed=1)
    mono = _wav(str(tmp_path / "m.wav"), seconds=0.3, rate=24_000, seed=2)
    examples = [
        Example("s", str(tmp_path / "s.wav"), "stereo", 2.0, 3.0, "A"),
        Example("m", str(tmp_path / "m.wav"), "mono", None, None, "B"),
    ]
    ds = RatedClips(examples, 24_000)
    assert len(ds) == 2
    item = ds[0]
    expected = torchaudio.functional.resample(torch.from_numpy(stereo.mean(axis=1)), 8_000, 24_000)
    assert item["wave"].shape == (12_000,) and item["wave"].dtype == torch.float32
    torch.testing.assert_close(item["wave"], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(ds[1]["wave"], torch.from_numpy(mono[:, 0]))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert isinstance(batch, RatedBatch)
    assert [w.shape[0] for w in batch.waves] == [12_000, 7_200]
    assert batch.prompts == ["stereo", "mono"] and batch.systems == ["A", "B"] and batch.wav_ids == ["s", "m"]
    assert batch.mi[0].item() == 2.0 and math.isnan(batch.mi[1].item()) and math.isnan(batch.ta[1].item())
    assert not batch.labeled and batch.sample_rate == 24_000
    assert collate([ds[0]]).labeled
    cropped = RatedClips(examples, 16_000, max_seconds=0.1)
    assert cropped[0]["wave"].shape == (1_600,) and cropped[1]["wave"].shape == (1_600,)


def test_rated_clips_errors(tmp_path):
    with pytest.raises(TypeError, match=r"examples\[0\] must be an Example"):
        RatedClips([{"path": "x"}], 16_000)
    with pytest.raises(ValueError, match="sample_rate"):
        RatedClips([], 100)
    with pytest.raises(ValueError, match="max_seconds"):
        RatedClips([], 16_000, max_seconds=0)
    with pytest.raises(ValueError, match="different sample rates"):
        collate([{"sample_rate": 16_000}, {"sample_rate": 24_000}])
    with pytest.raises(ValueError, match="does not exist"):
        RatedClips([Example("x", str(tmp_path / "x.wav"), "p", 1.0, 1.0, "s")], 16_000)[0]
