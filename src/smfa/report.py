"""Reports: one evaluation's ``report.md``, the comparison of several runs in the layout of the paper's main
table (``compare.md``) with method bars and a forgetting/understanding trade-off plot, and the k-sweep plot.

Accuracies, rates and memory are shown in % (Overall Memory in percentage points), Fact and Meaningful on
their 0-10 scale, the forget-answer NLL KS test as a p-value. ``–`` marks a value whose sets were not evaluated. Plots
are written with matplotlib's Agg canvas (no display needed); every file is written atomically.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError
from smfa.eval.schema import Metrics, Overall, load_metrics
from smfa.rundir import write_text_atomic

REPORT_FILE = "report.md"
COMPARE_FILE = "compare.md"
BARS_FILE = "methods.png"
TRADEOFF_FILE = "tradeoff.png"
K_SWEEP_KEYS = ("forget_memory", "retain_memory", "understanding", "general_vqa")

_SETTING_NOTE = {
    "all": "all: forget everything about the forget people, from their photo and by their name",
    "visual": "visual: forget only the photo link; questions about the forget people by name are kept",
}


# ---------------------------------------------------------------------------------------------------------
# Formatting


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pvalue(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} s" if value < 600 else f"{value / 60:.1f} min"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Column:
    header: str
    value: Callable[[Overall], float | None]
    fmt: Callable[[float | None], str] = _pct


# The paper's main table (values in %), plus the leaks we report separately.
MAIN_COLUMNS: tuple[_Column, ...] = (
    _Column("Forget I-Und ↑", lambda o: o.forget_understanding),
    _Column("Forget I-Mem ↓", lambda o: o.forget_image_memory),
    _Column("Forget T-Mem ↓", lambda o: o.forget_text_memory),
    _Column("Retain I-Und ↑", lambda o: o.retain_understanding),
    _Column("Retain I-Mem ↑", lambda o: o.retain_image_memory),
    _Column("Retain T-Mem ↑", lambda o: o.retain_text_memory),
    _Column("Overall I-Und ↑", lambda o: o.image_understanding),
    _Column("Overall Memory ↑", lambda o: o.memory),
    _Column("Meaningful ↑", lambda o: o.meaningful, _score),
    _Column("General VQA ↑", lambda o: o.general_vqa),
    _Column("Forget leak image ↓", lambda o: o.forget_leak_image),
    _Column("Forget leak text ↓", lambda o: o.forget_leak_text),
)

# In a table of visual-setting runs only, the forget people's name-only questions are knowledge to keep.
VISUAL_HEADERS = {"Forget T-Mem ↓": "Forget T-Mem (kept) ↑", "Forget leak text ↓": "Forget name answers (kept) ↑"}

_OVERALL_ROWS: tuple[tuple[str, str, str], ...] = (
    # (Overall field, label, better)
    ("forget_understanding", "Forget image understanding (I-Und)", "↑"),
    ("retain_understanding", "Retain image understanding (I-Und)", "↑"),
    ("image_understanding", "Overall image understanding", "↑"),
    ("forget_image_memory", "Forget image memory (I-Mem)", "↓"),
    ("forget_text_memory", "Forget text memory (T-Mem)", "↓"),
    ("retain_image_memory", "Retain image memory (I-Mem)", "↑"),
    ("retain_text_memory", "Retain text memory (T-Mem)", "↑"),
    ("forget_memory", "Forget memory", "↓"),
    ("retain_memory", "Retain memory", "↑"),
    ("memory", "Overall memory (retain − forget)", "↑"),
    ("meaningful", "Meaningful score (0-10)", "↑"),
    ("general_vqa", "General VQA", "↑"),
    ("forget_leak_image", "Forget leak, asked with the photo", "↓"),
    ("forget_leak_text", "Forget leak, asked by name", "↓"),
    ("forget_leak_paraphrase", "Forget leak, paraphrased questions", "↓"),
    ("forget_leak_unseen_image", "Forget leak, unseen photos", "↓"),
    ("retain_refusal_rate", "Refusal rate on retain sets", "↓"),
    ("general_vqa_refusal_rate", "Refusal rate on general VQA", "↓"),
)


# ---------------------------------------------------------------------------------------------------------
# One evaluation


def eval_report_markdown(metrics: Metrics) -> str:
    """The text of ``report.md`` for one evaluation."""
    o = metrics.overall
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{metrics.model}`",
        f"- forget split: {metrics.forget}",
        f"- setting: **{metrics.target}** ({_SETTING_NOTE.get(metrics.target, metrics.target)})",
        f"- judge: {metrics.judge}",
        "",
        "## Overall",
        "",
        "Accuracies and rates in %, Meaningful on 0-10.",
        "",
    ]
    rows = []
    for name, label, better in _OVERALL_ROWS:
        value = getattr(o, name)
        if name == "forget_text_memory" and metrics.target == "visual":
            label, better = "Forget people's text memory (kept in this setting)", "↑"
        if name == "forget_memory" and metrics.target == "visual":
            label = "Forget memory (image only)"
        rows.append([label, _score(value) if name == "meaningful" else _pct(value), better])
    lines += [_table(["metric", "value", "better"], rows), "", "## Per evaluation set", ""]
    set_rows = [
        [
            f"`{name}`",
            str(m.n),
            _pct(m.rouge_l),
            _score(m.fact_score),
            _score(m.meaningful_score),
            _pct(m.accuracy),
            _pct(m.refusal_rate),
            _pct(m.leak_rate),
            _score(m.mean_loss),
        ]
        for name, m in metrics.sets.items()
    ]
    lines.append(
        _table(["set", "n", "ROUGE-L %", "Fact", "Meaningful", "Accuracy %", "Refusal %", "Leak %", "Loss"], set_rows)
    )
    if metrics.gold is not None:
        g = metrics.gold
        lines += [
            "",
            "## Gold standard (oracle trained on retain only)",
            "",
            "Forget NLL KS p: p-value of a two-sample Kolmogorov-Smirnov test between this model's and the oracle's "
            "per-question answer NLL on the forget questions (higher = closer to never having seen the forget "
            "people). Not TOFU's forget quality, which runs the test on truth ratios.",
            "",
            _table(
                ["model", "forget NLL KS p", "n"],
                [["this model", _pvalue(g.forget_quality), str(g.n)]]
                + ([["vanilla", _pvalue(g.vanilla_forget_quality), str(g.n)]] if g.vanilla_forget_quality is not None else []),
            ),
        ]
        if g.oracle:
            lines += ["", f"Oracle: `{g.oracle}`"]
    if metrics.attacks:
        lines += ["", "## Attacks", "", attacks_table(metrics.attacks)]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def attacks_table(attacks: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per attack, one column per metric any attack reports (values as stored)."""
    columns: list[str] = []
    for values in attacks.values():
        columns += [k for k in values if k not in columns]
    rows = [[f"`{name}`", *(_cell(values.get(c)) for c in columns)] for name, values in attacks.items()]
    return _table(["attack", *columns], rows)


