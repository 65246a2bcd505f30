"""One process of the 2-process test of a rank-aware ``smfa compare`` (tests/test_distributed.py), launched
by ``torch.distributed.run`` on the CPU (gloo): runs a small comparison (IDK and SMFA, which share one MFA
through the comparison's shared directory) and writes, per rank, what the test checks — how many
evaluations this rank ran, how many times it stored a shared MFA, and a digest of the final tables as this
rank reads them once ``compare`` has returned.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_compare.py BENCH VANILLA OUT
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch


def main(bench_dir: str, vanilla_dir: str, out: str) -> None:
    import smfa.eval.pipeline as pipeline
    import smfa.rundir as rundir
    from smfa.stages.compare import CompareConfig, compare

    rank = int(os.environ["RANK"])
    calls = {"evaluations": [], "shared_writes": 0}
    evaluate_loaded, atomic_run_dir = pipeline.evaluate_loaded, rundir.atomic_run_dir

    def counting_evaluate_loaded(loaded, bench, cfg, out_dir, *args, **kwargs):
        cell = Path(out_dir).parent if Path(out_dir).name == "eval" else Path(out_dir)
        calls["evaluations"].append(cell.name.lstrip(".").split(".partial-")[0])  # staged as .NAME.partial-XXXX
        return evaluate_loaded(loaded, bench, cfg, out_dir, *args, **kwargs)

    def counting_atomic_run_dir(path, *args, **kwargs):
        calls["shared_writes"] += Path(path).parent.name == ".shared"
        return atomic_run_dir(path, *args, **kwargs)

    pipeline.evaluate_loaded, rundir.atomic_run_dir = counting_evaluate_loaded, counting_atomic_run_dir
    comparison = Path(out) / "comparison"
    cfg = CompareConfig(bench=bench_dir, model=vanilla_dir, out=str(comparison), methods=("idk", "smfa"),
                        forget=("10",), reference="none", eval_limit=2, progress=False,
                        params={"idk": {"max_steps": 2}, "smfa": {"max_steps": 2}})
    compare(cfg)
    tables = json.loads((comparison / "tables.json").read_text())
    seen = (comparison / "tables.json").read_bytes() + b"".join(
        Path(p).read_bytes() for paths in tables.values() for k, p in sorted(paths.items()) if k in ("markdown", "json"))
    smfa_manifest = json.loads((comparison / "cells" / "smfa-f10" / "manifest.json").read_text())
    (Path(out) / f"result-{rank}.json").write_text(json.dumps({
        "world_size": int(os.environ["WORLD_SIZE"]), "evaluations": calls["evaluations"],
        "shared_writes": calls["shared_writes"], "tables_digest": hashlib.sha256(seen).hexdigest(),
        "smfa_reused_mfa_s": smfa_manifest["reused_adapter_train_s"],
        "entries": sorted(p.name for p in (comparison / "cells").iterdir()),
    }))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:4])
