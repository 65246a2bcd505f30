"""The vanilla stage: determinism, resume after SIGKILL, manifest, tokenizer round trip, answer-only labels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smfa.stages.finetune import FinetuneConfig, finetune


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _short(bench: Path, out: Path, **kw) -> FinetuneConfig:
    base = dict(bench=str(bench), out=str(out), steps=6, batch_size=8, save_steps=3, progress=False)
    base.update(kw)
    return FinetuneConfig(**base)


def test_tiny_model_reloads_with_auto_classes_and_labels_are_answer_only(micro_bench_dir: Path) -> None:
    from smfa.bench import Bench
    from smfa.models.families import family_for
    from smfa.models.tiny import build_tiny

    bench = Bench.load(micro_bench_dir)
    model, processor = build_tiny(bench)
    n_params = sum(p.numel() for p in model.parameters())
    assert 300_000 < n_params < 2_000_000
    row = next(q for q in bench.questions if q.kind == "image_memory")
    family = family_for(model)
    enc = family.encode(processor, row.question, bench.load_image(row), row.answer)
    answer_ids = enc["input_ids"][enc["labels"] != -100]
    # byte-level BPE: the space between "ASSISTANT:" and the answer belongs to the answer's first token
    assert processor.tokenizer.decode(answer_ids) == " " + row.answer + processor.tokenizer.eos_token
    assert "<unk>" not in processor.tokenizer.decode(enc["input_ids"])


def test_same_seed_same_weights_and_manifest(nano_bench_dir: Path, tmp_path: Path) -> None:
    a = finetune(_short(nano_bench_dir, tmp_path / "a"))
    b = finetune(_short(nano_bench_dir, tmp_path / "b"))
    c = finetune(_short(nano_bench_dir, tmp_path / "c", seed=1))
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit-identical on CPU with the same seed
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["bench"]["checksum"] and manifest["effective_batch_size"] == 8
    assert manifest["trainable"]["trainable_parameters"] == manifest["trainable"]["total_parameters"]
    assert not any(p.name.startswith(".a.partial") for p in tmp_path.iterdir())


def test_lora_finetune_moves_only_language_model(nano_bench_dir: Path, tmp_path: Path) -> None:
    run = finetune(_short(nano_bench_dir, tmp_path / "lora", lora=True, steps=2, lr=1e-2))
    manifest = json.loads((run / "manifest.json").read_text())
    modules = manifest["trainable_modules"]
    assert modules and all("language_model" in m and "lora_" in m for m in modules)
    assert not any("vision_tower" in m for m in modules)


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(nano_bench_dir: Path, tmp_path: Path) -> None:
    reference = finetune(_short(nano_bench_dir, tmp_path / "ref", steps=40, save_steps=10))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "smfa.cli", "finetune", "--bench", str(nano_bench_dir), "--out", str(out),
           "--steps", "40", "--batch-size", "8", "--save-steps", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TQDM_DISABLE": "1"})
    stage = tmp_path / ".killed.partial" / "checkpoints"
    deadline = time.time() + 300
    # trainer_state.json is the last file of a checkpoint: kill right after checkpoint 20 is complete.
    while time.time() < deadline and not (stage / "checkpoint-20" / "trainer_state.json").is_file():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must not leave a complete-looking output directory"
    assert any(stage.glob("checkpoint-*"))
    rc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert rc.returncode == 0, rc.stderr[-2000:]
    w_ref, w_res = _weights(reference), _weights(out)
    worst = max(float((w_ref[k].float() - w_res[k].float()).abs().max()) for k in w_ref)
    assert worst < 1e-5, f"resumed weights differ from an uninterrupted run by {worst}"


def test_unfinished_run_needs_resume_or_overwrite(nano_bench_dir: Path, tmp_path: Path) -> None:
    from smfa.cli.main import main

    (tmp_path / ".x.partial").mkdir()
    rc = main(["finetune", "--bench", str(nano_bench_dir), "--out", str(tmp_path / "x"), "--steps", "1"])
    assert rc == 2


def test_resume_refuses_a_partial_run_started_with_other_options(capsys, monkeypatch, nano_bench_dir: Path,
                                                                 tmp_path: Path) -> None:
    """--resume continues a staged run only with the recipe and bench it was started with; another one is a
    one-line error naming the fields, and with --overwrite the run starts over. --save-steps may change."""
    import smfa.stages.finetune as training
    from smfa.cli.main import main
    from smfa.errors import ConfigError

    out, stage = tmp_path / "r", tmp_path / ".r.partial"

    def killed(model):  # the process dies after its last checkpoint, before the run is written
        raise RuntimeError("killed")

    def start() -> None:
        with monkeypatch.context() as m:
            m.setattr(training, "trainable_summary", killed)
            with pytest.raises(RuntimeError, match="killed"):
                finetune(_short(nano_bench_dir, out, steps=4, save_steps=2, pretrained=False))
        assert any((stage / "checkpoints").glob("checkpoint-*"))

    start()
    capsys.readouterr()
    argv = ["finetune", "--bench", str(nano_bench_dir), "--out", str(out), "--steps", "4", "--batch-size", "8",
            "--save-steps", "2", "--no-pretrained", "--resume"]
    rc = main(argv + ["--lr", "0.002", "--sampler", "length_buckets"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert "lr 0.001 -> 0.002" in err[0] and "sampler 'random' -> 'length_buckets'" in err[0] and "--overwrite" in err[0]
    record = stage / "checkpoints" / "recipe.json"
    recorded = json.loads(record.read_text())
    record.write_text(json.dumps({**recorded, "bench checksum": "0" * 64}))
    with pytest.raises(ConfigError, match="bench checksum"):
        finetune(_short(nano_bench_dir, out, steps=4, save_steps=2, pretrained=False, resume=True))
    record.write_text(json.dumps(recorded))
    assert any((stage / "checkpoints").glob("checkpoint-*")) and not out.exists()  # refused: nothing touched
    run = finetune(_short(nano_bench_dir, out, steps=4, save_steps=3, pretrained=False, resume=True))
    assert json.loads((run / "manifest.json").read_text())["config"]["lr"] == 1e-3 and not stage.exists()
    # --overwrite with --resume: a partial run of another recipe is discarded and trained anew.
    shutil.rmtree(out)
    start()
    run = finetune(_short(nano_bench_dir, out, steps=4, save_steps=2, pretrained=False, resume=True, overwrite=True,
                          lr=2e-3, progress=True))
    assert "starting over" in capsys.readouterr().out
    assert json.loads((run / "manifest.json").read_text())["config"]["lr"] == 2e-3



def test_resume_refuses_another_world_size_or_other_starting_weights(capsys, monkeypatch, micro_bench_dir: Path,
                                                                     micro_vanilla: Path, tmp_path: Path) -> None:
    """The resume record holds the number of processes and the digest of the weights the run started from: a
    resume under another world size, or with --model holding other weights, is refused in one line. A record
    written before they were recorded resumes, with a warning."""
    import smfa.stages.finetune as training
    from smfa.errors import ConfigError
    from smfa.models.digest import model_digest, weight_hashes

    start = tmp_path / "start"
    shutil.copytree(micro_vanilla, start)
    out, stage = tmp_path / "r", tmp_path / ".r.partial"
    cfg = _short(micro_bench_dir, out, model=str(start), steps=2, save_steps=1)
    with monkeypatch.context() as m:  # killed after its last checkpoint, before the run is written
        m.setattr(training, "trainable_summary", lambda model: (_ for _ in ()).throw(RuntimeError("killed")))
        with pytest.raises(RuntimeError, match="killed"):
            finetune(cfg)
    record = stage / "checkpoints" / "recipe.json"
    recorded = json.loads(record.read_text())
    assert recorded["world size"] == 1
    assert recorded["start weights"] == model_digest(weight_hashes(start / "model"))
    resume = _short(micro_bench_dir, out, model=str(start), steps=2, save_steps=1, resume=True)
    with monkeypatch.context() as m:
        m.setenv("WORLD_SIZE", "2")
        with pytest.raises(ConfigError, match="world size 1 -> 2.*number of processes"):
            finetune(resume)
    weights = start / "model" / "model.safetensors"
    original = weights.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF  # the same --model path, other weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="start weights"):
        finetune(resume)
    assert any((stage / "checkpoints").glob("checkpoint-*")) and not out.exists()  # refused: nothing touched
    weights.write_bytes(original)
    record.write_text(json.dumps({k: v for k, v in recorded.items() if k not in ("world size", "start weights")}))
    capsys.readouterr()
    run = finetune(resume)
    assert "records no world size and no start weights" in capsys.readouterr().err
    assert json.loads((run / "manifest.json").read_text())["start_weights"] == recorded["start weights"]

@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_the_same_artefacts(nano_bench_dir: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo) finish and write what a single process writes. Launched with
    ``torch.distributed.run`` — the launcher `accelerate launch` uses on GPUs; accelerate's own multi-CPU
    launcher needs MPI (mpirun), which this machine does not have."""
    import socket

    single = finetune(_short(nano_bench_dir, tmp_path / "single", steps=4, save_steps=0))
    out = tmp_path / "ddp"
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "smfa.cli", "finetune", "--bench", str(nano_bench_dir), "--out", str(out), "--steps", "4", "--batch-size", "8",
           "--save-steps", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    names = lambda run: sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())  # noqa: E731
    assert names(out) == names(single)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["effective_batch_size"] == 16


