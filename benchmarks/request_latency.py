"""One deletion request of 18 people answered with SMFA — training, merge, the evaluation of those people
(training phrasing, paraphrase, unseen photo) and of retain memory at limit 100, the audit record — timed
side by side with today's `smfa unlearn` of the same request (target: the request in ≤ 30 s on 2 cores).

Every side runs as a user runs it: `smfa ...` in its own process (imports and model loading included), with
OMP_NUM_THREADS = --threads; wall time and CPU time (user + sys of the child) are printed.

- today: `smfa unlearn --method smfa --forget 10` (forget_10 = the same 18 people): train, merge, evaluate
  every set at limit 200;
- request, cold: `smfa forget --people <the 18 ids>` with an empty request cache: trains the retaining anchor
  and asks the parent its retain questions;
- request, warm: the same request again: the retaining anchor and the parent's answers come from the cache,
  as for every request after the first to one deployed model.

The three must write the same weights (sha256 printed): the request path changes what is evaluated and what
is reused, not the method.
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
    return f"train+merge {manifest['wall_time_s']:.1f} s, evaluation {evaluation:.1f} s" + (", RA cached" if hit else "")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run (default 2: the target's 2 cores)")
    p.add_argument("--baseline-src", type=Path, default=None,
                   help="also run both requests with the smfa package found in this src/ folder (e.g. a worktree of an "
                        "earlier commit), side by side, to measure what a code change bought")
    args = p.parse_args()
    from smfa.audit import weight_hashes
    from smfa.bench import Bench

    bench_dir, vanilla = tiny_setup(args.workdir, args.steps)
    bench = Bench.load(bench_dir)
    people = ",".join(sorted(bench.forget_people("10")))
    work = Path(args.workdir) / "request-latency"
    cache = work / "cache"
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "SMFA_CACHE_DIR": str(cache),
           "TOKENIZERS_PARALLELISM": "false"}
    common = ["--bench", str(bench_dir), "--model", str(vanilla)]
    sides = {
        "today: smfa unlearn --forget 10": ["unlearn", "--method", "smfa", *common, "--forget", "10"],
        "request, cold cache: smfa forget": ["forget", *common, "--people", people],
        "request, warm cache: smfa forget": ["forget", *common, "--people", people],
    }
    print(f"{len(people.split(','))} people, OMP_NUM_THREADS={args.threads}, load average {os.getloadavg()[0]:.1f}")
    envs = {label: env for label in sides}
    if args.baseline_src is not None:
        if not (args.baseline_src / "smfa" / "cli.py").is_file():
            sys.exit(f"--baseline-src {args.baseline_src}: no smfa package there (give the src/ folder of a checkout)")
        base_env = {**env, "PYTHONPATH": str(args.baseline_src.resolve())}
        for label in ("request, cold cache: smfa forget", "request, warm cache: smfa forget"):
            sides[f"baseline code: {label.removeprefix('request, ')}"] = sides[label]
            envs[f"baseline code: {label.removeprefix('request, ')}"] = base_env
    rows = []
    for n, (label, argv) in enumerate(sides.items()):
        out = work / f"run{n}"
        # today's run gets a cache of its own, so that the cold request starts from an empty one; so does the
        # baseline code's pair of requests
        name = "today" if n == 0 else "baseline" if label.startswith("baseline") else "request"
        side_env = {**envs[label], "SMFA_CACHE_DIR": str(cache / name)}
        wall, cpu = _run([*argv, "--out", str(out)], side_env)
        digest = weight_hashes(out / "model")["model.safetensors"][:16]
        rows.append((label, wall, cpu, digest, _phases(out)))
        print(f"  {label}: {wall:.1f} s wall, {cpu:.1f} s CPU ({rows[-1][4]}); weights {digest}", flush=True)
    today = rows[0]
    print()
    print("| run | wall s | CPU s | × today (wall) | weights sha256 |")
    print("|---|---|---|---|---|")
    for label, wall, cpu, digest, _ in rows:
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {wall / today[1]:.2f} | {digest} |")
    request = [r for r in rows if not r[0].startswith("baseline")]
    same = len({r[3] for r in request}) == 1
    warm_row = request[-1]
    warm = warm_row[1]
    if args.baseline_src is not None:
        base = rows[-1]
        print(f"\nwarm request, this code / baseline code ({args.baseline_src}): {warm / base[1]:.2f}x wall, "
              f"{warm_row[2] / base[2]:.2f}x CPU; same weights as the baseline code: {'yes' if base[3] == warm_row[3] else 'no'}")
    print(f"\nrequest (warm) / today: {warm / today[1]:.2f}x wall, {warm_row[2] / today[2]:.2f}x CPU; "
          f"target <= 30 s: {'met' if warm <= 30 else 'missed'} ({warm:.1f} s); same weights: {'yes' if same else 'NO'}; "
          f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
