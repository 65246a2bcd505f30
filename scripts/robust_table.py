"""The #27 lever table: one row per run (an `smfa unlearn ... --attacks relearn,mia` run directory or an `smfa
eval` directory), the columns the robust-forgetting goal reads, retain figures also as % of a vanilla's.

    python scripts/robust_table.py --vanilla VANILLA_EVAL LABEL=RUN [LABEL=RUN ...] [--plot relearn.png]

Leak and memory in %, from `eval/metrics.json` (or `metrics.json` of an eval directory): photo / name leak,
held-out phrasing leak, unseen-photo leak; retain memory (image / text) on training phrasings, on held-out
phrasings and on unseen photos; understanding; general VQA; the relearn attack (leak of the held-out facts
before → after; with `relearn_sweep`, its worst cell, raw and normalised by the attacked model's retain accuracy);
the loss / Min-K% membership-inference AUCs on the trained rows and on held-out variants, with PrivLeak (MUSE's and
OpenUnlearning's: Min-K% at k 0.4, on 1 − AUC; 0 = as the oracle, −100 = remembered) when the run had an oracle.

Two columns are smfa's own and are named for what they compute, not after OpenUnlearning's TOFU metrics of similar
name: "answer-NLL KS" is the p-value of a KS test between the run's and the oracle's per-question answer NLL on the
forget questions (TOFU's "forget quality" tests truth ratios), and "ROUGE-L F (stemmed, MLLMU-Bench)" is the
F-measure with Porter stemming as MLLMU-Bench scores its generation task (TOFU's ROUGE is recall, unstemmed).
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
    sweep = attacks.get("relearn_sweep") or {}
    gold = m.get("gold") or {}

    def rouge(group: str) -> float | None:
        values = [sets[f"{group}/{kind}"]["rouge_l"] for kind in ("image_memory", "text_memory")
                  if sets.get(f"{group}/{kind}", {}).get("rouge_l") is not None]
        return 100 * sum(values) / len(values) if values else None

    def pct(entry: dict, key: str) -> float | None:
        return None if entry.get(key) is None else 100 * entry[key]

    def cell(entry: dict, prefix: str = "") -> str | None:
        lr, steps = entry.get(f"{prefix}lr"), entry.get(f"{prefix}steps")
        if lr is None or steps is None:
            return None
        return f"lr {lr:g}, {steps} steps" + (", repaired" if entry.get(f"{prefix}repaired") else "")

    new_privleak = mia.get("min_k") == 0.4  # MUSE's orientation (#37); earlier runs' privleak was the other one
    return {
        "leak photo": leak("forget/image_memory"), "leak name": leak("forget/text_memory"),
        "leak held-out phr.": 100 * overall["forget_leak_paraphrase"] if overall.get("forget_leak_paraphrase") is not None else None,
        "leak unseen photo": leak("forget/image_memory/unseen_image"),
        "retain photo": acc("retain/image_memory"), "retain name": acc("retain/text_memory"),
        "retain photo held-out": acc("retain/image_memory/paraphrase"), "retain name held-out": acc("retain/text_memory/paraphrase"),
        "retain unseen photo": acc("retain/image_memory/unseen_image"),
        "understanding": 100 * overall["retain_understanding"] if overall.get("retain_understanding") is not None else None,
        "general VQA": 100 * overall["general_vqa"] if overall.get("general_vqa") is not None else None,
        "answer-NLL KS": gold.get("forget_quality"),
        "ROUGE-L forget": rouge("forget"), "ROUGE-L retain": rouge("retain"),
        "relearn before": pct(relearn, "leak_before"), "relearn after": pct(relearn, "leak_after"),
        "sweep worst": pct(sweep, "leak_after"), "sweep worst cell": cell(sweep),
        "sweep worst normalised": pct(sweep, "leak_after_normalised"), "sweep normalised cell": cell(sweep, "normalised_"),
        "MIA AUC": mia.get("auc"), "Min-K% AUC": mia.get("auc_min_k") if new_privleak else None,
        "PrivLeak": mia.get("privleak") if new_privleak else None,
        "MIA AUC paraphrase": (attacks.get("mia_paraphrase") or {}).get("auc"),
        "MIA AUC unseen photo": (attacks.get("mia_unseen_image") or {}).get("auc"),
        **{f"quantize {scheme}": 100 * attacks[f"quantize_{scheme}"]["leak"] if f"quantize_{scheme}" in attacks else None
           for scheme in ("8bit", "4bit", "nf4")},
    }


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


COLUMNS = ["leak photo / name", "held-out phr. leak", "unseen photo leak", "retain photo / name",
           "retain held-out photo / name", "retain unseen photo", "underst.", "general VQA", "answer-NLL KS p",
           "ROUGE-L F (stemmed, MLLMU-Bench) forget / retain", "relearn before → after",
           "relearn_sweep worst (cell)", "relearn_sweep worst normalised by retain acc. (cell)",
           "MIA AUC loss / Min-K% k 0.4 (PrivLeak, MUSE)", "MIA AUC held-out phr. / unseen photo",
           "quantized leak 8-bit / 4-bit / NF4"]


def table(rows: list[tuple[str, dict]], vanilla: dict | None) -> str:
    out = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]

    def rel(f: dict, key: str) -> str:
        value = f[key]
        if vanilla is None or value is None or not vanilla.get(key):
            return fmt(value)
        return f"{fmt(value)} ({100 * value / vanilla[key]:.0f} %)"

    def with_cell(f: dict, key: str, cell: str) -> str:
        return fmt(f[key]) + (f" ({f[cell]})" if f[cell] else "")

    for label, f in rows:
        ks = f["answer-NLL KS"]
        out.append("| " + " | ".join([
            label, f"{fmt(f['leak photo'])} / {fmt(f['leak name'])}", fmt(f["leak held-out phr."], 1), fmt(f["leak unseen photo"]),
            f"{rel(f, 'retain photo')} / {rel(f, 'retain name')}", f"{rel(f, 'retain photo held-out')} / {rel(f, 'retain name held-out')}",
            rel(f, "retain unseen photo"), rel(f, "understanding"), rel(f, "general VQA"),
            "–" if ks is None else f"{ks:.2g}", f"{fmt(f['ROUGE-L forget'])} / {fmt(f['ROUGE-L retain'])}",
            f"{fmt(f['relearn before'])} → {fmt(f['relearn after'])}",
            with_cell(f, "sweep worst", "sweep worst cell"), with_cell(f, "sweep worst normalised", "sweep normalised cell"),
            f"{fmt(f['MIA AUC'], 2)} / {fmt(f['Min-K% AUC'], 2)}" + (f" ({f['PrivLeak']:+.0f} %)" if f["PrivLeak"] is not None else ""),
            f"{fmt(f['MIA AUC paraphrase'], 2)} / {fmt(f['MIA AUC unseen photo'], 2)}",
            " / ".join(fmt(f[f"quantize {s}"]) for s in ("8bit", "4bit", "nf4")),
        ]) + " |")
    return "\n".join(out)


def plot(rows: list[tuple[str, dict]], vanilla: dict | None, dest: Path) -> None:
    """Relearn recovery against retain memory (mean of photo and name, held-out phrasings beside training ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def after(f: dict) -> float | None:  # the sweep's worst cell where the run has one, else the single run
        return f["sweep worst"] if f["sweep worst"] is not None else f["relearn after"]

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, f in rows:
        if after(f) is None:
            continue
        trained = (f["retain photo"] + f["retain name"]) / 2
        held = (f["retain photo held-out"] + f["retain name held-out"]) / 2
        ax.scatter([trained], [after(f)], marker="o")
        ax.scatter([held], [after(f)], marker="x", color=ax.collections[-1].get_facecolor()[0])
        ax.annotate(label, (trained, after(f)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if vanilla is not None and after(vanilla) is not None:
        ax.scatter([(vanilla["retain photo"] + vanilla["retain name"]) / 2], [after(vanilla)], marker="*", s=120, color="k")
        ax.annotate("vanilla", ((vanilla["retain photo"] + vanilla["retain name"]) / 2, after(vanilla)), fontsize=7)
    ax.set_xlabel("retain memory, % (o training phrasings, x held-out phrasings)")
    ax.set_ylabel("relearn: leak of held-out facts after the attack (sweep: worst cell), %")
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
