"""The selectivity table of issue #15 from evaluation directories: leaks (photo / name, held-out phrasing,
unseen photo), retain memory (image / text), understanding (forget / retain), general VQA, Meaningful, and
with ``--vanilla`` the ratios the goal is stated in (retain memory on training phrasings, on held-out phrasings
and on unseen photos, understanding, general VQA as % of the vanilla's; Meaningful as a difference), then the neighbour table (issue #31, smfa.bench.neighbours): per neighbour
set, memory and refusals by photo and by name in training and held-out phrasings, and with ``--vanilla`` the
goal's two checks — the lowest memory as % of the vanilla's and the highest refusal above the vanilla's (points)
over the set's four slices.

    python scripts/selectivity_table.py [--vanilla VANILLA-EVAL] [--plot PNG] LABEL=EVAL_DIR [LABEL=EVAL_DIR ...]

Runs sharing a LABEL (one per bench seed) are shown as mean ± standard deviation. With ``--choose`` (and
``--vanilla``) it also prints the label the worst-seed rule picks (``choose_worst_seed``): how k is chosen.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from smfa.bench.neighbours import NEIGHBOUR_SETS, NEIGHBOUR_VARIANTS
from smfa.bench.schema import IMAGE_MEMORY, MEMORY_KINDS
from smfa.eval.metrics import NEIGHBOUR_LABELS, compute_overall, neighbour_metric_name
from smfa.eval.registry import mean_spread
from smfa.eval.schema import load_metrics
from smfa.eval.verify import GATED, LEAK_KEYS

COLUMNS = (  # (header, overall key; rates shown in %)
    ("leak photo ↓", "forget_leak_image"), ("leak name ↓", "forget_leak_text"),
    ("held-out phrasing leak ↓", "forget_leak_paraphrase"), ("unseen-photo leak ↓", "forget_leak_unseen_image"),
    ("retain mem. img ↑", "retain_image_memory"), ("retain mem. txt ↑", "retain_text_memory"),
    ("und. forget ↑", "forget_understanding"), ("und. retain ↑", "retain_understanding"),
    ("gen. VQA ↑", "general_vqa"),
)
RATIOS = (("retain mem. % of vanilla", "retain_memory"),
          ("retain photo, held-out phr. % of vanilla", "retain_image_memory_paraphrase"),
          ("retain name, held-out phr. % of vanilla", "retain_text_memory_paraphrase"),
          ("retain unseen photo % of vanilla", "retain_image_memory_unseen_image"),
          ("und. % of vanilla", "image_understanding"), ("VQA % of vanilla", "general_vqa"))


def _overall(path: Path) -> Any:
    """The run's aggregates recomputed from its stored per-set metrics with this version's declarations, so an
    older metrics.json gets the aggregates added since (retain memory on held-out phrasings, ...)."""
    m = load_metrics(path)
    return compute_overall(m.sets, m.target)


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean, spread, _ = mean_spread(values)
    if mean is None:
        return "–"
    return f"{scale * mean:.{digits}f}" + ("" if spread is None else f" ± {scale * spread:.{digits}f}")


def _slices(which: str) -> list[tuple[str, str, str]]:
    """(header, memory key, refusal key) of each slice of neighbour set ``which``: training / held-out x photo / name."""
    return [(f"{'held-out' if variant else 'training'} {'photo' if kind == IMAGE_MEMORY else 'name'}",
             neighbour_metric_name(which, kind, "memory", variant), neighbour_metric_name(which, kind, "refusal", variant))
            for variant in NEIGHBOUR_VARIANTS for kind in MEMORY_KINDS]


def refusal_excess(run: Any, vanilla: Any, which: str) -> float | None:
    """The highest refusal rate above the vanilla's over neighbour set ``which``'s four slices (a share; None when
    no slice is measured in both)."""
    return max((getattr(run, r) - getattr(vanilla, r) for _, _, r in _slices(which)
                if getattr(run, r) is not None and getattr(vanilla, r) is not None), default=None)


def tradeoff_points(groups: dict[str, list], vanillas: list) -> dict[str, list[tuple[float, float]]]:
    """Per label, one point per seed for the leak / neighbour-refusal plot: the worst gated leak (photo, name,
    held-out phrasing; %) and the worst refusal excess over every neighbour set (points); a seed with neither
    measured is left out."""
    import math

    out: dict[str, list[tuple[float, float]]] = {}
    for label, runs in groups.items():
        pairs = zip(runs, vanillas if len(vanillas) == len(runs) else vanillas[:1] * len(runs))
        out[label] = []
        for o, v in pairs:
            leaks = [getattr(o, LEAK_KEYS[g]) for g in GATED if getattr(o, LEAK_KEYS[g], None) is not None]
            excess = [e for e in (refusal_excess(o, v, w) for w in NEIGHBOUR_SETS) if e is not None]
            out[label].append((100 * max(leaks) if leaks else math.nan, 100 * max(excess) if excess else math.nan))
    return out


def neighbour_rows(groups: dict[str, list], vanillas: list) -> list[list[str]]:
    """One row per label and neighbour set: "memory / refusal" (%) per slice, and with ``vanillas`` the worst
    memory ratio and refusal excess over the slices (None-valued slices, e.g. an empty set, left out)."""
    rows = []
    for label, runs in groups.items():
        pairs = list(zip(runs, vanillas if len(vanillas) == len(runs) else vanillas[:1] * len(runs)))
        for which in NEIGHBOUR_SETS:
            row = [label, NEIGHBOUR_LABELS[which]]
            for _, mem, ref in _slices(which):
                row.append(f"{_cell([getattr(o, mem) for o in runs if getattr(o, mem) is not None])} / "
                           f"{_cell([getattr(o, ref) for o in runs if getattr(o, ref) is not None])}")
            if vanillas:
                ratios = [min((getattr(o, m) / getattr(v, m) for _, m, _ in _slices(which)
                               if getattr(o, m) is not None and getattr(v, m)), default=None) for o, v in pairs]
                excess = [refusal_excess(o, v, which) for o, v in pairs]
                row += [_cell([x for x in ratios if x is not None]), _cell([x for x in excess if x is not None])]
            rows.append(row)
    return rows


def worst_gated_leak(runs: list) -> float:
    """The highest leak a request's check holds a run to (:data:`smfa.eval.verify.GATED`), over seeds."""
    return max(max(getattr(o, LEAK_KEYS[g], None) or 0.0 for g in GATED) for o in runs)


