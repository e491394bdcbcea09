"""Best-of-N and progressive best-of-N with an AudioCraft MusicGen, reranked by DeRA-MOS.

Offline by default: a tiny random MusicGen (``deramos_reward.integrations.musicgen.audiocraft.tiny_musicgen``)
and a tiny random judge, so it runs anywhere in seconds (and makes noise). With real models:

    .venv/bin/python examples/rerank_audiocraft.py
    .venv/bin/python examples/rerank_audiocraft.py --musicgen facebook/musicgen-small --reward CKPT --device cuda

AudioCraft is installed by the recipe in the README (it is never a declared dependency).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf
import torch

import deramos_reward as dr
from deramos_reward.integrations import best_of_n, progressive_best_of_n
from deramos_reward.integrations.musicgen import audiocraft as ac


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--musicgen", help="MusicGen.get_pretrained name (default: tiny offline model)")
    parser.add_argument("--reward", help="DeRA-MOS checkpoint folder (default: tiny random judge)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--out", default="rerank_audiocraft_out")
    args = parser.parse_args()

    if args.musicgen:
        from audiocraft.models import MusicGen

        musicgen = MusicGen.get_pretrained(args.musicgen, device=args.device)
    else:
        musicgen = ac.tiny_musicgen(seed=0, device=args.device)
    # best_of_n honours the model's own generation params; duration/temperature... can also be
    # passed per call and are restored afterwards
    musicgen.set_generation_params(duration=args.duration, top_k=250, cfg_coef=3.0)

    if args.reward:
        judge = dr.DeRAMOS.from_pretrained(args.reward, device=args.device)
    else:
        torch.manual_seed(0)
        judge = dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).to(args.device)
    reward = dr.MusicReward(judge)  # the mean of MI and TA (1-5), frozen

    prompts = ["a calm piano piece", "fast techno with heavy bass"]
    res = best_of_n(musicgen, prompts, args.n, reward, max_batch=8, seed=0)
    print(f"best-of-N scores [P, n] (reward = {reward.describe()['text']}):\n", res.scores)
    print("chosen:", res.index.tolist())
    print("audio", tuple(res.audio.shape), "tokens", tuple(res.codes.shape), "at", res.sample_rate, "Hz")

    prog = progressive_best_of_n(
        musicgen, prompts, args.n, reward, checkpoints=(0.25, 0.5), keep=0.5, max_batch=8, seed=0
    )
    print("progressive scores (pruned ones are partial):\n", prog.scores, "\npruned:\n", prog.pruned)
    s = prog.stats
    print(
        f"generated {s['generated_frames']} frames instead of {s['plain_generated_frames']} ({s['saved_fraction']:.0%} saved)"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for p, audio in enumerate(res.audio):
        sf.write(out / f"best_{p}.wav", audio.cpu().numpy().T, res.sample_rate)
    print("wrote", sorted(str(f) for f in out.glob("*.wav")))


if __name__ == "__main__":
    main()
