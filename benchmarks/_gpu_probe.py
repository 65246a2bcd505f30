"""Runs one smfa command (``python _gpu_probe.py REPORT_JSON -- smfa-args...``) and writes, at its exit, what
the parent process cannot see from outside: the peak GPU memory (``torch.cuda.max_memory_allocated``,
``max_memory_reserved``), the process's peak resident memory, and where the parameters of every model that
ran were — counted by device and dtype, frozen and trainable apart.

A model "ran" when its ``forward`` was called (generation, training, answer losses). A global forward
pre-hook (``torch.nn.modules.module.register_module_forward_pre_hook``, torch's public API; nothing of
smfa or transformers is patched) looks, at the first call of each top-level model — a transformers
``PreTrainedModel`` that generates (``GenerationMixin``: LLaVA's ``...ForConditionalGeneration``, not its inner
language model or vision tower, so nothing is counted twice) — at that model's parameters as they are then.
``benchmarks/gpu_check.py`` runs each of its 7B stages under it."""

from __future__ import annotations

import json
import sys
import time
import weakref
from collections import Counter
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM; 0 where /proc has none)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def parameter_placement(model) -> dict:
    """Parameter counts of ``model`` by ``"<device> <dtype>"`` (e.g. ``"cuda:0 bf16"``), frozen and trainable apart."""
    import torch

    short = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}  # smfa's --dtype names
    frozen: Counter = Counter()
    trainable: Counter = Counter()
    for p in model.parameters():
        key = f"{p.device} {short.get(p.dtype, str(p.dtype).removeprefix('torch.'))}"
        (trainable if p.requires_grad else frozen)[key] += p.numel()
    return {"class": type(model).__name__, "frozen": dict(frozen), "trainable": dict(trainable)}


def watch_models(seen: list[dict]) -> None:
    """Append ``parameter_placement`` of each top-level model at its first forward call to ``seen``."""
    import torch
    from transformers import GenerationMixin, PreTrainedModel

    recorded: weakref.WeakSet = weakref.WeakSet()

    def hook(module, args) -> None:
        if isinstance(module, PreTrainedModel) and isinstance(module, GenerationMixin) and module not in recorded:
            recorded.add(module)
            seen.append(parameter_placement(module))

    torch.nn.modules.module.register_module_forward_pre_hook(hook)


def main() -> int:
    report, args = Path(sys.argv[1]), sys.argv[sys.argv.index("--") + 1:]
    import torch

    seen: list[dict] = []
    watch_models(seen)
    from smfa.cli.main import main as smfa_main

    t0 = time.perf_counter()
    rc = 1
    try:
        rc = smfa_main(args)
    finally:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        report.write_text(json.dumps({
            "rc": rc,
            "wall_s": round(time.perf_counter() - t0, 2),
            "peak_rss_bytes": peak_rss_bytes(),
            "cuda_device": torch.cuda.get_device_name() if cuda else None,
            "peak_gpu_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
            "models": seen,
        }, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
