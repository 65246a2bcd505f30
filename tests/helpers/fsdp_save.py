"""One process of the 2-process test of saving a sharded model (tests/test_distributed.py), launched by
``torch.distributed.run`` on the CPU (gloo). accelerate enables FSDP only on accelerators (on the CPU its
state is MULTI_CPU whatever the config says), so the model is sharded here with torch's own FSDP2
``fully_shard`` — what accelerate's ``fsdp_version: 2`` applies — and saved the way the stages save:
``finish`` (merge the LoRA) → ``full_state_dict`` → ``save_pretrained(state_dict=...)`` on the main process.
Writes, per rank, what the test checks: how the saved weights differ from the same LoRA merged without
sharding, and what saving the module's own (sharded) tensors would have written.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/fsdp_save.py VANILLA OUT
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch


def main(vanilla_dir: str, out: str) -> None:
    from safetensors.torch import load_file
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from smfa.distributed import barrier, full_state_dict, is_main_process
    from smfa.models.loading import load_model
    from smfa.training.engine import apply_lora
    from smfa.training.runs import finish

    barrier()  # starts the gloo process group (smfa.distributed)
    rank = int(os.environ["RANK"])
    vanilla = load_model(vanilla_dir)
    torch.manual_seed(0)  # the same LoRA on every rank (as prepare_trainable seeds it), and a non-zero B:
    model = apply_lora(vanilla.model, vanilla.family, 4, 8, 0.0)  # a merge that changes the weights
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    expected = {k: v.clone() for k, v in copy.deepcopy(model).merge_and_unload().state_dict().items()}
    for module in model.modules():
        if type(module).__name__ == "LlamaDecoderLayer":
            fully_shard(module)
    fully_shard(model)
    sharded = sum(isinstance(p, DTensor) for p in model.parameters())
    merged = finish(model)
    weights = full_state_dict(merged)  # every rank calls it: a collective
    result: dict[str, object] = {"world_size": int(os.environ["WORLD_SIZE"]), "sharded_parameters": sharded,
                                 "gathered_tensors": len(weights or {})}
    if is_main_process():
        merged.save_pretrained(Path(out) / "model", state_dict=weights, safe_serialization=True)
        vanilla.processor.save_pretrained(Path(out) / "model")
        saved = load_file(str(Path(out) / "model" / "model.safetensors"))
        reloaded = load_model(Path(out) / "model").model.state_dict()
        result["shapes_match"] = all(reloaded[k].shape == expected[k].shape for k in expected)
        result["max_diff"] = max(float((reloaded[k] - expected[k]).abs().max()) for k in expected)
        result["merged_changed"] = max(float((expected[k] - vanilla_weights(vanilla_dir)[k]).abs().max())
                                       for k in expected if k in vanilla_weights(vanilla_dir))
        try:  # what rank 0 saved before: the module's own tensors
            merged.save_pretrained(Path(out) / "unwrapped", safe_serialization=True)
            own = load_file(str(Path(out) / "unwrapped" / "model.safetensors"))
            result["unwrapped"] = "shapes differ" if any(own[k].shape != saved[k].shape for k in saved) else "full"
        except Exception as exc:  # noqa: BLE001 - recorded for the test, which expects it to fail one way or another
            result["unwrapped"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    barrier()
    (Path(out) / f"result-{rank}.json").write_text(json.dumps(result))


_VANILLA: dict[str, dict[str, torch.Tensor]] = {}


def vanilla_weights(vanilla_dir: str) -> dict[str, torch.Tensor]:
    from smfa.models.loading import load_model

    if vanilla_dir not in _VANILLA:
        _VANILLA[vanilla_dir] = load_model(vanilla_dir).model.state_dict()
    return _VANILLA[vanilla_dir]


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:3])
