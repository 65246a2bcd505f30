"""Batched vs one-at-a-time evaluation on the tiny bench (target: batched ≥ 10× faster), measured side by
side in one run on the same questions."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, tiny_setup, timed  # noqa: E402


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--questions", type=int, default=256, help="questions to answer (a mix of every set)")
    args = p.parse_args()
    from smfa.bench import Bench
    from smfa.eval.generate import generate_answers
    from smfa.models.loading import load_model

    bench_dir, vanilla = tiny_setup(args.workdir, args.steps)
    bench = Bench.load(bench_dir)
    sets = bench.eval_sets("10", limit=max(1, args.questions // 17 + 1))
    rows = [r for rows in sets.values() for r in rows][: args.questions]
    loaded = load_model(vanilla)
    generate_answers(loaded, rows[:8], bench, batch_size=8, progress=False)  # warm-up
    t: dict[str, float] = {}
    with timed(f"batched (batch 64), {len(rows)} questions", t):
        batched = generate_answers(loaded, rows, bench, batch_size=64, progress=False)
    with timed(f"one at a time, {len(rows)} questions", t):
        single = generate_answers(loaded, rows, bench, batch_size=1, progress=False)
    a, b = t.values()
    same = sum(x == y for x, y in zip(batched, single)) / len(rows)
    print(f"speed-up batched vs one-at-a-time: {b / a:.1f}x (target >= 10x); identical answers: {100 * same:.1f} %")


if __name__ == "__main__":
    main()
