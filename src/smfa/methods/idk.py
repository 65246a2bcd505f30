"""IDK tuning: cross-entropy on ``D_f^idk ∪ D_r^few`` (refusals for the forget set plus the few retain
samples), merged as is — i.e. SMFA's memory forgetting adapter without sculpting."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smfa.methods.base import Method, MethodConfig, UnlearnContext, finish, register_method
from smfa.methods.smfa import train_mfa


@dataclass
class IDKConfig(MethodConfig):
    """Same hyper-parameters as SMFA's MFA, so that IDK = SMFA with mode ``none``."""

    anchor_repeat: int = 1  # D_r^few repeated this many times in the training data (as SMFA's MFA)
    forget_repeat: int = 1  # refusal-labelled forget rows repeated (as SMFA's MFA)
    forget_augment: int = 0  # extra refusal copies of each forget photo row through a random view (as SMFA's MFA)

    def __post_init__(self) -> None:
        from smfa.errors import ConfigError

        super().__post_init__()
        if not isinstance(self.forget_augment, int) or self.forget_augment < 0:
            raise ConfigError(f"IDKConfig: forget_augment must be an integer >= 0, got {self.forget_augment!r}")
        for name in ("anchor_repeat", "forget_repeat"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"IDKConfig: {name} must be an integer >= 1, got {getattr(self, name)!r}")


@register_method
class IDK(Method):
    name = "idk"
    config_cls = IDKConfig
    description = "cross-entropy on refusal-labelled forget data plus the few retain samples (MFA unsculpted)"

    def run(self, ctx: UnlearnContext, hp: MethodConfig) -> torch.nn.Module:
        return finish(train_mfa(ctx, hp, ctx.data.forget_rows, "idk"))
