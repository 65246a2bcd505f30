"""The training engine (one owner of Trainer set-up, checkpointing, precision and the answer view)."""
