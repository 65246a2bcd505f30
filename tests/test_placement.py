"""--device/--dtype: resolved in one place, refused in one line when impossible, honoured by every stage
(models loaded, trainee, reference model, saliency masks, evaluation), and MMUnlearner's mask applied
under DDP. No GPU here: bf16 on the CPU stands in for "followed the request" (the CPU default is fp32)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from smfa.cli.main import main
from smfa.errors import ConfigError
from smfa.models.placement import (CPU_FP32, Placement, autocast_flags, check_trainable, move_batch, placement_of,
                                   resolve_placement)


# ---- resolution -----------------------------------------------------------------------------------------
def test_auto_on_a_cpu_machine_is_cpu_fp32_and_explicit_requests_are_kept(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_placement() == CPU_FP32 == resolve_placement("cpu", "fp32") == resolve_placement("AUTO", "auto")
    assert resolve_placement("cpu", "bf16") == Placement(torch.device("cpu"), torch.bfloat16)


@pytest.mark.parametrize("device, dtype, needle", [
    ("cuda", "auto", "no CUDA device"), ("cuda:1", "auto", "no CUDA device"), ("gpu", "auto", "--device must be"),
    ("cpu:0", "auto", "--device must be"), ("cpu", "fp16", "fp16 needs a CUDA device"), ("cpu", "half", "--dtype must be"),
])
def test_impossible_requests_are_one_line_config_errors(monkeypatch, device: str, dtype: str, needle: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=needle) as info:
        resolve_placement(device, dtype)
    assert "\n" not in str(info.value)


def test_cuda_requests_resolve_to_one_device_per_process(monkeypatch) -> None:
    """With (pretended) GPUs: auto → the current GPU in bf16; cuda:N out of range refused; under a distributed
    launch auto/cuda take cuda:LOCAL_RANK and an explicit cuda:N (every process on one GPU) is refused."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_placement() == Placement(torch.device("cuda", 0), torch.bfloat16)
    assert resolve_placement("cuda:1", "fp16") == Placement(torch.device("cuda", 1), torch.float16)
    with pytest.raises(ConfigError, match="only 2 CUDA"):
        resolve_placement("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    assert resolve_placement("cuda").dtype == torch.float16  # auto falls back to fp16 without bf16
    with pytest.raises(ConfigError, match="V100 does not support bfloat16"):
        resolve_placement("cuda", "bf16")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_placement("auto").device == torch.device("cuda", 1) == resolve_placement("cuda").device
    with pytest.raises(ConfigError, match="every process on one GPU"):
        resolve_placement("cuda:0")


def test_autocast_follows_the_weights_unless_asked_and_full_fp16_training_is_refused() -> None:
    bf16 = Placement(torch.device("cpu"), torch.bfloat16)
    assert autocast_flags("auto", CPU_FP32) == {"bf16": False, "fp16": False}  # today's CPU runs: no autocast
    assert autocast_flags("auto", bf16) == {"bf16": True, "fp16": False}
    assert autocast_flags("none", bf16) == {"bf16": False, "fp16": False}
    assert autocast_flags("bf16", CPU_FP32) == {"bf16": True, "fp16": False}
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        autocast_flags("fp16", CPU_FP32)
    gpu16 = Placement(torch.device("cuda", 0), torch.float16)
    assert autocast_flags("auto", gpu16) == {"bf16": False, "fp16": True}
    check_trainable(gpu16, False, "LoRA")  # fp32 adapters: fine
    with pytest.raises(ConfigError, match="fp16 weights"):
        check_trainable(gpu16, True, "--method mmunlearner")


def test_move_batch_and_placement_of() -> None:
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    batch = move_batch({"input_ids": torch.ones(1, 2, dtype=torch.long), "pixel_values": torch.ones(1, 2)}, model)
    assert batch["input_ids"].dtype == torch.long and batch["pixel_values"].dtype == torch.bfloat16
    assert placement_of(model) == {"device": "cpu", "dtype": "bf16"}


def test_masked_training_refuses_sharded_parameters() -> None:
    """Under FSDP/DeepSpeed the mask could not reach the gradients: refused before training, not skipped."""
    from smfa.training.trainer import check_mask_supported

    check_mask_supported(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False), {"w": torch.ones(1)})
    check_mask_supported(SimpleNamespace(is_fsdp_enabled=True, is_deepspeed_enabled=False), None)  # no mask: fine
    for fsdp, ds in ((True, False), (False, True)):
        with pytest.raises(ConfigError, match="FSDP or DeepSpeed"):
            check_mask_supported(SimpleNamespace(is_fsdp_enabled=fsdp, is_deepspeed_enabled=ds), {"w": torch.ones(1)})


