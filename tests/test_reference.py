"""Checkpoints of the authors' code: conversion, the reference's inference, and clean inference.

``ReferenceModel`` restates the authors' forward from its description (docs/model.md, "Differences
from the reference code") with their module names, so that its ``state_dict`` is laid out as theirs:
``muq.*`` (a ``muq.MuQ``), ``roberta.*`` (a ``RobertaModel`` with its pooler), the heads, and the
``audio_pos_encoder.pe`` / ``bin_centers`` buffers. It is saved with ``torch.save`` as the authors'
train.py saves, converted, and compared on raw audio.
"""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from safetensors.torch import load_file
from torch import nn
from transformers import RobertaConfig, RobertaModel

import deramos_reward as dr
from deramos_reward.config import BYTE_TOKEN_IDS, BYTE_VOCAB_SIZE, TINY_ROBERTA_BACKBONE
from deramos_reward.encoders.muq import build_muq
from deramos_reward.encoders.tokenizer import byte_level_tokenizer
from deramos_reward.reference import convert_reference_checkpoint, reference_scores

SR = 24_000
CLIP = 30 * SR


class RefPool(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attention_weights = nn.Linear(dim, 1)

    def forward(self, x, fill_where_zero=None):
        """softmax over time of w·x + b; positions where ``fill_where_zero`` is 0 get -1e9."""
        scores = self.attention_weights(x)
        if fill_where_zero is not None:
            scores = scores.masked_fill(fill_where_zero.unsqueeze(-1) == 0, -1e9)
        return (torch.softmax(scores, dim=1) * x).sum(1)


class RefPositions(nn.Module):
    def __init__(self, dim, max_len=5000):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
        freq = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("pe", table.unsqueeze(1))  # (max_len, 1, dim): the layout that only fits B = 1

    def forward(self, x):
        return x + self.pe[: x.shape[1]].transpose(0, 1) if x.shape[0] == 1 else x


def ref_mlp(dim, hidden, bins):
    return nn.Sequential(
        nn.Linear(dim, hidden[0]),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(hidden[0], hidden[1]),
        nn.ReLU(),
        nn.Linear(hidden[1], bins),
        nn.Softmax(dim=1),
    )


class ReferenceModel(nn.Module):
    """The authors' dual-branch model at the tiny config's widths. ``variant``: deramos or astar."""

    def __init__(self, cfg: dr.DeRAMOSConfig, variant: str, contrastive_head: bool = False):
        super().__init__()
        self.variant = variant
        self.muq = build_muq(cfg.audio_encoder.backbone)
        text = {"vocab_size": BYTE_VOCAB_SIZE, **BYTE_TOKEN_IDS, **cfg.text_encoder.backbone}
        self.roberta = RobertaModel(RobertaConfig(**text))  # with its pooler, as the authors load it
        da, dt = cfg.audio_encoder.backbone["encoder_dim"], cfg.text_encoder.backbone["hidden_size"]
        self.audio_pos_encoder = RefPositions(da)
        layer = nn.TransformerEncoderLayer(da, cfg.mi_heads, cfg.mi_ff_dim, 0.3, batch_first=True)
        self.audio_transformer_encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.audio_attentive_pool = RefPool(da)
        self.audio_seq_proj, self.text_seq_proj = nn.Linear(da, dt), nn.Linear(dt, dt)
        self.cross_attention = nn.MultiheadAttention(dt, cfg.ta_heads, dropout=0.3, batch_first=True)
        self.cross_attention_norm = nn.LayerNorm(dt)
        self.fused_attentive_pool = RefPool(dt)
        if variant == "deramos":
            self.audio_contrastive_attentive_pool = RefPool(dt)
        if contrastive_head:  # later ASTAR-NTU code: a training-only pool over raw frames + projection
            self.audio_contrastive_attentive_pool = RefPool(da)
            self.audio_contrastive_seq_proj = nn.Linear(da, dt)
        self.overall_mlp = ref_mlp(da, cfg.mi_mlp, cfg.n_bins)
        self.coherence_mlp = ref_mlp(dt, cfg.ta_mlp, cfg.n_bins)
        self.register_buffer("bin_centers", torch.linspace(1, 5, cfg.n_bins))
        for p in self.parameters():  # heads far from their init, so that every weight matters
            with torch.no_grad():
                p.add_(0.05 * torch.randn_like(p))

    def forward(self, wavs, input_ids, attention_mask):
        frames = self.muq(wavs, output_hidden_states=False).last_hidden_state
        tokens = self.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.heads(frames, tokens, attention_mask)

    def heads(self, frames, tokens, attention_mask):
        """MuQ frames [B, N, Da], RoBERTa tokens [B, L, Dt], mask [B, L] -> MI, TA [B]."""
        states = self.audio_transformer_encoder(self.audio_pos_encoder(frames))
        overall = self.overall_mlp(self.audio_attentive_pool(states))
        keys = self.audio_seq_proj(frames if self.variant == "deramos" else states)
        fused, _ = self.cross_attention(self.text_seq_proj(tokens), keys, keys)
        pooled = self.fused_attentive_pool(self.cross_attention_norm(fused), attention_mask == 0)
        coherence = self.coherence_mlp(pooled)
        return (overall * self.bin_centers).sum(1), (coherence * self.bin_centers).sum(1)


def reference_loop(ref, clips, rate, prompts, batch_size=16):
    """The authors' evaluation: resample, crop/pad to 30 s, batches padded to their longest prompt."""
    tokenizer = byte_level_tokenizer(128)
    dtype = next(ref.parameters()).dtype
    rows = []
    for start in range(0, len(clips), batch_size):
        waves = []
        for clip in clips[start : start + batch_size]:
            wave = torchaudio.functional.resample(torch.as_tensor(clip, dtype=dtype), rate, SR)
            wave = (
                wave[:CLIP] if wave.shape[0] >= CLIP else nn.functional.pad(wave, (0, CLIP - wave.shape[0]))
            )
            waves.append(wave)
        batch = tokenizer(
            prompts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="pt",
        )
        with torch.no_grad():
            mi, ta = ref(torch.stack(waves), batch["input_ids"], batch["attention_mask"])
        rows += [{"mi": m, "ta": t} for m, t in zip(mi.tolist(), ta.tolist())]
    return rows


def tiny_config():
    cfg = dr.DeRAMOSConfig.tiny()
    cfg.text_encoder.backbone = dict(TINY_ROBERTA_BACKBONE)
    return cfg


@pytest.fixture(scope="module", params=["deramos", "astar"])
def converted(request, tmp_path_factory):
    """(variant, reference model (eval), converted DeRAMOS, folder, the .pth file)."""
    variant = request.param
    torch.manual_seed(11)
    ref = ReferenceModel(tiny_config(), variant).eval()
    folder = tmp_path_factory.mktemp(f"ref-{variant}")
    pth = folder / "best_model.pth"
    torch.save(ref.state_dict(), pth)
    out = convert_reference_checkpoint(pth, folder / "judge", variant=variant, config=tiny_config())
    return variant, ref, dr.DeRAMOS.from_pretrained(out), out, pth


def clips_and_prompts(seed=0):
    """Clips shorter and longer than 30 s at 16 kHz; prompts of different byte lengths (padded)."""
    rng = np.random.default_rng(seed)
    seconds = [12.0, 31.5, 30.0, 5.0, 40.0]
    clips = [0.1 * rng.standard_normal(int(s * 16_000)).astype(np.float32) for s in seconds]
    prompts = ["calm piano", "loud rock with drums and a very long description", "jazz", "ambient pad", "x"]
    return clips, prompts


def test_converted_checkpoint_is_an_ordinary_folder(converted):
    variant, ref, model, folder, _ = converted
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "converted_from.json",
        "model.safetensors",
    ]
    cfg = model.config
    assert (cfg.attentive_pooling, cfg.positional_encoding, cfg.ta_pooling) == ("linear", False, "mean")
    assert cfg.ta_keys == ("frames" if variant == "deramos" else "mi")
    assert cfg.alignment_pool == (variant == "deramos")
    # every head weight is the reference's own tensor
    saved = load_file(folder / "model.safetensors")
    ours_to_theirs = {
        "heads.mi.pool.score.weight": "audio_attentive_pool.attention_weights.weight",
        "heads.mi.head.mlp.6.weight": "overall_mlp.5.weight",
        "heads.ta.head.mlp.3.bias": "coherence_mlp.3.bias",
        "heads.ta.cross_attention.in_proj_weight": "cross_attention.in_proj_weight",
        "audio_encoder.backbone.model.conv.conv.0.bn1.running_var": "muq.model.conv.conv.0.bn1.running_var",
        "text_encoder.backbone.encoder.layer.0.output.dense.weight": "roberta.encoder.layer.0.output.dense.weight",
    }
    state = ref.state_dict()
    for ours, theirs in ours_to_theirs.items():
        assert torch.equal(saved[ours], state[theirs]), ours
    assert not any("pooler" in k for k in saved)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_reference_scores_match_the_reference_in_float32(converted, batch_size):
    _, ref, model, _, _ = converted
    clips, prompts = clips_and_prompts()
    got = reference_scores(model, clips, prompts, sample_rate=16_000, batch_size=batch_size)
    want = reference_loop(ref, clips, 16_000, prompts, batch_size)
    np.testing.assert_allclose(_table(got), _table(want), rtol=0, atol=1e-5)


