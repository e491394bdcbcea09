"""AudioCraft MusicGen builders that work offline (tests, demo, benchmarks).

``audiocraft`` is never a declared dependency (it pins an old torch); install it with the recipe in
the README. It is imported lazily, so importing this module never needs it.

Two builders, both deterministic given ``seed`` and neither touching the network:

- :func:`tiny_musicgen`: AudioCraft's debug EnCodec (32 kHz, 25 frames/s, 4 codebooks of 400) and a
  2-layer, 16-wide LM. Generates a second of audio in tens of milliseconds on a CPU.
- :func:`musicgen_small_architecture`: the architecture of ``facebook/musicgen-small`` (24-layer,
  1024-wide LM over 4 codebooks of 2048; full-size 32 kHz EnCodec at 50 frames/s) with random weights,
  for speed and memory benchmarks.

Text conditioning: the pretrained models condition on T5, whose weights AudioCraft downloads from
the hub. Both builders use a :class:`~audiocraft.modules.conditioners.LUTConditioner` with
``tokenizer="noop"`` instead: each whole description is hashed (sha256, deterministic across runs)
into one of ``n_bins`` rows of a lookup table, so different prompts get different conditioning
(unless two prompts collide, probability ``1 / n_bins``). AudioCraft's own ``get_debug_lm_model``
is not used because its whitespace tokenizer asks spacy to download a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from deramos_reward._optional import require

if TYPE_CHECKING:  # pragma: no cover - typing only
    from audiocraft.models import MusicGen

__all__ = ["tiny_musicgen", "musicgen_small_architecture", "TINY_LUT_BINS"]

TINY_LUT_BINS = 1024
"""Rows of the description lookup table in :func:`tiny_musicgen` (hash buckets for prompts)."""

# What both LMs share: 4 codebooks, AudioCraft's own causal transformer with cross-attention on the
# text, no dropout (as musicgen-small), so train and eval mode compute the same thing.
_LM_KIND = dict(n_q=4, custom=True, causal=True, cross_attention=True, dropout=0.0)
# facebook/musicgen-small (audiocraft config/model/lm/musicgen_lm.yaml + model_scale/small.yaml), by topic.
_SMALL_SHAPE = dict(card=2048, dim=1024, num_heads=16, num_layers=24, hidden_scale=4)
_SMALL_BLOCK = dict(norm="layer_norm", norm_first=True, activation="gelu", positional_embedding="sin")
_SMALL_NO_BIAS = dict(bias_proj=False, bias_ff=False, bias_attn=False)
_SMALL_INIT = dict(weight_init="gaussian", depthwise_init="current", zero_bias_init=True)
_SMALL_RUNTIME = dict(memory_efficient=True, cfg_dropout=0.2, cfg_coef=3.0)
_SMALL_LM = {**_LM_KIND, **_SMALL_SHAPE, **_SMALL_BLOCK, **_SMALL_NO_BIAS, **_SMALL_INIT, **_SMALL_RUNTIME}
_T5_BASE_DIM = 768


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return seed


def _check_duration(max_duration: float) -> float:
    if not isinstance(max_duration, (int, float)) or isinstance(max_duration, bool) or max_duration <= 0:
        raise ValueError(f"max_duration must be a positive number of seconds, got {max_duration!r}")
    return float(max_duration)


def _lut_lm(
    *,
    n_q: int,
    card: int,
    dim: int,
    lut_dim: int,
    n_bins: int = TINY_LUT_BINS,
    **lm_kwargs,
):
    """An AudioCraft ``LMModel`` with a delay pattern and a hashed-description LUT conditioner."""
    lm_mod = require("audiocraft.models.lm")
    patterns = require("audiocraft.modules.codebooks_patterns")
    cond = require("audiocraft.modules.conditioners")
    provider = cond.ConditioningProvider(
        {"description": cond.LUTConditioner(n_bins=n_bins, dim=lut_dim, output_dim=dim, tokenizer="noop")}
    )
    fuser = cond.ConditionFuser({"cross": ["description"], "prepend": [], "sum": [], "input_interpolate": []})
    return lm_mod.LMModel(
        patterns.DelayedPatternProvider(n_q=n_q), provider, fuser, n_q=n_q, card=card, dim=dim, **lm_kwargs
    )


def tiny_musicgen(
    seed: int = 0,
    max_duration: float = 30.0,
    device: str | torch.device = "cpu",
    head_std: float | None = None,
) -> MusicGen:
    """A tiny random AudioCraft ``MusicGen`` built offline; deterministic given ``seed``.

    Compression model: ``audiocraft.models.builders.get_debug_compression_model`` (mono, 32 kHz,
    25 frames per second, 4 codebooks of 400 entries). LM: 2 layers, width 16, 4 heads, delay pattern,
    cross-attention on a hashed-description LUT (:data:`TINY_LUT_BINS` rows, see the module docstring),
    no dropout (as musicgen-small), so train and eval mode compute the same thing.

    ``head_std``: redraw the LM's output heads (``lm.linears``) from a normal with this std. With the
    default initialisation (uniform, std 0.14 for width 16) the next-code distribution is nearly uniform
    (5.6 nats per code of at most 5.99), so fine-tuning an adapter on the transformer layers barely moves
    what is sampled; ``head_std=0.5`` gives a peaked distribution (about 4.2 nats) like a trained
    MusicGen's, on which DPO and RL visibly learn (tests and examples use it).

    ``musicgen.generate(descriptions, return_tokens=True)`` returns audio ``[B, 1, T]`` at 32 kHz and
    codes ``[B, 4, S]`` with ``S = int(duration * 25)``. The default generation duration is 15 s as in
    AudioCraft; call ``musicgen.set_generation_params(duration=...)`` for shorter clips.

    The global torch RNG of the caller is left untouched.
    """
    _check_seed(seed)
    max_duration = _check_duration(max_duration)
    builders = require("audiocraft.models.builders")
    musicgen_mod = require("audiocraft.models.musicgen")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        compression = builders.get_debug_compression_model("cpu")
        lm = _lut_lm(card=compression.cardinality, dim=16, lut_dim=16, num_heads=4, num_layers=2, **_LM_KIND)
        if head_std is not None:
            _redraw_heads(lm.linears, head_std)
    compression = compression.to(device).eval()
    lm = lm.to(device).eval()
    return musicgen_mod.MusicGen("tiny-debug", compression, lm, max_duration=max_duration)


def _redraw_heads(heads: torch.nn.ModuleList, std: float) -> None:
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
        raise ValueError(f"head_std must be a positive number or None, got {std!r}")
    with torch.no_grad():
        for head in heads:
            torch.nn.init.normal_(head.weight, 0.0, float(std))


def _full_size_encodec_32khz():
    """AudioCraft's 32 kHz EnCodec as used by MusicGen (SEANet ratios 8-5-4-4, 50 frames/s, RVQ 4 x 2048)."""
    modules = require("audiocraft.modules")
    encodec = require("audiocraft.models.encodec")
    qt = require("audiocraft.quantization")
    # SEANet of audiocraft's encodec_32khz config, by topic
    shape = dict(channels=1, dimension=128, n_filters=64, n_residual_layers=1, ratios=[8, 5, 4, 4], lstm=2)
    layers = dict(activation="ELU", activation_params={"alpha": 1.0}, norm="weight_norm", norm_params={})
    kernels = dict(kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_base=2, compress=2)
    seanet = dict(**shape, **layers, **kernels, causal=False, pad_mode="constant", true_skip=True)
    encoder = modules.SEANetEncoder(**seanet)
    decoder = modules.SEANetDecoder(**seanet)
    quantizer = qt.ResidualVectorQuantizer(dimension=128, n_q=4, bins=2048)
    quantizer(torch.randn(2, 128, 64), 50)  # initialise the codebooks (k-means init on random features)
    return encodec.EncodecModel(encoder, decoder, quantizer, frame_rate=50, sample_rate=32000, channels=1)


