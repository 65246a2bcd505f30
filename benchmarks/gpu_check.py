"""The accelerator check: does smfa run, and how fast, on one GPU? One script, one table, ≤ 5 minutes on one H100.

(a) The tiny pipeline on the GPU in bf16: bench → vanilla (the shipped one) → every registered method →
    evaluation (``smfa compare``), asserting that every method forgets: its forget leak (mean of the
    photo and name leak rates) below the vanilla's by ``--margin``.
(b) A model of LLaVA-1.5-7B's shape (Llama-2-7B language model, CLIP ViT-L/14-336 vision tower) built from
    its config with random weights — nothing is downloaded — in bf16: LoRA steps/s of the memory forgetting
    adapter's training (rank 16 on q/k/v/o/gate/up/down, gradient checkpointing, bf16 autocast) and the peak
    GPU memory; batched greedy generation tokens/s; and the out-of-core sculpt + merge of a 7B-shaped
    checkpoint against a plain copy of its shards (``benchmarks/sculpt_scale.py``'s pieces; the sculpt runs
    on the CPU, shard by shard, as ``smfa sculpt --merge-to`` does).

    python benchmarks/gpu_check.py                  # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run        # = --device cpu --small: every code path, shrunken, ~2 min

Without CUDA (and without ``--dry-run``/``--small``) it says so in one line and exits 2. Exit 1 when a check
fails (a method that does not forget, a spot check of the merge).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sculpt_scale's pieces

REPO = Path(__file__).resolve().parent.parent
GiB = 1024**3


@dataclass
class Row:
    part: str
    what: str
    value: str
    check: str = ""


@dataclass(frozen=True)
class Sizes:
    """What each part runs on: the real shapes, or shrunken ones that exercise the same code (``--small``)."""

    bench: str  # "tiny" (200 people, shipped vanilla) or "micro" (60 people, the tests' vanilla)
    eval_limit: int
    method_steps: int | None  # None: each method's shipped defaults
    text: dict
    vision: dict
    image_token_id: int
    train_batch: int
    text_tokens: int
    train_steps: int
    gen_batch: int
    gen_tokens: int
    sculpt_layers: int
    sculpt_dims: tuple[int, int, int, int]  # hidden, intermediate, vocab, LoRA rank


FULL = Sizes(
    bench="tiny", eval_limit=50, method_steps=None,
    # LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf config.json): Llama-2-7B + CLIP ViT-L/14 at 336 px.
    text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
    vision=dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                num_attention_heads=16, projection_dim=768),
    image_token_id=32000, train_batch=8, text_tokens=64, train_steps=6, gen_batch=16, gen_tokens=32,
    sculpt_layers=8, sculpt_dims=(4096, 11008, 32000, 16),
)
SMALL = Sizes(
    bench="micro", eval_limit=4, method_steps=2,
    text=dict(vocab_size=1024, hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-5),
    vision=dict(image_size=56, patch_size=14, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, projection_dim=64),
    image_token_id=1000, train_batch=2, text_tokens=16, train_steps=2, gen_batch=4, gen_tokens=8,
    sculpt_layers=2, sculpt_dims=(256, 688, 1024, 8),
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- (a) the tiny pipeline ------------------------------------------------------------------------------
def tiny_pipeline(work: Path, sizes: Sizes, device: str, dtype: str, margin: float, rows: list[Row]) -> None:
    from smfa.bench import build_bench, preset_config
    from smfa.compare import CompareConfig, compare
    from smfa.eval.schema import load_metrics
    from smfa.methods import method_names
    from smfa.pretrained import RECIPES
    from smfa.rundir import read_manifest
    from smfa.training import FinetuneConfig, finetune

    recipe = RECIPES["tiny-seed0" if sizes.bench == "tiny" else "micro-seed0"]
    if sizes.bench == "micro":  # the tests' shipped micro vanilla, when this is a source checkout
        fixtures = REPO / "tests" / "fixtures" / "pretrained"
        os.environ["SMFA_PRETRAINED_PATH"] = os.pathsep.join(filter(None, [os.environ.get("SMFA_PRETRAINED_PATH"), str(fixtures)]))
    t0 = time.perf_counter()
    bench = work / "bench"
    overrides = {k: v for k, v in recipe["bench"].items() if k not in ("preset", "seed")}
    build_bench(preset_config("tiny", seed=0, **overrides), bench, progress=False)
    rows.append(Row("a tiny", f"bench build ({sizes.bench})", f"{time.perf_counter() - t0:.1f} s"))

    t0 = time.perf_counter()
    vanilla = work / "vanilla"
    finetune(FinetuneConfig(**recipe["finetune"], bench=str(bench), out=str(vanilla), device=device, progress=False))
    shipped = "pretrained" in read_manifest(vanilla)
    if not shipped:  # a packaged install without the test fixtures: it trained a barely useful vanilla
        rows.append(Row("a tiny", "vanilla", "trained here (no shipped one found)", "numbers meaningless"))
    rows.append(Row("a tiny", "vanilla (shipped, installed)" if shipped else "vanilla (trained)",
                    f"{time.perf_counter() - t0:.1f} s"))

    methods = tuple(method_names())
    params = {m: {"max_steps": sizes.method_steps} for m in methods} if sizes.method_steps else {}
    t0 = time.perf_counter()
    out = compare(CompareConfig(bench=str(bench), model=str(vanilla), out=str(work / "compare"), methods=methods,
                                forget=("10",), eval_limit=sizes.eval_limit, params=params, device=device, dtype=dtype,
                                progress=False))
    rows.append(Row("a tiny", f"compare: {len(methods)} methods + vanilla, eval limit {sizes.eval_limit}",
                    f"{time.perf_counter() - t0:.1f} s"))

    def leak(path: Path) -> float:
        sets = load_metrics(path).sets
        return (sets["forget/image_memory"].leak_rate + sets["forget/text_memory"].leak_rate) / 2

    cells = out / "cells"
    placement = read_manifest(cells / "vanilla-f10")["placement"]
    rows.append(Row("a tiny", "evaluated on", f"{placement['device']} {placement['dtype']}",
                    "ok" if placement["dtype"] == dtype else f"FAIL (asked {dtype})"))
    before = leak(cells / "vanilla-f10")
    rows.append(Row("a tiny", "vanilla forget leak", f"{before:.2f}"))
    for m in methods:
        after = leak(cells / f"{m}-f10" / "eval")
        wall = read_manifest(cells / f"{m}-f10").get("wall_time_s")
        forgets = after < before - margin
        check = ("ok" if forgets else "FAIL") if sizes.method_steps is None else ("(would fail)" if not forgets else "") + " not enforced (--small)"
        rows.append(Row("a tiny", f"{m}: forget leak (unlearning s)", f"{after:.2f} ({wall:.0f} s)", check.strip()))


# ---- (b) a LLaVA-1.5-7B-shaped model ------------------------------------------------------------------
def llava_model(sizes: Sizes, device: torch.device, dtype: torch.dtype):
    """LlavaForConditionalGeneration of the given shapes, random weights, built directly on ``device``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(vision_config=CLIPVisionConfig(**sizes.vision), text_config=LlamaConfig(**sizes.text),
                         image_token_id=sizes.image_token_id, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    return model


def synthetic_batch(sizes: Sizes, batch: int, device: torch.device, dtype: torch.dtype, labels: bool) -> dict:
    """``batch`` prompts: BOS, the image's tokens (one per patch, CLS dropped), random text tokens; labels on
    the second half of the text (answer-only, as in training)."""
    image_tokens = (sizes.vision["image_size"] // sizes.vision["patch_size"]) ** 2
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(3, sizes.image_token_id, (batch, sizes.text_tokens), generator=gen)
    ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), torch.full((batch, image_tokens), sizes.image_token_id), text], 1)
    size = sizes.vision["image_size"]
    out = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
           "pixel_values": torch.randn(batch, 3, size, size, generator=gen).to(device, dtype)}
    if labels:
        lab = ids.clone()
        lab[:, : ids.shape[1] - sizes.text_tokens // 2] = -100
        out["labels"] = lab.to(device)
    return out


def llava_generation(model, sizes: Sizes, device: torch.device, dtype: torch.dtype, rows: list[Row]) -> None:
    model.eval()
    batch = synthetic_batch(sizes, sizes.gen_batch, device, dtype, labels=False)
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up (kernels, caches)
        synchronize(device)
        t0 = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=sizes.gen_tokens, min_new_tokens=sizes.gen_tokens,
                             do_sample=False, pad_token_id=0)
        synchronize(device)
    seconds = time.perf_counter() - t0
    new = (out.shape[1] - batch["input_ids"].shape[1]) * sizes.gen_batch
    rows.append(Row("b 7B", f"greedy generation, batch {sizes.gen_batch}, {sizes.gen_tokens} new tokens",
                    f"{new / seconds:.0f} tokens/s ({seconds:.1f} s)",
                    "ok" if new == sizes.gen_batch * sizes.gen_tokens else "FAIL (stopped early)"))


