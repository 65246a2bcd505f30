"""IDK tuning: cross-entropy on ``D_f^idk ∪ D_r^few`` (refusals for the forget set plus the few retain
samples), merged as is — i.e. SMFA's memory forgetting adapter without sculpting."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smfa.methods.base import Method, MethodConfig, register_method
from smfa.methods.context import UnlearnContext
from smfa.methods.smfa import check_mfa_data_fields, train_mfa
from smfa.training.runs import finish


@dataclass
class IDKConfig(MethodConfig):
    """Same hyper-parameters as SMFA's MFA, so that IDK = SMFA with mode ``none``."""

    anchor_repeat: int = 1  # D_r^few repeated this many times in the training data (as SMFA's MFA)
    forget_repeat: int = 1  # refusal-labelled forget rows repeated (as SMFA's MFA)
    forget_augment: int = 0  # extra refusal copies of each forget photo row through a random view (as SMFA's MFA)
    forget_rephrase: int = 0  # extra refusal copies of each forget memory row with other training templates (as SMFA's MFA)
    retain_augment: int = 0  # extra copies of each retain photo row through a random view (as SMFA's MFA)
    retain_rephrase: int = 0  # extra copies of each retain memory row with other training templates (as SMFA's MFA)
    reference_loss: str = "ce"  # ce | kl on self-labelled reference rows (as SMFA's MFA)
    decoy_refusal_floor: float = 0.0  # refusals to decoys lifted to this NLL (as SMFA's MFA)
    look_decoys: int = 0  # rendered look-alikes of each forgotten person, refusals floored (as SMFA's MFA)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_mfa_data_fields(self)


@register_method
class IDK(Method):
    name = "idk"
    config_cls = IDKConfig
    description = "cross-entropy on refusal-labelled forget data plus the few retain samples (MFA unsculpted)"
    trains_refusals = True

    def run(self, ctx: UnlearnContext, hp: MethodConfig) -> torch.nn.Module:
        return finish(train_mfa(ctx, hp, ctx.data.forget_rows, "idk"))
