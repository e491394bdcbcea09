"""Safe loading: pickles in any disguise are refused unread, weights and configs are validated with
the offending key named, and the hub is only contacted for a hub id (never with HF_HUB_OFFLINE)."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import socket

import huggingface_hub
import pytest
import torch
from conftest import tone
from safetensors.torch import load_file, save_file

import deramos_reward as dr
from deramos_reward.checkpoint import UnsafeCheckpointError, find_pickles
from deramos_reward.encoders import BackboneUnavailableError


class _Payload:
    """Unpickling this creates ``marker``: proof that a file was (or was not) unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model gains nothing from more threads, and a busy runner makes them slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def ckpt(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


@pytest.fixture()
def no_network(monkeypatch):
    """Fail loudly (and record) any hub download or socket connection."""
    calls: list[str] = []

    def refuse(what):
        def f(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"unexpected network access: {what}")

        return f

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse("snapshot_download"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse("hf_hub_download"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    return calls


def _same_outputs(a, b):
    audio = torch.tensor(tone(1.0, 24_000)).unsqueeze(0)
    x, y = a(audio, ["soft strings"]), b(audio, ["soft strings"])
    return torch.equal(x.mi, y.mi) and torch.equal(x.ta, y.ta)


# ---- pickles ---------------------------------------------------------------------------------
def _plant(folder, tmp_path, how, marker):
    blob = pickle.dumps(_Payload(marker))
    if how == "upper-case suffix":
        (folder / "PYTORCH_MODEL.BIN").write_bytes(blob)
        return "PYTORCH_MODEL.BIN"
    if how == "mixed-case suffix":
        (folder / "weights.Pth").write_bytes(blob)
        return "weights.Pth"
    if how == "nested folder":
        (folder / "extra" / "deeper").mkdir(parents=True)
        (folder / "extra" / "deeper" / "optimizer.pt").write_bytes(blob)
        return os.path.join("extra", "deeper", "optimizer.pt")
    if how == "symlink to a pickle":
        target = tmp_path / "elsewhere" / "real.ckpt"
        target.parent.mkdir()
        target.write_bytes(blob)
        (folder / "weights").symlink_to(target)  # the link's own name has no suffix
        return "weights"
    if how == "symlink named like a pickle":
        target = tmp_path / "blob"
        target.write_bytes(blob)
        (folder / "model.pkl").symlink_to(target)
        return "model.pkl"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "upper-case suffix",
        "mixed-case suffix",
        "nested folder",
        "symlink to a pickle",
        "symlink named like a pickle",
    ],
)
def test_pickles_are_refused_unread(ckpt, tmp_path, how):
    marker = tmp_path / "UNPICKLED"
    name = _plant(ckpt, tmp_path, how, marker)
    assert find_pickles(ckpt) == [name]
    with pytest.raises(UnsafeCheckpointError, match="pickle.*arbitrary code") as info:
        dr.DeRAMOS.from_pretrained(ckpt)
    assert repr(name) in str(info.value)
    assert not marker.exists()


def test_a_pickle_or_torch_save_named_model_safetensors_is_refused_unread(ckpt, tmp_path):
    marker = tmp_path / "UNPICKLED"
    (ckpt / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="is a pickle, not a safetensors file"):
        dr.DeRAMOS.from_pretrained(ckpt)
    torch.save({"w": torch.zeros(2)}, ckpt / "model.safetensors")
    with pytest.raises(UnsafeCheckpointError, match="torch.save zip archive"):
        dr.DeRAMOS.from_pretrained(ckpt)
    assert not marker.exists()


def test_a_symlinked_folder_is_not_searched_but_files_beside_it_are(ckpt, tmp_path):
    elsewhere = tmp_path / "big_cache"
    elsewhere.mkdir()
    (elsewhere / "unrelated.bin").write_bytes(b"\x80\x04.")
    (ckpt / "cache").symlink_to(elsewhere, target_is_directory=True)
    assert find_pickles(ckpt) == []
    dr.DeRAMOS.from_pretrained(ckpt)  # loads: nothing under the folder itself is a pickle


# ---- weights ---------------------------------------------------------------------------------
def _edit_weights(folder, edit, metadata=None):
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata=metadata or {"format": "pt"})


