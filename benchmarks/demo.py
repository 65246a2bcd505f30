"""`smfa demo` wall time cold (empty cache: bench + shipped vanilla and oracle + SMFA default, SMFA paper, IDK
+ report) and warm (second run, same cache: the reference labels are reused), side by side in one run
(target, #34: cold <= 180 s on 2 idle CPU cores). CPU seconds (user + sys of the child) are printed too:
on a shared machine they are what an idle one would take.
Run it in a fresh venv for the "fresh machine" figure: `pip install -e .` is not included in the times."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser  # noqa: E402


def main() -> None:
    args = parser(__doc__).parse_args()
    work = Path(args.workdir) / "demo-bench"
    cache = work / "cache"
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, "SMFA_CACHE_DIR": str(cache), "TQDM_DISABLE": "1"}
    times = {}
    for label in ("cold", "warm"):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "smfa.cli", "demo", "--out", str(work / label)], check=True, env=env)
        times[label] = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"  demo {label}: {times[label]:.0f} s wall, {cpu:.0f} s CPU, load average {os.getloadavg()[0]:.1f}",
              flush=True)
    print(f"cold {times['cold'] / 60:.1f} min (target <= 5), warm {times['warm'] / 60:.1f} min (target <= 3), "
          f"warm/cold = {times['warm'] / times['cold']:.2f}")


if __name__ == "__main__":
    main()
