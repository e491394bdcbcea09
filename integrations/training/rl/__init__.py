"""Online RL (GRPO / RLOO) for MusicGen: the config (:mod:`.config`), the functional objective
(:mod:`.objective`), sampling and scoring a group (:mod:`.rollout`), diversity guards (:mod:`.diversity`)
and the trainer (:mod:`.trainer`)."""
