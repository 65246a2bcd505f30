"""The 7B memory plan: each stage's peak GPU memory at full depth in bf16, by phase and category.

For LLaVA-1.5-7B and Qwen2-VL-7B (``smfa.models.synthetic``'s shapes, at their real depths) every stage is
planned by :mod:`smfa.models.memory_plan`: the model is built on fake tensors (nothing is allocated) and one
real step of each phase runs under PyTorch's ``MemTracker``, at the batch of ``configs/methods/real.yaml``
(4), each example a photo's image tokens + 96 text tokens, with gradient checkpointing, bf16 weights and fp32
trained parameters (LoRA adapters; a full fine-tune's fp32 master weights); generation and answer losses at
evaluation's batch of 64 with the KV cache of the last generated token. The stages:

  finetune-lora      smfa finetune --lora
  finetune-full      smfa finetune without --lora (fp32 master weights): not a one-GPU path (issue #35,
                     decision 1) — shown, refused by the pre-flight check, left out of the 70 GB target
  unlearn-smfa       reference labels (the vanilla generates), MFA/RA training, the merge, its evaluation
  eval-attacks       smfa eval --attacks: generation, losses (with the vanilla's or oracle's beside them:
                     the MIA and forget-quality references), the relearn attack's LoRA
  unlearn-mmunlearner  the trainee's copy, the Fisher pass, masked training (vanilla in host memory), evaluation

Each stage's planned peak must be ≤ 70 GB and never below its full-size copies' weights (a planning bug
otherwise: the table fails loudly). With ``--check-copies`` the stages also run through smfa's CLI on a
1-layer checkpoint of the family's widths on the CPU (``_rehearsal_probe.py`` counts the full-size models
resident at once): a stage that holds more copies than its plan fails.

    python benchmarks/scale_rehearsal.py                    # both families, every stage (~6 min on one core)
    python benchmarks/scale_rehearsal.py --family qwen2-vl  # one family
    python benchmarks/scale_rehearsal.py --layers 2         # reduced depth: a quick look at the code path
    python benchmarks/scale_rehearsal.py --check-copies     # + the CLI stages at 1 layer (~15 min more per family)

The last line is ``worst projected 7B peak: <X> GB in <stage>; at most <N> full model copies``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
GB = 1e9
TARGET_GB = 70.0
REAL_BATCH = 4  # configs/methods/real.yaml's batch_size
NOT_ONE_GPU = {"finetune-full"}  # shown, refused on one GPU by design (issue #35, decision 1)
FAMILIES = {"llava-1.5": "LLAVA_1_5_7B", "qwen2-vl": "QWEN2_VL_7B"}


def stage_inputs(shape, layers: int | None = None, masked_share: float | None = None) -> dict[str, object]:
    """stage name → PlanInputs of ``shape`` (at ``layers`` language-model layers; default its real depth;
    ``masked_share``: MMUnlearner's, default the plan's)."""
    from smfa.models import memory_plan as mp
    from smfa.models.synthetic import model_config

    config = model_config(shape, layers or shape.layers, shape.vision_layers)
    bf16 = torch.bfloat16

    def inputs(stage: str, phases, dtype=bf16) -> object:
        return mp.PlanInputs(config, stage, dtype, phases, image_side=shape.image_size,
                             masked_share=mp.MASKED_SHARE if masked_share is None else masked_share)

    return {
        "finetune-lora": inputs("finetune-lora", mp.finetune_phases(True, REAL_BATCH)),
        "finetune-full": inputs("finetune-full", mp.finetune_phases(False, REAL_BATCH), torch.float32),
        "unlearn-smfa": inputs("unlearn-smfa", mp.unlearn_phases("smfa", True, REAL_BATCH, labels=True, evaluate=True,
                                                                  paired=False)),
        "eval-attacks": inputs("eval-attacks", mp.eval_phases(relearn=True, beside=("losses",))),
        # --reference auto resolves to none for MMUnlearner (no values chosen for a budget): no labels
        "unlearn-mmunlearner": inputs("unlearn-mmunlearner", mp.unlearn_phases("mmunlearner", False, REAL_BATCH,
                                                                                labels=False, evaluate=True, paired=True)),
    }


def plan_family(shape, layers: int | None, masked_share: float | None = None, progress: bool = True) -> list:
    """Every stage's :class:`smfa.models.memory_plan.StagePlan` (phases with the same step traced once)."""
    from smfa.models import memory_plan as mp

    caches: dict[torch.dtype, dict] = {}
    plans = []
    for name, inputs in stage_inputs(shape, layers, masked_share).items():
        t0 = time.perf_counter()
        plans.append(mp.plan(inputs, cache=caches.setdefault(inputs.dtype, {})))
        if progress:
            print(f"  planned {shape.name} {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return plans


def gb(n: int) -> str:
    return f"{n / GB:.1f}"


def stage_table(family: str, plans: list) -> str:
    """One row per stage at its peak phase, bytes by category (weights = every full-size copy on the device)."""
    lines = ["| model | stage | peak phase | copies | weights | gradients | optimiser | activations | temporaries | "
             "other | peak (GB) |", "|" + "---|" * 11]
    for stage in plans:
        p, u = stage.worst, stage.worst.usage
        flag = " (refused on one GPU)" if stage.stage in NOT_ONE_GPU else "" if p.peak <= TARGET_GB * GB else " ✗"
        lines.append(f"| {family} | {stage.stage} | {p.name} | {p.copies} | {gb(u.parameters + p.resident)} | "
                     f"{gb(u.gradients)} | {gb(u.optimizer)} | {gb(u.activations)} | {gb(u.temporaries)} | "
                     f"{gb(u.other)} | **{gb(p.peak)}**{flag} |")
    return "\n".join(lines)


def phase_table(family: str, plans: list) -> str:
    lines = ["| model | stage | phase | copies | weights | gradients | optimiser | activations | temporaries | other | "
             "peak (GB) |", "|" + "---|" * 11]
    for stage in plans:
        for p in stage.phases:
            u = p.usage
            lines.append(f"| {family} | {stage.stage} | {p.name} | {p.copies} | {gb(u.parameters + p.resident)} | "
                         f"{gb(u.gradients)} | {gb(u.optimizer)} | {gb(u.activations)} | {gb(u.temporaries)} | "
                         f"{gb(u.other)} | {gb(p.peak)} |")
    return "\n".join(lines)


# ---- --check-copies: the stages through the CLI, the copies each held -------------------------------------
@dataclass
class Run:
    stage: str
    copies: float
    rc: int
    wall_s: float


def run_stage(name: str, argv: list[str], work: Path, shape: tuple[int, int]) -> Run:
    """``smfa argv`` in a child process under the copy-counting probe (one thread)."""
    copies_file = work / f"copies-{name}.json"
    cmd = [sys.executable, str(HERE / "_rehearsal_probe.py"), str(copies_file), str(shape[0]), str(shape[1]), "--", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    with (work / f"{name}.log").open("w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    copies = json.loads(copies_file.read_text())["copies"] if copies_file.is_file() else float("nan")
    run = Run(name, copies, rc, time.perf_counter() - t0)
    print(f"  {name:<22} copies {copies:g}  {run.wall_s:5.0f} s" + ("" if rc == 0 else f"  FAILED rc={rc} (see {work / (name + '.log')})"),
          flush=True)
    return run


def cli_stages(bench: Path, src: Path, run: Path, person: str) -> list[tuple[str, list[str]]]:
    """(plan stage, smfa argv): one optimiser step per phase, one question per evaluation set, fp32 on the CPU,
    no reference labels (the vanilla alone generates them, one copy; at 7B widths on the CPU they take ~20 min)."""
    common = ["--device", "cpu", "--dtype", "fp32"]
    step = ["--param", "max_steps=1", "--param", "batch_size=1"]
    unlearn = ["--bench", str(bench), "--forget-people", person, "--anchor-size", "4", "--eval-limit", "1",
               "--reference", "none", *step, *common]
    return [
        ("finetune-lora", ["finetune", "--bench", str(bench), "--model", str(src), "--out", str(run / "vanilla"), "--lora",
                           "--steps", "1", "--batch-size", "1", "--save-steps", "0", *common]),
        ("unlearn-smfa", ["unlearn", "--method", "smfa", "--model", str(run / "vanilla"), "--out", str(run / "smfa"), *unlearn]),
        ("eval-attacks", ["eval", "--bench", str(bench), "--model", str(run / "smfa"), "--out", str(run / "eval"),
                          "--limit", "1", "--attacks", "relearn", "--config", str(run.parent / "core-sets.yaml"),
                          "--relearn-steps", "1", "--relearn-lr", "1e-4", "--relearn-repair-steps", "0",
                          "--relearn-batch-size", "1", *common]),
        ("unlearn-mmunlearner", ["unlearn", "--method", "mmunlearner", "--model", str(run / "vanilla"),
                                 "--out", str(run / "mmunlearner"), *unlearn]),
    ]


def check_copies(shape, plans: list, work: Path) -> list[str]:
    """Run the CLI stages at 1 layer; the failures (a stage failed, or held more copies than planned)."""
    from smfa.bench import Bench
    from smfa.models.synthetic import build_checkpoint
    from smfa.models.tiny import tiny_corpus

    bench_dir = work / "bench"
    if not (bench_dir / "bench.json").is_file():
        subprocess.run([sys.executable, "-m", "smfa.cli", "bench", "build", "--preset", "full", "--n-people", "40",
                        "--shape-images", "60", "--anchor-size", "8", "--image-size", str(shape.image_size),
                        "--out", str(bench_dir), "--quiet", "--overwrite"], check=True)
    (work / "core-sets.yaml").write_text("core_sets: true\n")  # eval: the bench's core sets, no variants
    bench = Bench.load(bench_dir)
    person = sorted(bench.forget_people("10"))[0]
    src, run = work / f"{shape.name}-L1", work / f"runs-{shape.name}"
    if not (src / "config.json").is_file():
        build_checkpoint(src, tiny_corpus(bench), shape=shape, layers=1, vision_layers=2, dtype=torch.float32)
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    planned = {p.stage: max(ph.copies for ph in p.phases) for p in plans}
    failures = []
    for name, argv in cli_stages(bench_dir, src, run, person):
        result = run_stage(name, argv, work, shape.embedding_shape)
        if result.rc != 0:
            failures.append(f"{shape.name} {name}: the CLI stage failed (rc {result.rc}; log {work / (name + '.log')})")
        elif result.copies > planned[name]:
            failures.append(f"{shape.name} {name}: held {result.copies:g} full-size copies, the plan counts {planned[name]}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=(*FAMILIES, "both"), default="both")
    ap.add_argument("--layers", type=int, default=None, help="language-model layers (default: the real depth)")
    ap.add_argument("--phases", action="store_true", help="also print every phase of every stage")
    ap.add_argument("--masked-share", type=float, default=None,
                    help="MMUnlearner's masked share of the target entries (default: the plan's, 0.31 as measured)")
    ap.add_argument("--check-copies", action="store_true", help="also run the CLI stages at 1 layer on the CPU")
    ap.add_argument("--workdir", default=None, help="--check-copies: checkpoints and runs (default a temporary directory)")
    ap.add_argument("--json", default=None, help="also write the plans here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from smfa.models import memory_plan as mp
    from smfa.models import synthetic

    t0 = time.perf_counter()
    families = list(FAMILIES) if args.family == "both" else [args.family]
    results: dict[str, list] = {}
    failures: list[str] = []
    for family in families:
        shape = getattr(synthetic, FAMILIES[family])
        results[family] = plan_family(shape, args.layers, args.masked_share)
        for stage in results[family]:
            try:
                mp.check_consistent(stage)
            except RuntimeError as exc:
                failures.append(str(exc))
            if stage.stage not in NOT_ONE_GPU and stage.peak > TARGET_GB * GB:
                failures.append(f"{shape.name} {stage.stage}: planned peak {gb(stage.peak)} GB > {TARGET_GB:.0f} GB")
    depth = f"{args.layers} language-model layers" if args.layers else "full depth"
    share = mp.MASKED_SHARE if args.masked_share is None else args.masked_share
    print(f"\nmemory plan, {depth}, bf16 weights (finetune-full: fp32 master weights), batch {REAL_BATCH}, "
          f"evaluation batch {mp.EVAL_BATCH}, MMUnlearner's masked share {share}; GB = 1e9 bytes; torch {torch.__version__}; "
          f"{time.perf_counter() - t0:.0f} s")
    for family in families:
        print(stage_table(family, results[family]))
    if args.phases:
        for family in families:
            print(phase_table(family, results[family]))
    if args.check_copies:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="smfa-rehearsal-"))
        work.mkdir(parents=True, exist_ok=True)
        for family in families:
            failures += check_copies(getattr(synthetic, FAMILIES[family]), results[family], work)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({f: [{"stage": s.stage, "copy_bytes": s.copy_bytes, "phases": [
            {"name": p.name, "copies": p.copies, "resident": p.resident, "traced": p.traced, **vars(p.usage)}
            for p in s.phases]} for s in plans] for f, plans in results.items()}, indent=1))
    for failure in failures:
        print(f"FAIL {failure}")
    one_gpu = [(f, s) for f, plans in results.items() for s in plans if s.stage not in NOT_ONE_GPU]
    family, worst = max(one_gpu, key=lambda fs: fs[1].peak)
    print(f"worst projected 7B peak: {gb(worst.peak)} GB in {family} {worst.stage}; "
          f"at most {max(p.copies for _, s in one_gpu for p in s.phases):g} full model copies")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
