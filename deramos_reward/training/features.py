"""Frozen-encoder features, computed once and reused every epoch.

The backbones of DeRA-MOS never train, so a clip's audio frames and a prompt's token states are
the same every step. ``extract_features`` runs the encoders once per clip and per distinct
prompt through ``windowing.encode_windows``, the function ``DeRAMOS.forward_clips`` uses at
inference (the same windows, the same grouping of equal-length windows, the same padding of
short clips), and keeps only the real frames/tokens. ``FeatureSet.batch`` pads them back into
masked batches for the heads, and ``heads_forward`` combines window outputs per clip with
``windowing.combine_windows``, the model's own length-weighted mean.
Training on cached features therefore computes what running the encoders every step would
(up to float rounding), at the cost of the heads only.

Windows: a clip longer than the encoder window (30 s for MuQ) is cut into the model's windows
(every ``hop_seconds``) and *all* of them are cached; a training step runs the heads on every
window of each clip and combines them exactly like inference, so the loss sees the score the
model will report. ``max_seconds`` (optional) crops clips first, like the reference's 30 s crop.

On disk a feature set is one safetensors file (tensors only, never pickle) named by a
fingerprint of the encoder weights, the front-end settings and the audio files (path, size,
mtime), so a changed backbone or file is never served stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..data import Example, RatedClips
from ..encoders.base import AudioFrames, TextTokens
from ..frontend import Window, plan_windows
from ..heads import DeRAMOSOutput
from ..model import DeRAMOS
from ..windowing import combine_windows, encode_windows

FORMAT_VERSION = 1
FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ClipFeatures:
    """Unpadded encoder outputs of C clips (W windows in all) and P distinct prompts.

    frames [F, Da]: real frames of all windows, concatenated; window ``w`` owns rows
    ``window_offsets[w]:window_offsets[w+1]`` ([W+1] int64). window_samples [W] int64: the
    window's length in samples (the weight of its score). clip_windows [C+1] int64: clip ``c``
    owns windows ``clip_windows[c]:clip_windows[c+1]``. tokens [Tt, Dt] + prompt_offsets [P+1]:
    the same for prompt token states. clip_prompt [C] int64: each clip's prompt row.
    """

    frames: torch.Tensor
    window_offsets: torch.Tensor
    window_samples: torch.Tensor
    clip_windows: torch.Tensor
    tokens: torch.Tensor
    prompt_offsets: torch.Tensor
    clip_prompt: torch.Tensor
    wav_ids: list[str]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.wav_ids)

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("frames", "window_offsets", "window_samples", "clip_windows", "tokens")
        out = {k: getattr(self, k).contiguous() for k in names}
        out["prompt_offsets"] = self.prompt_offsets.contiguous()
        out["clip_prompt"] = self.clip_prompt.contiguous()
        return out

    def save(self, path: str | os.PathLike, fingerprint: str) -> None:
        """Write one safetensors file atomically (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": "pt",
            "deramos_features": str(FORMAT_VERSION),
            "fingerprint": fingerprint,
            "wav_ids": json.dumps(self.wav_ids),
            "prompts": json.dumps(self.prompts),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(self.tensors(), tmp, metadata=meta)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, fingerprint: str | None = None) -> ClipFeatures:
        """Read a file written by ``save``; ``fingerprint`` (if given) must match."""
        from safetensors import safe_open

        path = os.fspath(path)
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as err:
            raise ValueError(f"feature cache {path!r} is not a readable safetensors file: {err}") from err
        if meta.get("deramos_features") != str(FORMAT_VERSION):
            raise ValueError(f"feature cache {path!r} was not written by this version of deramos-reward")
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise ValueError(f"feature cache {path!r} belongs to other encoders or audio files")
        t = load_file(path)
        return cls(
            t["frames"],
            t["window_offsets"],
            t["window_samples"],
            t["clip_windows"],
            t["tokens"],
            t["prompt_offsets"],
            t["clip_prompt"],
            json.loads(meta["wav_ids"]),
            json.loads(meta["prompts"]),
        )


@dataclass
class FeatureBatch:
    """Padded inputs for the heads plus what is needed to combine windows per clip.

    audio: frames [W, N, Da] + mask [W, N]; text: tokens [W, L, Dt] + mask [W, L] (each window
    paired with its clip's prompt); windows: W ``Window`` records (clip index within the batch,
    sample span); n_clips: B.
    """

    audio: AudioFrames
    text: TextTokens
    windows: list[Window]
    n_clips: int


