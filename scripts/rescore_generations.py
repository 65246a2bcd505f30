"""Re-score the understanding sets of saved evaluations with the v1 substring rule and the current rule
(smfa.eval.text.answer_is_correct), side by side, on the same answers.

    python scripts/rescore_generations.py LABEL=EVAL_DIR [LABEL=EVAL_DIR ...]

EVAL_DIR holds a generations.jsonl (an ``smfa eval`` directory or an unlearn run's ``eval/``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from smfa.eval.text import answer_is_correct, contains_fact

SETS = ("forget/understanding", "retain/understanding")


def rescore(path: Path) -> dict[str, tuple[float, float, int]]:
    rows = [json.loads(line) for line in (path / "generations.jsonl").read_text().splitlines() if line.strip()]
    out = {}
    for name in SETS:
        r = [g for g in rows if g["set"] == name]
        old = sum(contains_fact(g["answer"], g["fact"]) for g in r) / len(r)
        new = sum(answer_is_correct(g["answer"], g["fact"]) for g in r) / len(r)
        out[name] = (old, new, len(r))
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| model | " + " | ".join(f"{s} v1 rule → fixed" for s in SETS) + " |")
    print("|---|" + "---|" * len(SETS))
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        scores = rescore(Path(path))
        print(f"| {label} | " + " | ".join(f"{100 * o:.0f} → {100 * n:.0f} % (n {k})" for o, n, k in scores.values()) + " |")
