"""DPO for MusicGen: the loss (:mod:`.loss`), preference pairs (:mod:`.pairs`), the config (:mod:`.config`)
and the trainer (:mod:`.trainer`)."""
