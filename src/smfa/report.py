"""Reports: one evaluation's ``report.md``, and the comparison of several runs in the layout of the paper's main
table (``compare.md``) with method bars and a forgetting/understanding trade-off plot (:mod:`smfa.plots`).
Rows and columns come from the metric declarations (:mod:`smfa.eval.metrics`).

Accuracies, rates and memory are shown in % (Overall Memory in percentage points), Fact and Meaningful on
their 0-10 scale, the forget-answer NLL KS test as a p-value. ``n/a`` marks a value whose sets were not evaluated or
that a bench lacks (never 0). Plots
are written with matplotlib's Agg canvas (no display needed); every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smfa.bench.neighbours import NEIGHBOUR_SETS, NEIGHBOUR_VARIANTS, neighbour_set_name
from smfa.bench.schema import IMAGE_MEMORY, MEMORY_KINDS
from smfa.errors import ConfigError
from smfa.eval.metrics import NEIGHBOUR_LABELS, NEIGHBOURS_GROUP, NEIGHBOUR_STATS, neighbour_metric_name
from smfa.eval.registry import Metric, mean_spread, metrics_of
from smfa.eval.schema import Metrics, load_metrics
from smfa.plots import k_direction, plot_k_sweep, plot_method_bars, plot_selectivity, plot_tradeoff
from smfa.rundir import write_text_atomic

REPORT_FILE = "report.md"
COMPARE_FILE = "compare.md"
BARS_FILE = "methods.png"
TRADEOFF_FILE = "tradeoff.png"
SELECTIVITY_FILE = "selectivity.png"

NA = "n/a"  # a value whose sets a bench lacks or a run did not evaluate

_SETTING_NOTE = {
    "all": "all: forget everything about the forget people, from their photo and by their name",
    "visual": "visual: forget only the photo link; questions about the forget people by name are kept",
}


# ---------------------------------------------------------------------------------------------------------
# Formatting


def _pct(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.1f}"


def _score(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}"


def _pvalue(value: float | None) -> str:
    return NA if value is None else f"{value:.3g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:.0f} s" if value < 600 else f"{value / 60:.1f} min"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(metric: Metric, value: float | None) -> str:
    """A metric's value as reports show it: rates in %, scores and losses with two decimals."""
    if metric.kind == "count":
        return NA if value is None else str(value)
    return _pct(value) if metric.kind == "rate" else _score(value)


def _shown(metric: Metric, target: str) -> tuple[str, str, str]:
    """(label, better, column header) of ``metric`` in setting ``target``."""
    if target == "visual":
        return (metric.visual_label or metric.label, metric.visual_better or metric.better,
                metric.visual_column or metric.column)
    return metric.label, metric.better, metric.column


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
    for m in metrics_of("overall"):
        if m.group:
            continue
        label, better, _ = _shown(m, metrics.target)
        rows.append([label, _fmt(m, getattr(o, m.name)), better])
    lines += [_table(["metric", "value", "better"], rows), ""]
    for group, members in _groups().items():
        if group == NEIGHBOURS_GROUP or all(getattr(o, m.name) is None for m in members):
            continue  # a family of metrics this bench has no sets for (e.g. MLLMU's on the built-in bench)
        lines += [f"## {group} metrics", "", f"Under {group}'s own names; {NA} where the bench lacks the set.", "",
                  _table(["metric", "value", "better"], [[_shown(m, metrics.target)[0], _fmt(m, getattr(o, m.name)),
                                                          _shown(m, metrics.target)[1]] for m in members]), ""]
    if has_neighbours(metrics):
        lines += ["## Neighbours", "", NEIGHBOURS_NOTE, "", neighbours_table([("", metrics)]), ""]
    lines += ["## Per evaluation set", ""]
    per_set = [m for m in metrics_of("set")  # a grouped column only where some set has a value (choice, cloze)
               if not m.group or any(getattr(v, m.name) is not None for v in metrics.sets.values())]
    set_rows = [[f"`{name}`", *(_fmt(m, getattr(values, m.name)) for m in per_set)] for name, values in metrics.sets.items()]
    lines.append(_table(["set", *(m.label for m in per_set)], set_rows))
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
    if metrics.requests:
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
        lines += ["", "## Deletion requests", "", "Leak (%) of each request's people, the chain's earlier requests "
                  "first (sets `earlier<N>/...`), this run's last.", "",
                  _table(["request", "people", "photo", "name", "paraphrase", "unseen photo", "n"],
                         [[f"{r.request}{' (this run)' if r.current else ''}", str(r.people), pct(r.leak_image),
                           pct(r.leak_text), pct(r.leak_paraphrase), pct(r.leak_unseen_image), str(r.n)]
                          for r in metrics.requests])]
    return "\n".join(lines) + "\n"


