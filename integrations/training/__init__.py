"""Fine-tuning MusicGen with a LoRA adapter: DPO on preference pairs (:mod:`.dpo`), online RL (:mod:`.rl`)
and reward backpropagation (:mod:`.backprop`), on one shared core (:mod:`.common`: config fields, LoRA,
the trainer base with callbacks, checkpoints, logging, devices and precision)."""
