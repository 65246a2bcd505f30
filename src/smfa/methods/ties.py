"""TIES-Merging of the two task vectors SMFA trains — the forgetting adapter (MFA) and the retaining anchor
(RA) — with PEFT's merge utilities (trim to ``density``, elect the sign, disjoint mean), on the dense
deltas, module by module: ``W = W_o + TIES(ΔW_f, ΔW_a)``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from smfa.errors import ConfigError
from smfa.methods.base import Method, register_method
from smfa.methods.context import UnlearnContext
from smfa.methods.smfa import ANCHOR_ADAPTER, FORGET_ADAPTER, AdapterPairConfig, merged_adapter_pair

MAJORITY_SIGN_METHODS = ("total", "frequency")  # PEFT's choices for the sign election


@dataclass
class TIESConfig(AdapterPairConfig):
    """The MFA and RA are trained exactly as SMFA's (same fields, same shipped values), so a TIES-vs-SMFA
    comparison isolates the merge rule; SMFA's sculpting fields (k, mode, dual, k_text) are not accepted."""

    density: float = 0.5  # share of each task vector's largest-magnitude entries kept before the sign election
    forget_weight: float = 1.0  # weight of the MFA task vector
    anchor_weight: float = 1.0  # weight of the RA task vector
    majority_sign_method: str = "total"  # PEFT: "total" (sum of values) or "frequency" (count of signs)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.density <= 1:
            raise ConfigError(f"TIES density is the share of entries kept, in (0, 1]; got {self.density!r}")
        for name in ("forget_weight", "anchor_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"TIES {name} must be a finite number, got {getattr(self, name)!r}")
        if self.majority_sign_method not in MAJORITY_SIGN_METHODS:
            raise ConfigError(f"TIES majority_sign_method must be one of {', '.join(MAJORITY_SIGN_METHODS)}; "
                              f"got {self.majority_sign_method!r}")


def ties_delta(delta_forget: torch.Tensor, delta_anchor: torch.Tensor, hp: TIESConfig) -> torch.Tensor:
    """PEFT's TIES of the two dense deltas, in float32 on their device."""
    from peft.utils.merge_utils import ties

    weights = torch.tensor([hp.forget_weight, hp.anchor_weight], dtype=torch.float32, device=delta_forget.device)
    return ties([delta_forget.float(), delta_anchor.float()], weights, hp.density, hp.majority_sign_method)


@register_method
class TIES(Method):
    name = "ties"
    config_cls = TIESConfig
    description = "TIES merge of the MFA and RA task vectors (PEFT merge utilities)"
    trains_refusals = True

    def run(self, ctx: UnlearnContext, hp: TIESConfig) -> torch.nn.Module:  # type: ignore[override]
        model, _ = merged_adapter_pair(ctx, hp, {FORGET_ADAPTER: ctx.data.forget_rows},
                                       lambda model, out: merge_ties_into(model, out / FORGET_ADAPTER, out / ANCHOR_ADAPTER, hp))
        return model


def merge_ties_into(model: torch.nn.Module, forget_dir: Path, anchor_dir: Path, hp: TIESConfig) -> None:
    """``W += TIES(ΔW_f, ΔW_a)`` in place, module by module, each adapter module on the weight
    :func:`~smfa.sculpt.targets.resolve_targets` maps it to."""
    from smfa.sculpt import LoraAdapter, paired_dense_deltas, resolve_targets

    params = dict(model.named_parameters(remove_duplicate=False))  # tied weights answer to both names
    targets = resolve_targets(LoraAdapter(forget_dir, "forget adapter").modules, params, where="the model")
    with torch.no_grad():
        device = next(iter(params.values())).device
        for name, d_f, d_a in paired_dense_deltas(forget_dir, anchor_dir, device):
            w = params[targets[name.removesuffix(".weight")]]
            w.add_(ties_delta(d_f, d_a, hp).to(w.dtype))
