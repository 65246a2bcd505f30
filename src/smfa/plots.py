"""Plots: method bars, the forgetting/understanding trade-off and the selectivity trade-off (leak vs retain
memory) of several runs, the k-sweep curve, and leak against neighbour refusal (issue 36).
Written with matplotlib's Agg canvas (no display needed), each file atomically."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError
from smfa.eval.registry import mean_spread, metrics_of
from smfa.eval.schema import Metrics

K_SWEEP_KEYS = ("forget_memory", "retain_memory", "understanding", "general_vqa")


def _save_png(fig: Any, path: Path) -> Path:
    """Render ``fig`` to PNG and write it via a temporary file + rename."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _nan(value: float | None, scale: float = 100.0) -> float:
    return math.nan if value is None else scale * value


def plot_method_bars(metrics: Sequence[Metrics], labels: Sequence[str], out_png: str | Path) -> Path:
    """Grouped bars: a few key metrics (x) × runs (bars), in %."""
    bars_of = [m for m in metrics_of("overall") if m.bar]
    fig = _figure(max(7.0, 1.3 * len(bars_of) + 0.35 * len(metrics) * len(bars_of)), 4.2)
    ax = fig.add_subplot()
    n = len(metrics)
    width = 0.8 / n
    cmap = _colours(n)
    for j, (m, label) in enumerate(zip(metrics, labels)):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(bars_of))]
        ys = [_nan(getattr(m.overall, b.name), 100.0 if b.kind == "rate" else 10.0) for b in bars_of]
        bars = ax.bar(xs, ys, width=width * 0.95, label=label, color=cmap[j])
        if n <= 6:
            ax.bar_label(bars, labels=["" if math.isnan(y) else f"{y:.0f}" for y in ys], fontsize=7, padding=1)
        for x, y in zip(xs, ys):
            if math.isnan(y):  # a metric whose sets the bench lacks: marked, never drawn as 0
                ax.text(x, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color=cmap[j])
    ax.set_xticks(range(len(bars_of)), [b.bar for b in bars_of])
    ax.set_ylabel("value (%)")
    ax.set_ylim(0, 110)
    ax.set_title("Method comparison (↑ higher is better, ↓ lower is better)")
    ax.legend(title="run", fontsize=8, ncols=min(n, 4), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return _save_png(fig, Path(out_png))


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(1, n - 1)) for i in range(n)]


def _tradeoff_axes(ax: Any, plotted: int, empty: str, *, margin: float, star_z: int, xlabel: str, ylabel: str,
                   title: str) -> None:
    """The frame of a 0-100 % trade-off scatter: the ideal corner (0, 100) starred, a note when no run could
    be drawn, labels, grid and legend."""
    ax.scatter([0], [100], marker="*", s=180, color="gold", edgecolor="black", zorder=star_z, label="ideal")
    if plotted == 0:
        ax.text(50, 50, empty, ha="center", va="center")
    ax.set_xlim(-margin, 100 + margin)
    ax.set_ylim(-margin, 100 + margin)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def plot_tradeoff(metrics: Sequence[Metrics], labels: Sequence[str], out_png: str | Path) -> Path:
    """Scatter: forget memory (x, lower is better) vs overall image understanding (y, higher is better),
    one labelled point per run; the ideal corner is marked."""
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot()
    plotted = 0
    for m, label, colour in zip(metrics, labels, _colours(len(metrics))):
        x, y = m.overall.forget_memory, m.overall.image_understanding
        if x is None or y is None:
            continue
        ax.scatter([100 * x], [100 * y], s=60, color=colour, zorder=3)
        ax.annotate(label, (100 * x, 100 * y), textcoords="offset points", xytext=(6, 5), fontsize=9)
        plotted += 1
    _tradeoff_axes(ax, plotted, "no run has both forget memory and image understanding", margin=5, star_z=4,
                   xlabel="Forget memory (%)  ← lower is better",
                   ylabel="Overall image understanding (%)  ↑ higher is better",
                   title="Forgetting vs retained image understanding")
    return _save_png(fig, Path(out_png))


def selectivity_point(m: Metrics) -> tuple[float | None, float | None]:
    """(forget leak, retain memory) of one run in %: leak = the mean of the photo and name leak rates that
    exist (the visual setting has no name leak), retain memory = the overall retain memory."""
    o = m.overall
    leaks = [v for v in (o.forget_leak_image, o.forget_leak_text if m.target != "visual" else None) if v is not None]
    leak = 100 * sum(leaks) / len(leaks) if leaks else None
    return leak, None if o.retain_memory is None else 100 * o.retain_memory


def selectivity_curves(labels: Sequence[str]) -> dict[str, list[int]]:
    """Which runs form one curve: a label ``VARIANT@POINT`` (e.g. ``smfa@k=5``) joins VARIANT's curve in the
    order given; any other label is a point of its own. Runs that share a whole label (one per bench seed)
    are one point, averaged."""
    curves: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        curves.setdefault(label.split("@", 1)[0], []).append(i)
    return curves


