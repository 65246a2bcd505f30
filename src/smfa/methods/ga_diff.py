"""GA Difference: gradient ascent on a forget batch and NLL descent on a retain batch in every step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smfa.losses import answer_logits, ga_diff_loss
from smfa.methods.base import (Method, MethodConfig, UnlearnContext, finish, forget_dataset,
                               prepare_trainable, register_method, retain_dataset, train_unlearner)


@dataclass
class GADiffConfig(MethodConfig):
    """``retain_weight`` weighs the retain NLL against the forget ascent."""


@register_method
class GADiff(Method):
    name = "ga_diff"
    config_cls = GADiffConfig
    description = "gradient ascent on forget interleaved with NLL descent on the few retain samples"

    def run(self, ctx: UnlearnContext, hp: MethodConfig) -> torch.nn.Module:
        model = prepare_trainable(ctx, hp, ctx.trainee(hp))

        def loss_fn(m, forget, retain):
            return ga_diff_loss(*answer_logits(m, forget), *answer_logits(m, retain), hp.retain_weight)

        return finish(train_unlearner(ctx, model, hp, forget_dataset(ctx), retain_dataset(ctx), loss_fn, tag="ga_diff"))
