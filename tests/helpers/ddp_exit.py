"""One process of the 2-process test that a rank leaves no process group for the interpreter to tear down
(tests/test_distributed.py), launched by ``torch.distributed.run`` on the CPU (gloo): every rank runs one
collective through smfa.distributed and leaves; an exit hook registered before smfa.distributed is imported
(exit hooks run last-registered first, so this one runs after any the library registers) writes, per rank,
whether the process group is still up and which gloo worker threads are still alive at that point — the last
moment before the interpreter starts finalizing.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_exit.py OUT
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path


def _live_thread_names() -> list[str]:
    tasks = Path("/proc/self/task")
    return sorted((task / "comm").read_text().strip() for task in tasks.iterdir())


def _probe(out: Path) -> None:
    import torch

    rank = int(os.environ["RANK"])
    gloo = [name for name in _live_thread_names() if name.startswith(("pt_gloo", "gloo"))]
    state = {"group_initialised": torch.distributed.is_initialized(), "gloo_threads": gloo}
    (out / f"result-{rank}.json").write_text(json.dumps(state))


def main(out: str) -> None:
    atexit.register(_probe, Path(out))
    from smfa.distributed import on_main_process

    assert on_main_process(lambda: "written") == "written"


if __name__ == "__main__":
    main(sys.argv[1])