@dataclass
class FeatureSet:
    """Cached features + labels of one split, for training and evaluation on the heads only.

    mi, ta: [C] float32 labels (``nan`` when a clip is unlabeled). systems: C system ids.
    """

    features: ClipFeatures
    mi: torch.Tensor
    ta: torch.Tensor
    systems: list[str]

    def __len__(self) -> int:
        return len(self.features)

    @property
    def wav_ids(self) -> list[str]:
        return self.features.wav_ids

    @property
    def labeled(self) -> bool:
        return bool(torch.isfinite(self.mi).all() and torch.isfinite(self.ta).all())

    def batch(
        self, indices: Sequence[int], device: torch.device | str, prompts: Sequence[int] | None = None
    ) -> FeatureBatch:
        """Clips ``indices`` -> padded ``FeatureBatch`` on ``device``.

        prompts: optional prompt row (into ``features.prompts``) per clip, to pair a clip's audio
        with another prompt than its own (default: each clip's own, ``features.clip_prompt``).
        """
        f = self.features
        indices = [int(i) for i in indices]
        if prompts is None:
            prompts = [int(f.clip_prompt[c]) for c in indices]
        elif len(prompts) != len(indices):
            raise ValueError(f"prompts has {len(prompts)} rows for {len(indices)} clips")
        frames, tokens, windows = [], [], []
        prompt_rows: dict[int, torch.Tensor] = {}
        for b, (c, p) in enumerate(zip(indices, (int(p) for p in prompts))):
            if p not in prompt_rows:
                prompt_rows[p] = f.tokens[int(f.prompt_offsets[p]) : int(f.prompt_offsets[p + 1])]
            start = 0
            for w in range(int(f.clip_windows[c]), int(f.clip_windows[c + 1])):
                frames.append(f.frames[int(f.window_offsets[w]) : int(f.window_offsets[w + 1])])
                tokens.append(prompt_rows[p])
                n = int(f.window_samples[w])
                windows.append(Window(b, start, start + n))  # only the length matters for combining
                start += n
        return FeatureBatch(_pad(frames, device), _pad_text(tokens, device), windows, len(indices))


def _pad(rows: list[torch.Tensor], device: torch.device | str) -> AudioFrames:
    lengths = torch.tensor([r.shape[0] for r in rows])
    padded = nn.utils.rnn.pad_sequence(rows, batch_first=True).to(device)
    mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).to(device)
    return AudioFrames(padded, mask)


def _pad_text(rows: list[torch.Tensor], device: torch.device | str) -> TextTokens:
    a = _pad(rows, device)
    return TextTokens(a.frames, a.mask)


def heads_forward(heads: nn.Module, batch: FeatureBatch) -> DeRAMOSOutput:
    """Run the (possibly DDP-wrapped) heads on a ``FeatureBatch`` -> per-clip outputs [B].

    Clips with several windows get the length-weighted mean of their window outputs
    (``windowing.combine_windows``, as in ``DeRAMOS.forward_clips``).
    """
    return combine_windows(batch.windows, heads(batch.audio, batch.text), batch.n_clips)


# ---- extraction ------------------------------------------------------------------------------
def _sha_tensors(h: hashlib._Hash, module: nn.Module) -> None:
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())


def encoder_fingerprint(model: DeRAMOS) -> str:
    """sha256 of the encoder configs and weights (what features depend on besides the audio)."""
    h = hashlib.sha256(f"deramos-features-v{FORMAT_VERSION}".encode())
    cfg = model.config
    h.update(json.dumps([cfg.audio_encoder.__dict__, cfg.text_encoder.__dict__], sort_keys=True).encode())
    _sha_tensors(h, model.audio_encoder)
    _sha_tensors(h, model.text_encoder)
    return h.hexdigest()


def data_fingerprint(examples: Sequence[Example], max_seconds: float | None, feature_dtype: str) -> str:
    """sha256 of the clip list (id, path, size, mtime, prompt) and the extraction settings."""
    h = hashlib.sha256(json.dumps([max_seconds, feature_dtype]).encode())
    for ex in examples:
        st = os.stat(ex.path)
        h.update(
            json.dumps([ex.wav_id, os.path.abspath(ex.path), st.st_size, st.st_mtime_ns, ex.prompt]).encode()
        )
    return h.hexdigest()


