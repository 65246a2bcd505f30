"""GA Difference: gradient ascent on a forget batch and NLL descent on a retain batch in every step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from smfa.losses import answer_logits, ga_diff_loss
from smfa.methods.base import LossMethod, MethodConfig, register_method


@dataclass
class GADiffConfig(MethodConfig):
    """``retain_weight`` weighs the retain NLL against the forget ascent."""


@register_method
class GADiff(LossMethod):
    name = "ga_diff"
    config_cls = GADiffConfig
    description = "gradient ascent on forget interleaved with NLL descent on the few retain samples"

    def loss(self, hp: GADiffConfig, model: torch.nn.Module, forget: Any, retain: Any, reference: None) -> torch.Tensor:
        return ga_diff_loss(*answer_logits(model, forget), *answer_logits(model, retain), hp.retain_weight)
