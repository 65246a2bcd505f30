"""The two merges of a sculpted forget update, ``W = W_o + mean_v sculpt(ΔW_f^v, ΔW_a, k_v)``, that never
hold more than one module's dense update: :func:`merge_sculpted_into` (a model in memory) and
:func:`sculpt_checkpoint` (a saved checkpoint, shard by shard and tensor by tensor, out of core through
:mod:`smfa.sculpt.shards`). Both read the adapters one module at a time and produce a :class:`SculptReport`.

Performance (Llama-2-7B shapes, rank 16, 2 CPU cores): ~0.2–0.3 CPU-s of math per 4096×11008 matrix — a
third the two rank-16 matmuls, the rest ~12 element-wise passes over blocks of 2¹⁷ entries.
:func:`sculpt_checkpoint` merges different tensors on different threads while a reader and a writer thread
move the bytes (:func:`~smfa.sculpt.shards.rewrite_shards`), and holds < 1 GB. The merged weights do not
depend on the number of threads (see :func:`~smfa.sculpt.mask.sculpt_rows`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from smfa.errors import ModelError, OutputError, SculptError
from smfa.rundir import atomic_run_dir, file_digest, write_manifest
from smfa.sculpt.adapters import ADAPTER_WEIGHTS, LoraAdapter, check_compatible
from smfa.sculpt.mask import (
    EPS,
    LowRankDelta,
    MaskStats,
    check_params,
    cosine_from_dot,
    forget_anchor_ratio,
    row_parallel,
    sculpt_rows,
    stats_from_totals,
    threshold_scale,
)
from smfa.sculpt.report import SculptReport, SculptView, write_sculpt_report
from smfa.sculpt.shards import (
    FLOAT_DTYPES,
    ShardRewrite,
    check_index,
    checkpoint_shards,
    copy_side_files,
    read_header,
    rewrite_shards,
)
from smfa.sculpt.targets import resolve_targets


# ---- the streaming merge of one weight ------------------------------------------------------------
def _merge_weight(
    weight: torch.Tensor,
    out: torch.Tensor,
    forgets: Sequence[tuple[LowRankDelta, float]],
    anchor: LowRankDelta,
    mode: str,
    eps: float,
    workers: int = 1,
) -> list[MaskStats]:
    """``out = weight + mean_v sculpt(ΔW_f^v, ΔW_a, k_v)`` in float32, rounded once to ``out``'s dtype.

    ``out`` may be ``weight`` itself. No full dense update is ever built: ρ and the cosine come from the
    low-rank factors, and blocks of rows of ΔW_f, ΔW_a are built, masked and added while in cache.
    Returns one :class:`MaskStats` per forget view.
    """
    device = weight.device
    anchor = anchor.to(device)
    norm_a = math.sqrt(max(anchor.inner(anchor), 0.0))
    views, stats_args = [], []
    for delta, k in forgets:
        f = delta.to(device)
        norm_f = math.sqrt(max(f.inner(f), 0.0))
        rho = forget_anchor_ratio(norm_f, norm_a, eps)
        views.append((f, threshold_scale(k, rho)))
        stats_args.append((rho, norm_f, norm_a, cosine_from_dot(f.inner(anchor), norm_f, norm_a)))

    wide = weight.dtype in (torch.float32, torch.float64)

    def sink(i: int, j: int, update: torch.Tensor) -> None:
        if wide:
            torch.add(weight[i:j], update, out=out[i:j])
        else:  # half precision: add in float32, round once (two plain passes beat one mixed-dtype add)
            out[i:j].copy_(update.add_(weight[i:j]))

    totals = sculpt_rows(views, anchor, mode, tuple(weight.shape), device, sink, workers=workers)
    return [stats_from_totals(t, weight.numel(), *args) for t, args in zip(totals.cpu().tolist(), stats_args)]


# ---- shared set-up of both merges -----------------------------------------------------------------
def _open_views(
    forget_adapter_dir: str | Path,
    anchor_adapter_dir: str | Path,
    k: float,
    mode: str,
    eps: float,
    forget_adapter_dir2: str | Path | None,
    k2: float | None,
) -> tuple[list[tuple[LoraAdapter, float]], LoraAdapter]:
    check_params(k, mode, eps)
    if (forget_adapter_dir2 is None) != (k2 is None):
        raise SculptError("the dual variant needs both forget_adapter_dir2 and k2 (or neither)")
    anchor = LoraAdapter(anchor_adapter_dir, "anchor adapter")
    views = [(LoraAdapter(forget_adapter_dir, "forget adapter"), k)]
    if forget_adapter_dir2 is not None:
        check_params(k2, mode, eps, what="k2")
        views.append((LoraAdapter(forget_adapter_dir2, "second forget adapter"), k2))
    for forget, _ in views:
        check_compatible(forget, anchor)
    return views, anchor


def _check_target(module: str, weight: str, shape: tuple[int, ...], anchor: LoraAdapter) -> None:
    if tuple(shape) != anchor.shape(module):
        raise SculptError(
            f"adapter module {module!r} updates a weight of shape {anchor.shape(module)} but {weight} has shape "
            f"{tuple(shape)}; the adapters were trained on a different model"
        )


def _new_report(views: list[tuple[LoraAdapter, float]], anchor: LoraAdapter, mode: str, eps: float,
                targets: dict[str, str]) -> SculptReport:
    return SculptReport(mode=mode, eps=eps, anchor_adapter=str(anchor.path), targets=targets,
                        views=[SculptView(str(f.path), k) for f, k in views])


def _module_stats(views: list[tuple[LoraAdapter, float]], anchor: LoraAdapter, mode: str, eps: float,
                  module: str, weight: torch.Tensor, out: torch.Tensor, workers: int) -> list[MaskStats]:
    with torch.no_grad():  # grad mode is per thread: say it in the transform threads too
        return _merge_weight(weight, out, [(f.delta(module), k) for f, k in views], anchor.delta(module), mode, eps,
                             workers)


def _record(report: SculptReport, module: str, stats: list[MaskStats]) -> None:
    for view, s in zip(report.views, stats):
        if module in view.modules:
            raise SculptError(f"adapter module {module!r} was merged twice; the checkpoint lists its weight twice")
        view.modules[module] = s


# ---- merge into a model in memory ------------------------------------------------------------------
def merge_sculpted_into(
    model: torch.nn.Module,
    forget_adapter_dir: str | Path,
    anchor_adapter_dir: str | Path,
    k: float,
    mode: str = "both",
    forget_adapter_dir2: str | Path | None = None,
    k2: float | None = None,
    progress: bool = True,
    eps: float = EPS,
) -> SculptReport:
    """Add the sculpted forget update to ``model``'s weights, in place, module by module.

    ``model`` is a plain transformers model (not PEFT-wrapped) that the caller owns — pass a copy to keep
    the original. The adapters are read straight from their files, one module at a time, and each update is
    built in blocks of rows, so at no point is more than one module's update held. With
    ``forget_adapter_dir2``/``k2`` the dual variant is merged: ½ (sculpt(ΔW_f1, k) + sculpt(ΔW_f2, k2)).
    """
    started = time.perf_counter()
    views, anchor = _open_views(forget_adapter_dir, anchor_adapter_dir, k, mode, eps, forget_adapter_dir2, k2)
    if hasattr(model, "peft_config") or any(hasattr(m, "lora_A") for m in model.modules()):
        raise ModelError("the model still has LoRA layers (PEFT-wrapped); pass the base model, e.g. a fresh load")
    params = dict(model.named_parameters(remove_duplicate=False))  # tied weights answer to both names
    targets = resolve_targets(anchor.modules, params, where="the model")
    for module, weight in targets.items():
        _check_target(module, weight, params[weight].shape, anchor)
        if params[weight].device.type == "meta":
            raise ModelError(f"{weight} is on the meta device (offloaded); load the model fully, or use sculpt_checkpoint")
    report = _new_report(views, anchor, mode, eps, targets)
    with torch.no_grad(), row_parallel() as workers:
        for module in tqdm(anchor.modules, desc="sculpt", unit="module", disable=not progress, leave=False):
            w = params[targets[module]].data
            _record(report, module, _module_stats(views, anchor, mode, eps, module, w, w, workers))
    report.seconds = time.perf_counter() - started
    return report


# ---- out-of-core merge of a saved checkpoint -------------------------------------------------------
def sculpt_checkpoint(
    src_dir: str | Path,
    forget_adapter_dir: str | Path,
    anchor_adapter_dir: str | Path,
    out_dir: str | Path,
    k: float,
    mode: str = "both",
    overwrite: bool = False,
    progress: bool = True,
    forget_adapter_dir2: str | Path | None = None,
    k2: float | None = None,
    eps: float = EPS,
    manifest_extra: Mapping[str, Any] | None = None,
) -> SculptReport:
    """Sculpt and merge into a saved HF checkpoint, out of core: ``out_dir = src_dir + ΔW'_f``.

    ``src_dir`` holds safetensors weights (``model.safetensors.index.json`` + shards, or one
    ``model.safetensors``); it is only read. Each shard is rewritten tensor by tensor under the same name:
    an adapted weight gets its sculpted update added in float32 and is cast back to its dtype (e.g. bf16);
    every other tensor and file (config, tokenizer, index) is copied unchanged. Memory stays at about one
    weight matrix plus small blocks, whatever the model or shard size. Adapter modules are matched to
    checkpoint tensors by :func:`resolve_targets`, so an adapter trained on the transformers LLaVA layout
    merges into a legacy one. The output appears atomically (a killed run leaves no ``out_dir``) and holds
    ``sculpt_report.json``/``.md`` and ``manifest.json`` (with ``manifest_extra``'s keys added): everything
    is written before the rename, nothing after.
    """
    started = time.perf_counter()
    src = Path(src_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if out == src or src in out.parents or out in src.parents:
        raise OutputError(f"out_dir {out} must be outside the checkpoint {src}: the source is never modified")
    views, anchor = _open_views(forget_adapter_dir, anchor_adapter_dir, k, mode, eps, forget_adapter_dir2, k2)
    shards = checkpoint_shards(src)
    headers = {shard: read_header(shard) for shard in shards}
    shard_of = check_index(src, {shard: entries for shard, (_, entries) in headers.items()})
    targets = resolve_targets(anchor.modules, shard_of, where=str(src))
    module_of = {weight: module for module, weight in targets.items()}
    for module, weight in targets.items():
        entry = headers[shard_of[weight]][1][weight]
        _check_target(module, weight, entry.shape, anchor)
        if entry.dtype not in FLOAT_DTYPES:
            raise SculptError(
                f"{weight} is stored as {entry.dtype}; sculpting needs float weights (F16, BF16, F32, F64), "
                "not a quantised checkpoint"
            )
    report = _new_report(views, anchor, mode, eps, targets)

    with atomic_run_dir(out, overwrite=overwrite) as tmp:
        copy_side_files(src, tmp, skip=set(shards))
        bar = tqdm(total=len(targets), desc="sculpt", unit="module", disable=not progress, leave=False)

        with bar, row_parallel() as workers:

            def merge(module: str, tensor: torch.Tensor) -> list[MaskStats]:
                # Single-threaded: rewrite_shards runs `workers` of these on different tensors at once.
                return _module_stats(views, anchor, mode, eps, module, tensor, tensor, workers=1)

            def merged(weight: str, stats: list[MaskStats]) -> None:
                _record(report, module_of[weight], stats)
                bar.update(1)

            jobs = [ShardRewrite(shard, tmp / shard.name, metadata, entries,
                                 {w: partial(merge, module_of[w]) for w in entries if w in module_of})
                    for shard, (metadata, entries) in headers.items()]
            rewrite_shards(jobs, workers, on_done=merged)
        unmerged = [m for m in anchor.modules if m not in report.views[0].modules]
        if unmerged:
            raise SculptError(f"adapter modules were not merged: {', '.join(unmerged[:5])}; the checkpoint changed while reading it")
        report.seconds = time.perf_counter() - started
        write_sculpt_report(report, tmp)
        adapters = [f for f, _ in views] + [anchor]
        write_manifest(
            tmp, "sculpt",
            config={"src_dir": src, "forget_adapter_dir": forget_adapter_dir, "anchor_adapter_dir": anchor_adapter_dir,
                    "forget_adapter_dir2": forget_adapter_dir2, "k": k, "k2": k2, "mode": mode, "eps": eps},
            adapter_digests={str(a.path): file_digest(a.path / ADAPTER_WEIGHTS) for a in adapters},
            **dict(manifest_extra or {}),
        )
    return report
