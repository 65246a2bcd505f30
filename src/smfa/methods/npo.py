"""NPO: −(2/β)·log σ(−β·(log π_θ − log π_ref)) on forget sequences (reference = the vanilla model), plus the
retain NLL."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smfa.losses import answer_logits, answer_nll, npo_loss, sequence_logprob
from smfa.methods.base import (Method, MethodConfig, UnlearnContext, finish, forget_dataset,
                               prepare_trainable, register_method, retain_dataset, train_unlearner)


@dataclass
class NPOConfig(MethodConfig):
    beta: float = 0.1  # inverse temperature of the preference loss (SPEC: 0.1–0.4)


@register_method
class NPO(Method):
    name = "npo"
    uses_reference_model = True  # a chain of requests compares with its root (smfa.stages.forget)
    config_cls = NPOConfig
    description = "negative preference optimisation on forget (reference = vanilla) + retain NLL"

    def run(self, ctx: UnlearnContext, hp: NPOConfig) -> torch.nn.Module:  # type: ignore[override]
        model = prepare_trainable(ctx, hp, ctx.trainee(hp))
        reference = ctx.reference_model.eval()

        def loss_fn(m, forget, retain):
            with torch.no_grad():
                ref_lp = sequence_logprob(*answer_logits(reference, forget))
            loss = npo_loss(sequence_logprob(*answer_logits(m, forget)), ref_lp, hp.beta)
            return loss + hp.retain_weight * answer_nll(*answer_logits(m, retain))

        return finish(train_unlearner(ctx, model, hp, forget_dataset(ctx), retain_dataset(ctx), loss_fn,
                                      reference=reference, tag="npo"))
