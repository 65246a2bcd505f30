"""The accelerator check: does smfa run, and how fast, on one GPU? One script, one table.

(a) The tiny pipeline on the GPU in bf16: bench → vanilla (the shipped one, looked up as it was shipped: on a
    GPU ``smfa finetune --dtype auto`` would first turn on bf16 autocast, which is not the shipped recipe, and
    train another) → every registered method → evaluation (``smfa compare``). Checks, each method against
    the vanilla, from the compare cells' ``metrics.json`` (``Overall`` of :mod:`smfa.eval.schema`):
    - it forgets: its forget leak (mean of the photo and name leak rates) below the vanilla's by ``--margin``;
    - it keeps: ``retain_memory`` and ``general_vqa`` (as shares of the vanilla's) each at least its known
      fp32 value minus ``--bf16-margin`` (0.10) — a model that bf16 has broken forgets too, so forgetting
      alone proves nothing. The known fp32 values (:data:`KNOWN_FP32`): on the shipped vanilla's bench (v3,
      seed 0; `smfa demo --eval-limit 200` on the CPU, docs/neighbours.md) SMFA's default kept 77.4 % of the
      vanilla's retain memory and IDK 72.6 %, both 95.7 % of its general VQA. The margin covers the
      seed-to-seed spread in fp32 (± 2–7 points over three seeds), this check's limit of 50 questions a set
      (a quarter of theirs) and bf16 rounding. GA, GA Difference, KL
      Minimisation, NPO, MMUnlearner and TIES erase retain memory and general VQA on this bench with their
      shipped values even in fp32 on the CPU (docs/archive/results.md: retain memory 0–23 %), so their numbers
      are reported without a floor;
    - it ran where asked: the device and dtype of each cell's manifest ``placement``.
(b) A checkpoint of LLaVA-1.5-7B's shape (Llama-2-7B language model, CLIP ViT-L/14-336 vision tower; random
    weights from :func:`smfa.models.synthetic.build_checkpoint`, nothing downloaded) saved to disk and
    taken through smfa's own CLI, each stage in its own process under ``_gpu_probe.py``:

        smfa bench build --preset full --n-people 40 --shape-images 60 --anchor-size 8
        smfa unlearn --method smfa --forget-people P --param max_steps=3 --eval-limit 8   (the default recipe:
                                                       the reference pool labelled by the vanilla, self-full)
        smfa eval RUN --limit 8
        smfa sculpt RUN --k 20 --merge-to OUT      (out of core, on the CPU; against a plain copy of the shards)

    so the Trainer, collator, answer view, memory plan, merge and evaluation batching are the ones a user
    runs. Per stage: wall time, peak GPU memory (``max_memory_allocated`` inside the child) — at most the
    stage's memory plan (:mod:`smfa.models.memory_plan`, at the run's batch) + 10 % —, peak RSS, and
    where the parameters were — what the probe saw at each model's first forward (device × dtype, frozen and
    trainable counted apart), the manifest's ``placement`` and the dtypes of the checkpoint the stage wrote.
    Every parameter must be on the asked device and every frozen one in the asked dtype.

    python benchmarks/gpu_check.py                  # on a CUDA machine (~30 GB of free disk for the 7B files)
    python benchmarks/gpu_check.py --layers 4       # the 7B widths at 4 language-model layers: a quick GPU look
    python benchmarks/gpu_check.py --dry-run        # = --device cpu --small: every code path, shrunken

With ``--small`` the methods take 2 steps on the micro bench: forgetting is not enforced there (2 steps
forget nothing), the floors are (2 steps must not break the model either). Without CUDA (and without
``--dry-run``/``--small``) it says so in one line and exits 2. Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sculpt_scale's evict/plain_copy

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GiB = 1024**3
# Shares of the vanilla's retain memory / general VQA that SMFA and IDK keep with their shipped defaults in fp32
# on the tiny bench (the module docstring gives the sources); the floors are these minus --bf16-margin.
KNOWN_FP32 = {"smfa": {"retain_memory": 0.774, "general_vqa": 0.957},
              "idk": {"retain_memory": 0.726, "general_vqa": 0.957}}
BF16_MARGIN = 0.10
PLAN_SLACK = 1.10  # measured peak GPU memory ≤ the plan + 10 %


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
    shrink: dict  # smfa.models.synthetic.shrunk(...) keywords; empty = LLaVA-1.5-7B's real widths
    layers: int  # language-model layers of the 7B-shaped checkpoint
    vision_layers: int
    unlearn_params: tuple[str, ...]  # extra --param of the 7B unlearn stage


FULL = Sizes(bench="tiny", eval_limit=50, method_steps=None, shrink={}, layers=32, vision_layers=24,
             unlearn_params=())
SMALL = Sizes(
    bench="micro", eval_limit=4, method_steps=2,
    shrink=dict(text_hidden_size=128, text_intermediate_size=344, text_num_attention_heads=4, text_num_key_value_heads=4,
                vision_image_size=56, vision_hidden_size=64, vision_intermediate_size=128, vision_num_attention_heads=4,
                vision_projection_dim=64),
    layers=2, vision_layers=2,
    unlearn_params=("batch_size=4",),  # bf16 matmuls on a CPU are slow; the code path is the same
)


# ---- (a) the tiny pipeline ------------------------------------------------------------------------------
def retention_check(method: str, kept: dict[str, float | None], vanilla: dict[str, float | None], margin: float) -> str:
    """"ok", "FAIL (...)" or "no floor" for ``kept`` (metric → value): each at least (its known fp32 share,
    :data:`KNOWN_FP32`, minus ``margin``) × the vanilla's; a floor over a vanilla's 0 holds trivially and says so."""
    if method not in KNOWN_FP32:
        return "no floor (shipped values erase retain memory, docs/archive/results.md)"
    floors = {name: KNOWN_FP32[method][name] - margin for name in kept}
    low = [f"{name} < {floors[name]:.1%}" for name, value in kept.items()
           if value is None or vanilla[name] is None or value < floors[name] * vanilla[name]]
    if low:
        return f"FAIL ({', '.join(low)} of the vanilla's: fp32 value − {margin:.2f})"
    vacuous = [name for name, value in vanilla.items() if value == 0]
    return f"ok (vacuous for {', '.join(vacuous)}: the vanilla's is 0)" if vacuous else "ok"


def install_vanilla(bench: Path, recipe: dict, out: Path, device: str) -> bool:
    """The vanilla of ``recipe`` (a shipped recipe's finetune fields) in ``out``: the shipped model when one
    fits, looked up with the recipe as shipped — before ``finetune`` resolves the placement, which on a GPU
    adds bf16 autocast to the recipe and misses it —, else trained here on ``device``. True when shipped."""
    from dataclasses import replace

    from smfa.bench import Bench
    from smfa.pretrained import find_pretrained, install_pretrained
    from smfa.stages.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(**recipe, bench=str(bench), out=str(out), progress=False)
    loaded = Bench.load(bench)
    shipped, _ = find_pretrained(loaded, cfg)
    if shipped is not None:
        install_pretrained(shipped, loaded, cfg, out)
        return True
    finetune(replace(cfg, device=device))
    return False


def tiny_pipeline(work: Path, sizes: Sizes, device: str, dtype: str, margin: float, bf16_margin: float,
                  rows: list[Row]) -> None:
    from smfa.bench import build_bench, preset_config
    from smfa.stages.compare import CompareConfig, compare
    from smfa.eval.schema import load_metrics
    from smfa.methods import method_names
    from smfa.pretrained import RECIPES
    from smfa.rundir import read_manifest

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
    shipped = install_vanilla(bench, recipe["finetune"], vanilla, device)
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

    def scores(path: Path) -> tuple[float, dict[str, float | None]]:
        metrics = load_metrics(path)
        leak = (metrics.sets["forget/image_memory"].leak_rate + metrics.sets["forget/text_memory"].leak_rate) / 2
        return leak, {"retain_memory": metrics.overall.retain_memory, "general_vqa": metrics.overall.general_vqa}

    def placed(run: Path) -> tuple[str, str]:
        where = read_manifest(run)["placement"]
        text = f"{where['device']} {where['dtype']}"
        return text, "ok" if where["dtype"] == dtype and where["device"].split(":")[0] == device.split(":")[0] else f"FAIL (asked {device} {dtype})"

    cells = out / "cells"
    rows.append(Row("a tiny", "vanilla evaluated on", *placed(cells / "vanilla-f10")))
    before, kept_before = scores(cells / "vanilla-f10")
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    rows.append(Row("a tiny", "vanilla: forget leak; retain memory / general VQA",
                    f"{before:.2f}; {fmt(kept_before['retain_memory'])} / {fmt(kept_before['general_vqa'])}"))
    for m in methods:
        after, kept = scores(cells / f"{m}-f10" / "eval")
        where, where_check = placed(cells / f"{m}-f10")
        wall = read_manifest(cells / f"{m}-f10").get("wall_time_s")
        forgets = after < before - margin
        check = ("ok" if forgets else "FAIL") if sizes.method_steps is None else \
            ("(would fail) " if not forgets else "") + "not enforced (--small)"
        if where_check != "ok":
            check = where_check
        rows.append(Row("a tiny", f"{m}: forget leak (unlearned on, s)", f"{after:.2f} ({where}, {wall:.0f} s)", check))
        pct = lambda k: "" if kept[k] is None or not kept_before[k] else f" ({kept[k] / kept_before[k]:.0%})"  # noqa: E731
        rows.append(Row("a tiny", f"{m}: retain memory / general VQA (% of vanilla)",
                        f"{fmt(kept['retain_memory'])}{pct('retain_memory')} / {fmt(kept['general_vqa'])}{pct('general_vqa')}",
                        retention_check(m, kept, kept_before, bf16_margin)))


# ---- (b) a LLaVA-1.5-7B-shaped checkpoint through smfa's CLI ------------------------------------------------
def checkpoint_dtypes(folder: Path) -> Counter:
    """Parameter counts by dtype (smfa's names) of the ``*.safetensors`` files in ``folder``, from their
    headers alone (8-byte length, then JSON: name → dtype, shape)."""
    names = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}
    counts: Counter = Counter()
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                n = 1
                for d in entry["shape"]:
                    n *= d
                counts[names.get(entry["dtype"], entry["dtype"])] += n
    return counts


def count(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def parameters_seen(models: list[dict], device: str, dtype: str) -> tuple[str, str]:
    """The probe's records (``_gpu_probe.parameter_placement`` per model that ran) as one cell, and its check:
    every parameter on ``device``; every frozen one, and most of all of them, in ``dtype`` (parameters that
    require grad may be fp32 master weights of an adapter; an evaluated model's may all require grad)."""
    if not models:
        return "no model ran a forward", ""
    frozen: Counter = Counter()
    grad: Counter = Counter()
    for m in models:  # each model is a whole copy: the largest count per placement, not the sum
        for key, n in m["frozen"].items():
            frozen[key] = max(frozen[key], n)
        for key, n in m["trainable"].items():
            grad[key] = max(grad[key], n)
    cells = [f"{k} {count(n)} frozen" for k, n in frozen.most_common()] + \
            [f"{k} {count(n)} requires grad" for k, n in grad.most_common()]
    text = f"{len(models)} model(s): " + ", ".join(cells)
    by_dtype = Counter()
    for key, n in (frozen + grad).items():
        by_dtype[key.split()[1]] += n
    wrong = sorted({k.split()[0] for k in (*frozen, *grad)} - {device})
    wrong_frozen = sorted({k.split()[1] for k in frozen} - {dtype})
    if wrong:
        return text, f"FAIL (parameters on {', '.join(wrong)}, asked {device})"
    if wrong_frozen or by_dtype.most_common(1)[0][0] != dtype:
        return text, f"FAIL (weights in {', '.join(wrong_frozen or [by_dtype.most_common(1)[0][0]])}, asked {dtype})"
    return text, "ok"


def run_probed(name: str, argv: list[str], work: Path) -> dict:
    """``smfa argv`` in a child process under ``_gpu_probe.py``; its report (rc, wall_s, peaks, models) plus
    the parent's wall time (imports included) and the log's path."""
    report = work / f"{name}.probe.json"
    log = work / f"{name}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run([sys.executable, str(HERE / "_gpu_probe.py"), str(report), "--", *argv],
                            stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    probe = json.loads(report.read_text()) if report.is_file() else {"models": []}
    return {**probe, "rc": rc, "process_s": time.perf_counter() - t0, "log": log}


def memory_cell(probe: dict) -> str:
    gpu = probe.get("peak_gpu_allocated_bytes")
    rss = f"RSS {probe.get('peak_rss_bytes', 0) / GiB:.2f} GiB"
    if gpu is None:
        return rss
    return f"GPU {gpu / GiB:.1f} GiB (reserved {probe['peak_gpu_reserved_bytes'] / GiB:.1f}), {rss}"


def stage_rows(label: str, probe: dict, device: str, dtype: str, rows: list[Row], detail: str = "") -> bool:
    """Rows of one probed stage (time, memory, where the parameters were); False when it failed."""
    ok = probe["rc"] == 0
    if not ok:  # the work directory goes at the end: show the child's last lines now
        tail = probe["log"].read_text(errors="replace").splitlines()[-20:]
        print(f"gpu_check: {label} failed (rc {probe['rc']}); the end of its log:", *tail, sep="\n", file=sys.stderr)
    rows.append(Row("b 7B", f"{label}: wall (in smfa), peak memory",
                    f"{probe['process_s']:.0f} s ({probe.get('wall_s', float('nan')):.0f} s); {memory_cell(probe)}{detail}",
                    "ok" if ok else f"FAIL (rc {probe['rc']}; its log's end above)"))
    if ok:
        rows.append(Row("b 7B", f"{label}: parameters seen at forward", *parameters_seen(probe["models"], device, dtype)))
    return ok


def plan_row(label: str, probe: dict, src: Path, dtype: str, image_side: int, hp: dict, phases) -> Row:
    """The stage's memory plan (:mod:`smfa.models.memory_plan`: the checkpoint's config, the run's batch and
    checkpointing, ``phases(memory_plan)``) against the peak GPU memory its probe measured: ≤ the plan + 10 %."""
    from transformers import AutoConfig

    from smfa.models import memory_plan as mp
    from smfa.models.placement import DTYPES

    inputs = mp.PlanInputs(AutoConfig.from_pretrained(src), label, DTYPES[dtype], phases(mp), lora_r=hp.get("lora_r", 16),
                           checkpointing=bool(hp.get("gradient_checkpointing", True)), image_side=image_side)
    plan = mp.plan(inputs)
    mp.check_consistent(plan)
    planned = f"plan {plan.peak / 1e9:.1f} GB ({plan.worst.name})"
    what = f"{label}: peak GPU memory ≤ the memory plan + {PLAN_SLACK - 1:.0%}"
    gpu = probe.get("peak_gpu_allocated_bytes")
    if gpu is None:
        return Row("b 7B", what, f"not measured (no CUDA); {planned}", "not enforced (CPU)")
    check = "ok" if gpu <= PLAN_SLACK * plan.peak else f"FAIL ({gpu / plan.peak:.2f}× the plan)"
    return Row("b 7B", what, f"{gpu / 1e9:.1f} GB measured; {planned}", check)


def train_log_cell(run: Path) -> str:
    """'MFA 3 steps in 4.1 s, RA 3 steps in 2.0 s' from the run's Trainer logs (last line of each)."""
    parts = []
    for phase, file in (("MFA", "forget.jsonl"), ("RA", "anchor.jsonl")):
        path = run / "train_logs" / file
        if path.is_file():
            last = json.loads(path.read_text().strip().splitlines()[-1])
            if "train_runtime" in last:
                parts.append(f"{phase} {last.get('step', '?')} steps in {last['train_runtime']:.1f} s")
    return ", ".join(parts)


def disk_check(label: str, folder: Path, dtype: str, expected: float, rows: list[Row]) -> None:
    counts = checkpoint_dtypes(folder)
    text = ", ".join(f"{k} {count(n)}" for k, n in counts.most_common()) or "no safetensors"
    wrong = sorted(set(counts) - {dtype})
    check = f"FAIL ({', '.join(wrong)} on disk, asked {dtype})" if wrong else \
        "ok" if abs(sum(counts.values()) - expected) <= 0.01 * expected else f"FAIL (expected {count(expected)})"
    rows.append(Row("b 7B", f"{label} on disk", text, check))


def llava_cli(work: Path, sizes: Sizes, device: str, dtype: str, rows: list[Row]) -> None:
    """(b): build the checkpoint and the bench, then unlearn → eval → sculpt --merge-to through the CLI."""
    import sculpt_scale as ss

    from smfa.bench import Bench
    from smfa.models.placement import DTYPES
    from smfa.models.synthetic import LLAVA_1_5_7B, build_checkpoint, full_size_params, shrunk
    from smfa.models.tiny import tiny_corpus

    shape = shrunk(LLAVA_1_5_7B, **sizes.shrink) if sizes.shrink else LLAVA_1_5_7B
    n_params = full_size_params(shape, sizes.layers, sizes.vision_layers)
    size = n_params * DTYPES[dtype].itemsize
    need = 2 * size + GiB  # the checkpoint + one other full copy at a time (run/model, the copy, the merge)
    free = shutil.disk_usage(work).free
    if free < need:
        rows.append(Row("b 7B", "7B-shaped checkpoint", "not run",
                        f"FAIL ({free / GiB:.1f} GiB free, {need / GiB:.1f} needed: --workdir on a larger disk)"))
        return

    t0 = time.perf_counter()
    bench_dir = work / "bench"
    image_size = ["--image-size", str(shape.image_size)] if sizes.shrink else []
    subprocess.run([sys.executable, "-m", "smfa.cli", "bench", "build", "--preset", "full", "--n-people", "40",
                    "--shape-images", "60", "--anchor-size", "8", *image_size, "--out", str(bench_dir), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    bench = Bench.load(bench_dir)
    person = sorted(bench.forget_people("10"))[0]
    rows.append(Row("b 7B", f"bench build (full preset, 40 people, {shape.image_size} px)",
                    f"{time.perf_counter() - t0:.1f} s"))

    t0 = time.perf_counter()
    src = work / "model"
    build_checkpoint(src, tiny_corpus(bench), shape=shape, layers=sizes.layers, vision_layers=sizes.vision_layers,
                           dtype=DTYPES[dtype])
    what = "LLaVA-1.5-7B-shaped" if not sizes.shrink else "LLaVA-shaped (--small widths)"
    rows.append(Row("b 7B", f"{what} checkpoint, {sizes.layers} + {sizes.vision_layers} layers, random weights",
                    f"{count(n_params)} parameters, {size / GiB:.2f} GiB {dtype}, built + saved in {time.perf_counter() - t0:.0f} s"))
    disk_check("checkpoint", src, dtype, n_params, rows)

    run, evaluation, merged = work / "run", work / "eval", work / "merged"
    placement = ["--device", device, "--dtype", dtype]
    extra = [a for p in sizes.unlearn_params for a in ("--param", p)]
    probe = run_probed("unlearn", ["unlearn", "--method", "smfa", "--bench", str(bench_dir), "--model", str(src),
                                   "--out", str(run), "--forget-people", person,
                                   "--param", "max_steps=3", *extra, "--eval-limit", "8", *placement], work)
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").is_file() else {}
    hp = manifest.get("hyperparameters", {})
    plan = (f"; batch {hp.get('batch_size')} × {hp.get('grad_accum')}, grad. checkpointing "
            f"{'on' if hp.get('gradient_checkpointing') else 'off'}; {train_log_cell(run)}") if hp else ""
    if not stage_rows("unlearn smfa (3 steps, eval 8)", probe, device, dtype, rows, plan):
        return
    labelled = manifest.get("data", {}).get("budget", "none") != "none"
    rows.append(plan_row("unlearn smfa", probe, src, dtype, shape.image_size, hp,
                         lambda mp: mp.unlearn_phases("smfa", True, hp["batch_size"], labels=labelled, evaluate=True,
                                                      paired=False)))
    where = manifest.get("placement") or {}
    rows.append(Row("b 7B", "unlearn: manifest placement", f"{where.get('device')} {where.get('dtype')}",
                    "ok" if where.get("dtype") == dtype and str(where.get("device", "")).split(":")[0] == device.split(":")[0]
                    else f"FAIL (asked {device} {dtype})"))
    disk_check("unlearn: run/model", run / "model", dtype, n_params, rows)

    probe = run_probed("eval", ["eval", "--bench", str(bench_dir), "--model", str(run), "--out", str(evaluation),
                                "--forget-people", person, "--limit", "8", *placement], work)
    manifest = json.loads((evaluation / "manifest.json").read_text()) if (evaluation / "manifest.json").is_file() else {}
    detail = f"; {manifest['n_questions']} questions" if "n_questions" in manifest else ""
    if not stage_rows("eval --limit 8", probe, device, dtype, rows, detail):
        return
    rows.append(plan_row("eval", probe, src, dtype, shape.image_size, hp, lambda mp: mp.eval_phases(relearn=False, beside=())))
    shutil.rmtree(run / "model")  # sculpt --merge-to reads the source checkpoint and the adapters: free the disk

    ss.evict(src)
    copy_s, _ = ss.plain_copy(src, work / "copy")
    shutil.rmtree(work / "copy")
    ss.evict(src)
    probe = run_probed("sculpt", ["sculpt", str(run), "--k", "20", "--merge-to", str(merged)], work)
    if probe["rc"] != 0:
        stage_rows("sculpt --merge-to (CPU, out of core)", probe, device, dtype, rows)
        return
    ratio = probe["wall_s"] / copy_s
    rows.append(Row("b 7B", "sculpt --merge-to (CPU, out of core) vs a plain copy of the checkpoint",
                    f"{probe['wall_s']:.1f} s vs copy {copy_s:.1f} s = {ratio:.2f}×; {memory_cell(probe)}",
                    "not enforced (--small)" if sizes.shrink else "ok" if ratio <= 1.5 else "over the 1.5× target"))
    rows.append(Row("b 7B", "sculpt: peak RSS", f"{probe['peak_rss_bytes'] / GiB:.2f} GiB",
                    "ok" if probe["peak_rss_bytes"] <= 3 * 1000**3 else "over the 3 GB target"))
    disk_check("sculpt: merged checkpoint", merged, dtype, n_params, rows)


def print_table(rows: list[Row], header: str) -> None:
    fields = ("part", "what", "value", "check")
    widths = [max(len(getattr(r, f)) for r in rows + [Row("part", "measure", "value", "check")]) for f in fields]
    print("\n" + header)
    line = lambda r: "| " + " | ".join(getattr(r, f).ljust(w) for f, w in zip(fields, widths)) + " |"  # noqa: E731
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
    parser.add_argument("--bf16-margin", type=float, default=BF16_MARGIN,
                        help=f"retain memory and general VQA of {', '.join(KNOWN_FP32)} must keep their known fp32 share of "
                             f"the vanilla's minus this (default {BF16_MARGIN})")
    parser.add_argument("--layers", type=int, help="language-model layers of the 7B-shaped checkpoint (default 32; --small 2)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: the temp dir; removed at the end)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: tiny,llava")
    args = parser.parse_args()
    if args.dry_run:
        args.device, args.small = "cpu", True

    from dataclasses import replace

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
    if args.layers:
        sizes = replace(sizes, layers=args.layers)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device, dtype = str(placement.device), placement.dtype_name
    what = torch.cuda.get_device_name(placement.device) if placement.device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    rows: list[Row] = []
    timings: dict[str, float] = {}
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="smfa-gpu-check-", dir=base))
    started = time.perf_counter()
    try:
        if "tiny" not in skip:
            t0 = time.perf_counter()
            tiny_pipeline(work / "tiny", sizes, device, dtype, args.margin, args.bf16_margin, rows)
            timings["a"] = time.perf_counter() - t0
            print(f"(a) tiny pipeline done in {timings['a']:.0f} s", flush=True)
        if "llava" not in skip:
            t0 = time.perf_counter()
            (work / "llava").mkdir()
            llava_cli(work / "llava", sizes, device, dtype, rows)
            timings["b"] = time.perf_counter() - t0
            print(f"(b) 7B-shaped checkpoint through the CLI done in {timings['b']:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    rows.append(Row("total", "wall time", f"{total:.0f} s"))
    print_table(rows, f"gpu_check on {what}, {dtype}{' (--small: shrunken sizes)' if args.small else ''}; "
                      f"torch {torch.__version__}")
    failed = [r for r in rows if r.check.startswith("FAIL")]
    print(json.dumps({"failed": [f"{r.part}: {r.what}" for r in failed], "timings_s": {k: round(v, 1) for k, v in timings.items()}}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
