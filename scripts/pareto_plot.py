"""Forget leak vs retain memory, one point per evaluation (the selectivity trade-off; upper left is better).

    python scripts/pareto_plot.py --out plot.png LABEL=EVAL_DIR [LABEL=EVAL_DIR ...]

Leak = mean of the photo and name leak rates; retain memory = mean of retain image and text memory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smfa.eval.schema import load_metrics


def point(path: Path) -> tuple[float, float]:
    o = load_metrics(path).overall
    leaks = [v for v in (o.forget_leak_image, o.forget_leak_text) if v is not None]
    return 100 * sum(leaks) / len(leaks), 100 * (o.retain_memory or 0.0)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="forget 10 %: leak vs retained memory")
    p.add_argument("runs", nargs="+")
    args = p.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for item in args.runs:
        label, _, path = item.partition("=")
        x, y = point(Path(path))
        ax.scatter([x], [y], s=50)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("forget leak, mean of photo and name (%) ↓")
    ax.set_ylabel("retain memory, mean of image and text (%) ↑")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
