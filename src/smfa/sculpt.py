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

Three layers, one kernel:

- pure functions on dense tensors: :func:`sculpt_delta`, :func:`sculpt_mask`, :func:`mask_stats`,
  :func:`sculpt_dual`;
- LoRA adapters read one module at a time from the files PEFT saves: :class:`LoraAdapter`,
  :class:`LowRankDelta`, :func:`dense_deltas`, :func:`paired_dense_deltas`, :func:`resolve_targets`;
- merges that never hold more than one module's dense update: :func:`merge_sculpted_into` (a model in
  memory) and :func:`sculpt_checkpoint` (a saved checkpoint, shard by shard and tensor by tensor, out of
  core). Both produce a :class:`SculptReport`.

All of them run one block kernel (``_sculpt_rows`` → ``_mask_block``): the pure functions and the merges do
the same float32 arithmetic, except that the merges take ρ from the low-rank factors (float64).

Performance (Llama-2-7B shapes, rank 16, 2 CPU cores): the merge costs ~0.3 CPU-s per 4096×11008 matrix —
40 % the two rank-16 matmuls, the rest ~15 element-wise passes over cache-sized blocks — and holds < 1 GB.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import re
import shutil
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from smfa.errors import ModelError, OutputError, SculptError
from smfa.rundir import atomic_run_dir, file_digest, write_json_atomic, write_manifest, write_text_atomic

MODES = ("both", "conflict", "magnitude", "none")
EPS = 1e-12
REPORT_JSON = "sculpt_report.json"
REPORT_MD = "sculpt_report.md"

_FLOAT32_MAX = torch.finfo(torch.float32).max
# Elements per block of rows: a worker's six float32 scratch blocks (6 × 512 KiB) stay in the CPU caches,
# which is what makes the ~15 element-wise passes per block cheap. A GPU wants fewer, larger launches.
_BLOCK_ELEMS_CPU = 1 << 17
_BLOCK_ELEMS_GPU = 1 << 24
_MAX_CPU_WORKERS = 8


# ---- pure math ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskStats:
    """What the sculpt did to one weight matrix (or, aggregated, to all of them)."""

    numel: int  # entries of the matrix
    share_masked: float  # share of entries in M (removed from the forget update)
    share_conflict: float  # share of entries in C (signs of ΔW_f and ΔW_a disagree), whatever the mode
    share_magnitude: float  # share of entries in R (k·ρ·|ΔW_a| < |ΔW_f|), whatever the mode
    rho: float  # ‖ΔW_f‖_F / (‖ΔW_a‖_F + ε)
    norm_forget: float  # ‖ΔW_f‖_F
    norm_anchor: float  # ‖ΔW_a‖_F
    norm_sculpted: float  # ‖ΔW'_f‖_F
    cosine: float  # cosine(ΔW_f, ΔW_a) over all entries; 0 when either is zero