def test_training_arguments_come_from_the_method_config_and_the_placement(tmp_path: Path) -> None:
    """grad_accum, warmup, autocast are the method's (no longer pinned); the defaults are today's CPU ones."""
    from smfa.methods.base import MethodConfig
    from smfa.methods.context import UnlearnContext
    from smfa.training.runs import TrainView
    from smfa.training.engine import training_arguments

    def args(hp: MethodConfig, placement: Placement):
        ctx = UnlearnContext(bench=None, vanilla=None, data=None, target="all", seed=3, work_dir=tmp_path,
                             progress=False, placement=placement)
        return training_arguments(TrainView(hp, ctx), tmp_path / "ckpt", steps=100, save_steps=0, placement=placement)

    default = args(MethodConfig(), CPU_FP32)
    assert (default.gradient_accumulation_steps, default.warmup_steps, default.bf16, default.fp16, default.use_cpu,
            default.seed) == (1, 0, False, False, True, 3)
    tuned = args(MethodConfig(grad_accum=4, warmup_ratio=0.05), Placement(torch.device("cpu"), torch.bfloat16))
    assert (tuned.gradient_accumulation_steps, tuned.warmup_steps, tuned.bf16, tuned.fp16) == (4, 5, True, False)
    assert args(MethodConfig(autocast="none"), Placement(torch.device("cpu"), torch.bfloat16)).bf16 is False
    with pytest.raises(ConfigError, match="autocast"):
        MethodConfig(autocast="fp8")


# ---- every command takes the options and hands them to its stage ----------------------------------------
@pytest.mark.parametrize("argv, target", [
    (["finetune", "--bench", "B", "--out", "O"], "smfa.stages.finetune.finetune"),
    (["unlearn", "--bench", "B", "--model", "M", "--out", "O"], "smfa.stages.unlearn.unlearn"),
    (["eval", "--bench", "B", "--model", "M", "--out", "O"], "smfa.stages.evaluate.evaluate_run"),
    (["sculpt", "RUN"], "smfa.stages.sweep.sculpt_sweep"),
    (["compare", "--bench", "B", "--model", "M", "--out", "O"], "smfa.stages.compare.compare"),
    (["demo", "--out", "O"], "smfa.stages.demo.run_demo"),
])
def test_every_model_loading_command_threads_device_and_dtype(monkeypatch, argv, target) -> None:
    import importlib

    module, name = target.rsplit(".", 1)
    seen = []
    monkeypatch.setattr(importlib.import_module(module), name, lambda cfg: seen.append(cfg) or Path("O"))
    assert main(argv + ["--device", "cpu", "--dtype", "bf16"]) == 0
    assert (seen[0].device, seen[0].dtype) == ("cpu", "bf16")


def test_merge_to_refuses_device_options(capsys, tmp_path: Path) -> None:
    assert main(["sculpt", str(tmp_path), "--merge-to", str(tmp_path / "m"), "--dtype", "bf16"]) == 2
    assert "apply to the k sweep only" in capsys.readouterr().err


