"""Transformers MusicGen builders that work offline (tests, demo, benchmarks).

Both builders return ``(MusicgenForConditionalGeneration, MusicgenProcessor)`` with random weights,
deterministic given ``seed``, without touching the hub:

- :func:`tiny_musicgen`: a few-thousand-parameter model that generates in milliseconds.
- :func:`musicgen_small_architecture`: the dimensions of ``facebook/musicgen-small`` (T5-base text
  encoder, 32 kHz EnCodec, 24-layer 1024-wide decoder over 4 codebooks of 2048), for benchmarks.

The processor's tokenizer is a byte-level :class:`~transformers.T5TokenizerFast` built with the
``tokenizers`` library (:func:`byte_level_t5_tokenizer`): T5's special tokens (``<pad>`` = 0,
``</s>`` = 1, ``<unk>`` = 2) followed by one token per byte, with ``</s>`` appended to every text
like T5 does. It is not T5's SentencePiece vocabulary (which needs the hub), but it encodes any text
and different prompts give different token ids, which is all a random-weight model needs.

Configs are built as ``MusicgenConfig(text_encoder=..., audio_encoder=..., decoder=...)`` from
plain dicts, which works on transformers 4.x and 5.x (5.x removed ``from_sub_models_config``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import (
        MusicgenConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5TokenizerFast,
    )

__all__ = [
    "byte_level_t5_tokenizer",
    "tiny_musicgen_config",
    "musicgen_small_config",
    "tiny_musicgen",
    "musicgen_small_architecture",
]

_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


T5_MAX_TOKENS = 512
"""The prompt tokens MusicGen's T5 tokenizer keeps (``model_max_length`` of t5-base); the tiny tokenizer
keeps as many."""


def byte_level_t5_tokenizer() -> T5TokenizerFast:
    """A T5-style fast tokenizer with one token per byte, built offline; like T5's, it keeps at most
    :data:`T5_MAX_TOKENS` tokens of a prompt when asked to truncate.

    Vocabulary: ``<pad>`` (0), ``</s>`` (1), ``<unk>`` (2), then the 256 byte symbols of a byte-level
    pre-tokenizer (259 tokens in all). ``</s>`` is appended to each encoded text. Works with
    ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    symbols = list(_SPECIAL_TOKENS) + sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=T5_MAX_TOKENS,
    )


def _musicgen_config(t5: dict, encodec: dict, decoder: dict) -> MusicgenConfig:
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    return MusicgenConfig(
        text_encoder=T5Config(**t5).to_dict(),
        audio_encoder=EncodecConfig(**encodec).to_dict(),
        decoder=MusicgenDecoderConfig(**decoder).to_dict(),
    )


def _t5(vocab_size: int, width: int, head_dim: int, ffn: int, layers: int, heads: int, **extra) -> dict:
    """T5 encoder settings; pad id 0, EOS id 1 and decoder start 0, as in the T5 tokenizers."""
    ids = dict(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    shape = dict(d_model=width, d_kv=head_dim, d_ff=ffn, num_layers=layers, num_heads=heads)
    return dict(vocab_size=vocab_size, **shape, **ids, **extra)


def _decoder(card: int, width: int, layers: int, heads: int, ffn: int, dropout: float, **extra) -> dict:
    """MusicGen decoder settings over 4 codebooks of ``card`` codes; pad and BOS id ``card``."""
    shape = dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, ffn_dim=ffn)
    ids = dict(vocab_size=card, pad_token_id=card, bos_token_id=card)
    return dict(**shape, **ids, num_codebooks=4, max_position_embeddings=2048, dropout=dropout, **extra)


def _encodec_32khz(**overrides) -> dict:
    """EnCodec 32 kHz as in ``facebook/encodec_32khz`` / MusicGen: 50 frames/s, 4 codebooks at 2.2 kbps."""
    config = dict(
        sampling_rate=32000,
        audio_channels=1,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=2048,
        codebook_dim=128,
        hidden_size=128,
        num_filters=64,
        num_lstm_layers=2,
        num_residual_layers=1,
        compress=2,
        kernel_size=7,
        last_kernel_size=7,
        residual_kernel_size=3,
        dilation_growth_rate=2,
        use_causal_conv=False,
        pad_mode="reflect",
        norm_type="weight_norm",
        normalize=False,
        chunk_length_s=None,
        overlap=None,
    )
    config.update(overrides)
    return config


def tiny_musicgen_config(vocab_size: int = 259) -> MusicgenConfig:
    """Config of :func:`tiny_musicgen`.

    - text encoder: T5 with ``d_model`` 16, 2 layers, 4 heads, ``vocab_size`` (259 matches
      :func:`byte_level_t5_tokenizer`);
    - audio encoder: EnCodec at 32 kHz with MusicGen's hop (640 samples, 50 frames/s) but 4 filters,
      hidden size 16, codebooks of 128 entries (7 bits); ``target_bandwidths=[1.5]`` gives exactly
      4 quantizers (1500 // (50 * 7)), as many as the decoder has codebooks (a bandwidth too low for
      the frame rate gives 0 quantizers and generation crashes);
    - decoder: hidden size 16, 2 layers, 4 heads, feed-forward 32, 4 codebooks of 128
      (pad/BOS id 128), dropout 0.
    """
    t5 = _t5(vocab_size, width=16, head_dim=4, ffn=32, layers=2, heads=4, dropout_rate=0.0)
    encodec = _encodec_32khz(
        codebook_size=128,
        codebook_dim=16,
        hidden_size=16,
        num_filters=4,
        num_lstm_layers=1,
        target_bandwidths=[1.5],
    )
    decoder = _decoder(128, width=16, layers=2, heads=4, ffn=32, dropout=0.0)
    return _musicgen_config(t5, encodec, decoder)


