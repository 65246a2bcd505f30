"""``TrainingArguments`` that keep a single process on the resolved ``--device`` (a module of its own:
the ``Trainer`` pickles its arguments into every checkpoint, and importing it loads transformers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from transformers import TrainingArguments
from transformers.training_args import ParallelMode


@dataclass
class PlacedTrainingArguments(TrainingArguments):
    """Without a distributed launcher the HF ``Trainer`` always trains on ``cuda:0`` and wraps the model in
    ``nn.DataParallel`` over every visible GPU; with these arguments a single process trains on exactly the
    requested device (``--device cuda:1`` included) and nowhere else. Under ``torchrun``/``accelerate
    launch`` the launcher's per-process device is kept (``--device auto`` resolves to the same
    ``cuda:LOCAL_RANK``)."""

    placement_device: str | None = field(default=None, metadata={"help": "smfa: the resolved --device"})

    @cached_property
    def _setup_devices(self) -> torch.device:
        device = TrainingArguments._setup_devices.func(self)
        want = torch.device(self.placement_device) if self.placement_device else None
        if want is not None and want.type == "cuda" and self.parallel_mode != ParallelMode.DISTRIBUTED:
            torch.cuda.set_device(want)
            self._n_gpu = 1
            return want
        return device
