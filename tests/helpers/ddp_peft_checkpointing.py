"""One process of the 2-process DDP test of a LoRA model trained with gradient checkpointing
(tests/test_distributed.py), launched by ``torch.distributed.run`` on the CPU (gloo): prepares the trainee as
every method does (``prepare_trainable`` with ``lora`` and ``gradient_checkpointing``), trains it a few
steps with ``train_sft`` and writes, per rank, what the test checks — that the trainee was DDP-wrapped and
checkpointed (non-reentrant), how far the LoRA B matrices (zero at the start) moved, and a digest of the
LoRA weights.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_peft_checkpointing.py BENCH VANILLA OUT
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch


def main(bench_dir: str, vanilla_dir: str, out: str) -> None:
    import smfa.training.trainer as engine_trainer
    from smfa.bench import Bench
    from smfa.data import reference_items
    from smfa.methods.base import MethodConfig
    from smfa.methods.context import UnlearnContext
    from smfa.models.loading import load_model
    from smfa.stages.unlearn import select_data
    from smfa.training.runs import prepare_trainable, train_sft

    rank = int(os.environ["RANK"])
    seen: dict[str, set] = {"wrappers": set(), "checkpointing": set(), "reentrant": set()}
    make = engine_trainer.trainer_class

    def recording_trainer_class():
        cls = make()

        class Recording(cls):
            def training_step(self, model, inputs, num_items_in_batch=None):
                seen["wrappers"].add(type(model).__name__)
                inner = self.accelerator.unwrap_model(model)
                seen["checkpointing"].add(bool(getattr(inner, "is_gradient_checkpointing", False)))
                for module in inner.modules():  # each checkpointed block's checkpoint function (a partial)
                    func = getattr(module, "_gradient_checkpointing_func", None)
                    if func is not None:
                        seen["reentrant"].add(func.keywords.get("use_reentrant"))
                return super().training_step(model, inputs, num_items_in_batch)

        return Recording

    engine_trainer.trainer_class = recording_trainer_class
    bench = Bench.load(bench_dir)
    data = select_data(bench, "10", "all", None, 0)
    vanilla = load_model(vanilla_dir)
    work = Path(out) / f"rank{rank}"
    work.mkdir(parents=True)
    ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=data, target="all", seed=0, work_dir=work, progress=False)
    hp = MethodConfig(lr=1e-3, batch_size=4, max_steps=3, lora=True, gradient_checkpointing=True)
    model = prepare_trainable(ctx, hp, ctx.fresh_model())
    dataset = ctx.encode(reference_items(data.anchor_rows[:32]), desc="encoding")
    model = train_sft(ctx, model, hp, dataset, tag="checkpointed")
    lora = {n: p.detach() for n, p in model.named_parameters() if "lora_" in n}
    b_moved = max(float(p.abs().max()) for n, p in lora.items() if "lora_B" in n)
    digest = hashlib.sha256(b"".join(lora[k].numpy().tobytes() for k in sorted(lora))).hexdigest()
    (Path(out) / f"result-{rank}.json").write_text(json.dumps({
        "wrappers": sorted(seen["wrappers"]), "checkpointing": sorted(seen["checkpointing"]),
        "reentrant": sorted(seen["reentrant"], key=str),
        "lora_b_max": b_moved, "n_lora_b": sum("lora_B" in n for n in lora),
        "world_size": int(os.environ["WORLD_SIZE"]), "digest": digest,
    }))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:4])