NEIGHBOURS_NOTE = ("Retain people who share a name word, a look (5 of 7 visible features) or a private value "
                   "with a forgotten person (`smfa.bench.neighbours`): memory (accuracy) and refusals in %, by photo "
                   "and by name, in training and held-out phrasings; questions: training / held-out.")


def has_neighbours(metrics: Metrics) -> bool:
    """Whether the evaluation scored neighbour sets (older files and k-sweep points did not)."""
    return any(getattr(metrics.overall, m.name) is not None for m in _groups().get(NEIGHBOURS_GROUP, []))


def neighbours_table(runs: Sequence[tuple[str, Metrics]]) -> str:
    """One row per run and neighbour set: people, questions, then memory and refusal by photo and by name in
    training and held-out phrasings (``n/a`` where a set is empty). A run labelled ``""`` gets no run column."""
    stats = [(variant, kind, stat) for variant in NEIGHBOUR_VARIANTS for kind in MEMORY_KINDS for stat in NEIGHBOUR_STATS]
    header = ["set", "people", "questions"] + [
        f"{'held-out' if variant else 'training'}: {stat} by {'photo' if kind == IMAGE_MEMORY else 'name'} "
        f"{NEIGHBOUR_STATS[stat][1]}" for variant, kind, stat in stats]
    labelled = any(label for label, _ in runs)
    rows = []
    for label, m in runs:
        for which in NEIGHBOUR_SETS:
            counts = [sum(m.sets[n].n for n in (neighbour_set_name(which, kind, variant) for kind in MEMORY_KINDS)
                          if n in m.sets) for variant in NEIGHBOUR_VARIANTS]
            people = (m.neighbour_people or {}).get(which)
            row = [NEIGHBOUR_LABELS[which], NA if people is None else str(people), " / ".join(map(str, counts))]
            row += [_pct(getattr(m.overall, neighbour_metric_name(which, kind, stat, variant))) for variant, kind, stat in stats]
            rows.append(([label] if labelled else []) + row)
    return _table((["Method"] if labelled else []) + header, rows)


def _groups() -> dict[str, list[Metric]]:
    """Overall metrics declared with a ``group``, by group, in declaration order."""
    out: dict[str, list[Metric]] = {}
    for m in metrics_of("overall"):
        if m.group:
            out.setdefault(m.group, []).append(m)
    return out


def _cell(value: Any) -> str:
    if value is None:
        return NA
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


def _leak_pct(value: Any) -> str:
    return NA if value is None else f"{100 * value:.0f}"


def attack_cell(name: str, values: Mapping[str, Any]) -> str:
    """The headline of one attack's result, as robustness tables show it: the leak in %, with what the attack
    also measures — retain kept, the cross-modal split, relearning's before → after, quantisation's retain and
    general VQA — and the membership-inference AUC."""
    if name == "mia":
        return NA if values.get("auc") is None else f"AUC {values['auc']:.2f}"
    if name == "relearn":
        return f"{_leak_pct(values.get('leak_before'))} → {_leak_pct(values.get('leak_after'))}"
    if name == "cross_modal":
        return f"{_leak_pct(values.get('leak_text_only'))} / {_leak_pct(values.get('leak_image_only'))} / {_leak_pct(values.get('leak'))}"
    cell = _leak_pct(values.get("leak"))
    extra = [_leak_pct(values[k]) for k in ("retain_leak", "general_vqa_accuracy") if values.get(k) is not None]
    return f"{cell} ({'; '.join(extra)})" if extra else cell


