"""Does the out-of-core sculpt scale to a 7B model on a small machine?

Writes a sharded bf16 safetensors checkpoint with the shapes of LLaVA-1.5-7B's language model
(Llama-2-7B: 32 layers, hidden 4096, intermediate 11008, vocab 32000; legacy LLaVA tensor names
``language_model.model.layers.{i}…``, ~2 GB shards) and two rank-16 LoRA adapters in PEFT's file format on
q/k/v/o/gate/up/down (module names in the transformers LLaVA layout, ``model.language_model.layers.{i}…``,
so the name mapping is exercised too). Then, in the same run, it times

  (a) ``smfa.sculpt.sculpt_checkpoint`` (sculpt + merge, shard by shard) in a child process, and
  (b) a plain copy of the same files (``shutil.copyfile`` per file),

each from a cold page cache for the source (``posix_fadvise(DONTNEED)`` on its files) and each also with
its output flushed to disk (fsync), and prints both times, their ratio (target ≤ 1.5×) and the sculpt
process's peak RSS (target ≤ 3 GB; a naive in-memory merge needs > 14 GB). Everything is removed at the end.

    python benchmarks/sculpt_scale.py                 # 32 layers: ~13.5 GB source + ~13.5 GB output
    python benchmarks/sculpt_scale.py --layers 4 --workdir /big/disk
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typing import NamedTuple

import psutil
import torch


class Dims(NamedTuple):
    """The shapes of the checkpoint and adapters (``benchmarks/gpu_check.py --small`` shrinks them)."""

    hidden: int
    intermediate: int
    vocab: int
    rank: int


LLAVA_7B = Dims(hidden=4096, intermediate=11008, vocab=32000, rank=16)
HIDDEN, INTERMEDIATE, VOCAB, RANK = LLAVA_7B
SHARD_BYTES = 2 * 1024**3
TARGETS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}
GB = 1024**3


def checkpoint_tensors(layers: int, dims: Dims = LLAVA_7B) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of LLaVA-1.5-7B's language model in the legacy LLaVA layout."""
    HIDDEN, INTERMEDIATE, VOCAB, _ = dims  # noqa: N806 (the module constants' names, shrunk by dims)
    out = [("language_model.model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"language_model.model.layers.{i}"
        out += [(f"{p}.self_attn.{n}.weight", (HIDDEN, HIDDEN)) for n in TARGETS["self_attn"]]
        out += [(f"{p}.mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)), (f"{p}.mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
                (f"{p}.mlp.down_proj.weight", (HIDDEN, INTERMEDIATE))]
        out += [(f"{p}.input_layernorm.weight", (HIDDEN,)), (f"{p}.post_attention_layernorm.weight", (HIDDEN,))]
    out += [("language_model.model.norm.weight", (HIDDEN,)), ("language_model.lm_head.weight", (VOCAB, HIDDEN))]
    return out


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def write_checkpoint(src: Path, layers: int, seed: int, dims: Dims = LLAVA_7B) -> int:
    """Write the checkpoint shard by shard (one ~2 GB shard in memory at a time); return its size in bytes."""
    from safetensors.torch import save_file

    tensors = checkpoint_tensors(layers, dims)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = 2 * numel(shape)
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    gen = torch.Generator().manual_seed(seed)
    # Random values for every weight, fast: slices of a 128 MiB random pool at random offsets.
    pool = torch.empty(1 << 26, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
    weight_map, total = {}, 0
    for s, members in enumerate(shards, start=1):
        fname = f"model-{s:05d}-of-{len(shards):05d}.safetensors"
        data = {}
        for name, shape in members:
            n = numel(shape)
            if name.endswith("norm.weight"):
                data[name] = torch.ones(shape, dtype=torch.bfloat16)
            else:
                start = int(torch.randint(0, pool.numel(), (1,), generator=gen))
                flat = torch.empty(n, dtype=torch.bfloat16)
                done = 0
                while done < n:
                    take = min(n - done, pool.numel() - start)
                    flat[done:done + take] = pool[start:start + take]
                    done, start = done + take, 0
                data[name] = flat.view(shape)
            weight_map[name] = fname
            total += 2 * n
        save_file(data, src / fname, metadata={"format": "pt"})
        del data
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (src / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "torch_dtype": "bfloat16",
              "text_config": {"model_type": "llama", "hidden_size": dims.hidden, "intermediate_size": dims.intermediate,
                              "num_hidden_layers": layers, "vocab_size": dims.vocab}}
    (src / "config.json").write_text(json.dumps(config, indent=2))
    return total


def write_adapter(path: Path, layers: int, seed: int, dims: Dims = LLAVA_7B) -> None:
    """A rank-16 LoRA adapter in PEFT's file format, random A and B, modules in the transformers LLaVA layout."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    HIDDEN, INTERMEDIATE, _, RANK = dims  # noqa: N806 (the module constants' names, shrunk by dims)
    path.mkdir(parents=True)
    LoraConfig(r=RANK, lora_alpha=RANK, target_modules=[n for names in TARGETS.values() for n in names]).save_pretrained(path)
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for i in range(layers):
        for block, names in TARGETS.items():
            for n in names:
                rows, cols = (HIDDEN, INTERMEDIATE) if n == "down_proj" else ((INTERMEDIATE, HIDDEN) if block == "mlp" else (HIDDEN, HIDDEN))
                key = f"base_model.model.model.language_model.layers.{i}.{block}.{n}"
                data[f"{key}.lora_A.weight"] = torch.randn(RANK, cols, generator=gen) / cols**0.5
                data[f"{key}.lora_B.weight"] = torch.randn(rows, RANK, generator=gen) * 1e-3
    save_file(data, path / "adapter_model.safetensors", metadata={"format": "pt"})


def evict(folder: Path) -> None:
    """Drop the folder's files from the page cache, so each timed run reads its source cold."""
    for p in folder.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def flush(folder: Path) -> float:
    """fsync every file of ``folder``; return the seconds it took."""
    started = time.perf_counter()
    for p in folder.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return time.perf_counter() - started


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def plain_copy(src: Path, dst: Path) -> tuple[float, float]:
    """Copy every file; return (wall seconds, CPU seconds)."""
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    dst.mkdir()
    for p in sorted(src.iterdir()):
        shutil.copyfile(p, dst / p.name)
    return time.perf_counter() - started, cpu_seconds(resource.RUSAGE_SELF) - cpu


def peak_rss_self() -> int:
    """This process's peak resident set in bytes: VmHWM of its own address space where Linux has it
    (``ru_maxrss`` would also count the parent's pages the child had between fork and exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_sculpt_child(src: Path, forget: Path, anchor: Path, out: Path, k: float) -> tuple[float, int, int]:
    """Run the sculpt in a child process; return (seconds inside sculpt_checkpoint, its peak RSS, the peak
    of its RSS without file-backed pages, sampled)."""
    cmd = [sys.executable, __file__, "--child", str(src), str(forget), str(anchor), str(out), str(k)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    peak_anon = 0
    while child.poll() is None:
        try:
            mem = proc.memory_info()
            peak_anon = max(peak_anon, mem.rss - mem.shared)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    stdout, _ = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"the sculpt child failed with status {child.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return float(result["seconds"]), int(result["peak_rss"]), peak_anon


def child_main(src: str, forget: str, anchor: str, out: str, k: str) -> None:
    from smfa.sculpt import sculpt_checkpoint

    started = time.perf_counter()
    sculpt_checkpoint(src, forget, anchor, out, float(k), mode="both", progress=False)
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss": peak_rss_self()}))


def spot_check(src: Path, out: Path) -> None:
    """The first q_proj changed, its layer norm did not."""
    from safetensors import safe_open

    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    for name, should_change in (("language_model.model.layers.0.self_attn.q_proj.weight", True),
                                ("language_model.model.layers.0.input_layernorm.weight", False)):
        with safe_open(str(src / index[name]), "pt") as a, safe_open(str(out / index[name]), "pt") as b:
            changed = not torch.equal(a.get_tensor(name), b.get_tensor(name))
        if changed != should_change:
            raise SystemExit(f"spot check failed: {name} {'unchanged' if should_change else 'changed'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (default 32, LLaVA-1.5-7B)")
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoints (default: the temp dir)")
    parser.add_argument("--k", type=float, default=5.0, help="sculpt strength (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="time copy and sculpt N times, report the best ratio")
    args = parser.parse_args()
    if args.layers < 1 or args.repeat < 1:
        parser.error("--layers and --repeat must be ≥ 1")

    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    src_bytes = sum(2 * numel(s) for _, s in checkpoint_tensors(args.layers))
    adapter_bytes = 2 * 4 * args.layers * RANK * (4 * 2 * HIDDEN + 3 * (HIDDEN + INTERMEDIATE))
    need = 2 * src_bytes + adapter_bytes + GB  # source + (output or copy, one at a time) + margin
    free = shutil.disk_usage(base).free
    if free < need:
        raise SystemExit(
            f"{base} has {free / GB:.1f} GB free but the benchmark needs {need / GB:.1f} GB for {args.layers} layers; "
            "pass --layers with fewer layers or --workdir on a larger disk"
        )
    work = Path(tempfile.mkdtemp(prefix="smfa-sculpt-scale-", dir=base))
    try:
        src, out, copy = work / "src", work / "out", work / "copy"
        src.mkdir()
        t = time.perf_counter()
        size = write_checkpoint(src, args.layers, args.seed)
        write_adapter(work / "forget", args.layers, args.seed + 1)
        write_adapter(work / "anchor", args.layers, args.seed + 2)
        shards = len(list(src.glob("model-*.safetensors")))
        print(f"checkpoint: {args.layers} layers, {size / GB:.2f} GiB bf16 in {shards} shards, "
              f"two rank-{RANK} adapters; written in {time.perf_counter() - t:.0f} s", flush=True)

        runs = []
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            evict(src)
            copy_s, copy_cpu = plain_copy(src, copy)
            copy_flushed = copy_s + flush(copy)
            shutil.rmtree(copy)
            evict(src)
            cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
            sculpt_s, peak_rss, peak_anon = run_sculpt_child(src, work / "forget", work / "anchor", out, args.k)
            sculpt_cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
            sculpt_flushed = sculpt_s + flush(out)
            spot_check(src, out)
            shutil.rmtree(out)
            load = max(load, os.getloadavg()[0])
            runs.append((sculpt_s / copy_s, copy_s, copy_flushed, copy_cpu, sculpt_s, sculpt_flushed, sculpt_cpu,
                         peak_rss, peak_anon, load))
            print(f"run {len(runs)}: copy {copy_s:.1f} s, sculpt {sculpt_s:.1f} s, ratio {sculpt_s / copy_s:.2f}×, "
                  f"load average up to {load:.1f}", flush=True)
        (_, copy_s, copy_flushed, copy_cpu, sculpt_s, sculpt_flushed, sculpt_cpu, peak_rss, peak_anon,
         load) = min(runs)
        best = f" (best of {len(runs)} runs)" if len(runs) > 1 else ""
        print(f"(b) plain copy:        {copy_s:7.1f} s   ({copy_flushed:.1f} s with fsync; {copy_cpu:.1f} CPU s){best}")
        print(f"(a) sculpt + merge:    {sculpt_s:7.1f} s   ({sculpt_flushed:.1f} s with fsync; {sculpt_cpu:.1f} CPU s "
              "in the child, start-up included)")
        print(f"time ratio (a)/(b):    {sculpt_s / copy_s:7.2f}×  ({sculpt_flushed / copy_flushed:.2f}× with fsync; "
              "target ≤ 1.5×)")
        print(f"peak RSS of the sculpt: {max(r[7] for r in runs) / GB:6.2f} GiB (target ≤ 3 GB; sampled without "
              f"file-backed pages: {max(r[8] for r in runs) / GB:.2f} GiB)")
        print(f"1-min load average during that run: up to {load:.1f} ({os.cpu_count()} cores; above "
              f"{os.cpu_count()} other processes were competing for them)")
        print(f"a naive in-memory merge would hold the {size / GB:.1f} GiB of weights plus float32 deltas")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:])
    else:
        main()