def _selectivity_xlabel(targets: set[str]) -> str:
    """What the x axis averages (:func:`selectivity_point`): the visual setting forgets the photo link only."""
    what = {frozenset({"visual"}): "by photo", frozenset({"all"}): "mean of photo and name"}.get(
        frozenset(targets), "mean of photo and name; photo only for visual-setting runs")
    return f"Forget leak, {what} (%)  ← lower is better"


def plot_selectivity(metrics: Sequence[Metrics], labels: Sequence[str], out_png: str | Path, *,
                     title: str = "Selectivity: forget leak vs retain memory") -> Path:
    """Forget leak (x, lower is better) vs retain memory (y, higher is better): the selectivity trade-off.
    One curve per variant (labels ``VARIANT@POINT``, see :func:`selectivity_curves`), points with error
    bars (± standard deviation) where several runs share a label; upper left is better."""
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot()
    curves = selectivity_curves(labels)
    plotted = 0
    for (variant, members), colour in zip(curves.items(), _colours(len(curves))):
        points: dict[str, list[tuple[float, float]]] = {}
        for i in members:
            x, y = selectivity_point(metrics[i])
            if x is not None and y is not None:
                points.setdefault(labels[i], []).append((x, y))
        if not points:
            continue
        xs, ys, xerr, yerr = [], [], [], []
        for pts in points.values():
            for axis, (centre, err) in enumerate(((xs, xerr), (ys, yerr))):
                mean, spread, _ = mean_spread([p[axis] for p in pts])
                centre.append(mean)
                err.append(spread or 0.0)
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="-o" if len(xs) > 1 else "o", color=colour, label=variant,
                    capsize=3, markersize=6, zorder=3)
        for label, x, y in zip(points, xs, ys):
            point_name = label.split("@", 1)[1] if "@" in label else ""
            if point_name:
                ax.annotate(point_name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        plotted += 1
    _tradeoff_axes(ax, plotted, "no run has both a forget leak and retain memory", margin=3, star_z=2,
                   xlabel=_selectivity_xlabel({m.target for m in metrics}),
                   ylabel="Retain memory (%)  ↑ higher is better", title=title)
    return _save_png(fig, Path(out_png))


# ---------------------------------------------------------------------------------------------------------
# k sweep


def k_direction(ks: Sequence[float], forget_memory: Sequence[float | None]) -> str:
    """How forget memory moves as k grows, *as measured*: "larger k → more forgetting", "larger k → less
    forgetting", or that it does not change / has no monotone trend (Spearman correlation of k and forget
    memory; the end points are quoted)."""
    points = sorted((float(k), float(v)) for k, v in zip(ks, forget_memory) if v is not None)
    if len({k for k, _ in points}) < 2:
        return "too few k values to tell how forgetting depends on k"
    values = [v for _, v in points]
    span = f"forget memory {100 * values[0]:.0f}% at k={points[0][0]:g} → {100 * values[-1]:.0f}% at k={points[-1][0]:g}"
    if max(values) - min(values) < 1e-9:
        return f"forget memory does not change with k ({100 * values[0]:.0f}%)"
    from scipy.stats import spearmanr

    rho = float(spearmanr([k for k, _ in points], values).statistic)
    if math.isnan(rho) or abs(rho) < 1e-9:
        return f"no monotone trend of forgetting in k ({span})"
    return f"larger k → {'more' if rho < 0 else 'less'} forgetting ({span})"


def _check_k_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        raise ConfigError("plot_k_sweep got no rows: pass one row per k value")
    out = []
    for i, row in enumerate(rows):
        missing = [key for key in ("k", *K_SWEEP_KEYS) if key not in row]
        if missing:
            raise ConfigError(f"k-sweep row {i} lacks {', '.join(missing)} (has {', '.join(map(str, row))})")
        k = row["k"]
        if not isinstance(k, (int, float)) or isinstance(k, bool) or not math.isfinite(k) or k < 0:
            raise ConfigError(f"k-sweep row {i}: k must be a finite number ≥ 0, got {k!r}")
        for key in K_SWEEP_KEYS:
            v = row[key]
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)):
                raise ConfigError(f"k-sweep row {i}: {key} must be a finite number or None, got {v!r}")
        out.append(dict(row))
    return sorted(out, key=lambda r: r["k"])