def write_eval_report(metrics: Metrics, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` for one evaluation; returns its path."""
    path = Path(out_dir) / REPORT_FILE
    write_text_atomic(path, eval_report_markdown(metrics))
    return path


# ---------------------------------------------------------------------------------------------------------
# Several runs


def default_labels(paths: Sequence[str | Path]) -> list[str]:
    """Run labels from directory names, made distinct with the parent directory where names repeat."""
    names = [Path(p).resolve().name for p in paths]
    out = []
    for p, name in zip(paths, names):
        path = Path(p).resolve()
        out.append(f"{path.parent.name}/{name}" if names.count(name) > 1 else name)
    return [f"{label} ({i + 1})" if out.count(label) > 1 else label for i, label in enumerate(out)]


def _resolve_runs(
    runs: Sequence[str | Path | Metrics], labels: Sequence[str] | None
) -> tuple[list[Metrics], list[str]]:
    if not runs:
        raise ConfigError("no runs to compare: pass at least one evaluation run directory")
    metrics = [r if isinstance(r, Metrics) else load_metrics(r) for r in runs]
    if labels is None:
        paths = [r for r in runs if not isinstance(r, Metrics)]
        from_paths = iter(default_labels(paths))
        labels = [next(from_paths) if not isinstance(r, Metrics) else (Path(r.model).name or f"run {i + 1}")
                  for i, r in enumerate(runs)]
    labels = list(labels)
    if len(labels) != len(metrics):
        raise ConfigError(f"got {len(labels)} labels for {len(metrics)} runs; pass one label per run (or none)")
    if len(set(labels)) != len(labels):
        dup = next(label for label in labels if labels.count(label) > 1)
        raise ConfigError(f"label {dup!r} is used for two runs; labels must be distinct")
    return metrics, labels


def compare_markdown(metrics: Sequence[Metrics], labels: Sequence[str], wall_times: Sequence[float | None] | None = None) -> str:
    """The comparison table (paper layout) as markdown."""
    has_gold = any(m.gold is not None for m in metrics)
    has_time = wall_times is not None and any(t is not None for t in wall_times)
    header = ["Method", "Setting", *(c.header for c in MAIN_COLUMNS)]
    if metrics and all(m.target == "visual" for m in metrics):  # name-only questions are kept there
        header = [VISUAL_HEADERS.get(h, h) for h in header]
    header += ["Forget NLL KS p ↑"] if has_gold else []
    header += ["Wall time"] if has_time else []
    rows = []
    for i, (m, label) in enumerate(zip(metrics, labels)):
        row = [label, m.target, *(c.fmt(c.value(m.overall)) for c in MAIN_COLUMNS)]
        if has_gold:
            row.append(_pvalue(m.gold.forget_quality if m.gold else None))
        if has_time:
            row.append(_seconds(wall_times[i] if wall_times else None))
        rows.append(row)
    forgets = sorted({m.forget for m in metrics})
    judges = sorted({m.judge for m in metrics})
    lines = [
        "# Method comparison",
        "",
        f"Forget split: {', '.join(forgets)}. Judge: {', '.join(judges)}. Values in % (Overall Memory in percentage "
        "points = retain memory − forget memory), Meaningful on 0-10, Forget NLL KS p is the p-value of a KS test "
        "between the model's and the oracle's per-question answer NLL on the forget questions. ↑ higher is better, ↓ lower is better.",
        "",
        _table(header, rows),
    ]
    if any(m.target == "visual" for m in metrics):
        lines += [
            "",
            "Setting *visual*: the forget people's name-only questions are kept, so for those rows Forget T-Mem is "
            "knowledge to keep (↑) and Forget memory is image memory only.",
        ]
    if len(forgets) > 1 or len({m.target for m in metrics}) > 1:
        lines += ["", "Note: the runs use different forget splits or settings; their numbers are not directly comparable."]
    attacked = [(label, m.attacks) for m, label in zip(metrics, labels) if m.attacks]
    if attacked:
        lines += ["", "## Attacks", ""]
        for label, attacks in attacked:
            lines += [f"### {label}", "", attacks_table(attacks or {}), ""]
    return "\n".join(lines).rstrip() + "\n"


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


_BAR_METRICS: tuple[tuple[str, Callable[[Overall], float | None], float], ...] = (
    ("Overall I-Und ↑", lambda o: o.image_understanding, 100.0),
    ("Forget memory ↓", lambda o: o.forget_memory, 100.0),
    ("Retain memory ↑", lambda o: o.retain_memory, 100.0),
    ("General VQA ↑", lambda o: o.general_vqa, 100.0),
    ("Meaningful ↑ (×10)", lambda o: o.meaningful, 10.0),
)


def plot_method_bars(metrics: Sequence[Metrics], labels: Sequence[str], out_png: str | Path) -> Path:
    """Grouped bars: a few key metrics (x) × runs (bars), in %."""
    fig = _figure(max(7.0, 1.3 * len(_BAR_METRICS) + 0.35 * len(metrics) * len(_BAR_METRICS)), 4.2)
    ax = fig.add_subplot()
    n = len(metrics)
    width = 0.8 / n
    cmap = _colours(n)
    for j, (m, label) in enumerate(zip(metrics, labels)):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(_BAR_METRICS))]
        ys = [_nan(get(m.overall), scale) for _, get, scale in _BAR_METRICS]
        bars = ax.bar(xs, ys, width=width * 0.95, label=label, color=cmap[j])
        if n <= 6:
            ax.bar_label(bars, labels=["" if math.isnan(y) else f"{y:.0f}" for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(_BAR_METRICS)), [name for name, _, _ in _BAR_METRICS])
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
    ax.scatter([0], [100], marker="*", s=180, color="gold", edgecolor="black", zorder=4, label="ideal")
    if plotted == 0:
        ax.text(50, 50, "no run has both forget memory and image understanding", ha="center", va="center")
    ax.set_xlim(-5, 105)
    ax.set_ylim(-5, 105)
    ax.set_xlabel("Forget memory (%)  ← lower is better")
    ax.set_ylabel("Overall image understanding (%)  ↑ higher is better")
    ax.set_title("Forgetting vs retained image understanding")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save_png(fig, Path(out_png))


def compare_runs(
    runs: Sequence[str | Path | Metrics],
    labels: Sequence[str] | None,
    out_dir: str | Path,
    *,
    wall_times: Sequence[float | None] | None = None,
) -> dict[str, Path]:
    """Compare evaluation runs (directories with ``metrics.json``, or :class:`Metrics`): writes
    ``compare.md`` (the paper's main table), ``methods.png`` (grouped bars) and ``tradeoff.png`` (forget
    memory vs understanding) into ``out_dir``. ``labels`` default to the directory names; ``wall_times``
    (seconds per run, e.g. of the unlearning stage) add a column."""
    metrics, labels = _resolve_runs(runs, labels)
    if wall_times is not None and len(wall_times) != len(metrics):
        raise ConfigError(f"got {len(wall_times)} wall times for {len(metrics)} runs; pass one per run")
    out = Path(out_dir)
    md = out / COMPARE_FILE
    write_text_atomic(md, compare_markdown(metrics, labels, wall_times))
    return {
        "markdown": md,
        "bars": plot_method_bars(metrics, labels, out / BARS_FILE),
        "tradeoff": plot_tradeoff(metrics, labels, out / TRADEOFF_FILE),
    }


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


__all__ = [
    "BARS_FILE",
    "COMPARE_FILE",
    "MAIN_COLUMNS",
    "REPORT_FILE",
    "TRADEOFF_FILE",
    "attacks_table",
    "compare_markdown",
    "compare_runs",
    "default_labels",
    "eval_report_markdown",
    "k_direction",
    "plot_k_sweep",
    "plot_method_bars",
    "plot_tradeoff",
    "write_eval_report",
]
