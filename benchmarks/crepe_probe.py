"""Which CREPE stage to use as audio frames: linear probes, in-corpus and across corpora.

Builds a small rendered corpus (the demo's generator) and a small holdout corpus (the second
generator), runs CREPE-tiny once per clip keeping every stage, and the demo's tiny random MuQ for
comparison. A clip's feature is [mean, std, mean |frame-to-frame change|] of its frames. Probes
(standardised, L2-regularised logistic / ridge regression, scikit-learn):

- ``rendered``: fitted on the rendered corpus's train split, scored on its dev+test clips;
- ``cross``: fitted on the whole rendered corpus, scored on the whole holdout corpus (attributes
  that exist in both: instrument, tempo, mode = the rendered corpus's happy/sad);
- ``holdout``: 5-fold cross-validation within the holdout corpus.

Scores: accuracy of the *played* instrument, tempo and mode; SRCC of MI (ridge on the same feature).

    python benchmarks/crepe_probe.py --out runs/crepe_probe
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio
from scipy import stats
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deramos_reward import DeRAMOSConfig
from deramos_reward.config import crepe_audio_encoder
from deramos_reward.data.holdout import make_holdout_corpus
from deramos_reward.data.rendered import make_rendered_corpus
from deramos_reward.encoders import build_audio_encoder
from deramos_reward.encoders.crepe import CREPE_STAGES, frame_windows
from deramos_reward.frontend import load_audio, resample

RENDERED = dict(n_systems=8, n_prompts=24, clips_per_pair=1, seconds=3.0, sample_rate=24_000, seed=7)
HOLDOUT = dict(n_systems=8, n_prompts=30, prompts_per_system=12, clips_per_pair=2, seconds=3.0, seed=7)
MOOD_TO_MODE = {"happy": "major", "sad": "minor"}
# conv1 (16384 values a frame for tiny) is left out
FRAMES = [*CREPE_STAGES[1:], "mel", "conv5+mel", "conv6+mel", "pitch+mel", "muq-tiny-random"]


def summary(frames: torch.Tensor) -> np.ndarray:
    """frames [N, D] -> [3 D]: mean, std and mean absolute change over time."""
    f = frames.double()
    return torch.cat([f.mean(0), f.std(0), (f[1:] - f[:-1]).abs().mean(0)]).numpy()


def log_mel(wave: torch.Tensor) -> torch.Tensor:
    """wave [1, T] at 16 kHz -> [1 + T // 640, 65]: 64 log-mel bands and the log RMS, on CREPE's frames."""
    mel = torchaudio.transforms.MelSpectrogram(16_000, n_fft=1024, hop_length=640, n_mels=64)(wave)[0]
    rms = frame_windows_raw(wave).square().mean(-1).clamp_min(1e-10).log()[0]
    return torch.cat([mel.clamp_min(1e-10).log().T, rms[:, None]], dim=1)


def frame_windows_raw(wave: torch.Tensor) -> torch.Tensor:
    """CREPE's windows before normalisation: [1, N, 1024]."""
    return torch.nn.functional.pad(wave, (512, 512)).unfold(-1, 1024, 640)


@torch.no_grad()
def clip_features(corpus, muq, names: list[str]) -> dict[str, np.ndarray]:
    """Per-clip features of each frame kind in ``names``: name -> [clips, 3 D].

    Names: a CREPE stage (``conv2``..``pitch``), ``mel`` (log-mel + log RMS), ``STAGE+mel`` (both,
    concatenated per frame) or ``muq-tiny-random``.
    """
    crepe = build_audio_encoder(crepe_audio_encoder(layer=-1))
    out: dict[str, list] = {n: [] for n in names}
    for clip in corpus.clips:
        audio, rate = load_audio(os.path.join(corpus.root, "wav", clip.wav_id + ".wav"))
        wave = audio.mean(0, keepdim=True)
        w16 = resample(wave, rate, 16_000)
        frames = dict(zip(CREPE_STAGES, crepe.stages(frame_windows(w16)[0], 6)))
        frames["mel"] = log_mel(w16)
        for n in names:
            if n == "muq-tiny-random":
                f = muq(resample(wave, rate, muq.sample_rate)).frames[0]
            else:
                f = torch.cat([frames[part] for part in n.split("+")], dim=1)
            out[n].append(summary(f))
    return {k: np.stack(v) for k, v in out.items()}


def labels(corpus, generator: str) -> dict[str, np.ndarray]:
    mode_key = "mood" if generator == "rendered" else "mode"
    rows = {"instrument": [], "tempo": [], "mode": [], "mi": []}
    for c in corpus.clips:
        rows["instrument"].append(c.rendered["instrument"])
        rows["tempo"].append(c.rendered["tempo"])
        rows["mode"].append(MOOD_TO_MODE.get(c.rendered[mode_key], c.rendered[mode_key]))
        rows["mi"].append(c.mi)
    return {k: np.array(v) for k, v in rows.items()}


def probe_scores(xa, ya, xb, yb) -> dict[str, float]:
    """Fit on (xa, ya), score on (xb, yb): accuracies per attribute and MI SRCC."""
    out = {}
    for attr in ("instrument", "tempo", "mode"):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        out[attr] = float(np.mean(clf.fit(xa, ya[attr]).predict(xb) == yb[attr]))
    reg = make_pipeline(StandardScaler(), Ridge(alpha=float(xa.shape[1])))
    out["mi_srcc"] = float(stats.spearmanr(reg.fit(xa, ya["mi"]).predict(xb), yb["mi"])[0])
    return out


def cross_validated(x, y, folds: int = 5) -> dict[str, float]:
    scores = []
    for tr, te in KFold(folds, shuffle=True, random_state=0).split(x):
        scores.append(
            probe_scores(x[tr], {k: v[tr] for k, v in y.items()}, x[te], {k: v[te] for k, v in y.items()})
        )
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/crepe_probe")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", nargs="+", default=FRAMES, choices=FRAMES)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out, start = Path(args.out), time.time()
    rendered = make_rendered_corpus(out / "rendered", overwrite=True, **RENDERED)
    holdout = make_holdout_corpus(out / "holdout", overwrite=True, **HOLDOUT)
    torch.manual_seed(0)
    muq = build_audio_encoder(DeRAMOSConfig.demo().audio_encoder)
    fr, fh = clip_features(rendered, muq, args.frames), clip_features(holdout, muq, args.frames)
    yr, yh = labels(rendered, "rendered"), labels(holdout, "holdout")
    train = np.array([c.split == "train" for c in rendered.clips])
    results = {}
    for name in fr:
        results[name] = {
            "dim": int(fr[name].shape[1] // 3),
            "rendered": probe_scores(
                fr[name][train], {k: v[train] for k, v in yr.items()},
                fr[name][~train], {k: v[~train] for k, v in yr.items()},
            ),
            "cross": probe_scores(fr[name], yr, fh[name], yh),
            "holdout": cross_validated(fh[name], yh),
        }  # fmt: skip
        print(name, json.dumps(results[name]), flush=True)
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        "rendered": RENDERED,
        "holdout": HOLDOUT,
        "minutes": round((time.time() - start) / 60, 1),
    }
    (out / f"crepe_probe-{'-'.join(args.frames)}.json").write_text(
        json.dumps({"info": info, "results": results}, indent=1)
    )
    print(table(results))


def table(results: dict) -> str:
    cols = [
        (s, k) for s in ("rendered", "cross", "holdout") for k in ("instrument", "tempo", "mode", "mi_srcc")
    ]
    lines = [
        "| frames | dim | " + " | ".join(f"{s} {k}" for s, k in cols) + " |",
        "|" + "---|" * (len(cols) + 2),
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['dim']} | " + " | ".join(f"{r[s][k]:.2f}" for s, k in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
