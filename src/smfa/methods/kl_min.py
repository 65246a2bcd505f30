"""KL Minimisation: gradient ascent on forget + KL(original ‖ current) on retain, the original being the
frozen vanilla model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smfa.losses import answer_logits, kl_min_loss
from smfa.methods.base import (Method, MethodConfig, UnlearnContext, finish, forget_dataset,
                               prepare_trainable, register_method, retain_dataset, train_unlearner)


@dataclass
class KLMinConfig(MethodConfig):
    """``retain_weight`` weighs the KL term."""


@register_method
class KLMin(Method):
    name = "kl_min"
    uses_reference_model = True  # a chain of requests compares with its root (smfa.stages.forget)
    config_cls = KLMinConfig
    description = "gradient ascent on forget + KL to the frozen vanilla on retain"

    def run(self, ctx: UnlearnContext, hp: MethodConfig) -> torch.nn.Module:
        model = prepare_trainable(ctx, hp, ctx.trainee(hp))
        reference = ctx.reference_model.eval()

        def loss_fn(m, forget, retain):
            with torch.no_grad():
                ref_logits, _ = answer_logits(reference, retain)
            retain_logits, retain_labels = answer_logits(m, retain)
            return kl_min_loss(*answer_logits(m, forget), retain_logits, ref_logits, retain_labels, hp.retain_weight)

        return finish(train_unlearner(ctx, model, hp, forget_dataset(ctx), retain_dataset(ctx), loss_fn,
                                      reference=reference, tag="kl_min"))