# ---- end to end in bf16 on the CPU -----------------------------------------------------------------------
def _record_placements(monkeypatch) -> dict[str, list]:
    """Hooks that record the device and dtype of every loaded model, of every trainee's parameters and
    buffers at its first step, of the reference model and of the saliency masks."""
    import smfa.models.loading as loading
    import smfa.training.trainer as engine_trainer

    seen: dict[str, list] = {"loaded": [], "trainee": [], "reference": [], "mask": []}
    load = loading.load_model

    def recording_load(*args, **kwargs):
        loaded = load(*args, **kwargs)
        seen["loaded"].append({(t.device.type, t.dtype) for t in loaded.model.state_dict().values() if t.is_floating_point()})
        return loaded

    make = engine_trainer.trainer_class

    def recording_class():
        class Recording(make()):
            def training_step(self, model, inputs, num_items_in_batch=None):
                if self.state.global_step == 0:
                    bare = self.accelerator.unwrap_model(model)
                    seen["trainee"].append({(n, t.device.type, t.dtype) for n, t in
                                            [*bare.named_parameters(), *bare.named_buffers()] if t.is_floating_point()})
                    if self.reference is not None:
                        seen["reference"].append({(t.device.type, t.dtype) for t in self.reference.state_dict().values()
                                                  if t.is_floating_point()})
                    if self.grad_mask:
                        seen["mask"].append({t.device.type for t in self.grad_mask.values()})
                return super().training_step(model, inputs, num_items_in_batch)
        return Recording

    monkeypatch.setattr(loading, "load_model", recording_load)
    monkeypatch.setattr(engine_trainer, "trainer_class", recording_class)
    return seen


def test_unlearn_in_bf16_loads_trains_and_evaluates_every_model_in_bf16(monkeypatch, micro_bench_dir: Path,
                                                                         micro_vanilla: Path, tmp_path: Path) -> None:
    """`smfa unlearn --method npo --device cpu --dtype bf16` (a trainee and a frozen reference model): one
    training step, then evaluation with the vanilla's reference losses. Fails if any stage ignores --dtype:
    every loaded model, every trainee tensor (LoRA adapters excepted: PEFT keeps them in fp32), the reference
    model, the evaluated model (eval manifest) and the saved weights are checked."""
    from safetensors.torch import load_file

    seen = _record_placements(monkeypatch)
    out = tmp_path / "npo"
    monkeypatch.setattr("smfa.eval.pipeline.check_oracle", lambda *a: None)  # the vanilla stands in for an oracle
    assert main(["unlearn", "--method", "npo", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla),
                 "--out", str(out), "--param", "max_steps=1", "--eval-limit", "2", "--oracle", str(micro_vanilla),
                 "--device", "cpu", "--dtype", "bf16", "--no-verify"]) == 0
    bf16 = {("cpu", torch.bfloat16)}
    # The vanilla, then the oracle (its losses, before training, beside the vanilla only); the vanilla's own
    # reference losses reuse the loaded vanilla: never a third model in memory.
    assert seen["loaded"] == [bf16, bf16]
    (tensors,) = seen["trainee"]
    wrong = {(n, d, t) for n, d, t in tensors if (d, t) != ("cpu", torch.bfloat16) and "lora_" not in n}
    assert not wrong, sorted(wrong)[:5]
    assert {t for n, _, t in tensors if "lora_" in n} == {torch.float32}
    assert seen["reference"] == [bf16]
    for manifest in (out / "manifest.json", out / "eval" / "manifest.json"):
        assert json.loads(manifest.read_text())["placement"] == {"device": "cpu", "dtype": "bf16"}, manifest
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}


def test_compare_hands_device_and_dtype_to_every_stage(monkeypatch, micro_bench_dir: Path, tmp_path: Path) -> None:
    """`smfa compare` passes --device/--dtype to the oracle it trains, the reference evaluations and every
    unlearning run (the stages themselves are checked above)."""
    import smfa.stages.compare as compare_mod
    import smfa.eval.pipeline as pipeline
    import smfa.stages.finetune as training
    import smfa.stages.unlearn as unlearn_mod

    seen: list[tuple[str, str, str]] = []
    monkeypatch.setattr(compare_mod, "read_manifest", lambda path: {"config": {}, "wall_time_s": 1.0})
    monkeypatch.setattr(training, "finetune", lambda cfg: seen.append(("finetune", cfg.device, cfg.dtype)))
    monkeypatch.setattr(pipeline, "evaluate", lambda cfg: seen.append(("eval", cfg.device, cfg.dtype)))
    monkeypatch.setattr(unlearn_mod, "unlearn", lambda cfg: seen.append(("unlearn", cfg.device, cfg.dtype)))

    class Done(Exception):
        pass

    def tables(*args, **kwargs):  # reached once every stage of the ratio has run
        raise Done

    monkeypatch.setattr("smfa.report.compare_runs", tables)
    with pytest.raises(Done):
        compare_mod.compare(compare_mod.CompareConfig(bench=str(micro_bench_dir), model="M", out=str(tmp_path / "c"),
                                                      methods=("ga",), forget=("10",), oracle="train", device="cpu",
                                                      dtype="bf16", progress=False))
    assert sorted(seen) == [("eval", "cpu", "bf16")] * 2 + [("finetune", "cpu", "bf16"), ("unlearn", "cpu", "bf16")]


