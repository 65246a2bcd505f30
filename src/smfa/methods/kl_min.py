"""KL Minimisation: gradient ascent on forget + KL(original ‖ current) on retain, the original being the
frozen vanilla model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from smfa.losses import answer_logits, kl_min_loss
from smfa.methods.base import LossMethod, MethodConfig, register_method


@dataclass
class KLMinConfig(MethodConfig):
    """``retain_weight`` weighs the KL term."""


@register_method
class KLMin(LossMethod):
    name = "kl_min"
    uses_reference_model = True  # a chain of requests compares with its root (smfa.stages.forget)
    config_cls = KLMinConfig
    description = "gradient ascent on forget + KL to the frozen vanilla on retain"

    def loss(self, hp: KLMinConfig, model: torch.nn.Module, forget: Any, retain: Any,
             reference: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            ref_logits, _ = answer_logits(reference, retain)
        retain_logits, retain_labels = answer_logits(model, retain)
        return kl_min_loss(*answer_logits(model, forget), retain_logits, ref_logits, retain_labels, hp.retain_weight)
