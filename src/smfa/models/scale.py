"""Which defaults a model gets by its size. The built-in tiny model (under a million parameters) trains on
a CPU in fp32 in batches of 16 without recomputation; a real checkpoint (LLaVA-1.5-7B, Qwen2-VL-7B, ... and
anything from 100 M parameters up) gets the memory plan that fits one GPU: gradient checkpointing, batches
of 4 with 4 accumulation steps (the same effective batch, so the same passes over the data), and LoRA for
the relearning attack (``configs/methods/real.yaml``, ``smfa.eval.attack_pieces``)."""

from __future__ import annotations

import torch

REAL_SCALE_PARAMS = 100_000_000


def is_real_scale(model: torch.nn.Module) -> bool:
    """Whether ``model`` is large enough for the real-checkpoint defaults (≥ 100 M parameters)."""
    return sum(p.numel() for p in model.parameters()) >= REAL_SCALE_PARAMS
