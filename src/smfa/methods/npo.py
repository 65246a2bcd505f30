"""NPO: −(2/β)·log σ(−β·(log π_θ − log π_ref)) on forget sequences (reference = the vanilla model), plus the
retain NLL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from smfa.losses import answer_logits, answer_nll, npo_loss, sequence_logprob
from smfa.methods.base import LossMethod, MethodConfig, register_method


@dataclass
class NPOConfig(MethodConfig):
    beta: float = 0.1  # inverse temperature of the preference loss (SPEC: 0.1–0.4)


@register_method
class NPO(LossMethod):
    name = "npo"
    uses_reference_model = True  # a chain of requests compares with its root (smfa.stages.forget)
    config_cls = NPOConfig
    description = "negative preference optimisation on forget (reference = vanilla) + retain NLL"

    def loss(self, hp: NPOConfig, model: torch.nn.Module, forget: Any, retain: Any,  # type: ignore[override]
             reference: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            ref_lp = sequence_logprob(*answer_logits(reference, forget))
        loss = npo_loss(sequence_logprob(*answer_logits(model, forget)), ref_lp, hp.beta)
        return loss + hp.retain_weight * answer_nll(*answer_logits(model, retain))