def musicgen_small_config(vocab_size: int = 32128) -> MusicgenConfig:
    """Config with the dimensions of ``facebook/musicgen-small``.

    T5-base encoder (``d_model`` 768, 12 layers, 12 heads, ``d_ff`` 3072, vocabulary 32128), EnCodec
    32 kHz (4 codebooks of 2048 at 50 frames/s), decoder with 24 layers, hidden size 1024, 16 heads,
    feed-forward 4096, GELU, dropout 0.1, pad/BOS id 2048.
    """
    t5 = _t5(
        vocab_size, width=768, head_dim=64, ffn=3072, layers=12, heads=12, dropout_rate=0.1,
        relative_attention_num_buckets=32, feed_forward_proj="relu",
    )  # fmt: skip
    no_dropout = dict(attention_dropout=0.0, activation_dropout=0.0)
    decoder = _decoder(
        2048, width=1024, layers=24, heads=16, ffn=4096, dropout=0.1, activation_function="gelu", **no_dropout
    )
    return _musicgen_config(t5, _encodec_32khz(), decoder)


def _processor(sampling_rate: int) -> MusicgenProcessor:
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    feature_extractor = EncodecFeatureExtractor(
        feature_size=1, sampling_rate=sampling_rate, padding_value=0.0
    )
    return MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=byte_level_t5_tokenizer())


def _build(
    config: MusicgenConfig,
    seed: int,
    device: str | torch.device,
    max_length: int,
    head_std: float | None = None,
) -> MusicgenForConditionalGeneration:
    from transformers import MusicgenForConditionalGeneration

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        # A fresh EnCodec has all-zero codebooks (they are normally learned), so every code would
        # decode to the same audio; random entries make different codes sound different.
        for layer in model.audio_encoder.quantizer.layers:
            torch.nn.init.normal_(layer.codebook.embed)
        if head_std is not None:
            if isinstance(head_std, bool) or not isinstance(head_std, (int, float)) or not head_std > 0:
                raise ValueError(f"head_std must be a positive number or None, got {head_std!r}")
            for head in model.decoder.lm_heads:
                torch.nn.init.normal_(head.weight, 0.0, float(head_std))
    pad = config.decoder.pad_token_id
    generation = model.generation_config
    # The generation settings published with facebook/musicgen-small (sampling with the default
    # top_k=50, guidance 3); max_length is per model.
    generation.decoder_start_token_id = pad
    generation.pad_token_id = pad
    generation.bos_token_id = pad
    generation.do_sample = True
    generation.guidance_scale = 3.0
    generation.max_length = max_length
    return model.to(device).eval()


def tiny_musicgen(
    seed: int = 0, device: str | torch.device = "cpu", head_std: float | None = None
) -> tuple[MusicgenForConditionalGeneration, MusicgenProcessor]:
    """A tiny random transformers MusicGen and its processor, built offline; deterministic given ``seed``.

    See :func:`tiny_musicgen_config` for the dimensions. ``model.generate(**processor(text=prompts,
    padding=True, return_tensors="pt"), max_new_tokens=N)`` returns audio ``[B, 1, 640 * (N - 3)]``
    at 32 kHz (``N - 3`` code frames: the delay pattern costs ``num_codebooks - 1`` steps).
    Generation defaults follow musicgen-small: sampling (transformers' default ``top_k=50``),
    ``guidance_scale=3.0``;
    ``max_length`` defaults to 256 steps (about 5 s).

    ``head_std``: redraw the decoder's output heads from a normal with this std. transformers
    initialises them with std 0.02, which makes the next-code distribution nearly uniform (4.78 nats per
    code of at most 4.85) so that fine-tuning an adapter on the decoder layers barely moves what is
    sampled; ``head_std=0.5`` gives a peaked distribution (about 3.1 nats) like a trained MusicGen's,
    on which DPO and RL visibly learn (tests and examples use it).

    The global torch RNG of the caller is left untouched.
    """
    processor = _processor(32000)
    config = tiny_musicgen_config(vocab_size=len(processor.tokenizer))
    return _build(config, seed, device, max_length=256, head_std=head_std), processor


def musicgen_small_architecture(
    seed: int = 0, device: str | torch.device = "cpu"
) -> tuple[MusicgenForConditionalGeneration, MusicgenProcessor]:
    """Transformers MusicGen with the dimensions of ``facebook/musicgen-small``, random weights, offline.

    For speed and memory benchmarks only (it makes noise). Same module structure and parameter
    count as the published model (see :func:`musicgen_small_config`); the tokenizer is the byte-level
    one of :func:`byte_level_t5_tokenizer` (ids < 259 inside T5's 32128-entry embedding), so prompts
    are a few times longer in tokens than with T5's SentencePiece vocabulary. Generation defaults
    are the published ones (sampling, ``guidance_scale=3.0``, ``max_length=1500``, about 30 s).
    """
    processor = _processor(32000)
    return _build(musicgen_small_config(), seed, device, max_length=1500), processor
