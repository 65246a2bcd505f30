"""Where a model runs and in which precision: the one owner of ``--device`` and ``--dtype``.

Every command that loads a model resolves its two options here once (:func:`resolve_placement`) and
passes the :class:`Placement` on: the loaded model (:func:`smfa.models.loading.load_model`), the
trainer's device (:func:`smfa.training.training_arguments`), reference models, saliency masks and every
batch (:func:`move_batch`) follow it.

- ``--device auto`` takes the accelerator when one is visible (under ``torchrun``/``accelerate launch``,
  ``cuda:LOCAL_RANK``), else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` ask for one.
- ``--dtype auto`` is bf16 on a GPU that supports it (fp16 on one that does not) and fp32 on the CPU, so
  that on a CPU everything runs exactly as before the option existed.

Impossible requests (``cuda`` without CUDA, fp16 on the CPU, bf16 on a GPU without it) are refused in one
line before any model is loaded.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from smfa.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_CHOICES = ("auto", *DTYPES)
AUTOCAST_CHOICES = ("auto", "none", "bf16", "fp16")
_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Placement:
    """A resolved ``--device``/``--dtype`` pair: the device every model, mask and batch goes to, and the
    dtype the weights are loaded in."""

    device: torch.device
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def describe(self) -> dict[str, str]:
        """What a manifest records."""
        return {"device": str(self.device), "dtype": self.dtype_name}


CPU_FP32 = Placement(torch.device("cpu"), torch.float32)


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def _distributed_local_rank() -> int | None:
    """This process's local rank under a distributed launcher (``torchrun``, ``accelerate launch``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of a distributed launch (``RANK`` set by ``torchrun`` /
    ``accelerate launch``): every rank trains, one writes the run directory."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` → a concrete device, or a one-line ConfigError."""
    match = _DEVICE.match(str(spec).strip().lower())
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    kind, index = match.group(1), match.group(2)
    rank = _distributed_local_rank()
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: no CUDA device is visible to torch (torch.cuda.is_available() is False); "
                          "use --device cpu or --device auto")
    count = torch.cuda.device_count()
    if index is not None:
        if rank is not None:
            raise ConfigError(f"--device {spec} under a distributed launch would put every process on one GPU; "
                              "use --device auto or cuda (each process takes cuda:LOCAL_RANK)")
        if int(index) >= count:
            raise ConfigError(f"--device {spec}: only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", int(index))
    return torch.device("cuda", rank if rank is not None else torch.cuda.current_device())


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` | ``bf16`` | ``fp16`` | ``fp32`` on ``device`` → a dtype, or a one-line ConfigError."""
    spec = str(spec).strip().lower()
    if spec not in DTYPE_CHOICES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}, got {spec!r}")
    if device.type == "cpu":
        if spec == "fp16":
            raise ConfigError("--dtype fp16 needs a CUDA device (no fp16 mixed precision on the CPU); "
                              "on the CPU use --dtype bf16 or fp32")
        return DTYPES["fp32"] if spec == "auto" else DTYPES[spec]
    bf16_ok = torch.cuda.is_bf16_supported()
    if spec == "auto":
        return torch.bfloat16 if bf16_ok else torch.float16
    if spec == "bf16" and not bf16_ok:
        raise ConfigError(f"--dtype bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                          "use --dtype fp16 or fp32")
    return DTYPES[spec]


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """The device and dtype every model of a command uses (see the module docstring for ``auto``)."""
    where = resolve_device(device)
    return Placement(where, resolve_dtype(dtype, where))


def autocast_flags(autocast: str, placement: Placement) -> dict[str, bool]:
    """The ``Trainer``'s mixed-precision flags (``bf16``/``fp16``) for a method's ``autocast`` setting:
    ``auto`` autocasts to the weights' own half dtype (none for fp32 weights), ``none`` never does,
    ``bf16``/``fp16`` always do."""
    if autocast not in AUTOCAST_CHOICES:
        raise ConfigError(f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {autocast!r}")
    half = {"auto": placement.dtype_name if placement.dtype != torch.float32 else None, "none": None}.get(autocast, autocast)
    if half == "fp16" and placement.device.type == "cpu":
        raise ConfigError("autocast fp16 needs a CUDA device; on the CPU use autocast bf16 or none")
    return {"bf16": half == "bf16", "fp16": half == "fp16"}


def check_trainable(placement: Placement, full_finetune: bool, what: str) -> None:
    """Refuse training that cannot work in this precision, before any model is loaded: full fine-tuning of
    fp16 weights (the ``Trainer``'s fp16 gradient scaler needs fp32 master weights; LoRA keeps its adapter
    in fp32, so LoRA in fp16 is fine)."""
    if full_finetune and placement.dtype == torch.float16:
        raise ConfigError(f"{what} fine-tunes the weights themselves, which the fp16 gradient scaler cannot do on "
                          "fp16 weights; use --dtype bf16 or fp32 (or LoRA)")


def master_weights(placement: Placement, full_finetune: bool, dtype_asked: str) -> tuple[Placement, bool]:
    """(the weights' placement, whether the forward autocasts to bf16) for training. Full fine-tuning with
    ``--dtype auto`` keeps fp32 master weights where auto would have picked bf16 (a GPU): the weights load in
    fp32 and the forward runs in bf16 (mixed precision), so small updates are not rounded away. An explicit
    ``--dtype bf16`` trains pure bf16 as asked (half the memory). LoRA keeps the base in the resolved dtype:
    PEFT holds the adapters, the only trained tensors, in fp32."""
    if full_finetune and dtype_asked == "auto" and placement.dtype == torch.bfloat16:
        return Placement(placement.device, torch.float32), True
    return placement, False


def place(model: torch.nn.Module, placement: Placement) -> torch.nn.Module:
    """Move ``model`` (every parameter and buffer) to the placement's device, floating-point tensors cast to
    its dtype."""
    return model.to(device=placement.device, dtype=placement.dtype)


def placement_of(model: torch.nn.Module) -> dict[str, str]:
    """Where ``model`` actually is (what a manifest records): the device and dtype of its weights, the
    dtype being the most common floating-point one (a LoRA model keeps its adapters in fp32)."""
    from collections import Counter

    params = list(model.parameters())
    dtypes = Counter(p.dtype for p in params if p.is_floating_point())
    return {"device": str(params[0].device), "dtype": dtype_name(dtypes.most_common(1)[0][0])}


def move_batch(batch: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """A collated batch on ``model``'s device; image tensors also in its dtype (token ids stay integers)."""
    param = next(model.parameters())
    return {k: (v.to(param.device, param.dtype) if k == "pixel_values" and v.is_floating_point() else v.to(param.device))
            if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def add_placement_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` with one wording on every command that loads a model."""
    p.add_argument("--device", help="auto (default: the GPU when one is visible, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=DTYPE_CHOICES,
                   help="weights' dtype: auto (default: bf16 on a GPU that has it, fp16 on one that does not, "
                        "fp32 on the CPU), bf16, fp16 (GPU only), fp32")
