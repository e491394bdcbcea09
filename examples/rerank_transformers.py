"""Best-of-N and progressive best-of-N with transformers' MusicGen, reranked by DeRA-MOS.

Offline by default: a tiny random ``MusicgenForConditionalGeneration``
(``deramos_reward.integrations.musicgen.transformers.tiny_musicgen``) and a tiny random judge, so
it runs anywhere in seconds (and makes noise). With real models:

    .venv/bin/python examples/rerank_transformers.py
    .venv/bin/python examples/rerank_transformers.py --musicgen facebook/musicgen-small --reward CKPT --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf
import torch

import deramos_reward as dr
from deramos_reward.integrations import best_of_n, progressive_best_of_n
from deramos_reward.integrations.musicgen import transformers as tm


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--musicgen", help="hub id or folder (default: tiny offline model)")
    parser.add_argument("--reward", help="DeRA-MOS checkpoint folder (default: tiny random judge)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--out", default="rerank_transformers_out")
    args = parser.parse_args()

    if args.musicgen:
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        model = MusicgenForConditionalGeneration.from_pretrained(args.musicgen).to(args.device).eval()
        processor = AutoProcessor.from_pretrained(args.musicgen)
    else:
        model, processor = tm.tiny_musicgen(seed=0, device=args.device)
        # transformers leaves a fresh EnCodec's codebooks at zero (they are learned from data), so
        # every code sequence would decode to the same audio: give the random model random ones.
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in model.audio_encoder.quantizer.layers:
                layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape, generator=g))

    if args.reward:
        judge = dr.DeRAMOS.from_pretrained(args.reward, device=args.device)
    else:
        torch.manual_seed(0)
        judge = dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).to(args.device)
    reward = dr.MusicReward(judge)  # the mean of MI and TA (1-5), frozen

    prompts = ["a calm piano piece", "fast techno with heavy bass"]
    # candidates repeat each prompt in the batch; sampling options go to model.generate
    res = best_of_n(
        model,
        prompts,
        args.n,
        reward,
        processor=processor,
        duration=args.duration,
        max_batch=8,
        seed=0,
        guidance_scale=3.0,
    )
    print(f"best-of-N scores [P, n] (reward = {reward.describe()['text']}):\n", res.scores)
    print("chosen:", res.index.tolist())
    print("audio", tuple(res.audio.shape), "codes", tuple(res.codes.shape), "at", res.sample_rate, "Hz")

    prog = progressive_best_of_n(
        model,
        prompts,
        args.n,
        reward,
        processor=processor,
        duration=args.duration,
        checkpoints=(0.25, 0.5),
        keep=0.5,
        seed=0,
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
