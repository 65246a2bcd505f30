"""SMFA sculpting (arXiv 2511.20196): the mask math and the streaming merges.

For every adapted weight matrix, with ``ΔW_f`` the forgetting update (MFA) and ``ΔW_a`` the retaining
anchor (RA)::

    ρ      = ‖ΔW_f‖_F / (‖ΔW_a‖_F + ε)          per matrix
    C      = [ΔW_a ⊙ ΔW_f < 0]                    directional conflict
    R      = [k · ρ · |ΔW_a| < |ΔW_f|]            the forget update dominates the anchor's
    M      = C ⊙ R (both) | C (conflict) | R (magnitude) | nothing (none)
    ΔW'_f  = (1 − M) ⊙ ΔW_f                       masked entries are dropped from the forget update

**Direction of k**: a larger k makes R harder to satisfy, so *fewer* entries are masked and more of the
forget update survives — *stronger* forgetting. ``k = 0`` masks every conflicting entry (mode ``both``);
a huge k masks nothing.

One module per job, in pipeline order:

- :mod:`~smfa.sculpt.mask` — pure functions on tensors: :func:`sculpt_delta`, :func:`sculpt_mask`,
  :func:`mask_stats`, :func:`sculpt_dual`, :func:`aggregate_stats`, and the block kernel every sculpt runs
  on dense tensors or LoRA factors (:class:`LowRankDelta`);
- :mod:`~smfa.sculpt.adapters` — LoRA adapters read one module at a time from the files PEFT saves:
  :class:`LoraAdapter`, :func:`dense_deltas`, :func:`paired_dense_deltas`;
- :mod:`~smfa.sculpt.targets` — adapter modules → the weight tensors they update: :func:`resolve_targets`;
- :mod:`~smfa.sculpt.merge` — the merges that never hold more than one module's dense update:
  :func:`merge_sculpted_into` (a model in memory) and :func:`sculpt_checkpoint` (a saved checkpoint, out
  of core);
- :mod:`~smfa.sculpt.report` — what a merge did: :class:`SculptReport`, :func:`write_sculpt_report`;
- :mod:`~smfa.sculpt.shards` — a generic out-of-core safetensors shard rewriter (nothing SMFA-specific).
"""

from smfa.sculpt.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraAdapter,
    check_compatible,
    dense_deltas,
    paired_dense_deltas,
)
from smfa.sculpt.mask import (
    EPS,
    MODES,
    LowRankDelta,
    MaskStats,
    aggregate_stats,
    mask_stats,
    sculpt_delta,
    sculpt_dual,
    sculpt_mask,
)
from smfa.sculpt.merge import merge_sculpted_into, sculpt_checkpoint
from smfa.sculpt.report import REPORT_JSON, REPORT_MD, SculptReport, SculptView, write_sculpt_report
from smfa.sculpt.shards import SAFETENSORS_INDEX, SAFETENSORS_SINGLE
from smfa.sculpt.targets import resolve_targets

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "EPS",
    "MODES",
    "REPORT_JSON",
    "REPORT_MD",
    "SAFETENSORS_INDEX",
    "SAFETENSORS_SINGLE",
    "LoraAdapter",
    "LowRankDelta",
    "MaskStats",
    "SculptReport",
    "SculptView",
    "aggregate_stats",
    "check_compatible",
    "dense_deltas",
    "mask_stats",
    "merge_sculpted_into",
    "paired_dense_deltas",
    "resolve_targets",
    "sculpt_checkpoint",
    "sculpt_delta",
    "sculpt_dual",
    "sculpt_mask",
    "write_sculpt_report",
]
