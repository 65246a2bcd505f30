"""What the default (selective) recipe costs against the paper recipe: one deletion request of 18 people
answered with SMFA both ways, side by side (target, issue #25: default ≤ 2× paper, wall time).

Every side runs as a user runs it: `smfa forget` in its own process (imports and model loading included), with
OMP_NUM_THREADS = --threads; wall time and CPU time (user + sys of the child) are printed.

- paper recipe: `smfa forget --people <ids> --reference none` (the anchor alone);
- default recipe, cold: `smfa forget --people <ids>` (`--reference auto` = self-full: the vanilla labels the
  reference pool, then the MFA and RA train on it) with an empty cache;
- default recipe, warm: the same request again: the reference labels (and the retaining anchor, and the
  parent's answers) come from the cache, as for every request after the first to one deployed model.

The two default runs must write the same weights (sha256 printed): the cache changes what is recomputed, not
the method.
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
    args = p.parse_args()
    from smfa.models.digest import weight_hashes
    from smfa.bench import Bench

    bench_dir, vanilla = tiny_setup(args.workdir, args.steps)
    bench = Bench.load(bench_dir)
    people = ",".join(sorted(bench.forget_people("10")))
    work = Path(args.workdir) / "recipe-cost"
    cache = work / "cache"
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "SMFA_CACHE_DIR": str(cache),
           "TOKENIZERS_PARALLELISM": "false"}
    common = ["--bench", str(bench_dir), "--model", str(vanilla), "--people", people]
    sides = {
        "paper recipe: smfa forget --reference none": ["forget", *common, "--reference", "none"],
        "default recipe, cold cache: smfa forget": ["forget", *common],
        "default recipe, warm cache: smfa forget": ["forget", *common],
    }
    print(f"{len(people.split(','))} people, OMP_NUM_THREADS={args.threads}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for n, (label, argv) in enumerate(sides.items()):
        out = work / f"run{n}"
        # the paper recipe gets a cache of its own, so that the cold default run starts from an empty one
        side_env = {**env, "SMFA_CACHE_DIR": str(cache / ("paper" if n == 0 else "default"))}
        wall, cpu = _run([*argv, "--out", str(out)], side_env)
        digest = weight_hashes(out / "model")["model.safetensors"][:16]
        rows.append((label, wall, cpu, digest, _phases(out)))
        print(f"  {label}: {wall:.1f} s wall, {cpu:.1f} s CPU ({rows[-1][4]}); weights {digest}", flush=True)
    paper = rows[0]
    print()
    print("| run | wall s | CPU s | × paper (wall) | × paper (CPU) | weights sha256 |")
    print("|---|---|---|---|---|---|")
    for label, wall, cpu, digest, _ in rows:
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {wall / paper[1]:.2f} | {cpu / paper[2]:.2f} | {digest} |")
    cold, warm = rows[1], rows[2]
    print(f"\ndefault / paper recipe: cold {cold[1] / paper[1]:.2f}x, warm {warm[1] / paper[1]:.2f}x wall "
          f"({cold[2] / paper[2]:.2f}x, {warm[2] / paper[2]:.2f}x CPU); target <= 2x (cold): "
          f"{'met' if cold[1] <= 2 * paper[1] else 'missed'}; same weights cold and warm: "
          f"{'yes' if cold[3] == warm[3] else 'NO'}; load average now {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
