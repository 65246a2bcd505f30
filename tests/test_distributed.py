"""Several processes (smfa.distributed): alone every helper is a no-op; under 2 gloo processes on the CPU
(``torch.distributed.run``, as tests/test_placement.py's DDP tests) ``compare`` evaluates and writes each cell
once and every rank reads the same tables, a LoRA model trains under DDP with gradient checkpointing, and a
model sharded with FSDP2 is saved whole.

accelerate turns FSDP on only on accelerators (on the CPU its state is MULTI_CPU whatever the config says), so
the FSDP test shards with torch's own ``fully_shard`` (what accelerate's ``fsdp_version: 2`` applies) and
checks the saving path the stages use: ``finish`` → ``full_state_dict`` → ``save_pretrained(state_dict=...)``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smfa.distributed import (RankFailed, barrier, full_state_dict, is_main_process, main_process_first, on_main_process,
                              wait_for_main)

HELPERS = Path(__file__).parent / "helpers"


def _torchrun(helper: str, *args: object, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 tests/helpers/HELPER ARGS`` on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(HELPERS / helper), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})


def _results(out: Path) -> list[dict]:
    return [json.loads((out / f"result-{rank}.json").read_text()) for rank in (0, 1)]


# ---- one process: the helpers are no-ops ------------------------------------------------------------------
def test_alone_every_helper_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    barrier()
    with main_process_first():
        pass
    assert on_main_process(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ValueError, match="boom"), wait_for_main() as main:
        assert main
        raise ValueError("boom")
    assert full_state_dict(torch.nn.Linear(2, 2)) is None  # an unsharded module's own state dict is complete


def test_a_rank_other_than_0_is_not_the_main_process(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


def test_lora_checkpointing_is_non_reentrant(micro_vanilla: Path) -> None:
    """One setting for every stage (smfa.training.enable_checkpointing): the reentrant checkpoint is what
    crashes DDP with a PEFT model (see the 2-process test below)."""
    from smfa.models.loading import load_model
    from smfa.training.engine import apply_lora

    vanilla = load_model(micro_vanilla)
    model = apply_lora(vanilla.model, vanilla.family, 4, 4, 0.0, gradient_checkpointing=True)
    funcs = [m._gradient_checkpointing_func for m in model.modules() if hasattr(m, "_gradient_checkpointing_func")]
    assert funcs and {f.keywords.get("use_reentrant") for f in funcs} == {False}


# ---- two gloo processes -----------------------------------------------------------------------------------
def test_a_failure_of_the_main_process_reaches_the_waiting_rank(tmp_path: Path) -> None:
    """The rank waiting for the main process raises its error instead of waiting for ever (or reading
    files never written); ``main_process_first`` lets the main process go first."""
    res = _torchrun("ddp_rank_failure.py", tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    main, other = _results(tmp_path)
    assert main["raised"] == "ConfigError: the main process could not write"
    assert other["raised"].startswith(f"{RankFailed.__name__}: rank 0 failed") and "could not write" in other["raised"]
    assert (tmp_path / "order.txt").read_text().split() == ["0", "1"]


def test_a_rank_leaves_no_process_group_for_the_interpreter_to_tear_down(tmp_path: Path) -> None:
    """After its last collective a rank's process group is destroyed, and its gloo worker threads joined,
    before the interpreter finalizes. Before, the group was left up: a worker still releasing the last
    collective's tensors needs the GIL, and a thread taking the GIL while the interpreter finalizes is ended
    with pthread_exit, which aborts the process ("terminate called without an active exception"; the test
    above failed 11 of 20 runs beside a CPU-bound job)."""
    res = _torchrun("ddp_exit.py", tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for state in _results(tmp_path):
        assert state == {"group_initialised": False, "gloo_threads": []}, state


@pytest.mark.slow
def test_compare_under_two_processes_writes_each_cell_once(micro_bench_dir: Path, micro_vanilla: Path,
                                                           tmp_path: Path) -> None:
    """2 gloo processes run `compare` (IDK and SMFA sharing one MFA, and the vanilla's reference row): both
    train every cell; the main process alone evaluates each cell once and stores the shared MFA once, and
    both ranks end reading the same tables. Before, rank 1 read ``cells/idk-f10/manifest.json`` before
    rank 0 had written it (OutputError: no manifest.json) and crashed the run."""
    res = _torchrun("ddp_compare.py", micro_bench_dir, micro_vanilla, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    main, other = _results(tmp_path)
    assert main["world_size"] == other["world_size"] == 2
    assert sorted(main["evaluations"]) == ["idk-f10", "smfa-f10", "vanilla-f10"] and other["evaluations"] == []
    assert (main["shared_writes"], other["shared_writes"]) == (1, 0)
    assert main["smfa_reused_mfa_s"] > 0  # SMFA read the MFA that IDK's cell stored (after the barrier)
    assert main["tables_digest"] == other["tables_digest"]
    assert main["entries"] == [".shared", "idk-f10", "smfa-f10", "vanilla-f10"]  # no staging directory left


@pytest.mark.slow
def test_ddp_lora_step_with_gradient_checkpointing(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path) -> None:
    """2 gloo processes train a LoRA model with gradient checkpointing under DDP: no "marked ready twice"
    crash (what the reentrant checkpoint gives here: checked by hand, the helper with use_reentrant=True
    fails on lora_B of layers.1.mlp.down_proj), the LoRA B matrices (zero at the start) move, and both ranks
    end with the same LoRA weights."""
    res = _torchrun("ddp_peft_checkpointing.py", micro_bench_dir, micro_vanilla, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    results = _results(tmp_path)
    for r in results:
        assert r["world_size"] == 2 and r["wrappers"] == ["DistributedDataParallel"]
        assert r["checkpointing"] == [True] and r["reentrant"] == [False]
        assert r["n_lora_b"] > 0 and r["lora_b_max"] > 1e-4, r
    assert results[0]["digest"] == results[1]["digest"]


@pytest.mark.slow
def test_fsdp2_sharded_model_is_saved_whole(micro_vanilla: Path, tmp_path: Path) -> None:
    """2 gloo processes shard a LoRA model with FSDP2, merge it (``finish``) and save it as the stages do: the
    saved model reloads with exactly the weights of the same LoRA merged unsharded. Saving the module's own
    tensors on rank 0, as the stages did, fails on these shards."""
    res = _torchrun("fsdp_save.py", micro_vanilla, tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    main, other = _results(tmp_path)
    assert main["sharded_parameters"] > 0 and main["gathered_tensors"] > 0 and other["gathered_tensors"] == 0
    assert main["merged_changed"] > 1e-3  # the merge moved the weights: the check below can see a wrong one
    assert main["shapes_match"] and main["max_diff"] == 0.0, main
    assert main["unwrapped"] != "full", main


# ---- adapters saved from gathered adapter parameters only; the LoRA view is never sharded (#35) -------------
def _tiny_peft_model():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    return get_peft_model(base, LoraConfig(r=2, target_modules=["0", "2"]))


def test_adapter_state_dict_alone_is_the_models_own(monkeypatch) -> None:
    from smfa.distributed import adapter_state_dict

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert adapter_state_dict(_tiny_peft_model()) is None  # save_pretrained's own state dict is whole
    with pytest.raises(TypeError, match="PEFT model"):
        adapter_state_dict(torch.nn.Linear(2, 2))


def test_adapter_state_dict_under_zero3_gathers_the_adapter_parameters_only(monkeypatch, tmp_path: Path) -> None:
    """ZeRO-3 (deepspeed is not installed here: a stand-in records what ``GatheredParameters`` is asked to
    gather): only the LoRA parameters are gathered, every rank gets them, and ``save_pretrained`` writes the
    adapter it writes unsharded. ``full_state_dict``, which the RA was saved through, gathers every parameter."""
    import contextlib
    import types

    from safetensors.torch import load_file

    from smfa.distributed import adapter_state_dict

    model = _tiny_peft_model()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    model.save_pretrained(tmp_path / "unsharded")
    asked: list[list[torch.Tensor]] = []

    @contextlib.contextmanager
    def gathered_parameters(params, modifier_rank=None):
        asked.append(list(params))
        yield

    deepspeed = types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=gathered_parameters))
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)
    for i, p in enumerate(model.parameters()):
        p.ds_id = i
    monkeypatch.setenv("RANK", "1")  # not the main process: it gets the adapter too
    weights = adapter_state_dict(model)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(asked) == 1 and [id(p) for p in asked[0]] == [id(p) for p in lora.values()]
    assert sorted(weights) == sorted(lora) and all(torch.equal(weights[n], p.detach()) for n, p in lora.items())
    model.save_pretrained(tmp_path / "gathered", state_dict=weights)
    a, b = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("unsharded", "gathered"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    asked.clear()
    monkeypatch.setenv("RANK", "0")
    full_state_dict(model)
    assert len(asked[0]) == len(list(model.parameters()))  # what saving through full_state_dict gathered


def test_fsdp2_adapter_is_saved_from_its_gathered_parameters_only(tmp_path: Path) -> None:
    """2 gloo processes shard a small LoRA model with FSDP2 and save its adapter as the methods do: only the
    adapter's values are gathered (not the base weights), both ranks get them, and the saved adapter is the
    unsharded one exactly. A plain ``save_pretrained`` (how the MFA was saved) writes this rank's shards."""
    res = _torchrun("fsdp_adapter_save.py", tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    main, other = _results(tmp_path)
    assert main["sharded_parameters"] > 0
    for r in (main, other):
        assert r["gathered"] == r["adapter"] < r["total"] / 4, r
        assert r["keys"] == main["keys"] and all("lora_" in k for k in r["keys"]) and r["keys"]
    assert main["saved_keys_match"] and main["max_diff"] == 0.0, main
    assert main["plain"] != "whole", main


@pytest.mark.parametrize("env, sharding", [
    ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "DeepSpeed ZeRO-3"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, None),  # accelerate's default stage: 2
    ({}, None),
])
def test_the_shared_weights_lora_view_is_refused_under_parameter_sharding(monkeypatch, env, sharding) -> None:
    """The LoRA methods' trainee shares the vanilla's weights, which every rank holds whole: FSDP would shard a
    second set of them and ZeRO-3 would partition the vanilla's own. Refused in one line before training."""
    from smfa.distributed import parameter_sharding
    from smfa.errors import ConfigError
    from smfa.training.runs import shared_weights_view

    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                "ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert parameter_sharding() == sharding
    if sharding is None:
        shared_weights_view(torch.nn.Linear(2, 2))
        return
    with pytest.raises(ConfigError, match=f"{sharding}.*ddp.yaml") as caught:
        shared_weights_view(torch.nn.Linear(2, 2))
    assert "\n" not in str(caught.value)


def test_parameter_sharding_reads_the_stage_of_a_deepspeed_config_file(monkeypatch, tmp_path: Path) -> None:
    from smfa.distributed import parameter_sharding

    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    assert parameter_sharding() == "DeepSpeed ZeRO-3"


# ---- the shipped accelerate configs train with the run's own accumulation (#35) ------------------------------
ACCELERATE_CONFIGS = sorted((Path(__file__).parent.parent / "src" / "smfa" / "configs" / "accelerate").glob("*.yaml"))


def _launch_environment(config: Path) -> dict[str, str]:
    """The environment ``accelerate launch --config_file CONFIG -m smfa.cli ...`` gives each training process
    (accelerate's own launcher code, as ``launch_command`` runs it; nothing is started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "smfa.cli", "unlearn"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_shipped_accelerate_configs_train_with_the_plans_accumulation(config: Path, monkeypatch) -> None:
    """Each shipped config, launched, with the real-checkpoint plan of every method (real.yaml: batch 4 × 4
    accumulation) and other accumulations a user may ask for: DeepSpeed's config must leave the accumulation
    (and batch) to the run — the Trainer fills an "auto" value with its own and fails on any other that
    differs (transformers' ``HfTrainerDeepSpeedConfig.fill_match``), and accelerate would otherwise step the
    optimiser on DeepSpeed's count; no launcher may set an accumulation of its own. Before, zero2/zero3 fixed
    ``gradient_accumulation_steps: 1``."""
    from accelerate.utils import DeepSpeedPlugin

    from smfa.methods import get_method, method_names

    plans = {(hp.batch_size, hp.grad_accum) for hp in (get_method(n).config(real=True) for n in method_names())}
    assert plans == {(4, 4)}, plans  # real.yaml's plan, for every method
    env = {k: v for k, v in _launch_environment(config).items() if k.startswith("ACCELERATE_")}
    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env, env
    if env.get("ACCELERATE_USE_DEEPSPEED") != "true":
        return  # DDP / FSDP: accelerate takes the Trainer's accumulation
    ds = DeepSpeedPlugin().deepspeed_config
    for batch, accumulation in plans | {(1, 1), (2, 8)}:
        for key, run in (("gradient_accumulation_steps", accumulation), ("train_micro_batch_size_per_gpu", batch)):
            assert ds[key] in ("auto", run), (key, ds[key], run)
