"""The vanilla's table against the testbed targets (issue: "a vanilla that knows people"), from one or more
``smfa eval`` directories; forget and retain people separately.

    python scripts/vanilla_table.py RUN-eval [RUN2-eval ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from smfa.eval.schema import load_metrics

# (label, set name suffix, target accuracy)
ROWS = (
    ("image memory", "image_memory", 0.97),
    ("text memory", "text_memory", 0.99),
    ("image memory, held-out phrasing", "image_memory/paraphrase", 0.80),
    ("text memory, held-out phrasing", "text_memory/paraphrase", 0.80),
    ("text memory, two facts in one question (held-out pairs)", "text_memory/multi_fact", None),
    ("image memory, unseen photo", "image_memory/unseen_image", 0.85),
    ("understanding", "understanding", 0.95),
    ("understanding, unseen photo", "understanding/unseen_image", None),
)


def table(paths: list[Path]) -> str:
    metrics = [(p.parent.name if p.name == "eval" else p.name, load_metrics(p)) for p in paths]
    head = "| set | target | " + " | ".join(f"{name} forget / retain" for name, _ in metrics) + " |"
    lines = [head, "|" + "---|" * (2 + len(metrics))]

    def pct(m, name):
        s = m.sets.get(name)
        return "n/a" if s is None or s.accuracy is None else f"{100 * s.accuracy:.1f}"

    for label, suffix, target in ROWS:
        if not any("retain/" + suffix in m.sets for _, m in metrics):
            continue  # a set no run has (multi-fact questions on a bench built without them)
        cells = [f"{pct(m, 'forget/' + suffix)} / {pct(m, 'retain/' + suffix)}" for _, m in metrics]
        lines.append(f"| {label} | {'–' if target is None else f'≥ {100 * target:.0f}'} | " + " | ".join(cells) + " |")
    cells = [pct(m, "general_vqa") for _, m in metrics]
    lines.append("| general VQA | ≥ 90 | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(table([Path(a) for a in sys.argv[1:]]))
