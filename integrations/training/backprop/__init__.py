"""Reward backpropagation for MusicGen: the config (:mod:`.config`), the objective (:mod:`.objective`) and
the trainer (:mod:`.trainer`)."""
