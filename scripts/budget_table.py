"""The reference-budget table (#34 decision 2): SMFA runs of one forget split, each read against the vanilla's
evaluation on the same questions, with the training cost (optimiser steps from the train logs, wall time).

    python scripts/budget_table.py VANILLA_EVAL_DIR LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Columns: leak by photo / by name / in held-out phrasings / on unseen photos; retain memory (photo, name) on training
phrasings, held-out phrasings and unseen photos as % of the vanilla's; understanding (mean of forget and retain) and
general VQA as % of the vanilla's; MFA and RA optimiser steps; train+merge wall time.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from smfa.eval.metrics import compute_overall
from smfa.eval.schema import load_metrics

# Overall keys (smfa.eval.metrics) of retain memory, each read as a share of the vanilla's.
RETAIN_KEYS = {"photo": "retain_image_memory", "name": "retain_text_memory",
               "photo held-out phr.": "retain_image_memory_paraphrase",
               "name held-out phr.": "retain_text_memory_paraphrase", "unseen photo": "retain_image_memory_unseen_image"}


def _overall(eval_dir: Path) -> dict:
    """The run's aggregates recomputed from its stored per-set metrics (an older metrics.json gets the ones added
    since), as a dict of Overall keys."""
    m = load_metrics(eval_dir)
    return asdict(compute_overall(m.sets, m.target))


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _steps(run: Path, tag: str) -> str:
    log = run / "train_logs" / f"{tag}.jsonl"
    if not log.is_file():
        return "–"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return str(max((int(r.get("step", 0)) for r in rows), default=0))


def row(label: str, run: Path, vanilla: dict) -> str:
    o = _overall(run / "eval")
    manifest = json.loads((run / "manifest.json").read_text())
    leak = [o["forget_leak_image"], o["forget_leak_text"], o["forget_leak_paraphrase"], o["forget_leak_unseen_image"]]
    base = vanilla["overall"]
    kept = [o[k] / base[k] if o.get(k) is not None and base.get(k) else None for k in RETAIN_KEYS.values()]
    und = o["image_understanding"] / vanilla["overall"]["image_understanding"]
    vqa = o["general_vqa"] / vanilla["overall"]["general_vqa"]
    cells = [label, *(_pct(x) for x in leak), *(_pct(x) for x in kept), _pct(und), _pct(vqa),
             _steps(run, "forget"), _steps(run, "anchor"), f"{manifest['wall_time_s']:.0f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> None:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        sys.exit(__doc__)
    vanilla = {"overall": _overall(Path(argv[0]))}
    print("| run | leak photo | leak name | leak held-out phr. | leak unseen photo | " + " | ".join(f"retain {k} % van." for k in RETAIN_KEYS)
          + " | und. % van. | gen. VQA % van. | MFA steps | RA steps | train+merge s |")
    print("|" + "---|" * 15)
    for arg in argv[1:]:
        label, run = arg.split("=", 1)
        if (Path(run) / "eval" / "metrics.json").is_file():
            print(row(label, Path(run), vanilla))


if __name__ == "__main__":
    main(sys.argv[1:])
