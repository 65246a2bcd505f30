"""The 7B path rehearsed on the CPU: smfa's own commands on 7B-wide models of reduced depth.

A random-weight checkpoint with LLaVA-1.5-7B's real widths (hidden 4096, MLP 11008, 32 heads, vocabulary
32,064, CLIP ViT-L/14 at 336 px → 576 image tokens per photo) or Qwen2-VL-7B's (``--family qwen2-vl``:
hidden 3584, MLP 18944, vocabulary 152,064, 144 image tokens per photo; ``smfa.models.synthetic``) is built
at 1, 2 and 4 language-model layers, and a small bench at 336 px is rendered. At each depth the stages run as the
CLI runs them, each in its own process:

  finetune (LoRA) → unlearn --method M (every method, or SMFA alone with --quick) → eval --attacks
  → sculpt --merge-to → forget

with one forget person, a small anchor, one optimiser step per training phase and one question per core
evaluation set (memory, not quality, is measured; ``unlearn`` runs with ``--no-eval``: the ``eval`` stage
measures evaluation, with the relearn attack — or every attack — on the SMFA run). For each stage the process's peak resident memory (``wait4``'s maxrss) and the most full-size
model copies resident at once (``_rehearsal_probe.py``) are recorded; a line through the depths gives the
per-layer slope, and the peak is projected to the real depth (LLaVA: 32 layers, 24 vision layers; Qwen2-VL: 28
and 32).

The CPU runs in fp32 (this CPU has no bf16 matrix units: a bf16 matmul is ~50× slower), so the projection
to a bf16 model on a GPU replaces the resident copies' fp32 weights by the full model's bf16 weights
(copies × parameters × 2 bytes) and keeps everything else as measured in fp32 — activations, LoRA and
optimizer state, the runtime: an upper bound for the GPU's memory, since host memory also counts Python,
torch's CPU kernels and the mapped weight files.

    python benchmarks/scale_rehearsal.py --quick            # 1 and 2 layers, SMFA, relearn attack, sculpt
    python benchmarks/scale_rehearsal.py --quick --methods smfa,mmunlearner   # + MMUnlearner (~1 h on 2 cores)
    python benchmarks/scale_rehearsal.py                    # 1, 2, 4 layers, every stage and method
    python benchmarks/scale_rehearsal.py --quick --family qwen2-vl

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
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 1024**3
VISION_LAYERS = 2  # the rehearsal's vision depth; the projection adds the other 22 layers' weights
TARGET_GB = 70.0
TARGET_COPIES = 2


@dataclass
class Measurement:
    stage: str
    layers: int
    peak_gb: float
    copies: float
    wall_s: float
    rc: int


@dataclass
class Projection:
    stage: str
    peaks: dict[int, float]
    copies: float
    slope_gb: float
    projected_gb: float
    notes: list[str] = field(default_factory=list)


def run_stage(name: str, layers: int, argv: list[str], work: Path, threads: int, shape: tuple[int, int]) -> Measurement:
    """Run ``smfa argv`` in a child process under the copy-counting probe; its peak RSS from ``wait4``."""
    copies_file = work / f"copies-{name}.json"
    cmd = [sys.executable, str(HERE / "_rehearsal_probe.py"), str(copies_file), str(shape[0]), str(shape[1]), "--", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = (work / f"{name}.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    rc = os.waitstatus_to_exitcode(status)
    copies = json.loads(copies_file.read_text())["copies"] if copies_file.is_file() else float("nan")
    m = Measurement(name, layers, usage.ru_maxrss * 1024 / GB, copies, time.perf_counter() - t0, rc)
    print(f"  {name:<22} L={layers}  peak {m.peak_gb:6.2f} GB  copies {m.copies:g}  {m.wall_s:6.0f} s"
          + ("" if rc == 0 else f"  FAILED rc={rc} (see {work / (name + '.log')})"), flush=True)
    return m


def stages(quick: bool, bench: Path, vanilla_src: Path, run: Path, person: str, batch: int,
           methods: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """(stage name, smfa argv) in order; later stages read earlier stages' runs under ``run``. ``methods``
    (default: SMFA alone with ``quick``, else every method) must include smfa (eval and sculpt read it)."""
    from smfa.methods import method_names

    common = ["--device", "cpu", "--dtype", "fp32"]
    step = ["--param", "max_steps=1", "--param", f"batch_size={batch}"]
    methods = methods or (["smfa"] if quick else method_names())
    out: list[tuple[str, list[str]]] = [
        ("finetune-lora", ["finetune", "--bench", str(bench), "--model", str(vanilla_src), "--out", str(run / "vanilla"),
                           "--lora", "--steps", "1", "--batch-size", str(batch), "--save-steps", "0", *common]),
    ]
    for m in methods:
        out.append((f"unlearn-{m}", ["unlearn", "--method", m, "--bench", str(bench), "--model", str(run / "vanilla"),
                                     "--out", str(run / m), "--forget-people", person, "--reference", "none",
                                     "--anchor-size", "4", "--no-eval", *step, *common]))
    attacks = "relearn" if quick else "all"
    out.append(("eval-attacks", ["eval", "--bench", str(bench), "--model", str(run / "smfa"), "--out", str(run / "eval"),
                                 "--forget-people", person, "--limit", "1", "--attacks", attacks,
                                 "--config", str(run.parent.parent / "core-sets.yaml"),
                                 "--relearn-steps", "1", "--relearn-batch-size", str(batch), *common]))
    # --merge-to sculpts on the CPU, shard by shard, in the checkpoint's dtype (no --device/--dtype)
    out.append(("sculpt-merge", ["sculpt", str(run / "smfa"), "--k", "20", "--merge-to", str(run / "merged")]))
    if not quick:
        out.append(("forget", ["forget", "--model", str(run / "vanilla"), "--bench", str(bench), "--people", person,
                               "--out", str(run / "forget"), "--reference", "none", "--no-eval", *step, *common]))
    return out


def project(measured: list[Measurement], copies_bf16_bytes: float, built_fp32_bytes: dict[int, float], full: int) -> list[Projection]:
    """Per stage: a line through (layers, peak) → the peak at ``full`` layers, with the resident copies'
    fp32 weights of the reduced model swapped for the full model's bf16 weights."""
    import numpy as np

    out = []
    for stage in dict.fromkeys(m.stage for m in measured):
        rows = sorted((m for m in measured if m.stage == stage and m.rc == 0), key=lambda m: m.layers)
        if len(rows) < 2:
            continue
        xs = np.array([m.layers for m in rows], dtype=float)
        ys = np.array([m.peak_gb for m in rows])
        slope, intercept = np.polyfit(xs, ys, 1)
        copies = max(m.copies for m in rows)
        fp32_at_full = intercept + slope * full
        reduced_weights = built_fp32_bytes[full] / GB  # the reduced-vision model's fp32 weights, extrapolated to full depth
        projected = fp32_at_full + copies * (copies_bf16_bytes / GB - reduced_weights)
        out.append(Projection(stage, {m.layers: m.peak_gb for m in rows}, copies, float(slope), float(projected)))
    return out


