"""Several processes (``torchrun`` / ``accelerate launch``): who writes, who waits, and full weights to save.

Every rank trains (DDP, FSDP, ZeRO); the main process alone evaluates and writes run directories, shared
adapters and caches; the other ranks wait at a barrier until it is done and only then read what it wrote.
Alone (no launcher, ``WORLD_SIZE`` unset or 1) every helper here is a no-op: the one process is the main one.
In a launch of several processes, importing this module registers an exit hook that destroys the process
group (whoever started it: these helpers, the HF ``Trainer``) before the interpreter finalizes.

A library below the stages: it imports nothing of smfa.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class RankFailed(RuntimeError):
    """Raised on the ranks that waited for another one which failed (its own error is raised there)."""


def world_size() -> int:
    """Processes launched together (``WORLD_SIZE``, set by ``torchrun`` / ``accelerate launch``); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of a distributed launch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _group_ready() -> bool:
    """Whether collectives can run: the process group of a launch of several processes, initialised here
    through accelerate's ``PartialState`` (the same state the HF ``Trainer`` uses) when nothing has yet —
    ``smfa compare`` evaluates before its first training starts one."""
    if world_size() <= 1 or not torch.distributed.is_available():
        return False
    if not torch.distributed.is_initialized():
        from accelerate import PartialState

        # gloo without a GPU, the launcher's device backend (nccl) with one; as the Trainer chooses.
        PartialState(cpu=not torch.cuda.is_available())
    return torch.distributed.is_initialized()


def _destroy_group_at_exit() -> None:
    """Destroy the process group, if one is still up, joining its backend's worker threads while the
    interpreter is whole. Left to the interpreter's finalization, a gloo worker still releasing the last
    collective's tensors (their Python objects: it needs the GIL) is ended by ``pthread_exit`` inside a
    destructor, and the process aborts with "terminate called without an active exception" — a race of the
    last collective with the exit that load makes likely. torch's own advice: destroy before exiting."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if world_size() > 1:
    atexit.register(_destroy_group_at_exit)


def barrier() -> None:
    """Wait until every rank reaches this point (no-op alone)."""
    if _group_ready():
        torch.distributed.barrier()


@contextlib.contextmanager
def wait_for_main() -> Iterator[bool]:
    """Every rank runs the block and gets whether it is the main process (which alone writes, inside it); on
    leaving it every rank waits until all have left it, so that what the main process wrote is there for the
    others to read. A failure on any rank is raised on every rank (its own error where it happened, a
    :class:`RankFailed` naming it elsewhere) instead of leaving the others waiting for ever."""
    main = is_main_process()
    error: BaseException | None = None
    try:
        yield main
    except BaseException as exc:  # re-raised below, after the others have heard of it
        error = exc
    if _group_ready():
        statuses: list[Any] = [None] * world_size()
        torch.distributed.all_gather_object(statuses, None if error is None else f"{type(error).__name__}: {error}")
        failed = [(rank, msg) for rank, msg in enumerate(statuses) if msg is not None]
        if failed and error is None:
            rank, msg = failed[0]
            raise RankFailed(f"rank {rank} failed while this rank waited for it: {msg}")
    if error is not None:
        raise error


def on_main_process(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the main process only; every rank waits for it and gets its return value
    (it must pickle: paths, dicts of them). Alone: simply ``fn(*args, **kwargs)``."""
    result: list[Any] = [None]
    with wait_for_main() as main:
        if main:
            result[0] = fn(*args, **kwargs)
    if _group_ready():
        torch.distributed.broadcast_object_list(result, src=0)
    return result[0]


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (e.g. fills a cache), then the other ranks run it (and read
    what it wrote)."""
    main = is_main_process()
    if not main:
        barrier()
    yield
    if main:
        barrier()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full weights of a model sharded by FSDP (1 or 2) or DeepSpeed ZeRO-3, gathered on the CPU of the
    main process (other ranks may get an empty dict); ``None`` when ``model``'s own ``state_dict`` is already
    complete (one process, DDP, ZeRO-1/2). A collective when sharded: every rank must call it.

    The same calls as accelerate's ``Accelerator.get_state_dict``, read from the model itself, so that a
    stage can save a model whose ``Trainer`` (and accelerator) is gone. Saving the module's own tensors
    instead writes each rank's shard (FSDP) or empty tensors (ZeRO-3)."""
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):  # ZeRO-3: each parameter partitioned across ranks
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if is_main_process() else {}
    from torch.distributed.tensor import DTensor

    fsdp1 = any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
    if not fsdp1 and not any(isinstance(p, DTensor) for p in params):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The adapter weights of a PEFT model — its parameters named with its tuner's prefix (``lora_``), what
    its ``save_pretrained`` keeps — whole and on the CPU, for ``save_pretrained(state_dict=...)``; ``None``
    when the model's own tensors are already whole (one process, DDP, ZeRO-1/2), as :func:`full_state_dict`.

    Sharded, only the adapter parameters are gathered (a few MB, where :func:`full_state_dict` would gather
    all 7 B weights to save them), and every rank gets them; a collective, every rank must call it:
    ZeRO-3 gathers them with ``deepspeed.zero.GatheredParameters``, FSDP2 with each one's ``full_tensor()``.
    FSDP1 flattens a wrapped module's parameters into one shard, so there the whole model is gathered on the
    main process (other ranks get an empty dict) and filtered (the shipped ``fsdp.yaml`` is FSDP2)."""
    prefix = getattr(getattr(model, "base_model", None), "prefix", None)
    if not isinstance(prefix, str):
        raise TypeError(f"adapter_state_dict needs a PEFT model, got {type(model).__name__}")
    named = [(name, p) for name, p in model.named_parameters() if prefix in name]
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):  # ZeRO-3
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {name: p.detach().cpu().clone() for name, p in named}
    if any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()):  # FSDP1
        return {k: v for k, v in (full_state_dict(model) or {}).items() if prefix in k}
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in params):
        return None
    with torch.no_grad():  # FSDP2
        return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu() for name, p in named}


def parameter_sharding() -> str | None:
    """What this launch shards parameters with, from the environment ``accelerate launch`` sets (known before
    any model is loaded): ``"FSDP"``, ``"DeepSpeed ZeRO-3"``, or None (one process, DDP, ZeRO-1/2)."""
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return "FSDP"
    if not parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        return None
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")  # accelerate's DeepSpeedPlugin default: 2
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if config_file != "none":  # a DeepSpeed JSON config names the stage itself
        import json

        with open(config_file, encoding="utf-8") as f:
            stage = json.load(f).get("zero_optimization", {}).get("stage", stage)
    return "DeepSpeed ZeRO-3" if int(stage) == 3 else None
