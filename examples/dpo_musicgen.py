"""DPO for MusicGen with a DeRA-MOS reward, end to end and offline.

    generate N candidates per prompt -> score them -> preference pairs -> LoRA DPO
    -> sample fresh outputs again with the same seed: mean reward before vs after

Runs in well under a minute on a CPU with tiny random models (transformers MusicGen by default,
``--backend audiocraft`` for AudioCraft's). Rewards:

- ``--reward deramos`` (default): ``MusicReward`` on a DeRA-MOS judge: ``--judge DIR`` for a trained
  checkpoint, else a tiny random one. A random judge has arbitrary but consistent preferences, and a tiny
  random one barely varies across these clips, so expect a small change: this shows the mechanics.
- ``--reward dark``: a plain function of the audio (minus its spectral centroid in kHz, "darker is
  better"), a preference the tiny transformers model learns: the change is small in kHz (its random
  codec barely varies) but about ten standard errors. AudioCraft's tiny model is built with
  ``head_std=0.5``: with the library's default initialisation its next-code distribution is almost
  uniform (5.6 of at most 5.99 nats per code), so no adapter moves what it samples (measured: -0.2
  standard errors after 40 steps); with peaked heads the change is about +2.7 standard errors (its random
  codec's output is 99.9% a code-independent offset, so the centroid barely moves).

With a real MusicGen and judge, the same steps are ``deramos pairs`` and ``deramos dpo`` (see README).

    python examples/dpo_musicgen.py [--backend transformers|audiocraft] [--reward deramos|dark] [--judge DIR]
"""

from __future__ import annotations

import argparse
import math
import tempfile

import torch

import deramos_reward as dr
from deramos_reward.integrations import musicgen_backend
from deramos_reward.integrations.dpo import MusicDPOConfig, MusicDPOTrainer, load_adapter, musicgen_pairs
from deramos_reward.integrations.rl import AudioRewardFunction

DURATION = 0.2  # seconds per clip: 10 frames at 50 Hz (transformers), 5 at 25 Hz (AudioCraft)


def darkness(audio: torch.Tensor, sample_rate: int, prompts: list[str]) -> torch.Tensor:
    """A reward of the audio: minus its spectral centroid in kHz. audio [B, C, T] -> [B]"""
    power = torch.fft.rfft(audio.double().mean(1), dim=-1).abs().pow(2)
    freqs = torch.fft.rfftfreq(audio.shape[-1], 1.0 / sample_rate)
    return -(power * freqs).sum(-1) / power.sum(-1).clamp_min(1e-12) / 1000.0


def tiny_transformers_musicgen():
    """The tiny random transformers MusicGen, made to act a little more like a trained one:
    random EnCodec codebook vectors (a random-init EnCodec has all-zero codebooks, so every code would
    decode to the same audio) and output heads of std 0.5 (at std 0.02 the next-code distribution is
    almost uniform and no adapter on the decoder layers can move it)."""
    from deramos_reward.integrations.musicgen import transformers as tm

    model, processor = tm.tiny_musicgen(seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(generator=g)
        for head in model.decoder.lm_heads:
            head.weight.normal_(0.0, 0.5, generator=g)
    return model, processor


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("transformers", "audiocraft"), default="transformers")
    parser.add_argument("--reward", choices=("deramos", "dark"), default="deramos")
    parser.add_argument("--judge", help="DeRA-MOS checkpoint folder (default: a tiny random judge)")
    parser.add_argument("--prompts", type=int, default=64, help="training prompts (default 64)")
    parser.add_argument("--n", type=int, default=8, help="candidates per prompt (default 8)")
    parser.add_argument("--steps", type=int, default=40, help="DPO optimizer steps (default 40)")
    parser.add_argument("--out", help="where to save the adapter (default: a temporary folder)")
    args = parser.parse_args()

    if args.reward == "dark":
        reward = darkness
    else:
        if args.judge:
            judge = dr.DeRAMOS.from_pretrained(args.judge)
        else:
            torch.manual_seed(0)
            judge = dr.DeRAMOS(dr.DeRAMOSConfig.tiny())
        reward = dr.MusicReward(judge, mi_weight=0.5, ta_weight=0.5)  # the mean of MI and TA, 1-5

    train_prompts = [f"training prompt {i}" for i in range(args.prompts)]
    fresh_prompts = [f"new prompt {i}" for i in range(8) for _ in range(8)]  # 8 prompts x 8 samples

    # 1. generate -> score -> pairs (chosen = best of n, rejected = worst), through one backend interface
    if args.backend == "transformers":
        backend = musicgen_backend(*tiny_transformers_musicgen())
        sampling = {"guidance_scale": 1.0}
    else:
        from deramos_reward.integrations.musicgen import audiocraft as ac

        backend = musicgen_backend(ac.tiny_musicgen(seed=0, head_std=0.5))
        sampling = {}
    pairs = musicgen_pairs(backend, train_prompts, args.n, reward, duration=DURATION, seed=0, **sampling)
    frames = backend.frames_for(DURATION)

    def sample_codes():
        return backend.generate(fresh_prompts, frames, seed=1, **sampling)[1]

    print(f"{len(pairs)} pairs, mean score gap {sum(pairs['margin']) / len(pairs):.4g}")

    # the trl-signature reward function scores codes by decoding them with the model's own codec
    reward_fn = AudioRewardFunction(reward, decoder=backend, name="example_reward")

    def mean_reward() -> tuple[float, float]:
        values = torch.tensor(reward_fn(fresh_prompts, list(sample_codes())))
        return float(values.mean()), float(values.std() / math.sqrt(len(values)))

    # 2. LoRA DPO; the reference policy is the same model with the adapter disabled
    config = MusicDPOConfig(
        learning_rate=3e-3, max_steps=args.steps, per_device_train_batch_size=16, logging_steps=10
    )
    trainer = MusicDPOTrainer(backend, pairs, config)
    what = (
        reward.describe()["text"]
        if isinstance(reward, dr.MusicReward)
        else "minus the spectral centroid in kHz"
    )
    print(f"reward = {what}")
    before, se_before = mean_reward()  # the adapter starts as a no-op (LoRA B = 0)
    trainer.train()
    after, se_after = mean_reward()
    margins = trainer.evaluate(pairs)["rewards/margins"]
    print(f"implicit reward margin on the training pairs: {margins:.4f} (0 before training)")
    z = (after - before) / max(math.hypot(se_before, se_after), 1e-12)
    print(
        f"mean reward of {len(fresh_prompts)} fresh samples: before {before:.5f}, after {after:.5f} ({z:+.1f} s.e.)"
    )

    # 3. save the adapter with peft and load it back into the model
    out = args.out or tempfile.mkdtemp(prefix="dpo-adapter-")
    trainer.save_adapter(out)
    print(f"adapter saved to {out}; load_adapter(model, {out!r}) puts it on a fresh model")
    if args.backend == "transformers":
        fresh_model, _ = tiny_transformers_musicgen()
        load_adapter(fresh_model, out)


if __name__ == "__main__":
    main()
