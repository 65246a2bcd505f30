"""Wall time and peak memory of each method's unlearning on the tiny bench (forget 10 %), side by side in
one run. Each method runs in its own process so that peak RSS is its own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, tiny_setup  # noqa: E402

CHILD = """
import json, resource, sys, time
from smfa.stages.unlearn import UnlearnConfig, unlearn
bench, vanilla, out, method = sys.argv[1:5]
t0 = time.perf_counter()
unlearn(UnlearnConfig(bench=bench, model=vanilla, out=out, method=method, forget="10", evaluate=False,
                      overwrite=True, progress=False, leak_target=None))
print(json.dumps({"wall_s": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--methods", default="smfa,idk,ga,ga_diff,kl_min,npo,mmunlearner,ties")
    args = p.parse_args()
    bench, vanilla = tiny_setup(args.workdir, args.steps)
    rows = []
    for method in args.methods.split(","):
        out = Path(args.workdir) / f"cost-{method}"
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", CHILD, str(bench), str(vanilla), str(out), method],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{method} failed")
        stats = json.loads(res.stdout.strip().splitlines()[-1])
        stats["process_s"] = time.perf_counter() - t0
        rows.append((method, stats))
        print(f"  {method}: {stats['wall_s']:.1f} s unlearning, peak RSS {stats['peak_rss_mb']:.0f} MB", flush=True)
    base = dict(rows)["smfa"]["wall_s"] if "smfa" in dict(rows) else rows[0][1]["wall_s"]
    print("\n| method | unlearning wall s | × smfa | peak RSS MB |\n|---|---|---|---|")
    for method, s in rows:
        print(f"| {method} | {s['wall_s']:.1f} | {s['wall_s'] / base:.2f} | {s['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