@torch.no_grad()
def extract_features(
    model: DeRAMOS,
    examples: Sequence[Example],
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    max_seconds: float | None = None,
    num_workers: int = 0,
    feature_dtype: str = "float32",
    progress: bool = True,
) -> ClipFeatures:
    """Run the frozen encoders once over ``examples`` (audio windows and distinct prompts).

    Audio is read and resampled by ``RatedClips`` (in ``num_workers`` loader processes), cut into
    the model's windows, and windows of equal length go through the audio encoder together
    (short ones zero-padded to ``min_samples`` with the padding masked), as in inference.
    Returns unpadded features stored as ``feature_dtype``.
    """
    if feature_dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature_dtype must be one of {sorted(FEATURE_DTYPES)}, got {feature_dtype!r}")
    if not examples:
        raise ValueError("examples is empty; nothing to extract features from")
    dtype = FEATURE_DTYPES[feature_dtype]
    model = model.to(device)
    encoder = model.audio_encoder.eval()
    loader = torch.utils.data.DataLoader(
        RatedClips(list(examples), model.sample_rate, max_seconds),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=lambda items: items,
    )
    window_frames: list[torch.Tensor] = []
    window_samples: list[int] = []
    clip_windows = [0]
    bar = tqdm(total=len(examples), disable=not progress, desc="audio features", unit="clip")
    for items in loader:
        waves = [it["wave"] for it in items]
        windows = plan_windows([w.shape[0] for w in waves], model.window_samples, model.hop_samples)
        outs: list[torch.Tensor | None] = [None] * len(windows)
        for indices, out in encode_windows(encoder, waves, windows, model.window_batch_size, device):
            for j, i in enumerate(indices):
                outs[i] = out.frames[j, out.mask[j]].to("cpu", dtype)
        for i, w in enumerate(windows):  # windows come out clip by clip, in order
            window_frames.append(outs[i])
            window_samples.append(w.length)
        for c in range(len(waves)):
            clip_windows.append(clip_windows[-1] + sum(1 for w in windows if w.clip == c))
        bar.update(len(items))
    bar.close()

    prompts = list(dict.fromkeys(ex.prompt for ex in examples))
    token_rows = []
    for s in range(0, len(prompts), 64):
        enc = model.text_encoder.encode(prompts[s : s + 64], device)
        token_rows += [enc.tokens[i, enc.mask[i]].to("cpu", dtype) for i in range(enc.tokens.shape[0])]
    row_of = {p: i for i, p in enumerate(prompts)}
    return ClipFeatures(
        frames=torch.cat(window_frames),
        window_offsets=_offsets([f.shape[0] for f in window_frames]),
        window_samples=torch.tensor(window_samples, dtype=torch.int64),
        clip_windows=torch.tensor(clip_windows, dtype=torch.int64),
        tokens=torch.cat(token_rows),
        prompt_offsets=_offsets([t.shape[0] for t in token_rows]),
        clip_prompt=torch.tensor([row_of[ex.prompt] for ex in examples], dtype=torch.int64),
        wav_ids=[ex.wav_id for ex in examples],
        prompts=prompts,
    )


def _offsets(sizes: list[int]) -> torch.Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.tensor(sizes, dtype=torch.int64).cumsum(0)])


def feature_set(examples: Sequence[Example], features: ClipFeatures) -> FeatureSet:
    """Attach labels and system ids of ``examples`` (same order) to their features."""
    if [ex.wav_id for ex in examples] != features.wav_ids:
        raise ValueError("features were extracted for a different list of clips")
    nan = float("nan")
    return FeatureSet(
        features,
        torch.tensor([nan if ex.mi is None else ex.mi for ex in examples], dtype=torch.float32),
        torch.tensor([nan if ex.ta is None else ex.ta for ex in examples], dtype=torch.float32),
        [ex.system for ex in examples],
    )


def cached_feature_set(
    model: DeRAMOS,
    examples: Sequence[Example],
    cache_dir: str | os.PathLike | None,
    name: str,
    encoder_key: str | None = None,
    **extract_kwargs,
) -> FeatureSet:
    """Features of ``examples`` from ``cache_dir/{name}-{fingerprint}.safetensors``, extracting on a miss.

    ``cache_dir=None`` keeps them in memory only. ``encoder_key`` is ``encoder_fingerprint(model)``
    (pass it to avoid hashing the encoders again); ``extract_kwargs`` go to ``extract_features``.
    """
    if cache_dir is None:
        return feature_set(examples, extract_features(model, examples, **extract_kwargs))
    key = hashlib.sha256(
        (
            (encoder_key or encoder_fingerprint(model))
            + data_fingerprint(
                examples, extract_kwargs.get("max_seconds"), extract_kwargs.get("feature_dtype", "float32")
            )
        ).encode()
    ).hexdigest()
    path = Path(cache_dir) / f"{name}-{key[:20]}.safetensors"
    if path.is_file():
        try:
            return feature_set(examples, ClipFeatures.load(path, key))
        except ValueError:
            pass  # unreadable or foreign: extract again and overwrite
    features = extract_features(model, examples, **extract_kwargs)
    features.save(path, key)
    return feature_set(examples, features)
