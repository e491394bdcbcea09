"""Write generated candidates (audio + codes) as a clips folder for A/B rating and DPO export.

```python
from deramos_reward.integrations.musicgen.transformers.logprobs import generate_with_codes
prompts = [p for p in ["fast techno", "calm piano"] for _ in range(4)]   # 4 candidates per prompt
audio, codes = generate_with_codes(model, processor, prompts, max_new_tokens=256)
write_candidates("ab_set", prompts, audio, codes, model.config.audio_encoder.sampling_rate)
# -> ab_set/clips.jsonl, ab_set/wav/*.wav, ab_set/codes/*.npy;  deramos rate --clips ab_set/clips.jsonl --mode ab
```
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..checkpoint import atomic_write_bytes
from ..validation import check_prompts


def write_candidates(
    folder: str | os.PathLike,
    prompts: Sequence[str],
    audio: torch.Tensor,
    codes: torch.Tensor,
    sample_rate: int,
    system: str = "candidates",
    manifest: str = "clips.jsonl",
) -> Path:
    """Save ``B`` candidates and return the clips manifest's path.

    Args:
        folder: created if needed; clips go to ``wav/cNNNNN.wav`` (16-bit PCM), codes to
            ``codes/cNNNNN.npy``; numbering continues after clips already in the manifest.
        prompts: ``B`` prompts (repeat a prompt for several candidates of it).
        audio: ``[B, C, T]`` or ``[B, T]`` float waveforms in [-1, 1].
        codes: ``[B, K, S]`` integer codes the audio was decoded from.
        sample_rate: of ``audio``, in Hz.
        system: the ``system`` of every line (e.g. the model's name).
        manifest: file name of the manifest inside ``folder`` (lines are appended).
    """
    prompts = check_prompts(prompts, name="prompts")
    if not isinstance(audio, torch.Tensor) or audio.dim() not in (2, 3) or audio.shape[0] != len(prompts):
        raise ValueError(f"audio must be [B, C, T] or [B, T] with B = {len(prompts)} prompts")
    if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.shape[0] != len(prompts):
        raise ValueError(f"codes must be an integer [B, K, S] tensor with B = {len(prompts)}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    folder = Path(folder)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    (folder / "codes").mkdir(exist_ok=True)
    path = folder / manifest
    start = sum(1 for line in path.read_text().split("\n") if line.strip()) if path.exists() else 0
    lines = []
    wave = audio.detach().float().cpu()
    wave = wave[:, None] if wave.dim() == 2 else wave
    for b, prompt in enumerate(prompts):
        name = f"c{start + b:05d}"
        buf = io.BytesIO()
        sf.write(buf, np.clip(wave[b].numpy().T, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
        atomic_write_bytes(folder / "wav" / f"{name}.wav", buf.getvalue())
        buf = io.BytesIO()
        np.save(buf, codes[b].detach().cpu().numpy().astype(np.int64), allow_pickle=False)
        atomic_write_bytes(folder / "codes" / f"{name}.npy", buf.getvalue())
        lines.append(
            {"path": f"wav/{name}.wav", "prompt": prompt, "system": system, "codes": f"codes/{name}.npy"}
        )
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return path
