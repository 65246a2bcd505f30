"""One process of the 2-process test that a failure of the main process reaches the ranks waiting for it
(tests/test_distributed.py), launched by ``torch.distributed.run`` on the CPU (gloo): the main process
raises inside ``on_main_process``; every rank writes what it raised.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_rank_failure.py OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(out: str) -> None:
    from smfa.distributed import main_process_first, on_main_process
    from smfa.errors import ConfigError

    rank = int(os.environ["RANK"])
    order = Path(out) / "order.txt"
    with main_process_first():  # the main process appends first, then the other rank
        with order.open("a") as fh:
            fh.write(f"{rank}\n")
    assert on_main_process(lambda: Path(out).name) == Path(out).name  # every rank gets the main's value

    def fail() -> None:
        raise ConfigError("the main process could not write")

    try:
        on_main_process(fail)
        raised = None
    except Exception as exc:  # noqa: BLE001 - recorded for the test
        raised = f"{type(exc).__name__}: {exc}"
    (Path(out) / f"result-{rank}.json").write_text(json.dumps({"raised": raised}))


if __name__ == "__main__":
    main(sys.argv[1])