def llava_lora_training(model, sizes: Sizes, device: torch.device, dtype: torch.dtype, rows: list[Row]) -> None:
    """The MFA's training step at 7B shape: smfa's LoRA (``apply_lora``, the family adapter's targets) with
    gradient checkpointing, autocast in ``dtype``, AdamW; steps/s after one warm-up step, peak memory."""
    from smfa.models.families import family_for
    from smfa.training import apply_lora

    model = apply_lora(model, family_for(model), r=16, alpha=16, dropout=0.05, gradient_checkpointing=True)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch = synthetic_batch(sizes, sizes.train_batch, device, dtype, labels=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    t0 = 0.0
    for step in range(sizes.train_steps + 1):
        if step == 1:
            synchronize(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    synchronize(device)
    per_s = sizes.train_steps / (time.perf_counter() - t0)
    n_train = sum(p.numel() for p in trainable)
    seq = batch["input_ids"].shape[1]
    rows.append(Row("b 7B", f"LoRA r16 MFA step, batch {sizes.train_batch} × {seq} tokens, grad. checkpointing",
                    f"{per_s:.2f} steps/s ({n_train / 1e6:.1f} M trainable)",
                    "ok" if all(torch.isfinite(torch.tensor(losses))) else "FAIL (non-finite loss)"))
    if device.type == "cuda":
        rows.append(Row("b 7B", "peak GPU memory (weights + LoRA training)",
                        f"{torch.cuda.max_memory_allocated(device) / GiB:.1f} GiB"))


def sculpt_vs_copy(work: Path, sizes: Sizes, layers: int, rows: list[Row]) -> None:
    """``benchmarks/sculpt_scale.py``'s measurement, once: the copy and the sculpt each from a cold page cache."""
    import sculpt_scale as ss

    small = sizes is SMALL
    dims = ss.Dims(*sizes.sculpt_dims)
    need = 2 * sum(2 * ss.numel(shape) for _, shape in ss.checkpoint_tensors(layers, dims)) + GiB
    free = shutil.disk_usage(work).free
    if free < need:
        rows.append(Row("b 7B", f"out-of-core sculpt, {layers} layers", "not run",
                        f"FAIL ({free / GiB:.1f} GiB free, {need / GiB:.1f} needed: --workdir on a larger disk)"))
        return
    src = work / "ckpt"
    src.mkdir()
    size = ss.write_checkpoint(src, layers, 0, dims)
    ss.write_adapter(work / "forget", layers, 1, dims)
    ss.write_adapter(work / "anchor", layers, 2, dims)
    ss.evict(src)
    copy_s, _ = ss.plain_copy(src, work / "copy")
    shutil.rmtree(work / "copy")
    ss.evict(src)
    sculpt_s, peak_rss, _ = ss.run_sculpt_child(src, work / "forget", work / "anchor", work / "merged", 5.0)
    ss.spot_check(src, work / "merged")  # exits on failure
    rows.append(Row("b 7B", f"out-of-core sculpt + merge, {layers} layers ({size / GiB:.2f} GiB bf16), CPU",
                    f"{sculpt_s:.1f} s vs copy {copy_s:.1f} s = {sculpt_s / copy_s:.2f}×",
                    "not enforced (--small)" if small else "ok" if sculpt_s / copy_s <= 1.5 else "over the 1.5× target"))
    rows.append(Row("b 7B", "peak RSS of the sculpt process", f"{peak_rss / GiB:.2f} GiB",
                    "ok" if peak_rss <= 3 * 1000**3 else "over the 3 GB target"))
    shutil.rmtree(src)
    shutil.rmtree(work / "merged")


def print_table(rows: list[Row], header: str) -> None:
    widths = [max(len(getattr(r, f)) for r in rows + [Row("part", "measure", "value", "check")])
              for f in ("part", "what", "value", "check")]
    print("\n" + header)
    line = lambda r: "| " + " | ".join(getattr(r, f).ljust(w) for f, w in zip(("part", "what", "value", "check"), widths)) + " |"  # noqa: E731
    print(line(Row("part", "measure", "value", "check")))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (default) | cuda | cuda:N | cpu (cpu needs --small)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="default bf16")
    parser.add_argument("--small", action="store_true", help="shrunken sizes: every code path, in minutes on a CPU")
    parser.add_argument("--dry-run", action="store_true", help="= --device cpu --small")
    parser.add_argument("--margin", type=float, default=0.2, help="forget leak must fall below the vanilla's by this")
    parser.add_argument("--sculpt-layers", type=int, help="layers of the sculpted checkpoint (default 8; 32 = all of 7B)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: the temp dir; removed at the end)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: tiny,llava,sculpt")
    args = parser.parse_args()
    if args.dry_run:
        args.device, args.small = "cpu", True

    from smfa.errors import SmfaError
    from smfa.models.placement import resolve_placement

    if args.device in ("auto", "cuda") or args.device.startswith("cuda:"):
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device is visible; run it on a GPU machine (or --dry-run to exercise it on the CPU)",
                  file=sys.stderr)
            return 2
    try:
        placement = resolve_placement(args.device, args.dtype)
    except SmfaError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    if placement.device.type == "cpu" and not args.small:
        print("gpu_check: the full sizes need a GPU (a 7B model); on the CPU pass --small or --dry-run", file=sys.stderr)
        return 2
    sizes = SMALL if args.small else FULL
    layers = args.sculpt_layers or sizes.sculpt_layers
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device, dtype = placement.device, placement.dtype
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    rows: list[Row] = []
    timings: dict[str, float] = {}
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="smfa-gpu-check-", dir=base))
    started = time.perf_counter()
    try:
        if "tiny" not in skip:
            t0 = time.perf_counter()
            tiny_pipeline(work / "tiny", sizes, str(device), placement.dtype_name, args.margin, rows)
            timings["a"] = time.perf_counter() - t0
            print(f"(a) tiny pipeline done in {timings['a']:.0f} s", flush=True)
        if "llava" not in skip:
            t0 = time.perf_counter()
            model = llava_model(sizes, device, dtype)
            synchronize(device)
            n = sum(p.numel() for p in model.parameters())
            rows.append(Row("b 7B", "LLaVA-1.5-7B-shaped model, random weights" if not args.small else
                            "LLaVA-shaped model (--small shapes), random weights",
                            f"{n / 1e9:.2f} B parameters ({next(model.parameters()).dtype}), built in "
                            f"{time.perf_counter() - t0:.1f} s"))
            llava_generation(model, sizes, device, dtype, rows)
            llava_lora_training(model, sizes, device, dtype, rows)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            timings["b-model"] = time.perf_counter() - t0
            print(f"(b) 7B-shaped generation and LoRA training done in {timings['b-model']:.0f} s", flush=True)
        if "sculpt" not in skip:
            t0 = time.perf_counter()
            (work / "sculpt").mkdir()
            sculpt_vs_copy(work / "sculpt", sizes, layers, rows)
            timings["b-sculpt"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    rows.append(Row("total", "wall time" + ("" if args.small else " (target ≤ 300 s on one H100)"), f"{total:.0f} s",
                    "" if args.small else ("ok" if total <= 300 else "over")))
    versions = f"torch {torch.__version__}"
    print_table(rows, f"gpu_check on {what}, {placement.dtype_name}{' (--small: shrunken sizes)' if args.small else ''}; {versions}")
    failed = [r for r in rows if r.check.startswith("FAIL")]
    print(json.dumps({"failed": [f"{r.part}: {r.what}" for r in failed], "timings_s": {k: round(v, 1) for k, v in timings.items()}}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