# ---- --sampler length_buckets -----------------------------------------------------------------------
def test_length_bucket_order_is_a_seeded_permutation_of_similar_length_batches_in_random_order() -> None:
    import random

    from smfa.training.samplers import length_bucket_order

    rng = random.Random(0)
    lengths = [rng.choice([20, 21, 30, 31, 40, 45]) for _ in range(1000)]
    a = length_bucket_order(lengths, batch_size=8, seed=0, epoch=0, window=10)
    assert sorted(a) == list(range(1000))  # every example once
    assert a == length_bucket_order(lengths, 8, seed=0, epoch=0, window=10)  # deterministic
    assert a != length_bucket_order(lengths, 8, seed=0, epoch=1, window=10)  # a new order every epoch
    assert a != length_bucket_order(lengths, 8, seed=1, epoch=0, window=10)
    batches = [a[i:i + 8] for i in range(0, 1000, 8)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    plain = list(range(1000))
    rng.shuffle(plain)
    plain_spread = sum(max(lengths[i] for i in plain[j:j + 8]) - min(lengths[i] for i in plain[j:j + 8])
                       for j in range(0, 1000, 8)) / len(batches)
    assert spread < 0.25 * plain_spread, (spread, plain_spread)  # less padding per batch
    # batches are not served longest-first (HF group_by_length's bursts): the batch lengths are not sorted
    means = [sum(lengths[i] for i in b) / len(b) for b in batches]
    assert means != sorted(means) and means != sorted(means, reverse=True)
    ups = sum(1 for x, y in zip(means, means[1:]) if y > x)
    assert 0.3 < ups / (len(means) - 1) < 0.7


def test_length_bucket_order_rejects_bad_sizes() -> None:
    from smfa.errors import ConfigError
    from smfa.training.samplers import length_bucket_order

    with pytest.raises(ConfigError, match="batch_size"):
        length_bucket_order([3, 4], batch_size=0, seed=0, epoch=0)


def test_finetune_with_length_buckets_records_the_sampler(nano_bench_dir: Path, tmp_path: Path) -> None:
    from smfa.errors import ConfigError

    run = finetune(_short(nano_bench_dir, tmp_path / "buckets", sampler="length_buckets", save_steps=0))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["sampler"] == "length_buckets"
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in h for h in log)
    plain = finetune(_short(nano_bench_dir, tmp_path / "random", save_steps=0))
    wb, wp = _weights(run), _weights(plain)
    assert any(not torch.equal(wb[k], wp[k]) for k in wb)  # the bucket order was used (same seed otherwise)
    with pytest.raises(ConfigError, match="--sampler"):
        finetune(_short(nano_bench_dir, tmp_path / "bad", sampler="sorted"))


