"""``TrainConfig``: everything a training run depends on, in one JSON-round-tripping dataclass."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DeRAMOSConfig
from ..losses import LossWeights

MODEL_PRESETS = ("paper", "tiny", "tiny-clap", "demo")
EARLY_STOPPING = ("loss", "mi_sys_srcc", "combined")
DEVICES = ("auto", "cpu", "cuda")
MIXED_PRECISION = ("no", "bf16", "fp16")
FEATURE_DTYPES = ("float32", "float16", "bfloat16")
# Fields that do not change what a run computes: a resumed run may change them.
RUNTIME_FIELDS = ("num_workers", "progress", "feature_cache", "extract_batch_size", "device")


@dataclass
class TrainConfig:
    """How to train DeRA-MOS heads (defaults: the paper's recipe, DERAMOS.md "Training recipe").

    model: a preset name (``"paper"`` = MuQ-large-msd-iter + roberta-base, ``"tiny"``,
        ``"tiny-clap"``, ``"demo"`` = packaged all-MiniLM-L6-v2 + tiny MuQ) or a ``DeRAMOSConfig`` dict. init_from: optional checkpoint folder whose
        weights (and config) start the run instead.
    batch_size: the *global* batch, i.e. the list BALR ranks; under ``accelerate launch`` with
        N processes each process takes ``batch_size / N`` clips of it (must divide).
        Training batches are full: the last ``len(train) % batch_size`` clips of each epoch's
        shuffled order wait for the next epoch.
    gather_balr: compute BALR over the global batch gathered from all processes (with gradient)
        instead of each process's shard; with it, N processes compute the same loss and gradient
        as one process on the whole batch.
    early_stopping: the validation quantity patience counts on: ``"loss"`` (lower is better),
        ``"mi_sys_srcc"`` or ``"combined"`` = (utterance MI SRCC + system TA SRCC) / 2.
    max_seconds: crop every clip to its first ``max_seconds`` before windowing (None = keep all;
        the reference crops to 30 s, our model windows long clips instead).
    feature_cache: folder for cached encoder features (default ``RUN_DIR/features``); share it
        between runs over the same data and encoders. feature_dtype: how they are stored.
    device: ``"auto"`` (GPU when available), ``"cpu"`` or ``"cuda"``.
    """

    model: str | dict[str, Any] = "paper"
    init_from: str | None = None
    lr: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 32
    eval_batch_size: int = 64
    max_epochs: int = 100
    patience: int = 15
    early_stopping: str = "loss"
    seed: int = 1984
    loss: LossWeights = field(default_factory=LossWeights)
    gather_balr: bool = False
    max_grad_norm: float | None = None
    train_split: str = "train"
    val_split: str = "dev"
    max_seconds: float | None = None
    feature_cache: str | None = None
    feature_dtype: str = "float32"
    extract_batch_size: int = 16
    num_workers: int = 0
    device: str = "auto"
    mixed_precision: str = "no"
    progress: bool = True

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError/TypeError naming the first bad field."""

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if isinstance(self.model, str):
            if self.model not in MODEL_PRESETS:
                raise ValueError(
                    f"TrainConfig.model must be one of {MODEL_PRESETS} or a config dict, got {self.model!r}"
                )
        elif isinstance(self.model, dict):
            DeRAMOSConfig.from_dict(self.model)  # raises naming the bad key
        else:
            raise TypeError(
                f"TrainConfig.model must be a preset name or a config dict, got {type(self.model).__name__}"
            )
        for key in ("init_from", "feature_cache"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"TrainConfig.{key} must be a path string or None, got {value!r}")
        for key in ("batch_size", "eval_batch_size", "max_epochs", "extract_batch_size"):
            value = getattr(self, key)
            if not is_int(value) or value < 1:
                raise ValueError(f"TrainConfig.{key} must be an int >= 1, got {value!r}")
        for key in ("patience", "num_workers", "seed"):
            value = getattr(self, key)
            if not is_int(value) or value < 0:
                raise ValueError(f"TrainConfig.{key} must be an int >= 0, got {value!r}")
        if not is_num(self.lr) or not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if not is_num(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be a number >= 0, got {self.weight_decay!r}")
        for key in ("max_grad_norm", "max_seconds"):
            value = getattr(self, key)
            if value is not None and (not is_num(value) or not value > 0):
                raise ValueError(f"TrainConfig.{key} must be a positive number or None, got {value!r}")
        choices = {
            "early_stopping": EARLY_STOPPING,
            "device": DEVICES,
            "mixed_precision": MIXED_PRECISION,
            "feature_dtype": FEATURE_DTYPES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"TrainConfig.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("gather_balr", "progress"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"TrainConfig.{key} must be true or false, got {getattr(self, key)!r}")
        for key in ("train_split", "val_split"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"TrainConfig.{key} must be a split name, got {getattr(self, key)!r}")
        if not isinstance(self.loss, LossWeights):
            raise TypeError(f"TrainConfig.loss must be a LossWeights, got {type(self.loss).__name__}")
        self.loss.validate()

    def model_config(self) -> DeRAMOSConfig:
        """The ``DeRAMOSConfig`` named by ``model``."""
        if isinstance(self.model, dict):
            return DeRAMOSConfig.from_dict(self.model)
        if self.model == "paper":
            return DeRAMOSConfig()
        if self.model == "demo":
            return DeRAMOSConfig.demo()
        return DeRAMOSConfig.tiny("clap" if self.model == "tiny-clap" else "muq")

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["loss"] = self.loss.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build and validate; unknown keys (also inside ``loss``) are named in the error.

        ``loss`` may also be ``{"preset": NAME, ...overrides}`` with a name from
        ``deramos_reward.losses.ABLATIONS``.
        """
        if not isinstance(data, dict):
            raise TypeError(f"train config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"train config has unknown key(s) {unknown}; known keys: {sorted(known)}")
        data = dict(data)
        loss = data.pop("loss", {})
        if not isinstance(loss, dict):
            raise TypeError(f"train config 'loss' must be a JSON object, got {type(loss).__name__}")
        loss = dict(loss)
        loss_known = {f.name for f in dataclasses.fields(LossWeights)}
        unknown = sorted(set(loss) - loss_known - {"preset"})
        if unknown:
            raise ValueError(
                f"train config 'loss' has unknown key(s) {unknown}; known keys: {sorted(loss_known)}"
            )
        preset = loss.pop("preset", None)
        weights = LossWeights.preset(preset, **loss) if preset is not None else LossWeights(**loss)
        cfg = cls(loss=weights, **data)
        cfg.validate()
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"train config is not valid JSON: {err}") from err
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"train config {str(path)!r} does not exist")
        try:
            return cls.from_json(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide the result (all but ``RUNTIME_FIELDS``); resume compares these."""
        data = self.to_dict()
        for key in RUNTIME_FIELDS:
            data.pop(key)
        return data
