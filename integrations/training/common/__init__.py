"""What the three MusicGen fine-tuning trainers share.

- :mod:`.config`: the trl-named fields every trainer's config has, checked once;
- :mod:`.lora`: the LoRA policy on a MusicGen backend, loading an adapter back;
- :mod:`.runtime`: devices, bf16 autocast, accelerate, schedules, gradient norms;
- :mod:`.settings`: a run's recorded settings, compared on resume;
- :mod:`.checkpoints`: resumable training state, written atomically, never pickled;
- :mod:`.run_log`: log rows (JSONL), the progress bar.
"""