def test_reference_heads_match_the_reference_in_float64(converted):
    """MuQ's own forward computes its mel in float32, so float64 is checked from the frames on."""
    from deramos_reward.reference.inference import reference_heads

    _, ref, _, folder, _ = converted
    ref64 = copy.deepcopy(ref).double()
    model64 = dr.DeRAMOS.from_pretrained(folder).set_encoder_dtype(torch.float64)
    rng = np.random.default_rng(1)
    waves = torch.as_tensor(0.1 * rng.standard_normal((3, CLIP)))
    _, prompts = clips_and_prompts()
    with torch.no_grad():
        frames = model64.audio_encoder(waves).frames
        for batch in (slice(0, 1), slice(0, 3)):  # batch 1 (positional encoding) and batch 3 (padding)
            text = model64.text_encoder.encode(prompts[batch])
            got = reference_heads(model64.heads, frames[batch], text)
            want = ref64.heads(frames[batch], text.tokens, text.mask.long())
            for g, w in zip(got, want):
                np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=1e-10)


def test_the_reference_quirks_are_what_the_scores_show(converted):
    """Batch 1 adds positional encoding, and a padded prompt's TA depends on its batch's longest prompt."""
    _, _, model, _, _ = converted
    rng = np.random.default_rng(2)
    clips = [0.1 * rng.standard_normal(CLIP).astype(np.float32) for _ in range(2)]
    alone = reference_scores(model, clips, ["piano", "piano"], sample_rate=SR, batch_size=1)
    together = reference_scores(model, clips, ["piano", "piano"], sample_rate=SR, batch_size=2)
    assert abs(alone[0]["mi"] - together[0]["mi"]) > 1e-6  # the encoding moves MI in a batch of one
    padded = reference_scores(model, clips, ["piano", "piano and a much longer prompt"], sample_rate=SR)
    assert abs(padded[0]["ta"] - together[0]["ta"]) > 1e-6  # "piano" is now pooled over its padding


