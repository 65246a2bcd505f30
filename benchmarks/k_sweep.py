"""A 7-value SMFA k sweep (re-sculpt + evaluate, no retraining) vs one `smfa unlearn --method smfa` run
(train MFA + RA, sculpt, merge, evaluate), side by side in one run (target: sweep < 2× one unlearn)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, tiny_setup, timed  # noqa: E402


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--eval-limit", type=int, default=200, help="questions per evaluation set (both sides)")
    args = p.parse_args()
    from smfa.stages.sweep import SweepConfig, sculpt_sweep
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    bench, vanilla = tiny_setup(args.workdir, args.steps)
    run = Path(args.workdir) / "k_sweep-smfa"
    shutil.rmtree(run, ignore_errors=True)
    t: dict[str, float] = {}
    with timed("one smfa unlearn run (train + sculpt + merge + eval)", t):
        unlearn(UnlearnConfig(bench=str(bench), model=str(vanilla), out=str(run), method="smfa", forget="10",
                              eval_limit=args.eval_limit, progress=False, leak_target=None))
    ks = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
    with timed(f"k sweep over {len(ks)} values (re-sculpt + merge + eval each)", t):
        sculpt_sweep(SweepConfig(run=str(run), ks=ks, limit=args.eval_limit, overwrite=True, progress=False))
    one, sweep = t.values()
    print(f"sweep / one unlearn = {sweep / one:.2f}x (target < 2x); per k: {sweep / len(ks):.1f} s")


if __name__ == "__main__":
    main()
