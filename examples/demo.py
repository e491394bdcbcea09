"""The offline demo behind `make demo`: synthetic corpus -> train a tiny judge -> metrics -> score clips.

Runs on a 2-core CPU in about a minute with no downloads. The encoders
are tiny random MuQ/RoBERTa models built from configs, so the numbers show the pipeline working
on a corpus with a designed quality ordering, not the quality of the paper's model: MI is
learned well; of TA, such encoders learn only the part that follows audio quality, not whether
the music matches the prompt. Everything is written
under --out (default ./demo_out); running it again reuses the corpus, the feature cache and the
finished run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import deramos_reward as dr
from deramos_reward.data import load_dataset_split, make_corpus
from deramos_reward.evaluation import evaluate_split, format_report, predict, write_answer
from deramos_reward.training import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default="demo_out", help="folder for the corpus, the run and answer.txt (default: demo_out)"
    )
    out = Path(parser.parse_args(argv).out)
    torch.set_num_threads(min(4, os.cpu_count() or 1))

    # 1. A MusicEval-format corpus: 8 simulated text-to-music systems of designed quality,
    #    24 prompts (instrument, tempo, mood), 2 clips per system and prompt, 3 s each.
    corpus_dir = out / "corpus"
    if not (corpus_dir / "sets").exists():
        print("building the synthetic corpus ...")
        make_corpus(
            corpus_dir, n_systems=8, n_prompts=24, clips_per_pair=2, seconds=3.0, sample_rate=24_000, seed=0
        )

    # 2. Train the DeRA-MOS heads (distribution loss + BALR + SAMA) on frozen tiny encoders.
    #    Encoder features are computed once and cached; each epoch only runs the heads.
    config = TrainConfig(
        model="tiny",
        lr=1e-3,  # the paper uses 5e-5 for its large heads; tiny heads need a larger step
        batch_size=16,
        max_epochs=40,
        patience=10,
        seed=0,
        device="cpu",
    )
    result = train(config, corpus_dir, out / "run")
    print(f"\ntrained {result.epochs} epochs; checkpoints:")
    for name, best in result.best.items():
        print(f"  {name:<18} epoch {best['epoch']:>2} ({best['quantity']}) -> {best['path']}")

    # 3. Evaluate the "combined" checkpoint on the held-out test split (running the encoders
    #    on the audio, as a user's model would) and write the challenge answer file.
    model = dr.DeRAMOS.from_pretrained(result.best["best_combined"]["path"])
    test = load_dataset_split(corpus_dir, "test")
    mi, ta = predict(model, test)
    print("\ntest split:")
    print(format_report(evaluate_split(mi, ta, test)))
    write_answer(out / "answer.txt", [ex.wav_id for ex in test], mi, ta)
    print(f"wrote {out / 'answer.txt'}")

    # 4. Score a few clips with the plain API: file paths + prompts -> MI and TA.
    clips = test[:4]
    rows = dr.score(model, [ex.path for ex in clips], [ex.prompt for ex in clips])
    print(f"\n{'clip':<14} {'prompt':<44} {'MI':>5} {'TA':>5}  (true MI, TA)")
    for ex, row in zip(clips, rows):
        print(
            f"{ex.wav_id[-12:]:<14} {ex.prompt[:44]:<44} {row['mi']:5.2f} {row['ta']:5.2f}  ({ex.mi:.1f}, {ex.ta:.1f})"
        )


if __name__ == "__main__":
    main()