def test_clean_scores_equal_the_reference_where_it_is_well_defined(converted):
    """30 s clips, batches of two or more prompts of equal token length: ``dr.score`` agrees."""
    _, ref, model, _, _ = converted
    rng = np.random.default_rng(3)
    clips = [0.1 * rng.standard_normal(30 * 16_000).astype(np.float32) for _ in range(4)]
    prompts = ["calm piano", "rock drums", "jazz trio!", "lofi beats"]  # 10 bytes each: no padding
    want = reference_loop(ref, clips, 16_000, prompts, batch_size=4)
    for batch_size in (1, 3, 4):  # the clean scores do not depend on the batch
        got = dr.score(model, clips, prompts, sample_rate=16_000, batch_size=batch_size)
        np.testing.assert_allclose(_table(got), _table(want), rtol=0, atol=1e-5)


def test_converted_judge_works_as_a_reward(converted):
    _, _, model, _, _ = converted
    reward = dr.MusicReward(model)
    audio = (0.1 * torch.randn(2, 1, 2 * SR)).requires_grad_()
    r = reward(audio, SR, ["calm piano", "rock"])
    r.sum().backward()
    assert r.shape == (2,) and audio.grad is not None and audio.grad.abs().sum() > 0


# ---- bad files ------------------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_carrying_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"weight": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused and nothing in it ran"):
        convert_reference_checkpoint(tmp_path / "evil.pth", tmp_path / "out", config=tiny_config())
    assert not marker.exists() and not (tmp_path / "out").exists()
    with open(tmp_path / "plain.pkl", "wb") as f:  # a plain pickle (not a torch.save zip) too
        pickle.dump(_RunsCode(marker), f)
    with pytest.raises(ValueError, match="nothing in it ran"):
        convert_reference_checkpoint(tmp_path / "plain.pkl", tmp_path / "out", config=tiny_config())
    assert not marker.exists()


