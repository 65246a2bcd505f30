"""Runs one smfa command (``python _rehearsal_probe.py COPIES_FILE VOCAB HIDDEN -- smfa-args...``) while a
thread counts how many full-size models are resident: every model has one [vocab, hidden] input embedding,
so the number of distinct weight storages among the live ``nn.Embedding`` modules of that shape is the
number of full model copies (a LoRA or a frozen view over the same weights shares the storage and is not
counted). Embeddings are registered as they are built or copied (``__init__``/``__setstate__``, which
``copy.deepcopy`` and unpickling call) in a weak set — never by scanning ``gc.get_objects()``, which can break
a tuple under construction in the main thread. The maximum is written to COPIES_FILE at the end."""

from __future__ import annotations

import json
import sys
import threading
import time
import weakref


EMBEDDINGS: weakref.WeakSet = weakref.WeakSet()


def register_embeddings() -> None:
    """Record every ``nn.Embedding`` built or copied from now on."""
    import torch

    init, setstate = torch.nn.Embedding.__init__, torch.nn.Embedding.__setstate__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        EMBEDDINGS.add(self)

    def __setstate__(self, state):
        setstate(self, state)
        EMBEDDINGS.add(self)

    torch.nn.Embedding.__init__, torch.nn.Embedding.__setstate__ = __init__, __setstate__


def count_copies(shape: tuple[int, int]) -> int:
    ptrs = set()
    for module in list(EMBEDDINGS):
        weight = getattr(module, "weight", None)
        if weight is not None and tuple(weight.shape) == shape and weight.device.type != "meta":
            ptrs.add((weight.device.type, weight.untyped_storage().data_ptr()))
    return len(ptrs)


def main() -> int:
    out, vocab, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1:]
    register_embeddings()
    peak = {"copies": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak["copies"] = max(peak["copies"], count_copies((vocab, hidden)))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    from smfa.cli.main import main as smfa_main

    t0 = time.perf_counter()
    try:
        rc = smfa_main(args)
    finally:
        done.set()
        thread.join()
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"copies": peak["copies"], "wall_s": round(time.perf_counter() - t0, 1)}, f)
    return rc


if __name__ == "__main__":
    sys.exit(main())