def test_mmunlearner_in_bf16_masks_and_trainee_follow_and_frozen_entries_hold(monkeypatch, run_micro_mmunlearner,
                                                                               tmp_path: Path) -> None:
    """MMUnlearner (full fine-tuning, saliency masks) with a bf16 placement: the trainee trains in bf16,
    its masks sit on its device, and one step leaves every entry outside the mask unchanged."""
    seen = _record_placements(monkeypatch)
    placement = resolve_placement("cpu", "bf16")
    model, before = run_micro_mmunlearner(placement, 1)
    (tensors,) = seen["trainee"]
    assert {(d, t) for _, d, t in tensors} == {("cpu", torch.bfloat16)}
    assert seen["mask"] == [{"cpu"}]
    masked = json.loads((tmp_path / "saliency.json").read_text())["per_parameter"]
    after = dict(model.named_parameters())
    assert all(after[n].dtype == torch.bfloat16 for n in masked)
    moved = {n: (after[n].detach() != before[n]) for n in masked}
    assert any(m.any() for m in moved.values())  # the step did something
    # Only masked entries may move: the share of moved entries never exceeds the share masked.
    for n, share in masked.items():
        assert float(moved[n].float().mean()) <= share + 1e-9, n


def test_finetune_in_bf16_trains_a_bf16_model_not_the_shipped_fp32_one(monkeypatch, micro_bench_dir: Path,
                                                                        tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from smfa.bench import Bench

    rows = Bench.training_rows
    monkeypatch.setattr(Bench, "training_rows", lambda self, **kw: rows(self, **kw)[:64])  # one step needs few rows
    out = tmp_path / "ft"
    assert main(["finetune", "--bench", str(micro_bench_dir), "--out", str(out), "--steps", "1", "--batch-size", "4",
                 "--save-steps", "0", "--dtype", "bf16", "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["placement"] == {"device": "cpu", "dtype": "bf16"} and "pretrained" not in manifest
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}


# ---- DDP: MMUnlearner's frozen entries stay frozen ------------------------------------------------------
@pytest.mark.slow
def test_mmunlearner_mask_holds_under_two_process_ddp(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo, torch.distributed.run): the trainee is DDP-wrapped (parameter names gain
    "module."), yet no entry outside the saliency mask moves, the masked ones do, and both ranks end with
    the same weights. Before the mask was keyed on the unwrapped names, every frozen entry moved here."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    worker = Path(__file__).parent / "helpers" / "ddp_mmunlearner.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(worker), str(micro_bench_dir), str(micro_vanilla), str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert r["world_size"] == 2 and r["wrappers"] == ["DistributedDataParallel"]
        assert 0 < r["masked_share"] < 1
        assert r["frozen_moved"] == 0.0, r
        assert r["masked_moved"] > 0, r
    assert results[0]["digest"] == results[1]["digest"]


@pytest.mark.slow
def test_unlearn_under_two_process_ddp_writes_one_run(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo) run `smfa unlearn`: both train, rank 0 alone writes the run directory (the same
    files a single process writes) and evaluates; no half-written directory is left beside it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "smfa.cli", "unlearn", "--method", "idk", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla),
           "--forget", "10", "--param", "max_steps=2", "--eval-limit", "2", "--out", str(out),
           "--no-verify"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("unlearned model written to") == 1 and "rank 1: trained; rank 0 writes" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"], "a rank left a staging directory"
    assert (out / "model" / "model.safetensors").is_file() and (out / "eval" / "metrics.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["method"] == "idk"
