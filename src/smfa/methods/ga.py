"""GA: gradient ascent on the forget answers (maximise their NLL); no retain term."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smfa.losses import answer_logits, ga_loss
from smfa.methods.base import (Method, MethodConfig, UnlearnContext, finish, forget_dataset,
                               prepare_trainable, register_method, train_unlearner)


@dataclass
class GAConfig(MethodConfig):
    """Plain gradient ascent: lr and epochs bound how far it goes (it has no brake)."""


@register_method
class GA(Method):
    name = "ga"
    config_cls = GAConfig
    description = "gradient ascent on the forget set"
    has_retain_term = False

    def run(self, ctx: UnlearnContext, hp: MethodConfig) -> torch.nn.Module:
        model = prepare_trainable(ctx, hp, ctx.trainee(hp))

        def loss_fn(m, forget, retain):
            return ga_loss(*answer_logits(m, forget))

        return finish(train_unlearner(ctx, model, hp, forget_dataset(ctx), None, loss_fn, tag="ga"))
