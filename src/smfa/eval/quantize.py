"""The quantisation attack's machinery: round the language model's Linear weights in place with a scheme of
:data:`QUANTIZE_SCHEMES` and put the exact weights back afterwards (the attack itself: :mod:`smfa.eval.attacks`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from smfa.errors import ConfigError
from smfa.eval.attack_pieces import quantize_nf4, quantize_rtn

# One entry per scheme: an int is per-channel RTN with that many bits (quantize_8bit, quantize_4bit), "nf4" is
# QLoRA's block-wise NormalFloat-4 (quantize_nf4).
QUANTIZE_SCHEMES: tuple[int | str, ...] = (8, 4, "nf4")


def _quantizer(scheme: int | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """An entry of :data:`QUANTIZE_SCHEMES` → the weight rounding: an int is :func:`quantize_rtn` with that many
    bits, ``"nf4"`` :func:`quantize_nf4` (blocks of 64)."""
    if scheme == "nf4":
        return quantize_nf4
    if isinstance(scheme, str):
        raise ConfigError(f"unknown quantisation scheme {scheme!r}; use a bit width (2..16) or 'nf4'")
    return lambda w: quantize_rtn(w, scheme)


def quantize_entry(scheme: int | str) -> str:
    """The attack entry of a scheme: ``quantize_8bit``, ``quantize_4bit``, ``quantize_nf4``."""
    return f"quantize_{scheme}bit" if isinstance(scheme, int) else f"quantize_{scheme}"


def quantize_language_model(model: torch.nn.Module, family: Any, bits: int | str) -> float:
    """Round, in place, every ``nn.Linear`` weight under the language model (``family.language_model_pattern``)
    with :func:`quantize_rtn` (``bits`` an int) or :func:`quantize_nf4` (``bits`` ``"nf4"``); returns
    ‖W_q − W‖_F / ‖W‖_F over those matrices (:func:`quantized_in_place` restores them)."""
    quantize = _quantizer(bits)
    pattern = re.compile(family.language_model_pattern)
    err = total = 0.0
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and pattern.search(name):
                w = module.weight
                q = quantize(w)
                err += float((q.float() - w.float()).pow(2).sum())
                total += float(w.float().pow(2).sum())
                w.copy_(q)
    if total == 0.0:
        raise ConfigError(
            f"no language-model Linear layer matches {family.language_model_pattern!r} (family {family.name}); "
            "nothing to quantise"
        )
    return math.sqrt(err / total)


@contextmanager
def quantized_in_place(model: torch.nn.Module, family: Any, bits: int | str) -> Iterator[float]:
    """The model under attack with its language-model Linear weights rounded (:func:`quantize_language_model`),
    yielding the relative weight error; the exact weights come back afterwards (also on error). The originals
    wait in host memory, so the accelerator never holds a second model (a 7B one is 14 GB in bf16)."""
    pattern = re.compile(family.language_model_pattern)
    weights = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and pattern.search(name)]
    saved = [w.detach().to("cpu", copy=True) for w in weights]
    try:
        yield quantize_language_model(model, family, bits)
    finally:
        with torch.no_grad():
            for w, original in zip(weights, saved):
                w.copy_(original)
