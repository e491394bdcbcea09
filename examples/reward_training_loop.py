"""DeRA-MOS as a differentiable reward in a training loop.

A small prompt-conditioned synthesizer (a stand-in for any generator whose output is a waveform
with a gradient: a vocoder, a diffusion decoder...) is trained to maximise ``MusicReward``.
Gradients flow from the reward through resampling, the mel front-end, the frozen encoders and
the heads into the synthesizer; the scorer itself never receives a gradient.

Runs offline in a few seconds with a tiny random judge (whose taste is arbitrary, so the audio
it prefers means nothing); pass ``--reward DIR`` to use a trained DeRA-MOS checkpoint.

    .venv/bin/python examples/reward_training_loop.py
    .venv/bin/python examples/reward_training_loop.py --reward path/to/ckpt --device cuda --steps 200
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import deramos_reward as dr


class PromptSynth(nn.Module):
    """One learnable bank of partials per prompt -> waveform [B, T] at ``sample_rate``."""

    def __init__(self, n_prompts: int, partials: int = 8, seconds: float = 1.0, sample_rate: int = 16_000):
        super().__init__()
        self.sample_rate = sample_rate
        self.register_buffer("t", torch.arange(int(seconds * sample_rate)) / sample_rate, persistent=False)
        g = torch.Generator().manual_seed(0)
        self.log_freq = nn.Parameter(math.log(220.0) + torch.rand(n_prompts, partials, generator=g) * 2.0)
        self.logit_amp = nn.Parameter(torch.randn(n_prompts, partials, generator=g))
        self.decay = nn.Parameter(torch.zeros(n_prompts, 1))

    def forward(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        freq = self.log_freq[prompt_ids].exp()[..., None]  # [B, P, 1]
        amp = torch.softmax(self.logit_amp[prompt_ids], -1)[..., None]  # [B, P, 1]
        envelope = torch.exp(-nn.functional.softplus(self.decay[prompt_ids]) * (self.t % 0.5))  # [B, T]
        return 0.5 * (amp * torch.sin(2 * math.pi * freq * self.t)).sum(1) * envelope


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reward", help="DeRA-MOS checkpoint folder (default: a tiny random one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)

    if args.reward:
        judge = dr.DeRAMOS.from_pretrained(args.reward, device=device)
    else:
        torch.manual_seed(0)
        judge = dr.DeRAMOS(dr.DeRAMOSConfig.tiny()).to(device)
    reward = dr.MusicReward(judge, mi_weight=0.5, ta_weight=0.5)  # a MOS on 1-5, frozen

    prompts = ["a calm piano piece", "fast techno with heavy bass", "ambient synth pads"]
    ids = torch.arange(len(prompts), device=device)
    synth = PromptSynth(len(prompts)).to(device)
    opt = torch.optim.Adam(synth.parameters(), lr=0.05)

    print(f"reward = {reward.describe()['text']}")
    for step in range(args.steps + 1):
        # bf16 autocast on GPU: the reward keeps its mel front-end and scores in float32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            audio = synth(ids)  # [3, T] at 16 kHz: the reward resamples to the judge's rate
            r = reward(audio, synth.sample_rate, prompts)  # [3], differentiable in audio
        if step % 10 == 0:
            print(
                f"step {step:3d}  reward per prompt {[round(v, 4) for v in r.tolist()]}  mean {r.mean():.4f}"
            )
        if step == args.steps:
            break
        loss = -r.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    assert all(p.grad is None for p in judge.parameters()), "the judge must never receive gradients"
    print("the judge's parameters received no gradient; the synthesizer's did")


if __name__ == "__main__":
    main()