def test_bad_files_are_refused_in_one_line(converted, tmp_path):
    variant, ref, _, _, pth = converted
    cases = {}
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "other.pth")
    cases["other.pth"] = r"unexpected weights \[weight, bias\]"
    state = ref.state_dict()
    state["coherence_mlp.0.weight"] = torch.zeros(7, 7)
    torch.save(state, tmp_path / "shape.pth")
    cases["shape.pth"] = r"weight 'heads.ta.head.mlp.0.weight' has shape \(7, 7\)"
    data = pth.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    cases["truncated.pth"] = "not a readable torch.save file"
    (tmp_path / "folder.pth").mkdir()
    cases["folder.pth"] = "is a folder"
    cases["absent.pth"] = "does not exist"
    state = ref.state_dict()
    del state["cross_attention_norm.weight"]
    torch.save({"model_state_dict": state, "epoch": 3}, tmp_path / "missing.pth")
    cases["missing.pth"] = r"missing weights for \[heads.ta.norm.weight\]"
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            convert_reference_checkpoint(
                tmp_path / name, tmp_path / "out", variant=variant, config=tiny_config()
            )
        assert not (tmp_path / "out").exists(), name


def test_the_wrong_variant_is_refused_with_the_right_one_named(converted, tmp_path):
    variant, _, _, _, pth = converted
    other = "astar" if variant == "deramos" else "deramos"
    with pytest.raises(ValueError, match=f"convert it with variant '{variant}'"):
        convert_reference_checkpoint(pth, tmp_path / "out", variant=other, config=tiny_config())