def choose_worst_seed(groups: dict[str, list], vanillas: list, bound: float = 0.05) -> str | None:
    """The rule shipped defaults are chosen by (issues #25, #34): among candidates whose **worst** seed leaks at
    most ``bound`` on every leak a request's check holds it to (:data:`smfa.eval.verify.GATED`: by photo, by name,
    in held-out phrasings; a leak not measured counts as 0), the one with the most retain memory (mean over seeds,
    as a share of each seed's vanilla); ``None`` when no candidate meets the bound. A default that fails its own
    request check on a validation seed would make every such request pay for stronger attempts. ``groups``: label
    → one Overall per seed, ``vanillas``: one Overall per seed, in the same order (or one for all)."""
    best: tuple[float, str] | None = None
    for label, runs in groups.items():
        if not runs or worst_gated_leak(runs) > bound:
            continue
        pairs = zip(runs, vanillas if len(vanillas) == len(runs) else vanillas[:1] * len(runs))
        kept = [o.retain_memory / v.retain_memory for o, v in pairs if o.retain_memory is not None and v.retain_memory]
        score = sum(kept) / len(kept) if kept else 0.0
        if best is None or score > best[0]:
            best = (score, label)
    return best[1] if best else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vanilla", action="append", default=[], help="the vanilla's eval dir(s) (one per seed, "
                   "in the same order as each label's runs) for the ratio columns")
    p.add_argument("--choose", action="store_true", help="print the label the worst-seed rule picks")
    p.add_argument("--baseline", metavar="LABEL", help="with --choose: the shipped default's label; where its own worst "
                   "seed leaks above 5 %%, candidates are held to its worst leak instead (no worse forgetting)")
    p.add_argument("--plot", metavar="PNG", help="with --vanilla: plot worst leak against worst neighbour refusal "
                   "above the vanilla's, one point per run and label means")
    p.add_argument("runs", nargs="+", metavar="LABEL=EVAL_DIR")
    args = p.parse_args()
    groups: dict[str, list] = {}
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=EVAL_DIR, got {item!r}")
        groups.setdefault(label, []).append(_overall(Path(path)))
    vanillas = [_overall(Path(v)) for v in args.vanilla]
    header = ["run", "n", *(h for h, _ in COLUMNS), "Meaningful"]
    if vanillas:
        header += [h for h, _ in RATIOS] + ["Meaningful − vanilla"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, runs in groups.items():
        row = [label, str(len(runs))]
        row += [_cell([getattr(o, key) for o in runs if getattr(o, key) is not None]) for _, key in COLUMNS]
        row.append(_cell([o.meaningful for o in runs if o.meaningful is not None], scale=1.0, digits=2))
        if vanillas:
            pairs = list(zip(runs, vanillas if len(vanillas) == len(runs) else vanillas[:1] * len(runs)))
            for _, key in RATIOS:
                row.append(_cell([getattr(o, key) / getattr(v, key) for o, v in pairs if getattr(o, key) is not None and getattr(v, key)]))
            row.append(_cell([o.meaningful - v.meaningful for o, v in pairs if o.meaningful is not None], scale=1.0, digits=2))
        print("| " + " | ".join(row) + " |")
    header = ["run", "neighbours", *(f"{h}: memory / refusal" for h, _, _ in _slices("name"))]
    if vanillas:
        header += ["worst memory % of vanilla (≥ 90)", "worst refusal − vanilla, points (≤ 5)"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in neighbour_rows(groups, vanillas):
        print("| " + " | ".join(row) + " |")
    if args.plot:
        if not vanillas:
            raise SystemExit("--plot needs --vanilla (neighbour refusal is read above the vanilla's)")
        from smfa.plots import plot_neighbour_tradeoff

        print(f"\nplot: {plot_neighbour_tradeoff(tradeoff_points(groups, vanillas), args.plot)}")
    if args.choose:
        if not vanillas:
            raise SystemExit("--choose needs --vanilla (retain memory is compared as a share of the vanilla's)")
        bound = 0.05
        if args.baseline:
            if args.baseline not in groups:
                raise SystemExit(f"--baseline {args.baseline!r} is not one of the labels: {', '.join(groups)}")
            bound = max(bound, worst_gated_leak(groups[args.baseline]))
        pick = choose_worst_seed(groups, vanillas, bound)
        print(f"\nworst-seed rule (photo, name and held-out phrasing leak <= {100 * bound:.1f} % on every seed, then the "
              f"most retain memory): {pick or 'no candidate meets the bound'}")


if __name__ == "__main__":
    main()
