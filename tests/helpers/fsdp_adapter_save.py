"""One process of the 2-process test of saving an adapter from a sharded model (tests/test_distributed.py),
launched by ``torch.distributed.run`` on the CPU (gloo). A small PEFT LoRA model is sharded with FSDP2's
``fully_shard`` (what accelerate's ``fsdp_version: 2`` applies) and its adapter saved the way the methods save
adapters: ``save_pretrained(state_dict=adapter_state_dict(model))``. Writes, per rank, what the test checks:
how many values were gathered (DTensor.full_tensor counted), against the adapter's and the model's, how the
saved adapter differs from the same LoRA's unsharded one, and what a plain ``save_pretrained`` wrote.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/fsdp_adapter_save.py OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


class Block(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.q, self.v = torch.nn.Linear(width, width), torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.v(torch.relu(self.q(x)))


def main(out: str) -> None:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import load_file
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from smfa.distributed import adapter_state_dict, barrier, is_main_process

    barrier()  # starts the gloo process group (smfa.distributed)
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)  # the same model and LoRA on every rank, with a non-zero B
    blocks = torch.nn.Sequential(*(Block(64) for _ in range(3)))
    model = get_peft_model(blocks, LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    expected = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    total = sum(p.numel() for p in model.parameters())
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    gathered: list[int] = []
    full_tensor = DTensor.full_tensor

    def counting(self, *args, **kwargs):
        gathered.append(self.numel())
        return full_tensor(self, *args, **kwargs)

    DTensor.full_tensor = counting
    weights = adapter_state_dict(model)  # every rank calls it: a collective
    DTensor.full_tensor = full_tensor
    result: dict[str, object] = {
        "world_size": int(os.environ["WORLD_SIZE"]), "total": total, "gathered": sum(gathered),
        "adapter": sum(v.numel() for v in expected.values()),
        "sharded_parameters": sum(isinstance(p, DTensor) for p in model.parameters()),
        "keys": sorted(weights or {}),
    }
    if is_main_process():
        model.save_pretrained(Path(out) / "adapter", state_dict=weights)
        saved = load_file(str(Path(out) / "adapter" / "adapter_model.safetensors"))
        result["saved_keys_match"] = sorted(saved) == sorted(expected)
        result["max_diff"] = max(float((saved[k] - expected[k]).abs().max()) for k in expected)
        try:  # what the methods saved before: the module's own tensors
            model.save_pretrained(Path(out) / "plain")
            own = load_file(str(Path(out) / "plain" / "adapter_model.safetensors"))
            result["plain"] = "whole" if all(own[k].shape == expected[k].shape and torch.equal(own[k], expected[k])
                                             for k in expected) else "shards"
        except Exception as exc:  # noqa: BLE001 - recorded for the test, which expects it to fail one way or another
            result["plain"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    barrier()
    (Path(out) / f"result-{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
