"""What an exact deletion request costs on a sliced vanilla (SISA, `smfa finetune --slices S`) against a full
retrain, and what slicing costs the vanilla's quality — side by side in one run (issue #37: mean exact request
≤ 0.3× a full retrain, vanilla quality within 2 points of the unsliced one).

Setting: the micro bench (60 people, the test suite's; tests/conftest.py) and a reduced recipe that every side
shares — `--steps` (default 1000, lr 2e-3, batch 32, seed 0: the shipped micro oracle's recipe) — because the
tiny preset's vanilla takes ~25 min at 6,000 steps on one thread here. Everything runs in this process on
OMP_NUM_THREADS threads (run it with 1).

1. The vanillas: unsliced, and sliced with S = 4 and 8 (the same total steps, spread over the stages in
   proportion to their rows: `smfa.stages.finetune.slice_steps`). Quality: retain memory, retain understanding
   and general VQA (`smfa eval`, forget split 10, --limit questions a set), and retain memory by slice.
2. Requests: seeded random requests of 1–3 known people. The cost in optimiser steps of a request is what
   `smfa forget --exact` retrains (the stages from the earliest slice holding one of its people), so its mean is
   computed over `--plan-requests` of them from the layout the run recorded; the first `--run-requests` are
   answered for real (`smfa.stages.exact.exact`) on every sliced vanilla, wall time measured, against the first
   request's full retrain on the unsliced vanilla (its steps, hence its work, are the same for every request).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser  # noqa: E402


def _requests(people: list[str], n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [sorted(rng.sample(people, rng.randint(1, 3))) for _ in range(n)]


def _quality(bench: Path, run: Path, out: Path, limit: int, layout: list[list[str]] | None) -> dict[str, float]:
    from smfa.eval.pipeline import EvalConfig, evaluate
    from smfa.eval.schema import load_metrics

    if not (out / "metrics.json").is_file():
        evaluate(EvalConfig(bench=str(bench), model=str(run), out=str(out), forget="10", limit=limit, progress=False))
    overall = load_metrics(out).overall
    q = {k: getattr(overall, k) for k in ("retain_memory", "retain_understanding", "general_vqa")}
    if layout:  # retain memory (train phrasing, photo and name) of the people of each slice
        from smfa.eval.text import answer_is_correct

        gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines() if line.strip()]
        for i, group in enumerate(layout):
            rows = [g for g in gens if g.get("person_id") in set(group) and g["set"] in ("retain/image_memory",
                                                                                           "retain/text_memory")]
            q[f"slice {i + 1} memory"] = (sum(answer_is_correct(g["answer"], g["fact"]) for g in rows) / len(rows)
                                          if rows else None)
    return q


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(steps=1000, workdir="/work/runs/exact")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--slices", default="4,8")
    p.add_argument("--plan-requests", type=int, default=1000, dest="plan_requests")
    p.add_argument("--run-requests", type=int, default=2, dest="run_requests")
    p.add_argument("--limit", type=int, default=200, help="questions per evaluation set (default 200)")
    args = p.parse_args()

    from smfa.bench import Bench, build_bench, preset_config
    from smfa.pretrained import RECIPES
    from smfa.stages.exact import ExactConfig, exact
    from smfa.stages.finetune import FinetuneConfig, finetune, slice_layout, slice_steps

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"exact_cost: commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}, steps {args.steps}, lr {args.lr}", flush=True)
    bench_dir = work / "bench-micro"
    if not (bench_dir / "bench.json").is_file():
        micro = {k: v for k, v in RECIPES["micro-seed0"]["bench"].items() if k not in ("preset", "seed")}
        build_bench(preset_config("tiny", seed=0, **micro), bench_dir, overwrite=True, progress=False)
    bench = Bench.load(bench_dir)
    people = sorted(bench.known_people())
    counts = [1] + [int(s) for s in args.slices.split(",")]
    requests = _requests(people, args.plan_requests, seed=0)

    results: dict[str, dict] = {}
    for s in counts:
        name = "unsliced" if s == 1 else f"S={s}"
        run = work / f"vanilla-s{s}"
        t0 = time.perf_counter()
        if not (run / "manifest.json").is_file():
            finetune(FinetuneConfig(bench=str(bench_dir), out=str(run), steps=args.steps, lr=args.lr, slices=s,
                                    pretrained=False, overwrite=True, progress=False))
        train_s = time.perf_counter() - t0
        manifest = json.loads((run / "manifest.json").read_text())
        layout = (manifest.get("slices") or {}).get("people")
        if s == 1:
            plan = [1.0] * len(requests)
        else:  # the stages an exact request retrains, from the recorded layout (smfa.stages.exact._slice_start)
            check = slice_layout(bench, s, 0)
            assert [list(g) for g in check.people] == layout
            steps = manifest["slices"]["steps"]
            assert steps == slice_steps(manifest["slices"]["rows"], args.steps)
            where = check.person_slice
            plan = [sum(steps[min(where[x] for x in r):]) / args.steps for r in requests]
        print(f"{name}: vanilla trained in {train_s:.0f} s; planned mean exact cost {sum(plan) / len(plan):.3f} of "
              f"the steps over {len(plan)} requests", flush=True)
        quality = _quality(bench_dir, run, work / f"eval-s{s}", args.limit, layout)
        print(f"{name}: quality {json.dumps({k: None if v is None else round(v, 4) for k, v in quality.items()})}",
              flush=True)
        ran = []
        # a full retrain trains the same steps whatever the request: the first request measures it
        for i, req in enumerate(requests[:1 if s == 1 else args.run_requests]):
            out = work / f"exact-s{s}-r{i}"
            if not (out / "manifest.json").is_file():
                exact(ExactConfig(model=str(run), people=",".join(req), out=str(out), overwrite=True, progress=False))
            info = json.loads((out / "manifest.json").read_text())["exact"]
            ran.append({"people": req, "start_slice": info["start_slice"], "steps": info["steps_trained"],
                        "wall_s": info["wall_time_s"]})
            print(f"{name}: request {req}: from slice {info['start_slice']}, {info['steps_trained']} steps, "
                  f"{info['wall_time_s']:.0f} s", flush=True)
        results[name] = {"train_s": train_s, "plan_mean": sum(plan) / len(plan), "quality": quality, "ran": ran}

    full = results["unsliced"]
    full_wall = sum(r["wall_s"] for r in full["ran"]) / len(full["ran"])
    print("\n| vanilla | mean exact cost (steps, over %d requests) | run requests: steps / full | wall / full retrain "
          "| retain memory | retain understanding | general VQA |" % len(requests))
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        steps_ratio = sum(x["steps"] for x in r["ran"]) / (args.steps * len(r["ran"]))
        wall_ratio = sum(x["wall_s"] for x in r["ran"]) / len(r["ran"]) / full_wall
        q = r["quality"]
        print(f"| {name} | {r['plan_mean']:.3f} | {steps_ratio:.3f} | {wall_ratio:.3f} | "
              f"{100 * q['retain_memory']:.1f} | {100 * q['retain_understanding']:.1f} | {100 * q['general_vqa']:.1f} |")
    (work / "exact_cost.json").write_text(json.dumps({"commit": commit, "steps": args.steps, "lr": args.lr,
                                                       "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