def musicgen_small_architecture(
    seed: int = 0, max_duration: float = 30.0, device: str | torch.device = "cpu"
) -> MusicGen:
    """AudioCraft ``MusicGen`` with the architecture of ``facebook/musicgen-small``, random weights, offline.

    For speed and memory benchmarks only (it makes noise). Built from the published configuration:

    - LM: 24 layers, width 1024, 16 heads, feed-forward 4096, pre-norm, no biases, sinusoidal positions,
      4 codebooks of 2048 with the delay pattern, cross-attention conditioning, CFG coefficient 3.
      Attention uses AudioCraft's ``memory_efficient`` path (torch ``scaled_dot_product_attention``).
    - Compression model: full-size 32 kHz EnCodec (SEANet 8-5-4-4, 64 filters, 2-layer LSTM,
      128-d latent, RVQ 4 x 2048), 50 frames per second, random weights.
    - Text conditioning: a LUT of T5-base width (768, projected to 1024) over hashed descriptions,
      instead of the T5-base encoder, whose weights need the hub. Each prompt is one conditioning
      token (T5 gives one per word piece), so cross-attention over the text is slightly cheaper than
      in the real model and the T5 encoder's own cost (a few ms per prompt) is not included.
    """
    _check_seed(seed)
    max_duration = _check_duration(max_duration)
    musicgen_mod = require("audiocraft.models.musicgen")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        compression = _full_size_encodec_32khz()
        lm = _lut_lm(lut_dim=_T5_BASE_DIM, **_SMALL_LM)
    compression = compression.to(device).eval()
    lm = lm.to(device).eval()
    return musicgen_mod.MusicGen("musicgen-small-architecture", compression, lm, max_duration=max_duration)
