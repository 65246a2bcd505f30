"""The #27 lever table: one row per run (an `smfa unlearn ... --attacks relearn,mia` run directory or an `smfa
eval` directory), the columns the robust-forgetting goal reads, retain figures also as % of a vanilla's.

    python scripts/robust_table.py --vanilla VANILLA_EVAL LABEL=RUN [LABEL=RUN ...] [--plot relearn.png]

Leak and memory in %, from `eval/metrics.json` (or `metrics.json` of an eval directory): photo / name leak,
held-out phrasing leak, unseen-photo leak; retain memory (image / text) on training phrasings, on held-out
phrasings and on unseen photos; understanding; general VQA; the relearn attack (leak of the held-out facts
before → after) and the loss / Min-K% membership-inference AUCs (with PrivLeak when the run had an oracle).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_metrics(path: Path) -> dict:
    for candidate in (path / "eval" / "metrics.json", path / "metrics.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise SystemExit(f"robust_table: {path} has no eval/metrics.json or metrics.json; pass an unlearn run or an eval directory")


def figures(m: dict) -> dict[str, float | None]:
    """The goal's figures of one evaluation, in % (AUCs as they are)."""
    sets, overall, attacks = m["sets"], m["overall"], m.get("attacks") or {}

    def acc(name: str) -> float | None:
        s = sets.get(name)
        return None if s is None or s.get("accuracy") is None else 100 * s["accuracy"]

    def leak(name: str) -> float | None:
        s = sets.get(name)
        return None if s is None or s.get("leak_rate") is None else 100 * s["leak_rate"]

    relearn, mia = attacks.get("relearn") or {}, attacks.get("mia") or {}
    return {
        "leak photo": leak("forget/image_memory"), "leak name": leak("forget/text_memory"),
        "leak held-out phr.": 100 * overall["forget_leak_paraphrase"] if overall.get("forget_leak_paraphrase") is not None else None,
        "leak unseen photo": leak("forget/image_memory/unseen_image"),
        "retain photo": acc("retain/image_memory"), "retain name": acc("retain/text_memory"),
        "retain photo held-out": acc("retain/image_memory/paraphrase"), "retain name held-out": acc("retain/text_memory/paraphrase"),
        "retain unseen photo": acc("retain/image_memory/unseen_image"),
        "understanding": 100 * overall["retain_understanding"] if overall.get("retain_understanding") is not None else None,
        "general VQA": 100 * overall["general_vqa"] if overall.get("general_vqa") is not None else None,
        "relearn before": 100 * relearn["leak_before"] if "leak_before" in relearn else None,
        "relearn after": 100 * relearn["leak_after"] if "leak_after" in relearn else None,
        "MIA AUC": mia.get("auc"), "Min-K% AUC": mia.get("auc_min_k"), "PrivLeak": mia.get("privleak"),
        **{f"quantize {scheme}": 100 * attacks[f"quantize_{scheme}"]["leak"] if f"quantize_{scheme}" in attacks else None
           for scheme in ("8bit", "4bit", "nf4")},
    }


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[tuple[str, dict]], vanilla: dict | None) -> str:
    cols = ["leak photo / name", "held-out phr. leak", "unseen photo leak", "retain photo / name",
            "retain held-out photo / name", "retain unseen photo", "underst.", "general VQA", "relearn before → after",
            "MIA / Min-K% AUC", "quantized leak 8-bit / 4-bit / NF4"]
    out = ["| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def rel(f: dict, key: str) -> str:
        value = f[key]
        if vanilla is None or value is None or not vanilla.get(key):
            return fmt(value)
        return f"{fmt(value)} ({100 * value / vanilla[key]:.0f} %)"

    for label, f in rows:
        out.append("| " + " | ".join([
            label, f"{fmt(f['leak photo'])} / {fmt(f['leak name'])}", fmt(f["leak held-out phr."], 1), fmt(f["leak unseen photo"]),
            f"{rel(f, 'retain photo')} / {rel(f, 'retain name')}", f"{rel(f, 'retain photo held-out')} / {rel(f, 'retain name held-out')}",
            rel(f, "retain unseen photo"), rel(f, "understanding"), rel(f, "general VQA"),
            f"{fmt(f['relearn before'])} → {fmt(f['relearn after'])}",
            f"{fmt(f['MIA AUC'], 2)} / {fmt(f['Min-K% AUC'], 2)}" + (f" (PrivLeak {f['PrivLeak']:+.0f} %)" if f["PrivLeak"] is not None else ""),
            " / ".join(fmt(f[f"quantize {s}"]) for s in ("8bit", "4bit", "nf4")),
        ]) + " |")
    return "\n".join(out)


def plot(rows: list[tuple[str, dict]], vanilla: dict | None, dest: Path) -> None:
    """Relearn recovery against retain memory (mean of photo and name, held-out phrasings beside training ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, f in rows:
        if f["relearn after"] is None:
            continue
        trained = (f["retain photo"] + f["retain name"]) / 2
        held = (f["retain photo held-out"] + f["retain name held-out"]) / 2
        ax.scatter([trained], [f["relearn after"]], marker="o")
        ax.scatter([held], [f["relearn after"]], marker="x", color=ax.collections[-1].get_facecolor()[0])
        ax.annotate(label, (trained, f["relearn after"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if vanilla is not None and vanilla["relearn after"] is not None:
        ax.scatter([(vanilla["retain photo"] + vanilla["retain name"]) / 2], [vanilla["relearn after"]], marker="*", s=120, color="k")
        ax.annotate("vanilla", ((vanilla["retain photo"] + vanilla["retain name"]) / 2, vanilla["relearn after"]), fontsize=7)
    ax.set_xlabel("retain memory, % (o training phrasings, x held-out phrasings)")
    ax.set_ylabel("relearn: leak of held-out facts after 20 steps, %")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dest, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN")
    parser.add_argument("--vanilla", help="the vanilla's eval directory (retain figures also as % of it)")
    parser.add_argument("--plot", help="write relearn-vs-retain to this PNG")
    args = parser.parse_args(argv)
    rows = []
    for spec in args.runs:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = Path(spec).name, spec
        rows.append((label, figures(load_metrics(Path(path)))))
    vanilla = figures(load_metrics(Path(args.vanilla))) if args.vanilla else None
    if vanilla is not None:
        rows.insert(0, ("vanilla", vanilla))
    print(table(rows, vanilla))
    if args.plot:
        plot(rows[1:] if vanilla is not None else rows, vanilla, Path(args.plot))


if __name__ == "__main__":
    sys.exit(main())
