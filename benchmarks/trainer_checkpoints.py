"""Why the MusicGen trainers do not subclass ``transformers.Trainer``: what its checkpoints hold, and what a
run killed while one is written leaves for ``resume_from_checkpoint=True``; the same for this package's
trainer base.

1. A tiny ``transformers.Trainer`` run (a linear model, 4 steps, a checkpoint every 2) lists the files of its
   last checkpoint and which of them are pickles (read back with ``torch.load``).
2. A kill after the weights are written but before ``trainer_state.json`` is simulated by removing that
   file; ``get_last_checkpoint`` and ``train(resume_from_checkpoint=True)`` then run on the folder.
3. The same two checks on ``save_training_state`` (this package): the files of a checkpoint, and what a
   kill half-way through one leaves (its temporary folder) for ``resume_from_checkpoint=True``.

    .venv/bin/python benchmarks/trainer_checkpoints.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

PICKLED = (".pt", ".pth", ".bin")


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def forward(self, x, y):
        return {"loss": ((self.layer(x).squeeze(-1) - y) ** 2).mean()}


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        x = torch.randn(4, generator=torch.Generator().manual_seed(i))
        return {"x": x, "y": x.sum()}


def _args(out: Path, max_steps: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=2, per_device_train_batch_size=8,
        report_to="none", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip


def transformers_trainer(root: Path) -> None:
    out = root / "trainer"
    Trainer(model=Linear(), args=_args(out, 4), train_dataset=Data()).train()
    last = Path(get_last_checkpoint(str(out)))
    files = sorted(os.listdir(last))
    print(f"transformers.Trainer checkpoint {last.name}: {files}")
    print(f"  pickled (torch.load to read): {[f for f in files if f.endswith(PICKLED)]}")
    os.remove(last / "trainer_state.json")  # killed after the weights, before the state
    print(f"  after a kill mid-save, get_last_checkpoint -> {Path(get_last_checkpoint(str(out))).name}")
    try:
        Trainer(model=Linear(), args=_args(out, 6), train_dataset=Data()).train(resume_from_checkpoint=True)
        print("  train(resume_from_checkpoint=True): resumed")
    except Exception as err:  # noqa: BLE001 - the outcome is what this script reports
        print(f"  train(resume_from_checkpoint=True): {type(err).__name__}: {err}")


def this_package(root: Path) -> None:
    import peft

    from deramos_reward.integrations.training.common.checkpoints import (
        resolve_checkpoint,
        save_training_state,
    )

    out = root / "ours"
    model = peft.get_peft_model(nn.Sequential(nn.Linear(4, 4)), peft.LoraConfig(target_modules=["0"], r=2))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    folder = save_training_state(out, model, optimizer, step=2)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    print(f"deramos-reward checkpoint {folder.name}: {files}")
    print(f"  pickled: {[f for f in files if f.endswith(PICKLED)]}")
    # a kill half-way through the next save leaves its temporary folder (the rename is the last step)
    shutil.copytree(folder, out / ".checkpoint-4.tmp")
    os.remove(out / ".checkpoint-4.tmp" / "trainer_state.json")
    print(f"  after a kill mid-save, resume_from_checkpoint=True -> {resolve_checkpoint(out, True).name}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        transformers_trainer(Path(tmp))
        this_package(Path(tmp))


if __name__ == "__main__":
    main()
