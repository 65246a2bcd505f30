"""GA: gradient ascent on the forget answers (maximise their NLL); no retain term."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from smfa.losses import answer_logits, ga_loss
from smfa.methods.base import LossMethod, MethodConfig, register_method


@dataclass
class GAConfig(MethodConfig):
    """Plain gradient ascent: lr and epochs bound how far it goes (it has no brake)."""


@register_method
class GA(LossMethod):
    name = "ga"
    config_cls = GAConfig
    description = "gradient ascent on the forget set"
    has_retain_term = False

    def loss(self, hp: GAConfig, model: torch.nn.Module, forget: Any, retain: None, reference: None) -> torch.Tensor:
        return ga_loss(*answer_logits(model, forget))