def test_finetune_with_augmented_views_adds_one_copy_per_image_row(nano_bench_dir: Path, tmp_path: Path) -> None:
    """``--augment N``: N extra copies of every image row (each its own fixed random view) join the rows;
    the option enters the recipe key only when used, so shipped vanillas keep matching."""
    from smfa.bench import Bench
    from smfa.errors import ConfigError
    from smfa.pretrained import recipe_of

    run = finetune(_short(nano_bench_dir, tmp_path / "aug", augment=1, save_steps=0, pretrained=False))
    data = json.loads((run / "manifest.json").read_text())["data"]
    rows = Bench.load(nano_bench_dir).training_rows()
    assert data["items"] == len(rows) + sum(q.image is not None for q in rows) and data["rows"] == len(rows)
    assert "augment" not in recipe_of(FinetuneConfig()) and recipe_of(FinetuneConfig(augment=2))["augment"] == 2
    with pytest.raises(ConfigError, match="--augment must be an integer >= 0"):
        finetune(_short(nano_bench_dir, tmp_path / "bad", augment=-1))


def test_encoding_over_the_ram_budget_is_lazy_and_gives_the_same_examples(micro_bench_dir, micro_vanilla) -> None:
    """Encoded data larger than $SMFA_ENCODE_RAM_GB is encoded per example when trained on (a ``full``
    bench's 336 px pixel tensors would need ~100 GB up front); the examples are the same either way."""
    from smfa.bench import Bench
    from smfa.data import EncodedDataset, LazyEncodedDataset, TrainItem, encode_items
    from smfa.models.loading import load_model

    bench, loaded = Bench.load(micro_bench_dir), load_model(micro_vanilla)
    rows = [q for q in bench.questions if q.image is not None][:6] + [q for q in bench.questions if q.image is None][:6]
    items = [TrainItem(r, r.answer, augment=i % 2) for i, r in enumerate(rows)]
    kwargs = dict(bench=bench, family=loaded.family, processor=loaded.processor, progress=False)
    eager, lazy = encode_items(items, **kwargs), encode_items(items, **kwargs, budget_bytes=0)
    assert isinstance(eager, EncodedDataset) and isinstance(lazy, LazyEncodedDataset)
    for i in range(len(items)):
        assert eager[i].keys() == lazy[i].keys()
        assert all(torch.equal(eager[i][k], lazy[i][k]) for k in eager[i]), i
    assert isinstance(encode_items(items, **kwargs, budget_bytes=10**9), EncodedDataset)