ATTACK_ROW_NOTES = {"cross_modal": "name only / photo only / either", "relearn": "before → after",
                    "quantize_8bit": "(retain kept; general VQA)", "quantize_4bit": "(retain kept; general VQA)",
                    "quantize_nf4": "(retain kept; general VQA)",
                    "paraphrase": "(retain kept)", "unseen_image": "(retain kept)"}


def attack_leaks_table(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Attacks as rows, runs as columns (:func:`attack_cell` in each): how every run stands up to every attack."""
    names: list[str] = []
    for attacks in runs.values():
        names += [n for n in attacks if n not in names]
    rows = [[f"`{n}`" + (f" {ATTACK_ROW_NOTES[n]}" if n in ATTACK_ROW_NOTES else ""),
             *(attack_cell(n, attacks[n]) if n in attacks else NA for attacks in runs.values())] for n in names]
    return _table(["attack", *runs], rows)


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
    runs: Sequence[str | Path | Metrics], labels: Sequence[str] | None, *, repeat_labels: bool = False
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
    if len(set(labels)) != len(labels) and not repeat_labels:
        dup = next(label for label in labels if labels.count(label) > 1)
        raise ConfigError(f"label {dup!r} is used for two runs; labels must be distinct")
    return metrics, labels


def _columns(metrics: Sequence[Metrics]) -> list[Metric]:
    """The overall metrics the comparison tables show: every one with a column, less a group's (e.g. the MLLMU-Bench
    task columns) that no run has a value for."""
    return [m for m in metrics_of("overall") if m.column
            and not (m.group and all(getattr(r.overall, m.name) is None for r in metrics))]


def compare_markdown(metrics: Sequence[Metrics], labels: Sequence[str], wall_times: Sequence[float | None] | None = None) -> str:
    """The comparison table (paper layout) as markdown."""
    has_gold = any(m.gold is not None for m in metrics)
    has_time = wall_times is not None and any(t is not None for t in wall_times)
    columns = _columns(metrics)
    shown_as = "visual" if metrics and all(m.target == "visual" for m in metrics) else "all"  # kept name answers
    header = ["Method", "Setting", *(_shown(c, shown_as)[2] for c in columns)]
    header += ["Forget NLL KS p ↑"] if has_gold else []
    header += ["Wall time"] if has_time else []
    rows = []
    for i, (m, label) in enumerate(zip(metrics, labels)):
        row = [label, m.target, *(_fmt(c, getattr(m.overall, c.name)) for c in columns)]
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
    neighboured = [(label, m) for m, label in zip(metrics, labels) if has_neighbours(m)]
    if neighboured:
        lines += ["", "## Neighbours", "", NEIGHBOURS_NOTE, "", neighbours_table(neighboured)]
    attacked = [(label, m.attacks) for m, label in zip(metrics, labels) if m.attacks]
    if attacked:
        lines += ["", "## Attacks", ""]
        if len(attacked) > 1:
            lines += ["Leak in % of the forget people's answers (retain kept, where an attack measures it); each run's "
                      "full numbers follow.", "", attack_leaks_table(dict(attacked)), ""]
        for label, attacks in attacked:
            lines += [f"### {label}", "", attacks_table(attacks or {}), ""]
    return "\n".join(lines).rstrip() + "\n"


def aggregate_markdown(metrics: Sequence[Metrics], labels: Sequence[str]) -> str:
    """The comparison table with one row per distinct label: each column's mean ± sample standard
    deviation over the runs carrying that label (e.g. one run per bench seed), and the number of runs."""
    columns = _columns(metrics)
    shown_as = "visual" if metrics and all(m.target == "visual" for m in metrics) else "all"
    groups: dict[str, list[Metrics]] = {}
    for m, label in zip(metrics, labels):
        groups.setdefault(label, []).append(m)
    rows = []
    for label, runs in groups.items():
        row = [label, str(len(runs))]
        for c in columns:
            mean, spread, n = mean_spread([getattr(r.overall, c.name) for r in runs])
            cell = _fmt(c, mean)
            if spread is not None:
                cell += f" ± {_fmt(c, spread)}"
            row.append(cell + (f" (n={n})" if 0 < n < len(runs) else ""))
        rows.append(row)
    header = ["Method", "runs", *(_shown(c, shown_as)[2] for c in columns)]
    return "\n".join([
        "# Method comparison: mean ± standard deviation over runs with the same label",
        "",
        f"Forget split: {', '.join(sorted({m.forget for m in metrics}))}. Each cell: the mean over the label's runs "
        "± their sample standard deviation (none for one run); units as in the per-run table below.",
        "",
        _table(header, rows),
    ]) + "\n"


def compare_runs(
    runs: Sequence[str | Path | Metrics],
    labels: Sequence[str] | None,
    out_dir: str | Path,
    *,
    wall_times: Sequence[float | None] | None = None,
    aggregate: bool = False,
) -> dict[str, Path]:
    """Compare evaluation runs (directories with ``metrics.json``, or :class:`Metrics`): writes
    ``compare.md`` (the paper's main table), ``methods.png`` (grouped bars) and ``tradeoff.png`` (forget
    memory vs understanding) and ``selectivity.png`` (forget leak vs retain memory; labels ``VARIANT@POINT``
    draw one curve per variant) into ``out_dir``. ``labels`` default to the directory names; ``wall_times``
    (seconds per run, e.g. of the unlearning stage) add a column. With ``aggregate``, runs sharing a label
    (e.g. one per bench seed) are summarised as mean ± standard deviation above the per-run table, whose
    rows are then labelled ``LABEL #i``."""
    metrics, labels = _resolve_runs(runs, labels, repeat_labels=aggregate)
    if wall_times is not None and len(wall_times) != len(metrics):
        raise ConfigError(f"got {len(wall_times)} wall times for {len(metrics)} runs; pass one per run")
    out = Path(out_dir)
    md = out / COMPARE_FILE
    grouping = list(labels)  # the selectivity plot averages runs that share a label
    if aggregate:
        head = aggregate_markdown(metrics, labels)
        seen: dict[str, int] = {}
        numbered = []
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
            numbered.append(f"{label} #{seen[label]}")
        labels = numbered
        write_text_atomic(md, head + "\n## Every run\n\n" + compare_markdown(metrics, labels, wall_times))
    else:
        write_text_atomic(md, compare_markdown(metrics, labels, wall_times))
    return {
        "markdown": md,
        "bars": plot_method_bars(metrics, labels, out / BARS_FILE),
        "tradeoff": plot_tradeoff(metrics, labels, out / TRADEOFF_FILE),
        "selectivity": plot_selectivity(metrics, grouping, out / SELECTIVITY_FILE),
    }


__all__ = [
    "BARS_FILE",
    "COMPARE_FILE",
    "REPORT_FILE",
    "SELECTIVITY_FILE",
    "TRADEOFF_FILE",
    "aggregate_markdown",
    "attack_cell",
    "attack_leaks_table",
    "attacks_table",
    "compare_markdown",
    "compare_runs",
    "default_labels",
    "eval_report_markdown",
    "k_direction",
    "neighbours_table",
    "plot_k_sweep",
    "plot_method_bars",
    "plot_tradeoff",
    "write_eval_report",
]