def test_a_nested_state_dict_converts_like_a_bare_one(converted, tmp_path):
    variant, ref, _, folder, _ = converted
    torch.save({"state_dict": ref.state_dict(), "optimizer": {}}, tmp_path / "nested.pth")
    out = convert_reference_checkpoint(
        tmp_path / "nested.pth", tmp_path / "out", variant=variant, config=tiny_config()
    )
    a, b = load_file(out / "model.safetensors"), load_file(folder / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_converts_refuses_a_full_folder_and_overwrites(converted, tmp_path, capsys):
    from deramos_reward.cli import main

    variant, _, _, _, pth = converted
    config = tmp_path / "config.json"
    config.write_text(tiny_config().to_json())
    out = tmp_path / "judge"
    command = ["convert-reference", str(pth), str(out), "--variant", variant, "--config", str(config)]
    assert main(command) == 0
    assert dr.DeRAMOS.from_pretrained(out).config.ta_pooling == "mean"
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0]
    assert main(command + ["--overwrite"]) == 0
    capsys.readouterr()
    assert main(["convert-reference", str(tmp_path / "x.pth"), str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and not (tmp_path / "y").exists()


def test_a_config_that_loads_its_backbones_is_refused(converted, tmp_path):
    _, _, _, _, pth = converted
    cfg = tiny_config().to_dict()
    cfg["audio_encoder"].update(name_or_path="OpenMuQ/MuQ-large-msd-iter", backbone=None)
    with pytest.raises(ValueError, match="config.audio_encoder must build its backbone"):
        convert_reference_checkpoint(pth, tmp_path / "out", config=cfg)


def _table(rows):
    return [[r["mi"], r["ta"]] for r in rows]


def test_eval_reference_protocol_scores_sorted_batches_as_the_reference(converted, tmp_path, capsys):
    """``deramos eval --reference-protocol`` batches the clips sorted by file name, as the authors'
    dataset does, and reports the metrics of those scores."""
    import json

    from deramos_reward.cli import main
    from deramos_reward.data import load_dataset_split
    from deramos_reward.data.synthetic import make_corpus

    _, ref, _, folder, _ = converted
    make_corpus(tmp_path / "corpus", n_systems=3, n_prompts=6, seconds=2.0, splits=(0.3, 0.0, 0.7))
    examples = load_dataset_split(tmp_path / "corpus", "test")
    out, answer = tmp_path / "metrics.json", tmp_path / "answer.txt"
    argv = ["eval", "--model", str(folder), "--data", str(tmp_path / "corpus"), "--split", "test"]
    extra = ["--reference-protocol", "--batch-size", "5", "--out", str(out), "--answer", str(answer)]
    assert main(argv + extra + ["--quiet", "--n-boot", "10"]) == 0
    order = sorted(range(len(examples)), key=lambda i: Path(examples[i].path).name)
    rows = reference_loop(
        ref, [_read(examples[i].path) for i in order], 16_000, [examples[i].prompt for i in order], 5
    )
    want = {examples[i].wav_id: [r["mi"], r["ta"]] for i, r in zip(order, rows)}
    got = {line.split(",")[0]: [float(v) for v in line.split(",")[1:]] for line in answer.read_text().split()}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=0, atol=1e-5)
    assert json.loads(out.read_text())["protocol"] == "reference"
    capsys.readouterr()
    assert main(argv + ["--reference-protocol", "--max-seconds", "10"]) == 2
    assert "--max-seconds" in capsys.readouterr().err


def _read(path):
    import soundfile

    return soundfile.read(path, dtype="float32")[0]


def test_later_astar_code_with_its_contrastive_head_converts(tmp_path):
    """Later ASTAR-NTU code saves a contrastive head its forward never reads: dropped for ``astar``; the
    same pool without the projection is DeRA-MOS's and is refused for ``astar`` (see above)."""
    torch.manual_seed(5)
    ref = ReferenceModel(tiny_config(), "astar", contrastive_head=True).eval()
    torch.save(ref.state_dict(), tmp_path / "astar.pth")
    out = convert_reference_checkpoint(
        tmp_path / "astar.pth", tmp_path / "judge", variant="astar", config=tiny_config()
    )
    model = dr.DeRAMOS.from_pretrained(out)
    clips, prompts = clips_and_prompts()
    got = reference_scores(model, clips[:2], prompts[:2], sample_rate=16_000)
    np.testing.assert_allclose(
        _table(got), _table(reference_loop(ref, clips[:2], 16_000, prompts[:2])), rtol=0, atol=1e-5
    )
    with pytest.raises(ValueError, match="unexpected weights"):
        convert_reference_checkpoint(tmp_path / "astar.pth", tmp_path / "other", config=tiny_config())
