"""Checkpoints: exact round trip, safe loading, config validation, missing backbones."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import tone
from safetensors.torch import load_file, save_file

import deramos_reward as dr
from deramos_reward.checkpoint import UnsafeCheckpointError
from deramos_reward.encoders import BackboneUnavailableError


def test_round_trip_gives_identical_outputs(tiny_model, tiny_checkpoint):
    assert sorted(p.name for p in tiny_checkpoint.iterdir()) == ["config.json", "model.safetensors"]
    loaded = dr.DeRAMOS.from_pretrained(tiny_checkpoint)
    audio = torch.stack([torch.tensor(tone(1.5, 24_000, f)) for f in (200, 600)])
    a = tiny_model(audio, ["bright synth", "dark cello"])
    b = loaded(audio, ["bright synth", "dark cello"])
    for field in ("mi", "ta", "mi_logits", "ta_logits", "audio_embedding", "text_embedding"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert loaded.config == tiny_model.config
    assert dr.DeRAMOSConfig.from_json(tiny_model.config.to_json()) == tiny_model.config


def test_tiny_backbones_are_saved_in_full(tiny_checkpoint, tiny_model):
    keys = set(load_file(tiny_checkpoint / "model.safetensors"))
    assert keys == set(tiny_model.state_dict())


def test_referenced_backbones_are_not_copied(tiny_model):
    cfg = dr.DeRAMOSConfig.from_dict(tiny_model.config.to_dict())
    cfg.text_encoder.name_or_path, cfg.text_encoder.backbone = "some/text-model", None
    tiny_model.config, original = cfg, tiny_model.config
    try:
        saved = tiny_model._saved_state()
    finally:
        tiny_model.config = original
    assert saved and not any(k.startswith("text_encoder.") for k in saved)
    assert any(k.startswith("audio_encoder.") for k in saved)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.ckpt"])
def test_pickles_are_refused(tiny_checkpoint, tmp_path, name):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeCheckpointError, match="pickle.*arbitrary code"):
        dr.DeRAMOS.from_pretrained(folder)


def _edit_config(src, dst, edit):
    shutil.copytree(src, dst)
    data = json.loads((dst / "config.json").read_text())
    edit(data)
    (dst / "config.json").write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize(
    "edit,error,match",
    [
        (lambda d: d.update(n_binz=20), ValueError, r"unknown key\(s\) \['n_binz'\]"),
        (
            lambda d: d["audio_encoder"].update(colour="red"),
            ValueError,
            r"config.audio_encoder has unknown key",
        ),
        (lambda d: d.update(n_bins="20"), TypeError, r"config.n_bins must be int"),
        (lambda d: d.update(mi_heads=True), TypeError, r"config.mi_heads must be int"),
        (lambda d: d["text_encoder"].update(kind="bert"), ValueError, r"text_encoder.kind must be one of"),
        (lambda d: d.update(n_bins=10), ValueError, r"weight 'heads.mi.head.mlp.6.weight' has shape"),
    ],
)
def test_config_values_are_validated(tiny_checkpoint, tmp_path, edit, error, match):
    folder = _edit_config(tiny_checkpoint, tmp_path / "ckpt", edit)
    with pytest.raises(error, match=match):
        dr.DeRAMOS.from_pretrained(folder)


def test_missing_and_extra_weights_are_named(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    state = load_file(folder / "model.safetensors")
    state.pop("heads.ta.norm.weight")
    state["heads.extra"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match="missing weights.*heads.ta.norm.weight"):
        dr.DeRAMOS.from_pretrained(folder)


def test_missing_backbone_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dr.DeRAMOSConfig.tiny()
    cfg.text_encoder.name_or_path, cfg.text_encoder.backbone = "nobody/not-a-real-roberta", None
    with pytest.raises(BackboneUnavailableError) as info:
        dr.DeRAMOS(cfg)
    message = str(info.value)
    assert (
        "'nobody/not-a-real-roberta'" in message and "HF_HUB_OFFLINE" in message and "local folder" in message
    )


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        dr.DeRAMOS.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        dr.DeRAMOS.from_pretrained(tmp_path / "empty")


def test_backbones_load_from_local_folders(tiny_model, tmp_path):
    """The real from_pretrained path, on folders written here (as a user's local copy would be)."""
    tiny_model.audio_encoder.backbone.save_pretrained(tmp_path / "muq")
    tiny_model.text_encoder.backbone.save_pretrained(tmp_path / "roberta")
    tiny_model.text_encoder.tokenizer.save_pretrained(tmp_path / "roberta")
    cfg = dr.DeRAMOSConfig.from_dict(tiny_model.config.to_dict())
    cfg.audio_encoder.name_or_path, cfg.audio_encoder.backbone = str(tmp_path / "muq"), None
    cfg.text_encoder.name_or_path, cfg.text_encoder.backbone = str(tmp_path / "roberta"), None
    model = dr.DeRAMOS(cfg).eval()
    model.heads.load_state_dict(tiny_model.heads.state_dict())
    audio = torch.tensor(tone(1.0, 24_000)).unsqueeze(0)
    a, b = tiny_model(audio, ["warm pads"]), model(audio, ["warm pads"])
    torch.testing.assert_close(a.mi, b.mi, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.text_embedding, b.text_embedding, atol=1e-6, rtol=0)
    # and the checkpoint of such a model holds only the heads
    model.save_pretrained(tmp_path / "ckpt")
    assert all(k.startswith("heads.") for k in load_file(tmp_path / "ckpt" / "model.safetensors"))
    again = dr.DeRAMOS.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(again(audio, ["warm pads"]).ta, b.ta)


def test_checkpoint_from_before_the_reference_fields_loads_and_scores_as_before(tmp_path):
    """A config.json written before the architecture fields existed was built with the tanh pooling
    and positional encoding: it must load with them, the same weights and the same scores."""
    from deramos_reward.config import LEGACY_ARCHITECTURE

    cfg = dr.DeRAMOSConfig.from_dict({**dr.DeRAMOSConfig.tiny().to_dict(), **LEGACY_ARCHITECTURE})
    torch.manual_seed(3)
    old = dr.DeRAMOS(cfg).eval()
    folder = old.save_pretrained(tmp_path / "old")
    data = json.loads((folder / "config.json").read_text())
    for key in LEGACY_ARCHITECTURE:
        del data[key]  # what an earlier version wrote
    (folder / "config.json").write_text(json.dumps(data))
    assert "heads.mi.pool.proj.weight" in load_file(folder / "model.safetensors")

    loaded = dr.DeRAMOS.from_pretrained(folder)
    assert loaded.config.attentive_pooling == "tanh" and loaded.config.positional_encoding is True
    audio = torch.stack([torch.tensor(tone(1.5, 24_000, f)) for f in (200, 600)])
    a, b = old(audio, ["bright synth", "dark cello"]), loaded(audio, ["bright synth", "dark cello"])
    assert torch.equal(a.mi, b.mi) and torch.equal(a.ta, b.ta)
    # the same file read as a new config (today's defaults) is refused: its pools have weights the
    # reference's architecture does not
    with pytest.raises(ValueError, match="unexpected weights.*pool.proj"):
        _edit_config(folder, tmp_path / "new", lambda d: d.update(attentive_pooling="linear"))
        dr.DeRAMOS.from_pretrained(tmp_path / "new")
