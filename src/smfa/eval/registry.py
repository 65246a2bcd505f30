"""The metric registry: every metric of ``metrics.json`` is declared once, in :mod:`smfa.eval.metrics`, with
``@register_metric`` — its key, meaning, how it is computed and how the reports show it. Everything else is
derived from the declarations: the typed records :class:`smfa.eval.schema.SetMetrics` and
:class:`smfa.eval.schema.Overall` (their keys, docs and loading checks), ``report.md``'s tables, the
comparison table and bars, and the k-sweep rows.

Two levels:

- ``set``: one value per evaluation set, ``fn(generations, scores) -> float | None`` where ``scores`` are
  the judge's ``(fact, meaningful)`` per generation;
- ``overall``: one aggregate per run, ``fn(view: SetsView) -> float | None``, computed in declaration order
  (an aggregate may read earlier ones with ``view.value(name)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, make_dataclass
from typing import Any

LEVELS = ("set", "overall")
KINDS = ("rate", "score", "count", "loss")  # rate: a fraction shown in %; score: 0-10; count: an integer


@dataclass(frozen=True)
class Metric:
    """One declared metric.

    Attributes:
        name: its key in ``metrics.json`` (``sets.<set>.<name>`` or ``overall.<name>``).
        level: ``set`` or ``overall``.
        doc: what it means, for the schema docs (one or two sentences).
        compute: the function that computes it (see the module docstring).
        kind: ``rate`` (fraction in [0, 1], shown in %), ``score`` (0-10), ``count`` or ``loss``.
        label: its name in reports (``report.md``'s row or column); ``better``: ``↑``, ``↓`` or ``""``.
        column: its header in the comparison table (``compare.md``); ``""`` = not a column.
        visual_label, visual_better, visual_column: label, direction and header in the visual setting, where
            the metric means something else (``""`` = as in ``all``).
        bar: its label in the method bar chart (``methods.png``); ``""`` = no bar.
        sweep: its key in a k-sweep row (``sweep.json``); ``""`` = not swept.
        required: ``metrics.json`` must carry it (older files may lack the others).
        group: a family of metrics shown only where they have values: an overall metric in its own section of
            ``report.md`` (e.g. ``MLLMU-Bench``) when one of the family has a value, and a comparison column
            when some run has one; a set metric as a per-set column when some set has one. ``""`` = always shown.
    """

    name: str
    level: str
    doc: str
    compute: Callable[..., float | None]
    kind: str = "rate"
    label: str = ""
    better: str = ""
    column: str = ""
    visual_label: str = ""
    visual_better: str = ""
    visual_column: str = ""
    bar: str = ""
    sweep: str = ""
    required: bool = False
    group: str = ""


_METRICS: dict[str, dict[str, Metric]] = {level: {} for level in LEVELS}
_CLASSES: dict[str, type] = {}


def register_metric(name: str, level: str, doc: str, **presentation: Any) -> Callable[[Callable], Callable]:
    """Decorator: declare the metric ``name`` computed by the decorated function (see :class:`Metric`)."""
    if level not in LEVELS:
        raise ValueError(f"metric {name!r}: level must be one of {LEVELS}, got {level!r}")
    if presentation.get("kind", "rate") not in KINDS:
        raise ValueError(f"metric {name!r}: kind must be one of {KINDS}, got {presentation['kind']!r}")

    def wrap(fn: Callable) -> Callable:
        if name in _METRICS[level]:
            raise ValueError(f"{level} metric {name!r} is registered twice")
        if level in _CLASSES:
            raise ValueError(f"{level} metric {name!r} registered after the result records were built; "
                             "declare metrics in smfa.eval.metrics")
        _METRICS[level][name] = Metric(name, level, doc, fn, **presentation)
        return fn

    return wrap


def metrics_of(level: str) -> list[Metric]:
    """The declared metrics of ``level``, in declaration order."""
    return list(_METRICS[level].values())


def result_class(level: str, class_name: str, summary: str) -> type:
    """The dataclass holding one value per metric of ``level`` (built once; its docstring lists every key)."""
    if level not in _CLASSES:
        specs = metrics_of(level)
        rows = [(m.name, int if m.kind == "count" else float | None) if m.required
                else (m.name, float | None, field(default=None)) for m in specs]
        cls = make_dataclass(class_name, rows)
        cls.__module__ = "smfa.eval.schema"  # where it is documented and imported from
        keys = "\n".join(f"        {m.name}: {m.doc}" for m in specs)
        cls.__doc__ = f"{summary}\n\n    Keys:\n{keys}\n"
        _CLASSES[level] = cls
    return _CLASSES[level]


@dataclass
class SetsView:
    """What an ``overall`` metric reads: the per-set metrics, the setting, and the aggregates before it."""

    sets: Mapping[str, Any]
    target: str
    done: dict[str, float | None] = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        """An aggregate declared earlier."""
        return self.done[name]

    def get(self, set_name: str, attr: str) -> float | None:
        """``attr`` of one set; ``None`` when the set was not evaluated."""
        metrics = self.sets.get(set_name)
        return None if metrics is None else getattr(metrics, attr)

    def weighted(self, names: Sequence[str], attr: str) -> float | None:
        """``attr`` over ``names``, weighted by set size (sets without a value left out)."""
        pairs = [(self.sets[n].n, getattr(self.sets[n], attr)) for n in names
                 if n in self.sets and getattr(self.sets[n], attr) is not None]
        total = sum(n for n, _ in pairs)
        return sum(n * v for n, v in pairs) / total if total else None


def mean_present(*values: float | None) -> float | None:
    """The mean of the values that are not ``None``; ``None`` if all are."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def mean_spread(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation or None for one value, n) over the values that exist."""
    import statistics

    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None, 0
    spread = statistics.stdev(present) if len(present) > 1 else None
    return statistics.fmean(present), spread, len(present)
