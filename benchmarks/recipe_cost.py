"""What the default (selective) recipe costs against the paper recipe: deletion requests answered with SMFA both
ways, side by side in one run (target, issue #34: default ≤ 2× paper, wall time, warm and cold).

Every side runs as a user runs it: `smfa forget` in its own process (imports, model loading, the leak check and
the evaluation included), with OMP_NUM_THREADS = --threads; wall time and CPU time (user + sys of the child) are
printed. Two requests of 18 people each:

- **forget_10 people** (never in the reference pool);
- **reference-pool people** (their questions are in the pool the default recipe trains on: the request's people
  are removed from it after the cached labels are read, and the retaining anchor, which trains on the pool without
  them, is retrained).

For each: the paper recipe (`--reference none --no-verify`: the anchor alone, the recipe's own cost); the default recipe cold (an empty cache: the
vanilla labels its reference sample) and warm (the labels, and for the same request the retaining anchor, come from
the cache, as for every request after the first to one deployed model), with its leak check as a user runs it (a
stronger attempt, when the check asks for one, is part of its cost). A warm run of the same request must write
the same weights as its cold run (sha256 printed): the cache changes what is recomputed, not the method.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, tiny_setup  # noqa: E402


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of ``smfa argv`` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "smfa.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"smfa {' '.join(argv[:1])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _phases(run: Path) -> str:
    manifest = json.loads((run / "manifest.json").read_text())
    evaluation = json.loads((run / "eval" / "manifest.json").read_text())["wall_time_s"]
    audit = run / "audit.json"
    hit = json.loads(audit.read_text()).get("anchor_cache_hit") if audit.is_file() else False
    check = manifest.get("verification")
    verified = f", leak check {'passed' if check['passed'] else 'FAILED'} in {len(check['attempts'])} attempt(s)" if check else ""
    return f"train+merge {manifest['wall_time_s']:.1f} s, evaluation {evaluation:.1f} s" + (", RA cached" if hit else "") + verified


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run (default 2: the target's 2 cores)")
    p.add_argument("--people", type=int, default=18, help="people per request (default 18)")
    args = p.parse_args()
    from smfa.bench import Bench
    from smfa.models.digest import weight_hashes

    bench_dir, vanilla = tiny_setup(args.workdir, args.steps)
    bench = Bench.load(bench_dir)
    requests = {"forget_10 people": sorted(bench.forget_people("10"))[: args.people],
                "reference-pool people": sorted(bench.reference_people())[: args.people]}
    work = Path(args.workdir) / "recipe-cost"
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    print(f"{args.people} people a request, OMP_NUM_THREADS={args.threads}, load average {os.getloadavg()[0]:.1f}")
    sides = []
    for request, people in requests.items():
        common = ["forget", "--bench", str(bench_dir), "--model", str(vanilla), "--people", ",".join(people)]
        # each request's default runs start from an empty cache of their own; the paper recipe has its own too
        tag = request.split()[0]
        sides += [(request, "paper recipe (--reference none)", [*common, "--reference", "none", "--no-verify"], f"{tag}-paper"),
                  (request, "default, cold cache", common, f"{tag}-default"),
                  (request, "default, warm cache", common, f"{tag}-default")]
    rows = []
    for n, (request, label, argv, cache) in enumerate(sides):
        out = work / f"run{n}"
        wall, cpu = _run([*argv, "--out", str(out)], {**env, "SMFA_CACHE_DIR": str(work / "cache" / cache)})
        digest = weight_hashes(out / "model")["model.safetensors"][:16]
        rows.append((request, label, wall, cpu, digest, _phases(out)))
        print(f"  {request}, {label}: {wall:.1f} s wall, {cpu:.1f} s CPU ({rows[-1][5]}); weights {digest}", flush=True)
    print()
    print("| request | run | wall s | CPU s | × paper (wall) | × paper (CPU) | weights sha256 |")
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for i in range(0, len(rows), 3):
        paper, cold, warm = rows[i: i + 3]
        for request, label, wall, cpu, digest, _ in (paper, cold, warm):
            print(f"| {request} | {label} | {wall:.1f} | {cpu:.1f} | {wall / paper[2]:.2f} | {cpu / paper[3]:.2f} | {digest} |")
        verdicts.append(f"{paper[0]}: cold {cold[2] / paper[2]:.2f}x, warm {warm[2] / paper[2]:.2f}x wall "
                        f"({cold[3] / paper[3]:.2f}x, {warm[3] / paper[3]:.2f}x CPU), same weights cold and warm: "
                        f"{'yes' if cold[4] == warm[4] else 'NO'}")
    worst = max(r[2] / rows[i - i % 3][2] for i, r in enumerate(rows))
    print(f"\ndefault / paper recipe: {'; '.join(verdicts)}; target <= 2x wall: {'met' if worst <= 2 else 'missed'} "
          f"(worst {worst:.2f}x); load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
