"""The SMFA mask math on dense tensors and low-rank factors: pure functions, no I/O.

For one weight matrix, with ``ΔW_f`` the forgetting update (MFA) and ``ΔW_a`` the retaining anchor (RA)::

    ρ      = ‖ΔW_f‖_F / (‖ΔW_a‖_F + ε)          per matrix
    C      = [ΔW_a ⊙ ΔW_f < 0]                    directional conflict
    R      = [k · ρ · |ΔW_a| < |ΔW_f|]            the forget update dominates the anchor's
    M      = C ⊙ R (both) | C (conflict) | R (magnitude) | nothing (none)
    ΔW'_f  = (1 − M) ⊙ ΔW_f                       masked entries are dropped from the forget update

Every sculpt — these functions and both merges (:mod:`smfa.sculpt.merge`) — runs one block kernel
(:func:`sculpt_rows` → ``_mask_block``): the same float32 arithmetic on blocks of rows small enough to stay
in the CPU caches, built from a dense tensor or from LoRA factors (:class:`LowRankDelta`), with the same
blocks and the same single-threaded BLAS calls whatever the number of threads, so the results never
depend on it.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from smfa.errors import SculptError

MODES = ("both", "conflict", "magnitude", "none")
EPS = 1e-12

_FLOAT32_MAX = torch.finfo(torch.float32).max
# Elements per block of rows: small enough that a worker's five float32 scratch blocks stay in L2/L3, large
# enough that torch's per-op overhead (a few µs) stays small against ~12 element-wise passes; measured on
# 2 EPYC cores, 2¹⁵ and 2¹⁶ were slower. A GPU wants fewer, larger launches.
_BLOCK_ELEMS_CPU = 1 << 17
_BLOCK_ELEMS_GPU = 1 << 24
_MAX_CPU_WORKERS = 8


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


def check_params(k: float, mode: str, eps: float, what: str = "k") -> None:
    """Raise :class:`SculptError` for a k that is not a finite number ≥ 0, an unknown mode or a bad ε."""
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


def forget_anchor_ratio(norm_forget: float, norm_anchor: float, eps: float) -> float:
    """ρ = ‖ΔW_f‖_F / (‖ΔW_a‖_F + ε)."""
    return norm_forget / (norm_anchor + eps)


def threshold_scale(k: float, rho: float) -> float:
    """k·ρ, the factor on |ΔW_a| in R."""
    # Clamped so that k·ρ·|ΔW_a| stays NaN-free in float32 (∞·0); a threshold this large masks nothing anyway.
    return min(k * rho, _FLOAT32_MAX)


def cosine_from_dot(dot: float, norm_a: float, norm_b: float) -> float:
    """⟨a, b⟩ / (‖a‖ ‖b‖); 0 when either is zero."""
    return dot / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0


def _mask_block(
    df: torch.Tensor, da: torch.Tensor, k_rho: float, mode: str, masks: torch.Tensor, sums: torch.Tensor
) -> torch.Tensor:
    """Zero the masked entries of the flat float32 block ``df`` in place (``da`` is only read); return M.

    ``masks`` is a (3, n) float32 scratch tensor whose rows receive M, C and R as 1.0/0.0: one tensor, so
    that their counts are one reduction. Its last row may be ``da`` itself (then ``da`` is overwritten; one
    view does not need it again). Writes the float32 sums (|M|, |C|, |R|, ‖ΔW'_f‖²) of the block into
    ``sums``, counts exact below 2²⁴ entries. Masks are floats on purpose: torch's bool-output kernels are
    several times slower.
    """
    mask, conflict, dominated = masks
    torch.mul(df, da, out=conflict)
    torch.lt(conflict, 0, out=conflict)  # C: ΔW_a ⊙ ΔW_f < 0
    torch.abs(da, out=dominated).mul_(k_rho)
    torch.lt(dominated, torch.abs(df, out=mask), out=dominated)  # R: k·ρ·|ΔW_a| < |ΔW_f| (strict: ties are not in R)
    if mode == "both":
        torch.mul(conflict, dominated, out=mask)
    elif mode == "conflict":
        mask.copy_(conflict)
    elif mode == "magnitude":
        mask.copy_(dominated)
    else:
        mask.zero_()
    if mode != "none":
        df.addcmul_(df, mask, value=-1)  # df − df·1 is exactly +0 where masked; df − df·0 is df elsewhere
    torch.sum(masks, dim=1, out=sums[:3])
    torch.dot(df, df, out=sums[3])
    return mask


def _fill(matrix: torch.Tensor | LowRankDelta, i: int, j: int, out: torch.Tensor) -> None:
    """Rows i:j of a dense matrix or of a low-rank update, as float32, into ``out`` (shaped like them)."""
    if isinstance(matrix, torch.Tensor):
        out.copy_(matrix[i:j])
    else:
        torch.mm(matrix.left[i:j], matrix.right, out=out)


@contextlib.contextmanager
def row_parallel() -> Iterator[int]:
    """For a merge: torch ops single-threaded, parallelism from threads that own disjoint work (row ranges
    of a weight in memory, whole tensors of a checkpoint).

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


def single_threaded_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads run torch (and MKL) single-threaded.

    A new thread starts with OpenMP's default team size (all cores), whatever ``torch.set_num_threads``
    said in the main thread: MKL would then run each call on several threads (oversubscribing the cores
    the pool already uses) and, at some shapes, round differently from a single-threaded call.
    """
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=torch.set_num_threads,
                              initargs=(1,))


def sculpt_rows(
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

    With ``workers`` > 1 (CPU, inside :func:`row_parallel`) the blocks are split between that many threads,
    whole blocks each and every thread single-threaded in MKL: the results are the same for any number.
    """
    rows, cols = shape
    elems = _BLOCK_ELEMS_CPU if device.type == "cpu" else _BLOCK_ELEMS_GPU
    block = min(max(1, elems // max(cols, 1)), max(rows, 1))
    n_views = len(forgets)

    def run(lo: int, hi: int) -> torch.Tensor:
        # Flat scratch blocks (1-D, for the counts' reductions); with one view, ΔW_a's block is R's row.
        full = block * cols
        buf = lambda: torch.empty(full, dtype=torch.float32, device=device)  # noqa: E731
        masks = torch.empty(3, full, dtype=torch.float32, device=device)
        da = masks[2] if n_views == 1 else buf()
        acc = buf()
        df = buf() if n_views > 1 else acc  # view 0 is built in acc, later views in df and added
        sums = torch.empty(-(-(hi - lo) // block), n_views, 4, dtype=torch.float32, device=device)
        for b, i in enumerate(range(lo, hi, block)):
            j = min(i + block, hi)
            n = (j - i) * cols
            # Slices only for a short last block: torch's per-call overhead is a real share of a block's time.
            a_, f_, u_, m_ = (da, df, acc, masks) if n == full else (da[:n], df[:n], acc[:n], masks[:, :n])
            _fill(anchor, i, j, a_.view(j - i, cols))
            for v, (forget, k_rho) in enumerate(forgets):
                d = f_ if v else u_
                _fill(forget, i, j, d.view(j - i, cols))
                mask = _mask_block(d, a_, k_rho, mode, m_, sums[b, v])
                if mask_sink is not None:
                    mask_sink(i, j, mask.view(j - i, cols))
                if v:
                    u_.add_(d)
            if n_views > 1:
                u_.mul_(1.0 / n_views)
            sink(i, j, u_.view(j - i, cols))
        return sums

    blocks = -(-rows // block)
    workers = min(workers, blocks) if device.type == "cpu" else 1
    if workers <= 1:
        sums = run(0, rows)
    else:
        # Each thread gets whole blocks, so the blocks (and the results: MKL's sums depend on a call's row
        # count) and the order of the totals' sums are the same whatever the number of threads.
        step = -(-blocks // workers) * block
        with single_threaded_pool(workers, "sculpt") as pool:
            parts = [pool.submit(run, lo, min(lo + step, rows)) for lo in range(0, rows, step)]
            sums = torch.cat([part.result() for part in parts])
    return sums.double().sum(0)


def stats_from_totals(totals: list[float], numel: int, rho: float, norm_f: float, norm_a: float, cosine: float) -> MaskStats:
    """:class:`MaskStats` of one matrix from the kernel's totals (|M|, |C|, |R|, ‖ΔW'_f‖²) and its norms."""
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
        check_params(k, mode, eps, what=what)
        _check_pair(delta_forget, delta_anchor)
    da = _as_column(delta_anchor.detach())
    norm_a = float(torch.linalg.vector_norm(da, dtype=torch.float64))
    views, stats_args = [], []
    for delta_forget, k in forgets:
        df = _as_column(delta_forget.detach())
        norm_f = float(torch.linalg.vector_norm(df, dtype=torch.float64))
        dot = float(torch.dot(df.reshape(-1).double(), da.reshape(-1).double())) if df.numel() else 0.0
        rho = forget_anchor_ratio(norm_f, norm_a, eps)
        views.append((df, threshold_scale(k, rho)))
        stats_args.append((rho, norm_f, norm_a, cosine_from_dot(dot, norm_f, norm_a)))
    result = torch.empty(da.shape, dtype=torch.float32, device=da.device)
    mask = torch.empty(da.shape, dtype=torch.bool, device=da.device) if want_mask else None

    def sink(i: int, j: int, block: torch.Tensor) -> None:
        result[i:j].copy_(block)

    def mask_sink(i: int, j: int, block: torch.Tensor) -> None:
        torch.gt(block, 0, out=mask[i:j])

    totals = sculpt_rows(views, da, mode, tuple(da.shape), da.device, sink, mask_sink if want_mask else None)
    stats = [stats_from_totals(t, da.numel(), *args) for t, args in zip(totals.cpu().tolist(), stats_args)]
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
        rho=forget_anchor_ratio(norm_f, norm_a, eps),
        norm_forget=norm_f,
        norm_anchor=norm_a,
        norm_sculpted=math.sqrt(sum(s.norm_sculpted**2 for s in stats)),
        cosine=cosine_from_dot(dot, norm_f, norm_a),
    )
