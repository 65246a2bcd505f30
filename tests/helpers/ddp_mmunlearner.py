"""One process of the 2-process DDP test of MMUnlearner (tests/test_placement.py), launched by
``torch.distributed.run`` on the CPU (gloo): runs MMUnlearner for a few steps and writes, per rank, what the
test checks — how much the entries outside the saliency mask moved (must be 0), how much the masked ones
moved (must be > 0), that the trainee was DDP-wrapped while it trained, and a digest of the weights.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_mmunlearner.py BENCH VANILLA OUT
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch


def main(bench_dir: str, vanilla_dir: str, out: str) -> None:
    import smfa.methods.mmunlearner as mmu
    import smfa.training.trainer as engine_trainer
    from smfa.bench import Bench
    from smfa.methods import get_method
    from smfa.methods.context import UnlearnContext
    from smfa.models.loading import load_model
    from smfa.models.placement import resolve_placement
    from smfa.stages.unlearn import select_data

    rank = int(os.environ["RANK"])
    seen: dict[str, object] = {"wrappers": set()}
    make = engine_trainer.trainer_class

    def recording_trainer_class():
        cls = make()

        class Recording(cls):
            def training_step(self, model, inputs, num_items_in_batch=None):
                seen["wrappers"].add(type(model).__name__)
                return super().training_step(model, inputs, num_items_in_batch)

        return Recording

    train = mmu.train_unlearner

    def recording_train(*args, grad_mask=None, **kwargs):
        seen["mask"] = {k: v.clone() for k, v in grad_mask.items()}
        return train(*args, grad_mask=grad_mask, **kwargs)

    engine_trainer.trainer_class = recording_trainer_class
    mmu.train_unlearner = recording_train

    method = get_method("mmunlearner")
    hp = method.config(None, {"max_steps": 2}, target="all")
    bench = Bench.load(bench_dir)
    data = select_data(bench, "10", "all", None, 0)
    # A few rows of each: what is checked is how the mask is applied, not how good the saliency is.
    data.forget_rows, data.anchor_rows = data.forget_rows[:32], data.anchor_rows[:16]
    placement = resolve_placement("auto", "auto")
    vanilla = load_model(vanilla_dir, placement=placement)
    before = {k: v.detach().clone() for k, v in vanilla.model.named_parameters()}
    work = Path(out) / f"rank{rank}"
    work.mkdir(parents=True)
    ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=data, target="all", seed=0, work_dir=work,
                         progress=False, placement=placement)
    model = method.run(ctx, hp)
    after = dict(model.named_parameters())
    frozen_moved = masked_moved = 0.0
    for name, mask in seen["mask"].items():
        delta = (after[name].detach() - before[name]).abs()
        frozen_moved = max(frozen_moved, float(delta[~mask].max()) if (~mask).any() else 0.0)
        masked_moved = max(masked_moved, float(delta[mask].max()) if mask.any() else 0.0)
    digest = hashlib.sha256(b"".join(after[k].detach().numpy().tobytes() for k in sorted(after))).hexdigest()
    (Path(out) / f"result-{rank}.json").write_text(json.dumps({
        "frozen_moved": frozen_moved, "masked_moved": masked_moved, "wrappers": sorted(seen["wrappers"]),
        "masked_share": sum(int(m.sum()) for m in seen["mask"].values()) / sum(m.numel() for m in seen["mask"].values()),
        "world_size": int(os.environ["WORLD_SIZE"]), "digest": digest,
    }))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:4])