def plot_k_sweep(rows: Sequence[Mapping[str, Any]], out_png: str | Path, *, title: str = "SMFA k sweep") -> Path:
    """Plot a k sweep: left, forget memory, retain memory, understanding and general VQA (%) against k
    (symlog axis, so k = 0 fits); right, the trade-off curve forget memory vs understanding with each point
    labelled by k. The title states the measured direction (:func:`k_direction`). ``rows``: one mapping per
    k with ``k``, ``forget_memory``, ``retain_memory``, ``understanding``, ``general_vqa`` (fractions or
    None)."""
    rows = _check_k_rows(rows)
    ks = [float(r["k"]) for r in rows]
    fig = _figure(11.5, 4.4)
    left, right = fig.subplots(1, 2, width_ratios=[1.35, 1])
    styles = {
        "forget_memory": ("Forget memory ↓", "tab:red", "o"),
        "retain_memory": ("Retain memory ↑", "tab:blue", "s"),
        "understanding": ("Image understanding ↑", "tab:green", "^"),
        "general_vqa": ("General VQA ↑", "tab:purple", "D"),
    }
    for key, (label, colour, marker) in styles.items():
        pts = [(k, 100 * r[key]) for k, r in zip(ks, rows) if r[key] is not None]
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour, label=label)
    positive = [k for k in ks if k > 0]
    left.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    if len(set(ks)) <= 12:  # label the swept values themselves, as plain numbers
        from matplotlib.ticker import FuncFormatter, NullLocator

        left.set_xticks(sorted(set(ks)))
        left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        left.xaxis.set_minor_locator(NullLocator())
    left.set_xlabel("k (symlog scale)")
    left.set_ylabel("value (%)")
    left.set_ylim(-5, 105)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="best")
    left.set_title("Metrics against k")
    pts = [(r["forget_memory"], r["understanding"], r["k"]) for r in rows
           if r["forget_memory"] is not None and r["understanding"] is not None]
    if pts:
        right.plot([100 * p[0] for p in pts], [100 * p[1] for p in pts], color="grey", alpha=0.6, zorder=1)
        right.scatter([100 * p[0] for p in pts], [100 * p[1] for p in pts], c=range(len(pts)), cmap="viridis", zorder=2)
        for x, y, k in pts:
            right.annotate(f"k={k:g}", (100 * x, 100 * y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    right.scatter([0], [100], marker="*", s=160, color="gold", edgecolor="black", zorder=3, label="ideal")
    right.set_xlim(-5, 105)
    right.set_ylim(-5, 105)
    right.set_xlabel("Forget memory (%)  ← lower is better")
    right.set_ylabel("Image understanding (%)  ↑ higher is better")
    right.set_title("Trade-off curve")
    right.legend(fontsize=8, loc="lower right")
    right.grid(alpha=0.3)
    fig.suptitle(f"{title}: {k_direction(ks, [r['forget_memory'] for r in rows])}")
    return _save_png(fig, Path(out_png))


def plot_neighbour_tradeoff(points: Mapping[str, Sequence[tuple[float, float]]], out_png: str | Path, *,
                            bound: tuple[float, float] = (5.0, 5.0)) -> Path:
    """Scatter: a run's leak (x, %) against its neighbours' refusal above the vanilla's (y, points), one colour per
    label with each seed's point faint and the seeds' mean (± sd bars) solid; the goal's box ``bound`` (x ≤ 5 %,
    y ≤ 5 points) shaded. ``points``: label → one (leak %, refusal excess points) per seed."""
    fig = _figure(8.6, 4.8)
    ax = fig.add_subplot()
    ax.fill_between([0, bound[0]], [-100, -100], [bound[1], bound[1]], color="tab:green", alpha=0.12,
                    label=f"goal (leak ≤ {bound[0]:g} %, refusal ≤ vanilla + {bound[1]:g})")
    xs_all: list[float] = []
    ys_all: list[float] = []
    for (label, seeds), colour in zip(points.items(), _colours(len(points))):
        seeds = [(x, y) for x, y in seeds if not (math.isnan(x) or math.isnan(y))]
        if not seeds:
            continue
        xs, ys = [x for x, _ in seeds], [y for _, y in seeds]
        xs_all += xs
        ys_all += ys
        ax.scatter(xs, ys, s=18, color=colour, alpha=0.35, zorder=2)
        (mx, sx, _), (my, sy, _) = mean_spread(xs), mean_spread(ys)
        ax.errorbar([mx], [my], xerr=[sx or 0.0], yerr=[sy or 0.0], fmt="o", ms=7, color=colour, capsize=3, zorder=3,
                    label=f"{label} (n={len(seeds)})")
    if not xs_all:
        ax.text(0.5, 0.5, "no run has both a leak and neighbour refusals", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(-1, max([10.0, *xs_all]) * 1.08)
    ax.set_ylim(min([-5.0, *ys_all]) - 2, max([20.0, *ys_all]) * 1.08)
    ax.set_xlabel("worst leak: photo, name, held-out phrasing (%)  ← lower is better")
    ax.set_ylabel("worst neighbour refusal − vanilla's (points)  ↓ lower is better")
    ax.set_title("Forgetting vs refusing the forget people's neighbours")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _save_png(fig, Path(out_png))
