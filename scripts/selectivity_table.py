"""The selectivity table of issue #15 from evaluation directories: leaks (photo / name, held-out phrasing,
unseen photo), retain memory (image / text), understanding (forget / retain), general VQA, Meaningful, and
with ``--vanilla`` the ratios the goal is stated in (retain memory, understanding, general VQA as % of the
vanilla's; Meaningful as a difference).

    python scripts/selectivity_table.py [--vanilla VANILLA-EVAL] LABEL=EVAL_DIR [LABEL=EVAL_DIR ...]

Runs sharing a LABEL (one per bench seed) are shown as mean ± standard deviation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smfa.eval.schema import load_metrics
from smfa.report import mean_spread

COLUMNS = (  # (header, overall key; rates shown in %)
    ("leak photo ↓", "forget_leak_image"), ("leak name ↓", "forget_leak_text"),
    ("held-out phrasing leak ↓", "forget_leak_paraphrase"), ("unseen-photo leak ↓", "forget_leak_unseen_image"),
    ("retain mem. img ↑", "retain_image_memory"), ("retain mem. txt ↑", "retain_text_memory"),
    ("und. forget ↑", "forget_understanding"), ("und. retain ↑", "retain_understanding"),
    ("gen. VQA ↑", "general_vqa"),
)
RATIOS = (("retain mem. % of vanilla", "retain_memory"), ("und. % of vanilla", "image_understanding"),
          ("VQA % of vanilla", "general_vqa"))


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean, spread, _ = mean_spread(values)
    if mean is None:
        return "–"
    return f"{scale * mean:.{digits}f}" + ("" if spread is None else f" ± {scale * spread:.{digits}f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vanilla", action="append", default=[], help="the vanilla's eval dir(s) (one per seed, "
                   "in the same order as each label's runs) for the ratio columns")
    p.add_argument("runs", nargs="+", metavar="LABEL=EVAL_DIR")
    args = p.parse_args()
    groups: dict[str, list] = {}
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=EVAL_DIR, got {item!r}")
        groups.setdefault(label, []).append(load_metrics(Path(path)).overall)
    vanillas = [load_metrics(Path(v)).overall for v in args.vanilla]
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


if __name__ == "__main__":
    main()