KEY = "heads.ta.norm.weight"
BUFFER = "audio_encoder.backbone.model.conv.conv.0.bn1.num_batches_tracked"


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda s: s.update({KEY: s[KEY].to(torch.int32)}), rf"'{KEY}' has dtype torch.int32 but the model expects torch.float32"),
        (lambda s: s.update({KEY: s[KEY] > 0}), rf"'{KEY}' has dtype torch.bool"),
        (lambda s: s.update({BUFFER: s[BUFFER].float()}), rf"'{BUFFER}' has dtype torch.float32 but the model expects torch.int64"),
        (lambda s: s[KEY].__setitem__(3, float("nan")), rf"'{KEY}' holds NaN or Inf"),
        (lambda s: s[KEY].__setitem__(0, float("-inf")), rf"'{KEY}' holds NaN or Inf"),
        (lambda s: s.update({KEY: s[KEY][:-1].clone()}), rf"'{KEY}' has shape"),
        (lambda s: s.pop(KEY), rf"missing weights \['{KEY}'\]"),
        (lambda s: s.update({"heads.bonus": torch.zeros(1)}), r"unexpected weights \['heads.bonus'\]"),
    ],
)  # fmt: skip
def test_bad_weights_are_named(ckpt, edit, match):
    _edit_weights(ckpt, edit)
    with pytest.raises(ValueError, match=match):
        dr.DeRAMOS.from_pretrained(ckpt)


def test_half_precision_weights_load_by_upcasting(ckpt, tiny_model):
    _edit_weights(ckpt, lambda s: s.update({k: v.half() for k, v in s.items() if v.is_floating_point()}))
    model = dr.DeRAMOS.from_pretrained(ckpt)
    ref = tiny_model.state_dict()
    for key, value in model.state_dict().items():
        assert value.dtype == ref[key].dtype
        assert torch.equal(
            value, ref[key].half().to(ref[key].dtype) if value.is_floating_point() else ref[key]
        )


def test_safetensors_metadata(ckpt, tiny_model):
    _edit_weights(ckpt, lambda s: None, {"format": "pt", "note": "extra keys are fine", "epoch": "7"})
    assert _same_outputs(dr.DeRAMOS.from_pretrained(ckpt), tiny_model)
    _edit_weights(ckpt, lambda s: None, {"format": "tf"})
    with pytest.raises(ValueError, match="format='tf'; expected 'pt'"):
        dr.DeRAMOS.from_pretrained(ckpt)


def test_truncated_safetensors_is_a_clear_error(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        dr.DeRAMOS.from_pretrained(ckpt)


# ---- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content,error,match",
    [
        (b"[1, 2, 3]", TypeError, "must hold a JSON object, got list"),
        (b"null", TypeError, "must hold a JSON object, got NoneType"),
        (b'"config"', TypeError, "must hold a JSON object, got str"),
        (b"{not json", ValueError, "is not valid JSON"),
        (b'{"n_bins": 20\xff}', ValueError, "is not valid JSON"),
    ],
)
def test_config_json_must_be_an_object(ckpt, content, error, match):
    (ckpt / "config.json").write_bytes(content)
    with pytest.raises(error, match=match):
        dr.DeRAMOS.from_pretrained(ckpt)


def _edit_config(folder, edit):
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    (folder / "config.json").write_text(json.dumps(data))


def _text(d):
    return d["text_encoder"]["backbone"]


def _audio(d):
    return d["audio_encoder"]["backbone"]


@pytest.mark.parametrize(
    "edit,error,match",
    [
        (lambda d: _text(d).update(hiden_size=32), ValueError, r"config.text_encoder.backbone has unknown key\(s\) \['hiden_size'\]"),
        (lambda d: _text(d).update(hidden_size="32"), TypeError, r"config.text_encoder.backbone.hidden_size must be int, got str"),
        (lambda d: _text(d).update(num_hidden_layers=2.0), TypeError, r"backbone.num_hidden_layers must be int, got float"),
        (lambda d: _text(d).update(is_decoder="no"), TypeError, r"backbone.is_decoder must be bool"),
        (lambda d: _audio(d).update(encoder_dimm=64), ValueError, r"config.audio_encoder.backbone has unknown key\(s\) \['encoder_dimm'\]"),
        (lambda d: _audio(d)["w2v2_config"].update(hidden_sise=64), ValueError, r"config.audio_encoder.backbone.w2v2_config has unknown key"),
        (lambda d: _audio(d)["w2v2_config"].update(num_attention_heads=[4]), TypeError, r"w2v2_config.num_attention_heads must be int, got list"),
        (lambda d: _audio(d)["stat"].update(melspec_2048_mean="6.7"), TypeError, r"backbone.stat.melspec_2048_mean must be float"),
        (lambda d: _audio(d).update(w2v2_config=[1]), TypeError, r"backbone.w2v2_config must be a JSON object"),
        (lambda d: d["text_encoder"].update(backbone=None, name_or_path=5), TypeError, r"config.text_encoder.name_or_path must be str"),
        # valid types but another size: the weights say no, naming the first mismatching weight
        (lambda d: _text(d).update(intermediate_size=48), ValueError, r"weight 'text_encoder.backbone.encoder.layer.0.intermediate.dense.weight' has shape"),
        (lambda d: d["audio_encoder"].update(bogus=1), ValueError, r"config.audio_encoder has unknown key"),
    ],
)  # fmt: skip
def test_nested_backbone_configs_are_validated(ckpt, edit, error, match):
    _edit_config(ckpt, edit)
    with pytest.raises(error, match=match):
        dr.DeRAMOS.from_pretrained(ckpt)