def table(projections: list[Projection], depths: list[int]) -> str:
    head = "| stage | " + " | ".join(f"peak L={d} (GB)" for d in depths) + " | GB/layer | projected 7B (GB) | copies |"
    lines = [head, "|" + "---|" * (len(depths) + 4)]
    for p in projections:
        cells = [f"{p.peaks[d]:.2f}" if d in p.peaks else "–" for d in depths]
        flag = "" if p.projected_gb <= TARGET_GB else " ✗"
        lines.append(f"| {p.stage} | " + " | ".join(cells) + f" | {p.slope_gb:.2f} | {p.projected_gb:.1f}{flag} | {p.copies:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 and 2 layers, SMFA + relearn + sculpt")
    ap.add_argument("--layers", default=None, help="comma list of depths (default 1,2,4; --quick 1,2)")
    ap.add_argument("--batch", type=int, default=1, help="training batch size of every stage (default 1)")
    ap.add_argument("--family", choices=("llava-1.5", "qwen2-vl"), default="llava-1.5",
                    help="whose 7B widths (default llava-1.5)")
    ap.add_argument("--methods", default=None, help="comma list of methods to unlearn with (must include smfa; "
                    "default smfa with --quick, else all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where checkpoints and runs go (default a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", default=None, help="also write the measurements and projections here")
    args = ap.parse_args()
    depths = [int(x) for x in (args.layers or ("1,2" if args.quick else "1,2,4")).split(",")]
    methods = args.methods.split(",") if args.methods else None
    if methods is not None and "smfa" not in methods:
        ap.error("--methods must include smfa: the eval and sculpt stages read its run")

    from smfa.bench import Bench
    from smfa.models.synthetic import LLAVA_1_5_7B, QWEN2_VL_7B, build_checkpoint, full_size_params
    from smfa.models.tiny import tiny_corpus

    shape = QWEN2_VL_7B if args.family == "qwen2-vl" else LLAVA_1_5_7B
    prefix = "" if shape is LLAVA_1_5_7B else f"{args.family}-"  # each family's checkpoints in its own folders
    work = Path(args.workdir or tempfile.mkdtemp(prefix="smfa-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bench_dir = work / "bench"
    if not (bench_dir / "bench.json").is_file():
        subprocess.run([sys.executable, "-m", "smfa.cli", "bench", "build", "--preset", "full", "--n-people", "40",
                        "--shape-images", "60", "--anchor-size", "8", "--out", str(bench_dir), "--quiet", "--overwrite"],
                       check=True)
    (work / "core-sets.yaml").write_text("core_sets: true\n")  # eval: the bench's core sets, no variants
    bench = Bench.load(bench_dir)
    person = sorted(bench.forget_people("10"))[0]
    corpus = tiny_corpus(bench)
    print(f"bench: {bench_dir} ({len(bench.people)} people at 336 px); forget person {person}", flush=True)

    measured: list[Measurement] = []
    for layers in depths:
        layer_dir = work / f"{prefix}L{layers}"
        shutil.rmtree(layer_dir / "runs", ignore_errors=True)
        (layer_dir / "runs").mkdir(parents=True, exist_ok=True)
        src = layer_dir / "model"
        if not (src / "config.json").is_file():
            build_checkpoint(src, corpus, shape=shape, layers=layers, vision_layers=VISION_LAYERS)
        print(f"depth {layers}: {full_size_params(shape, layers, VISION_LAYERS) / 1e9:.2f} B parameters", flush=True)
        for name, argv in stages(args.quick, bench_dir, src, layer_dir / "runs", person, args.batch, methods):
            measured.append(run_stage(name, layers, argv, layer_dir, args.threads,
                                      shape.embedding_shape))

    full = shape.layers
    built = {full: full_size_params(shape, full, VISION_LAYERS) * 4}
    projections = project(measured, full_size_params(shape) * 2, built, full)
    print()
    print(f"{shape.name} width, batch {args.batch}, fp32 on the CPU; projected to {full} layers in bf16 "
          f"(target ≤ {TARGET_GB:.0f} GB, ≤ {TARGET_COPIES} copies); {time.perf_counter() - t0:.0f} s")
    print(table(projections, depths))
    failed = [m for m in measured if m.rc != 0]
    for m in failed:
        print(f"stage {m.stage} at {m.layers} layers failed (rc {m.rc}); log: {work / f'{prefix}L{m.layers}' / (m.stage + '.log')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"measured": [m.__dict__ for m in measured],
                                               "projections": [p.__dict__ for p in projections]}, indent=1))
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    if not projections:
        print("worst projected 7B peak: n/a (fewer than 2 depths measured); at most "
              f"{max((m.copies for m in measured), default=0):g} full model copies")
        return 1
    worst = max(projections, key=lambda p: p.projected_gb)
    print(f"worst projected 7B peak: {worst.projected_gb:.1f} GB in {worst.stage}; "
          f"at most {max(p.copies for p in projections):g} full model copies")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
