"""The margins of the test suite's floors across runs: how far each measured number stayed from its floor.

Run the floor tests with ``SMFA_FLOOR_LOG`` set, once per condition (thread count, load, machine), then:

    SMFA_FLOOR_LOG=/tmp/floors-1t.jsonl OMP_NUM_THREADS=1 python -m pytest -q -m slow
    SMFA_FLOOR_LOG=/tmp/floors-2t.jsonl python -m pytest -q -m slow
    python scripts/floor_margins.py /tmp/floors-1t.jsonl /tmp/floors-2t.jsonl

prints one row per floor: the bound, the value in each log, and the smallest margin (how much the value
could move before the test fails; negative = a failure in some run). Floors whose bound is computed from
another measurement (e.g. "0.5 x the vanilla's") show the bound of the first log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_log(path: Path) -> dict[tuple[str, str], dict]:
    rows: dict[tuple[str, str], dict] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[(row["test"], row["label"])] = row
        except (json.JSONDecodeError, KeyError) as exc:
            sys.exit(f"{path}: line {n} is not a floor record ({exc}); write logs with SMFA_FLOOR_LOG")
    return rows


def margin(row: dict) -> float:
    return row["value"] - row["bound"] if row["op"] == ">=" else row["bound"] - row["value"]


def table(paths: list[Path]) -> str:
    logs = [read_log(p) for p in paths]
    keys = sorted(set().union(*logs))
    head = "| test | floor | " + " | ".join(p.stem for p in paths) + " | smallest margin |"
    lines = [head, "|" + "---|" * (3 + len(paths))]
    for test, label in keys:
        present = [log.get((test, label)) for log in logs]
        first = next(r for r in present if r is not None)
        cells = ["–" if r is None else f"{r['value']:.3f}" for r in present]
        worst = min(margin(r) for r in present if r is not None)
        name = test.split("::", 1)[-1]
        lines.append(f"| {name} | {label} {first['op']} {first['bound']:.3f} | " + " | ".join(cells) + f" | {worst:+.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    missing = [a for a in sys.argv[1:] if not Path(a).is_file()]
    if missing:
        sys.exit(f"no such log: {missing[0]}")
    print(table([Path(a) for a in sys.argv[1:]]))