def _check_params(k: float, mode: str, eps: float, what: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not math.isfinite(k) or k < 0:
        raise SculptError(f"{what} must be a finite number ≥ 0 (larger k ⇒ fewer entries masked), got {k!r}")
    if mode not in MODES:
        raise SculptError(f"unknown sculpt mode {mode!r}; choose one of {', '.join(MODES)}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
        raise SculptError(f"eps must be a small positive number (default {EPS}), got {eps!r}")


def _check_pair(delta_forget: torch.Tensor, delta_anchor: torch.Tensor) -> None:
    for name, t in (("delta_forget", delta_forget), ("delta_anchor", delta_anchor)):
        if not isinstance(t, torch.Tensor):
            raise SculptError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise SculptError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise SculptError(f"{name} contains NaN or infinite values: the adapter training diverged; retrain it")
    if delta_forget.device != delta_anchor.device:
        raise SculptError(f"delta_forget is on {delta_forget.device} but delta_anchor on {delta_anchor.device}; move both to one device")
    if delta_forget.shape != delta_anchor.shape:
        raise SculptError(
            f"delta_forget has shape {tuple(delta_forget.shape)} but delta_anchor has shape "
            f"{tuple(delta_anchor.shape)}: both must update the same weight matrix"
        )


def _rho(norm_forget: float, norm_anchor: float, eps: float) -> float:
    return norm_forget / (norm_anchor + eps)


def _k_rho(k: float, rho: float) -> float:
    # Clamped so that k·ρ·|ΔW_a| stays NaN-free in float32 (∞·0); a threshold this large masks nothing anyway.
    return min(k * rho, _FLOAT32_MAX)


def _cosine(dot: float, norm_a: float, norm_b: float) -> float:
    return dot / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0


def _mask_block(
    df: torch.Tensor, da: torch.Tensor, k_rho: float, mode: str, p: torch.Tensor, g: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """Zero the masked entries of the float32 block ``df`` in place (``da`` is only read).

    ``p``, ``g``, ``s`` are float32 scratch tensors shaped like ``df``; on return they hold C, R and M as
    1.0/0.0. Returns the float32 sums (|M|, |C|, |R|, ‖ΔW'_f‖²) of the block, counts exact below 2²⁴
    entries. Masks are kept as floats on purpose: torch's bool-output kernels are several times slower.
    """
    torch.mul(df, da, out=p)
    torch.lt(p, 0, out=p)  # C: ΔW_a ⊙ ΔW_f < 0
    torch.abs(da, out=g).mul_(k_rho)
    torch.lt(g, torch.abs(df, out=s), out=g)  # R: k·ρ·|ΔW_a| < |ΔW_f| (strict: ties are not in R)
    if mode == "both":
        torch.mul(p, g, out=s)
    elif mode == "conflict":
        s.copy_(p)
    elif mode == "magnitude":
        s.copy_(g)
    else:
        s.zero_()
    if mode != "none":
        df.addcmul_(df, s, value=-1)  # df − df·1 is exactly 0 where masked; df − df·0 is df elsewhere
    flat = df.reshape(-1)
    return torch.stack((s.sum(), p.sum(), g.sum(), torch.dot(flat, flat)))


def _fill(matrix: torch.Tensor | LowRankDelta, i: int, j: int, out: torch.Tensor) -> None:
    """Rows i:j of a dense matrix or of a low-rank update, as float32, into ``out``."""
    if isinstance(matrix, torch.Tensor):
        out.copy_(matrix[i:j])
    else:
        torch.mm(matrix.left[i:j], matrix.right, out=out)


@contextlib.contextmanager
def _row_parallel() -> Iterator[int]:
    """For a merge: torch ops single-threaded, parallelism from threads that own disjoint row ranges.

    OpenMP's per-op barriers stall badly when another process holds a core (every one of the thousands of
    small ops waits for a descheduled thread); independent threads do not. Yields the number of threads
    to use and restores torch's thread count afterwards.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield max(1, min(threads, _MAX_CPU_WORKERS))
    finally:
        torch.set_num_threads(threads)


def _sculpt_rows(
    forgets: Sequence[tuple[torch.Tensor | LowRankDelta, float]],
    anchor: torch.Tensor | LowRankDelta,
    mode: str,
    shape: tuple[int, int],
    device: torch.device,
    sink: Callable[[int, int, torch.Tensor], None],
    mask_sink: Callable[[int, int, torch.Tensor], None] | None = None,
    workers: int = 1,
) -> torch.Tensor:
    """The one sculpt loop behind every public function: for each block of rows, build ΔW_a and each
    ΔW_f^v (given with its k·ρ), mask, average over the views and hand the block of the update to
    ``sink(i, j, block)`` (and, if given, the block of M as 1.0/0.0 to ``mask_sink``). Never holds more
    than a few blocks. Returns per view the float64 totals (|M|, |C|, |R|, ‖ΔW'_f‖²).

    With ``workers`` > 1 (CPU, inside :func:`_row_parallel`) the rows are split between that many threads.
    """
    rows, cols = shape
    elems = _BLOCK_ELEMS_CPU if device.type == "cpu" else _BLOCK_ELEMS_GPU
    block = min(max(1, elems // max(cols, 1)), max(rows, 1))
    n_views = len(forgets)

    def run(lo: int, hi: int) -> torch.Tensor:
        buf = lambda: torch.empty(block, cols, dtype=torch.float32, device=device)  # noqa: E731
        da, p, g, s, acc = buf(), buf(), buf(), buf(), buf()
        df = buf() if n_views > 1 else acc  # view 0 is built in acc, later views in df and added
        sums = []
        for i in range(lo, hi, block):
            j = min(i + block, hi)
            h = j - i
            _fill(anchor, i, j, da[:h])
            for v, (forget, k_rho) in enumerate(forgets):
                d = (df if v else acc)[:h]
                _fill(forget, i, j, d)
                sums.append(_mask_block(d, da[:h], k_rho, mode, p[:h], g[:h], s[:h]))
                if mask_sink is not None:
                    mask_sink(i, j, s[:h])
                if v:
                    acc[:h].add_(d)
            if n_views > 1:
                acc[:h].mul_(1.0 / n_views)
            sink(i, j, acc[:h])
        if not sums:
            return torch.zeros(n_views, 4, dtype=torch.float64, device=device)
        return torch.stack(sums).double().view(-1, n_views, 4).sum(0)

    workers = min(workers, -(-rows // block)) if device.type == "cpu" else 1
    if workers <= 1:
        totals = run(0, rows)
    else:
        step = -(-rows // workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sculpt") as pool:
            parts = [pool.submit(run, lo, min(lo + step, rows)) for lo in range(0, rows, step)]
            totals = sum(part.result() for part in parts)
    return totals


def _stats(totals: list[float], numel: int, rho: float, norm_f: float, norm_a: float, cosine: float) -> MaskStats:
    n = max(numel, 1)
    return MaskStats(numel=numel, share_masked=totals[0] / n, share_conflict=totals[1] / n,
                     share_magnitude=totals[2] / n, rho=rho, norm_forget=norm_f, norm_anchor=norm_a,
                     norm_sculpted=math.sqrt(max(totals[3], 0.0)), cosine=cosine)


def _as_column(t: torch.Tensor) -> torch.Tensor:
    # The math is element-wise, so a dense tensor of any shape is sculpted as one column: blocks are then
    # runs of elements, small whatever the original shape.
    return t.reshape(-1, 1)


def _sculpt(
    forgets: Sequence[tuple[torch.Tensor, float]], delta_anchor: torch.Tensor, mode: str, eps: float, want_mask: bool
) -> tuple[torch.Tensor, torch.Tensor | None, list[MaskStats]]:
    """Dense sculpt of one or two forget updates against one anchor: (their mean sculpted update in
    float32, the mask M of a single view if ``want_mask``, stats per view). Never modifies its inputs."""
    for what, (delta_forget, k) in zip(("k", "k2"), forgets):
        _check_params(k, mode, eps, what=what)
        _check_pair(delta_forget, delta_anchor)
    da = _as_column(delta_anchor.detach())
    norm_a = float(torch.linalg.vector_norm(da, dtype=torch.float64))
    views, stats_args = [], []
    for delta_forget, k in forgets:
        df = _as_column(delta_forget.detach())
        norm_f = float(torch.linalg.vector_norm(df, dtype=torch.float64))
        dot = float(torch.dot(df.reshape(-1).double(), da.reshape(-1).double())) if df.numel() else 0.0
        rho = _rho(norm_f, norm_a, eps)
        views.append((df, _k_rho(k, rho)))
        stats_args.append((rho, norm_f, norm_a, _cosine(dot, norm_f, norm_a)))
    result = torch.empty(da.shape, dtype=torch.float32, device=da.device)
    mask = torch.empty(da.shape, dtype=torch.bool, device=da.device) if want_mask else None

    def sink(i: int, j: int, block: torch.Tensor) -> None:
        result[i:j].copy_(block)

    def mask_sink(i: int, j: int, block: torch.Tensor) -> None:
        torch.gt(block, 0, out=mask[i:j])

    totals = _sculpt_rows(views, da, mode, tuple(da.shape), da.device, sink, mask_sink if want_mask else None)
    stats = [_stats(t, da.numel(), *args) for t, args in zip(totals.cpu().tolist(), stats_args)]
    shape = delta_anchor.shape
    return result.view(shape), (mask.view(shape) if mask is not None else None), stats


def sculpt_delta(
    delta_forget: torch.Tensor, delta_anchor: torch.Tensor, k: float, mode: str = "both", eps: float = EPS
) -> torch.Tensor:
    """ΔW'_f = (1 − M) ⊙ ΔW_f for one weight matrix (see the module docstring for M).

    Computed in float32 whatever the input dtype; returned in ``delta_forget``'s dtype. ``k`` ≥ 0: a larger
    k masks fewer entries (stronger forgetting); ``k = 0`` masks every conflicting entry in mode ``both``.
    Ties ``|ΔW_f| = k·ρ·|ΔW_a|`` are not masked (R is strict); entries where ΔW_a or ΔW_f is 0 are never
    conflicts. Raises :class:`SculptError` on a shape mismatch, non-finite values, a bad ``k`` or ``mode``.
    """
    sculpted, _, _ = _sculpt([(delta_forget, k)], delta_anchor, mode, eps, want_mask=False)
    return sculpted.to(delta_forget.dtype)


def sculpt_mask(
    delta_forget: torch.Tensor, delta_anchor: torch.Tensor, k: float, mode: str = "both", eps: float = EPS
) -> torch.Tensor:
    """The mask M (a bool tensor, True = entry removed from the forget update); see :func:`sculpt_delta`."""
    _, mask, _ = _sculpt([(delta_forget, k)], delta_anchor, mode, eps, want_mask=True)
    return mask


def mask_stats(
    delta_forget: torch.Tensor, delta_anchor: torch.Tensor, k: float, mode: str = "both", eps: float = EPS
) -> MaskStats:
    """Shares of masked / conflicting / dominated entries, ρ, the norms and cos(ΔW_f, ΔW_a) of one matrix."""
    _, _, stats = _sculpt([(delta_forget, k)], delta_anchor, mode, eps, want_mask=False)
    return stats[0]


def sculpt_dual(
    delta_forget: torch.Tensor,
    delta_forget2: torch.Tensor,
    delta_anchor: torch.Tensor,
    k: float,
    k2: float,
    mode: str = "both",
    eps: float = EPS,
) -> torch.Tensor:
    """The dual variant of the authors' code: ½ (sculpt(ΔW_f1, ΔW_a, k) + sculpt(ΔW_f2, ΔW_a, k2)).

    ``delta_forget`` is the image-view MFA, ``delta_forget2`` the text-view MFA, both sculpted against the
    same anchor. Computed in float32, returned in ``delta_forget``'s dtype.
    """
    mean, _, _ = _sculpt([(delta_forget, k), (delta_forget2, k2)], delta_anchor, mode, eps, want_mask=False)
    return mean.to(delta_forget.dtype)


# ---- LoRA adapters, one module at a time ----------------------------------------------------------
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$|^(?P<emb>.+)\.(?P<epart>lora_embedding_[AB])$")


@dataclass(frozen=True)
class LowRankDelta:
    """A LoRA update ``ΔW = left @ right`` in float32, with PEFT's scaling (and fan-in/fan-out) folded in."""

    left: torch.Tensor  # (rows of ΔW, r)
    right: torch.Tensor  # (r, columns of ΔW)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[1])

    def dense(self) -> torch.Tensor:
        return self.left @ self.right

    def inner(self, other: LowRankDelta) -> float:
        """⟨ΔW, ΔW'⟩_F = Σ (LᵀL') ⊙ (RR'ᵀ) from r×r products, in float64: no dense matrix needed."""
        gram_left = self.left.double().T @ other.left.double()
        gram_right = self.right.double() @ other.right.double().T
        return float((gram_left * gram_right).sum())

    def to(self, device: torch.device) -> LowRankDelta:
        return LowRankDelta(self.left.to(device), self.right.to(device))


@dataclass(frozen=True)
class _LoraKeys:
    key_a: str
    key_b: str
    embedding: bool  # lora_embedding_A/B: ΔW = (B @ A)ᵀ


class LoraAdapter:
    """A LoRA adapter directory saved by PEFT (``adapter_config.json`` + ``adapter_model.safetensors``).

    Module names are the adapted modules' paths in the base model (PEFT's ``base_model.model.`` prefix
    stripped), e.g. ``model.layers.0.self_attn.q_proj``. Tensors are read per module on demand.
    """

    def __init__(self, adapter_dir: str | Path, role: str = "adapter") -> None:
        self.path = Path(adapter_dir)
        self.role = role
        config_path, weights_path = self.path / ADAPTER_CONFIG, self.path / ADAPTER_WEIGHTS
        if not config_path.is_file():
            raise SculptError(
                f"{role} {self.path} is not a PEFT adapter directory (no {ADAPTER_CONFIG}); pass the directory "
                "written by save_pretrained()"
            )
        if not weights_path.is_file():
            hint = " (it has adapter_model.bin: re-save with save_pretrained(safe_serialization=True))" if (
                self.path / "adapter_model.bin").is_file() else ""
            raise SculptError(f"{role} {self.path} has no {ADAPTER_WEIGHTS}{hint}")
        try:
            self.config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SculptError(f"{config_path} is not valid JSON (line {exc.lineno}); re-save the adapter") from exc
        self._weights = weights_path
        self._check_config()
        self._keys, self._shapes = self._index()
        self.modules: tuple[str, ...] = tuple(sorted(self._keys))

    def _check_config(self) -> None:
        cfg, where = self.config, f"{self.role} {self.path}"
        if cfg.get("peft_type", "LORA") != "LORA":
            raise SculptError(f"{where} is a {cfg.get('peft_type')} adapter; sculpting needs a LoRA adapter")
        unsupported = {
            "use_dora": "DoRA rescales the weight, so its update is not scaling·B@A",
            "lora_bias": "LoRA biases are not part of the sculpted update",
            "target_parameters": "LoRA on raw parameters (target_parameters) is not supported",
            "layer_replication": "layer replication changes the model's layers",
        }
        for key, why in unsupported.items():
            if cfg.get(key):
                raise SculptError(f"{where} was trained with {key}={cfg[key]!r}: {why}; train a plain LoRA adapter")

    def _index(self) -> tuple[dict[str, _LoraKeys], dict[str, tuple[int, int]]]:
        parts: dict[str, dict[str, str]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        with safe_open(str(self._weights), framework="pt") as fh:
            for key in fh.keys():
                short = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
                match = _LORA_KEY.match(short)
                if match is None and short.endswith(".base_layer.weight"):
                    raise SculptError(
                        f"{self.role} {self._weights} holds the full weight {key!r}: PEFT saves targeted or resized "
                        "embedding layers whole, and a sculpt cannot tell what was trained in it; if the vocabulary "
                        "was not resized, re-save with save_pretrained(save_embedding_layers=False)"
                    )
                if match is None:
                    raise SculptError(
                        f"{self.role} {self._weights} holds tensor {key!r}, which is not a LoRA A/B matrix "
                        "(modules_to_save, trainable tokens, DoRA or bias?); sculpting merges plain LoRA only"
                    )
                module = match["module"] or match["emb"]
                part = (match["part"] or match["epart"]).replace("lora_embedding_", "emb_").replace("lora_", "")
                parts.setdefault(module, {})[part] = key
                shapes[key] = tuple(fh.get_slice(key).get_shape())
        keys: dict[str, _LoraKeys] = {}
        out_shapes: dict[str, tuple[int, int]] = {}
        for module, found in parts.items():
            embedding = "emb_A" in found or "emb_B" in found
            a, b = (found.get("emb_A"), found.get("emb_B")) if embedding else (found.get("A"), found.get("B"))
            if a is None or b is None:
                raise SculptError(f"{self.role} {self._weights}: module {module!r} has a LoRA A or B matrix but not both")
            shape_a, shape_b = shapes[a], shapes[b]
            if len(shape_a) != 2 or len(shape_b) != 2:
                raise SculptError(
                    f"{self.role} {self._weights}: module {module!r} has LoRA matrices of shapes {shape_a} and "
                    f"{shape_b}; only Linear and Embedding layers can be sculpted (not convolutions)"
                )
            if shape_a[0] != shape_b[1]:
                raise SculptError(f"{self.role} {self._weights}: module {module!r} has inconsistent ranks {shape_a} vs {shape_b}")
            keys[module] = _LoraKeys(a, b, embedding)
            transposed = embedding or bool(self.config.get("fan_in_fan_out", False))
            out_shapes[module] = (shape_a[1], shape_b[0]) if transposed else (shape_b[0], shape_a[1])
        if not keys:
            raise SculptError(f"{self.role} {self._weights} holds no LoRA matrices")
        return keys, out_shapes

    def shape(self, module: str) -> tuple[int, int]:
        """Shape of the module's dense update ΔW (that of the base weight it is added to)."""
        return self._shapes[module]

    def scaling(self, module: str, rank: int) -> float:
        """PEFT's scaling: alpha / r, or alpha / √r with ``use_rslora``; ``alpha_pattern`` honoured."""
        alpha = self.config.get("lora_alpha", 8)
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", module):  # PEFT's get_pattern_key (importing peft costs seconds)
                alpha = value
                break
        return float(alpha) / (math.sqrt(rank) if self.config.get("use_rslora") else rank)

    def delta(self, module: str) -> LowRankDelta:
        """The module's update as float32 low-rank factors (reads only this module's two tensors)."""
        keys = self._keys[module]
        with safe_open(str(self._weights), framework="pt") as fh:
            a = fh.get_tensor(keys.key_a).to(torch.float32, copy=True)
            b = fh.get_tensor(keys.key_b).to(torch.float32, copy=True)
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise SculptError(f"{self.role} {self.path}: module {module!r} has NaN or infinite LoRA weights; retrain it")
        scale = self.scaling(module, a.shape[0])
        if keys.embedding or self.config.get("fan_in_fan_out", False):
            return LowRankDelta(a.T.mul(scale).contiguous(), b.T.contiguous())  # ΔW = (B @ A)ᵀ · scaling
        return LowRankDelta(b.mul_(scale), a)


def check_compatible(forget: LoraAdapter, anchor: LoraAdapter) -> None:
    """Both adapters must adapt the same modules with updates of the same shapes (ranks may differ)."""
    for module in sorted(set(forget.modules) ^ set(anchor.modules)):
        has, lacks = (forget, anchor) if module in forget.modules else (anchor, forget)
        raise SculptError(
            f"module {module!r} is adapted by the {has.role} ({has.path}) but not by the {lacks.role} "
            f"({lacks.path}); train both adapters with the same target_modules"
        )
    for module in forget.modules:
        if forget.shape(module) != anchor.shape(module):
            raise SculptError(
                f"module {module!r}: the {forget.role} ({forget.path}) updates a weight of shape "
                f"{forget.shape(module)} but the {anchor.role} ({anchor.path}) one of shape {anchor.shape(module)}; "
                "the adapters were trained on different base models"
            )


def dense_deltas(adapter_dir: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(weight name, ΔW)`` one module at a time (float32), e.g. ``model.layers.0.self_attn.q_proj.weight``."""
    adapter = LoraAdapter(adapter_dir)
    for module in adapter.modules:
        yield f"{module}.weight", adapter.delta(module).dense()


def paired_dense_deltas(
    forget_adapter_dir: str | Path, anchor_adapter_dir: str | Path
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield ``(weight name, ΔW_f, ΔW_a)`` one module at a time, after checking the adapters match."""
    forget = LoraAdapter(forget_adapter_dir, "forget adapter")
    anchor = LoraAdapter(anchor_adapter_dir, "anchor adapter")
    check_compatible(forget, anchor)
    for module in forget.modules:
        yield f"{module}.weight", forget.delta(module).dense(), anchor.delta(module).dense()


# ---- adapter modules → weight tensors -------------------------------------------------------------
def _canonical(name: str) -> str:
    # Checkpoints of one architecture differ by where "model" sits: LLaVA's transformers layout says
    # model.language_model.layers.0…, its legacy layout language_model.model.layers.0…
    return ".".join(part for part in name.split(".") if part != "model")


def _suffix_matches(module: str, bases: Iterable[str]) -> list[str]:
    """Bases equal to ``module`` up to a leading dotted prefix on either side."""
    return [b for b in bases if b == module or b.endswith("." + module) or module.endswith("." + b)]


def resolve_targets(modules: Iterable[str], weight_names: Iterable[str], where: str = "the model") -> dict[str, str]:
    """Map adapter module paths to the weight tensors they update.

    In order: the exact name ``<module>.weight``; else a unique match up to a leading prefix on either side
    (an adapter trained on the bare language model, merged into a multimodal checkpoint); else the same
    with the ``model`` path components ignored (transformers vs legacy LLaVA layouts). Raises
    :class:`SculptError` when a module matches no weight, several weights, or a weight another module took.
    """
    bases = [n[: -len(".weight")] for n in weight_names if n.endswith(".weight")]
    base_set = set(bases)
    canonical: dict[str, list[str]] = {}
    for b in bases:
        canonical.setdefault(_canonical(b), []).append(b)
    targets: dict[str, str] = {}
    for module in modules:
        if module in base_set:
            found = [module]
        else:
            found = _suffix_matches(module, bases)
            if not found:
                found = [b for c in _suffix_matches(_canonical(module), canonical) for b in canonical[c]]
        if not found:
            raise SculptError(
                f"adapter module {module!r} matches no weight in {where}; the adapter was trained on a "
                "different model"
            )
        if len(found) > 1:
            raise SculptError(
                f"adapter module {module!r} matches several weights in {where} "
                f"({', '.join(sorted(found)[:5])}); it is ambiguous which one the adapter updates"
            )
        targets[module] = found[0] + ".weight"
    for weight, count in Counter(targets.values()).items():
        if count > 1:
            owners = sorted(m for m, w in targets.items() if w == weight)
            raise SculptError(f"adapter modules {owners} all map to the weight {weight} in {where}")
    return targets


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
        rho = _rho(norm_f, norm_a, eps)
        views.append((f, _k_rho(k, rho)))
        stats_args.append((rho, norm_f, norm_a, _cosine(f.inner(anchor), norm_f, norm_a)))

    wide = weight.dtype in (torch.float32, torch.float64)

    def sink(i: int, j: int, update: torch.Tensor) -> None:
        if wide:
            torch.add(weight[i:j], update, out=out[i:j])
        else:  # half precision: add in float32, round once (two plain passes beat one mixed-dtype add)
            out[i:j].copy_(update.add_(weight[i:j]))

    totals = _sculpt_rows(views, anchor, mode, tuple(weight.shape), device, sink, workers=workers)
    return [_stats(t, weight.numel(), *args) for t, args in zip(totals.cpu().tolist(), stats_args)]


# ---- report -----------------------------------------------------------------------------------------
def aggregate_stats(stats: Iterable[MaskStats], eps: float = EPS) -> MaskStats:
    """Totals over matrices, as if they were one: shares weighted by size, Frobenius norms of the
    concatenation, ρ of the totals and the cosine of the concatenated updates."""
    stats = list(stats)
    numel = sum(s.numel for s in stats)
    n = max(numel, 1)
    norm_f = math.sqrt(sum(s.norm_forget**2 for s in stats))
    norm_a = math.sqrt(sum(s.norm_anchor**2 for s in stats))
    dot = sum(s.cosine * s.norm_forget * s.norm_anchor for s in stats)
    return MaskStats(
        numel=numel,
        share_masked=sum(s.share_masked * s.numel for s in stats) / n,
        share_conflict=sum(s.share_conflict * s.numel for s in stats) / n,
        share_magnitude=sum(s.share_magnitude * s.numel for s in stats) / n,
        rho=_rho(norm_f, norm_a, eps),
        norm_forget=norm_f,
        norm_anchor=norm_a,
        norm_sculpted=math.sqrt(sum(s.norm_sculpted**2 for s in stats)),
        cosine=_cosine(dot, norm_f, norm_a),
    )


@dataclass
class SculptView:
    """One forget adapter sculpted against the anchor (two of them in the dual variant)."""

    forget_adapter: str
    k: float
    modules: dict[str, MaskStats] = field(default_factory=dict)  # adapter module → its stats

    def totals(self, eps: float = EPS) -> MaskStats:
        return aggregate_stats(self.modules.values(), eps)


@dataclass
class SculptReport:
    """What a sculpt + merge did: per module and in total, for each forget view."""

    mode: str
    eps: float
    anchor_adapter: str
    views: list[SculptView]
    targets: dict[str, str]  # adapter module → the weight tensor it was merged into
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "eps": self.eps,
            "anchor_adapter": self.anchor_adapter,
            "seconds": round(self.seconds, 3),
            "views": [
                {
                    "forget_adapter": v.forget_adapter,
                    "k": v.k,
                    "totals": asdict(v.totals(self.eps)),
                    "modules": {m: {"weight": self.targets.get(m), **asdict(s)} for m, s in v.modules.items()},
                }
                for v in self.views
            ],
        }

    def to_markdown(self) -> str:
        lines = [f"# SMFA sculpt — mode `{self.mode}`", "", f"- anchor adapter: `{self.anchor_adapter}`"]
        head = "| module | masked % | conflict % | magnitude % | ρ | ‖ΔW_f‖ | ‖ΔW_a‖ | ‖ΔW'_f‖ | cos(ΔW_f, ΔW_a) |"
        for v in self.views:
            lines += ["", f"## forget adapter `{v.forget_adapter}`, k = {v.k:g}", "", head, "|---" * 9 + "|"]
            rows = list(v.modules.items()) + [("**total**", v.totals(self.eps))]
            for name, s in rows:
                lines.append(
                    f"| {name} | {100 * s.share_masked:.2f} | {100 * s.share_conflict:.2f} | "
                    f"{100 * s.share_magnitude:.2f} | {s.rho:.4g} | {s.norm_forget:.4g} | {s.norm_anchor:.4g} | "
                    f"{s.norm_sculpted:.4g} | {s.cosine:+.4f} |"
                )
        return "\n".join(lines) + "\n"


def write_sculpt_report(report: SculptReport, out_dir: str | Path) -> Path:
    """Write ``sculpt_report.json`` and ``sculpt_report.md`` into ``out_dir`` (atomically); return the JSON path."""
    out = Path(out_dir)
    write_json_atomic(out / REPORT_JSON, report.to_dict())
    write_text_atomic(out / REPORT_MD, report.to_markdown())
    return out / REPORT_JSON


# ---- shared set-up of both merges ---------------------------------------------------------------------
def _open_views(
    forget_adapter_dir: str | Path,
    anchor_adapter_dir: str | Path,
    k: float,
    mode: str,
    eps: float,
    forget_adapter_dir2: str | Path | None,
    k2: float | None,
) -> tuple[list[tuple[LoraAdapter, float]], LoraAdapter]:
    _check_params(k, mode, eps)
    if (forget_adapter_dir2 is None) != (k2 is None):
        raise SculptError("the dual variant needs both forget_adapter_dir2 and k2 (or neither)")
    anchor = LoraAdapter(anchor_adapter_dir, "anchor adapter")
    views = [(LoraAdapter(forget_adapter_dir, "forget adapter"), k)]
    if forget_adapter_dir2 is not None:
        _check_params(k2, mode, eps, what="k2")
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


def _merge_module(report: SculptReport, views: list[tuple[LoraAdapter, float]], anchor: LoraAdapter,
                  module: str, weight: torch.Tensor, out: torch.Tensor, workers: int) -> None:
    stats = _merge_weight(weight, out, [(f.delta(module), k) for f, k in views], anchor.delta(module),
                          report.mode, report.eps, workers)
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
    with torch.no_grad(), _row_parallel() as workers:
        for module in tqdm(anchor.modules, desc="sculpt", unit="module", disable=not progress, leave=False):
            w = params[targets[module]].data
            _merge_module(report, views, anchor, module, w, w, workers)
    report.seconds = time.perf_counter() - started
    return report


# ---- out-of-core merge of a saved checkpoint ----------------------------------------------------------
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ST_FLOAT = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_COPY_CHUNK = 1 << 24
_MAX_PENDING_WRITES = 2  # finished tensors queued for the writer thread (bounds memory)


@dataclass(frozen=True)
class _Entry:
    """One tensor of a safetensors file: dtype, shape and its absolute byte range in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def itemsize(self) -> int:
        return _ST_ITEMSIZE.get(self.dtype, 1)


def _read_header(path: Path) -> tuple[dict[str, str] | None, dict[str, _Entry]]:
    """Parse a safetensors header (8-byte length + JSON) and check every byte range against the file."""
    bad = f"{path} is not a valid safetensors file"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ModelError(f"{bad} (shorter than 8 bytes); re-download or re-save the checkpoint")
        (length,) = struct.unpack("<Q", raw)
        if length > size - 8:
            raise ModelError(f"{bad} (header length {length} beyond the file's {size} bytes); it is truncated")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{bad} (unreadable header: {exc}); re-download or re-save the checkpoint") from exc
    metadata = header.pop("__metadata__", None)
    start = 8 + length
    entries = {}
    for name, info in header.items():
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            entry = _Entry(name, str(info["dtype"]), tuple(int(x) for x in info["shape"]), start + begin, start + end)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{bad} (tensor {name!r} has a malformed header entry); re-save the checkpoint") from exc
        shape = entry.shape
        if entry.end > size or entry.begin > entry.end or (
            entry.dtype in _ST_ITEMSIZE and entry.end - entry.begin != math.prod(shape) * entry.itemsize
        ):
            raise ModelError(f"{bad} (tensor {name!r} has an inconsistent byte range); the file is truncated or corrupt")
        entries[name] = entry
    with safe_open(str(path), framework="pt") as fh:  # the library's own validation agrees with ours
        if set(fh.keys()) != set(entries):
            raise ModelError(f"{bad} (safetensors lists other tensors than its header); re-save the checkpoint")
    return metadata, entries


def _checkpoint_shards(src: Path) -> list[Path]:
    """The safetensors files of a HF model directory: the index's shards, or the single model.safetensors."""
    if not src.is_dir():
        raise ModelError(f"checkpoint directory {src} does not exist")
    index = src / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelError(f"{index} is not a valid safetensors index (no weight_map); re-save the checkpoint") from exc
        shards = [src / name for name in sorted(set(weight_map.values()))]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise ModelError(f"{index} lists shards missing from {src}: {', '.join(missing[:5])}; the download is incomplete")
        return shards
    if (src / SAFETENSORS_SINGLE).is_file():
        return [src / SAFETENSORS_SINGLE]
    raise ModelError(
        f"{src} has neither {SAFETENSORS_INDEX} nor {SAFETENSORS_SINGLE}; sculpt_checkpoint reads safetensors "
        "checkpoints (re-save with save_pretrained(safe_serialization=True))"
    )


def _check_index(src: Path, headers: Mapping[Path, dict[str, _Entry]]) -> dict[str, Path]:
    """Map every tensor name to its shard; the index (if any) must agree with the shards' headers."""
    where: dict[str, Path] = {}
    for shard, entries in headers.items():
        for name in entries:
            if name in where:
                raise ModelError(f"tensor {name!r} is stored in both {where[name].name} and {shard.name}; re-save the checkpoint")
            where[name] = shard
    index = src / SAFETENSORS_INDEX
    if index.is_file():
        for name, shard in json.loads(index.read_text(encoding="utf-8"))["weight_map"].items():
            if where.get(name) != src / shard:
                raise ModelError(f"{index} puts {name!r} in {shard}, but that shard does not hold it; re-save the checkpoint")
    return where


def _layout(metadata: dict[str, str] | None, entries: Iterable[_Entry]) -> tuple[bytes, list[_Entry]]:
    """Header bytes and tensor order of the rewritten shard: widest dtype first, then by name, as
    safetensors does, so every tensor stays aligned; the header is padded to 8 bytes."""
    order = sorted(entries, key=lambda e: (-e.itemsize, e.name))
    header: dict[str, object] = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for e in order:
        size = e.end - e.begin
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, order


def _read_into(fh, offset: int, buf: memoryview) -> None:
    fh.seek(offset)
    done = 0
    while done < len(buf):
        n = fh.readinto(buf[done:])
        if not n:
            raise ModelError(f"{fh.name} ended early at byte {offset + done}; the file is truncated")
        done += n


class _Buffers:
    """Byte buffers passed from the reader thread to the math to the writer thread, then reused: a fresh
    100 MB allocation costs a page fault and a zeroed page per 4 KiB. Keeps at most a few per size."""

    def __init__(self, keep: int) -> None:
        self._free: dict[int, list[torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def take(self, nbytes: int) -> torch.Tensor:
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                return free.pop()
        return torch.empty(nbytes, dtype=torch.uint8)

    def give(self, buf: torch.Tensor) -> None:
        with self._lock:
            free = self._free.setdefault(buf.numel(), [])
            if len(free) < self._keep:
                free.append(buf)


def _read_tensor(src: Path, entry: _Entry, buffers: _Buffers) -> torch.Tensor:
    """One tensor's bytes, read into memory of our own (not a memory map: its pages would count against the
    process and stay resident for the whole shard)."""
    raw = buffers.take(entry.end - entry.begin)
    with open(src, "rb") as fh:
        _read_into(fh, entry.begin, memoryview(raw.numpy()))
    return raw


def _write_tensor(dst, raw: torch.Tensor, buffers: _Buffers) -> None:
    dst.write(memoryview(raw.numpy()))
    buffers.give(raw)


def _copy_range(src: Path, dst, begin: int, end: int) -> None:
    """Copy bytes [begin, end) of ``src`` to the current position of ``dst``."""
    chunk = bytearray(min(_COPY_CHUNK, max(end - begin, 1)))
    view = memoryview(chunk)
    with open(src, "rb") as fh:
        pos = begin
        while pos < end:
            n = min(len(chunk), end - pos)
            _read_into(fh, pos, view[:n])
            dst.write(view[:n])
            pos += n


def _rewrite_shard(
    src: Path,
    dst: Path,
    metadata: dict[str, str] | None,
    entries: Mapping[str, _Entry],
    transforms: Mapping[str, Callable[[torch.Tensor], None]],
    io: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
) -> None:
    """Write ``src`` to ``dst`` tensor by tensor: tensors in ``transforms`` are read, changed in place and
    written; the others are copied byte for byte. A reader thread fetches the next tensor and a writer
    thread writes the previous ones while the math runs, so only a few tensors are in memory at any
    time, however large the shard."""
    reader, writer = io
    buffers = _Buffers(keep=_MAX_PENDING_WRITES + 2)
    header, order = _layout(metadata, entries.values())
    to_read = deque(e for e in order if e.name in transforms)
    reads: deque[Future] = deque()
    writes: deque[Future] = deque()

    def prefetch() -> None:
        if to_read:
            reads.append(reader.submit(_read_tensor, src, to_read.popleft(), buffers))

    def write(fn: Callable, *args: object) -> None:
        writes.append(writer.submit(fn, *args))
        while len(writes) > _MAX_PENDING_WRITES:
            writes.popleft().result()

    with open(dst, "wb") as fout:
        try:
            prefetch()
            write(fout.write, header)
            for e in order:
                transform = transforms.get(e.name)
                if transform is None:
                    write(_copy_range, src, fout, e.begin, e.end)
                    continue
                raw = reads.popleft().result()
                prefetch()
                transform(raw.view(_ST_FLOAT[e.dtype]).view(e.shape))
                write(_write_tensor, fout, raw, buffers)
            while writes:
                writes.popleft().result()
        finally:
            wait(list(reads) + list(writes))  # never close the file under the writer; the first error propagates
    expected = len(header) + sum(e.end - e.begin for e in order)
    if dst.stat().st_size != expected:
        raise OutputError(f"{dst} has {dst.stat().st_size} bytes, expected {expected}; is the disk full?")


def _copy_side_files(src: Path, dst: Path, skip: set[Path]) -> None:
    """Copy everything but the weight shards (config, tokenizer, processor, index, …), following symlinks."""
    for item in sorted(src.iterdir()):
        if item in skip:
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name)
        else:
            shutil.copy2(item, dst / item.name)


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
) -> SculptReport:
    """Sculpt and merge into a saved HF checkpoint, out of core: ``out_dir = src_dir + ΔW'_f``.

    ``src_dir`` holds safetensors weights (``model.safetensors.index.json`` + shards, or one
    ``model.safetensors``); it is only read. Each shard is rewritten tensor by tensor under the same name:
    an adapted weight gets its sculpted update added in float32 and is cast back to its dtype (e.g. bf16);
    every other tensor and file (config, tokenizer, index) is copied unchanged. Memory stays at about one
    weight matrix plus small blocks, whatever the model or shard size. Adapter modules are matched to
    checkpoint tensors by :func:`resolve_targets`, so an adapter trained on the transformers LLaVA layout
    merges into a legacy one. The output appears atomically (a killed run leaves no ``out_dir``) and holds
    ``sculpt_report.json``/``.md`` and ``manifest.json``.
    """
    started = time.perf_counter()
    src = Path(src_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if out == src or src in out.parents or out in src.parents:
        raise OutputError(f"out_dir {out} must be outside the checkpoint {src}: the source is never modified")
    views, anchor = _open_views(forget_adapter_dir, anchor_adapter_dir, k, mode, eps, forget_adapter_dir2, k2)
    shards = _checkpoint_shards(src)
    headers = {shard: _read_header(shard) for shard in shards}
    shard_of = _check_index(src, {shard: entries for shard, (_, entries) in headers.items()})
    targets = resolve_targets(anchor.modules, shard_of, where=str(src))
    module_of = {weight: module for module, weight in targets.items()}
    for module, weight in targets.items():
        entry = headers[shard_of[weight]][1][weight]
        _check_target(module, weight, entry.shape, anchor)
        if entry.dtype not in _ST_FLOAT:
            raise SculptError(
                f"{weight} is stored as {entry.dtype}; sculpting needs float weights (F16, BF16, F32, F64), "
                "not a quantised checkpoint"
            )
    report = _new_report(views, anchor, mode, eps, targets)

    with atomic_run_dir(out, overwrite=overwrite) as tmp:
        _copy_side_files(src, tmp, skip=set(shards))
        bar = tqdm(total=len(targets), desc="sculpt", unit="module", disable=not progress, leave=False)

        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sculpt-reader")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sculpt-writer")
        with bar, reader, writer, torch.no_grad(), _row_parallel() as workers:

            def merge(module: str, tensor: torch.Tensor) -> None:
                _merge_module(report, views, anchor, module, tensor, tensor, workers)
                bar.update(1)

            for shard, (metadata, entries) in headers.items():
                transforms = {w: partial(merge, module_of[w]) for w in entries if w in module_of}
                _rewrite_shard(shard, tmp / shard.name, metadata, entries, transforms, (reader, writer))
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
        )
    return report