def test_full_finetuning_keeps_fp32_master_weights_where_auto_picks_bf16() -> None:
    """--dtype auto on a GPU resolves to bf16: full fine-tuning then loads fp32 weights and autocasts the
    forward to bf16; an explicit --dtype bf16, or LoRA (fp32 adapters), keeps the resolved dtype."""
    from smfa.models.placement import Placement, master_weights

    gpu_bf16 = Placement(torch.device("cpu"), torch.bfloat16)  # the device does not enter the rule
    assert master_weights(gpu_bf16, True, "auto") == (Placement(gpu_bf16.device, torch.float32), True)
    assert master_weights(gpu_bf16, True, "bf16") == (gpu_bf16, False)
    assert master_weights(gpu_bf16, False, "auto") == (gpu_bf16, False)


def test_a_bf16_lora_step_keeps_fp32_trainable_parameters(nano_bench_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """bf16 base weights, fp32 LoRA adapters after a step through smfa's Trainer path (the adapters moved)."""
    import smfa.stages.finetune as training

    seen: dict[str, torch.dtype] = {}
    summary = training.trainable_summary

    def spy(model):
        seen.update({n: p.dtype for n, p in model.named_parameters() if p.requires_grad})
        seen["frozen"] = next(p.dtype for n, p in model.named_parameters() if not p.requires_grad and "layers" in n)
        return summary(model)

    monkeypatch.setattr(training, "trainable_summary", spy)
    finetune(_short(nano_bench_dir, tmp_path / "bf16", lora=True, steps=1, lr=1e-2, dtype="bf16", gradient_checkpointing=None))
    frozen = seen.pop("frozen")
    assert frozen == torch.bfloat16 and seen and all(d == torch.float32 for d in seen.values()), (frozen, seen)


def test_the_evaluation_prompt_cache_stays_within_its_byte_budget() -> None:
    """Encoded prompts are reused, least recently used dropped first beyond the budget."""
    from types import SimpleNamespace

    from smfa.data import ImageCache

    calls: list[str] = []

    class Family:
        def encode(self, processor, text, image):
            calls.append(text)
            return {"input_ids": torch.zeros(250, dtype=torch.int32)}  # 1,000 bytes

    cache = ImageCache(bench=None, prompt_budget_bytes=2500)
    row = SimpleNamespace(image=None)
    for text in ("a", "b", "a", "c", "a", "b"):
        cache.encoded_prompt(Family(), None, text, row)
    assert calls == ["a", "b", "c", "b"]  # "a" reused twice; "b" dropped for "c" (least recently used)
    assert cache._prompt_bytes <= 2500