# ---- the hub ---------------------------------------------------------------------------------
def test_local_folders_never_touch_the_network(ckpt, tiny_model, tmp_path, no_network, monkeypatch):
    assert _same_outputs(dr.DeRAMOS.from_pretrained(ckpt), tiny_model)
    # a relative folder that looks like a hub id ("owner/name") is still the local folder
    monkeypatch.chdir(tmp_path)
    (tmp_path / "someone").mkdir()
    shutil.copytree(ckpt, tmp_path / "someone" / "tiny")
    assert _same_outputs(dr.DeRAMOS.from_pretrained("someone/tiny"), tiny_model)
    # backbones referenced by local folder, as a user's offline copy would be
    tiny_model.audio_encoder.backbone.save_pretrained(tmp_path / "muq")
    tiny_model.text_encoder.backbone.save_pretrained(tmp_path / "roberta")
    tiny_model.text_encoder.tokenizer.save_pretrained(tmp_path / "roberta")
    cfg = dr.DeRAMOSConfig.from_dict(tiny_model.config.to_dict())
    cfg.audio_encoder.name_or_path, cfg.audio_encoder.backbone = str(tmp_path / "muq"), None
    cfg.text_encoder.name_or_path, cfg.text_encoder.backbone = str(tmp_path / "roberta"), None
    model = dr.DeRAMOS(cfg)
    model.heads.load_state_dict(tiny_model.heads.state_dict())
    model.save_pretrained(tmp_path / "heads_only")
    assert _same_outputs(dr.DeRAMOS.from_pretrained(tmp_path / "heads_only"), tiny_model)
    assert no_network == []


def _fake_hub_cache(cache, repo, files):
    """The huggingface_hub cache layout for one snapshot of ``repo``."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in files:
        shutil.copy(f, snap / f.name)


def test_hf_hub_offline_is_honoured_even_when_set_after_import(ckpt, tiny_model, tmp_path, monkeypatch):
    connections: list[tuple] = []

    def record(self, address):
        connections.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as if imported online
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # not in the cache: one clear error, no connection attempted
    with pytest.raises(
        BackboneUnavailableError, match="'someone/deramos-tiny' is not available.*HF_HUB_OFFLINE"
    ):
        dr.DeRAMOS.from_pretrained("someone/deramos-tiny")
    # in the cache: loaded from it, still offline
    _fake_hub_cache(
        tmp_path / "hub", "someone/deramos-tiny", [ckpt / "config.json", ckpt / "model.safetensors"]
    )
    assert _same_outputs(dr.DeRAMOS.from_pretrained("someone/deramos-tiny"), tiny_model)
    assert connections == []


def test_only_config_and_safetensors_are_fetched_for_a_hub_id(ckpt, tiny_model, monkeypatch):
    """What a hub download asks for: the two files, never *.bin / *.pt (mocked download)."""
    seen = {}

    def fake_snapshot_download(repo_id, allow_patterns=None, local_files_only=False, **kwargs):
        seen.update(repo_id=repo_id, allow_patterns=allow_patterns, local_files_only=local_files_only)
        return str(ckpt)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert _same_outputs(dr.DeRAMOS.from_pretrained("someone/deramos-tiny"), tiny_model)
    assert seen == {
        "repo_id": "someone/deramos-tiny",
        "allow_patterns": ["config.json", "model.safetensors"],
        "local_files_only": False,
    }
