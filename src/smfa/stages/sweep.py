"""``smfa sculpt RUN --k ...``: re-sculpt an SMFA run's saved adapters for several k (and a mode) without
retraining, evaluate each, and write the trade-off table and curve. k moves things one way or the other as
measured — the plot's title says which."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smfa.bench.forget_set import REQUEST_LABEL
from smfa.errors import ConfigError
from smfa.eval.registry import metrics_of
from smfa.rundir import atomic_run_dir, read_manifest, write_json_atomic, write_manifest, write_text_atomic
from smfa.report import NA


@dataclass
class SweepConfig:
    run: str = ""  # an SMFA unlearn run (it keeps adapters/forget and adapters/anchor)
    ks: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
    mode: str = "both"
    out: str | None = None  # default RUN/sweep-MODE (a new directory)
    limit: int | None = 200  # questions per evaluation set
    core_sets: bool = True  # evaluate the train-phrasing sets, the name-memory set and general VQA only (the
    # trade-off curve's points; EvalConfig.core_sets);
    # False: every set (paraphrase, unseen photos) at every k
    judge: str = "offline"
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where each k's model is merged and evaluated
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32 (smfa.models.placement)
    overwrite: bool = False
    progress: bool = True


def sweep_row(k: float, metrics: Any) -> dict[str, Any]:
    """The numbers of one k that the trade-off table and plot show: every overall metric declared with a
    ``sweep`` key (:mod:`smfa.eval.metrics`)."""
    return {"k": k, **{m.sweep: getattr(metrics.overall, m.name) for m in metrics_of("overall") if m.sweep}}


def _markdown(rows: list[dict[str, Any]], mode: str, run: str) -> str:
    swept = [m for m in metrics_of("overall") if m.sweep]
    lines = [f"# SMFA k sweep (mode `{mode}`) of `{run}`", "",
             "Accuracies in %; Meaningful 0-10. Larger k masks fewer entries (stronger forgetting, by the formula).", "",
             "| k | " + " | ".join(f"{m.label} {m.better}".strip() for m in swept) + " |",
             "|---|" + "---|" * len(swept)]
    for r in rows:
        cells = [NA if r[m.sweep] is None else (f"{100 * r[m.sweep]:.1f}" if m.kind == "rate" else f"{r[m.sweep]:.2f}")
                 for m in swept]
        lines.append(f"| {r['k']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _adapter_run(run: Path) -> dict[str, Any]:
    """The manifest of an unlearn run that kept its adapters (SMFA, TIES); a ConfigError for any other run."""
    from smfa.methods.smfa import ANCHOR_ADAPTER, FORGET_ADAPTER, adapters_dir

    manifest = read_manifest(run)
    if manifest.get("stage") != "unlearn" or not (adapters_dir(run) / ANCHOR_ADAPTER).is_dir():
        raise ConfigError(f"{run} is not an SMFA/TIES unlearn run with saved adapters (adapters/{FORGET_ADAPTER}, adapters/{ANCHOR_ADAPTER})")
    return manifest


def forget_group(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``EvalConfig`` fields naming an unlearn run's forget group, read from its manifest: a deletion
    request's people (``smfa forget``) or its split, and a chain's earlier requests, as the run evaluated them."""
    request = manifest.get("request") or {}
    named = request.get("label") == REQUEST_LABEL
    return {"forget": str(manifest["config"]["forget"]),
            "forget_people": ",".join(request["people"]) if named else None,
            "earlier": [list(r["people"]) for r in manifest.get("chain") or []]}


def merge_to_checkpoint(run: str | Path, k: float | None, mode: str | None, out: str | Path, overwrite: bool = False) -> Path:
    """Sculpt an SMFA run's adapters into its vanilla *checkpoint on disk*, out of core (shard by shard,
    about one weight matrix in memory): how a 7B model is unlearned on a 24 GB machine.

    ``k`` and ``mode`` default to the run's own (its manifest's hyper-parameters), so the checkpoint equals
    the run's merged model; the dual variant's ``k_text`` is always the run's."""
    from smfa.methods.smfa import ANCHOR_ADAPTER, FORGET_ADAPTER, FORGET_TEXT_ADAPTER, adapters_dir
    from smfa.models.loading import model_dir_of
    from smfa.sculpt import sculpt_checkpoint

    run = Path(run)
    manifest = _adapter_run(run)
    hp = manifest.get("hyperparameters", {})
    if k is None:
        k = hp.get("k")
    if mode is None:
        mode = hp.get("mode")
    if k is None or mode is None:
        raise ConfigError(f"{run} records no SMFA k and mode (method {manifest.get('method')!r}): give --k and --mode")
    dual = bool(hp.get("dual")) and (adapters_dir(run) / FORGET_TEXT_ADAPTER).is_dir()
    src = model_dir_of(manifest["config"]["model"])
    if src is None:
        raise ConfigError(f"the vanilla model {manifest['config']['model']} of {run} is not a local directory")
    sculpt_checkpoint(src, adapters_dir(run) / FORGET_ADAPTER, adapters_dir(run) / ANCHOR_ADAPTER, out, float(k), mode,
                      overwrite=overwrite,
                      forget_adapter_dir2=adapters_dir(run) / FORGET_TEXT_ADAPTER if dual else None,
                      k2=float(hp.get("k_text", 10.0)) if dual else None,
                      manifest_extra={"source_run": str(run.resolve())})  # smfa forget continues its chain
    return Path(out)


def sculpt_sweep(cfg: SweepConfig) -> Path:
    from smfa.bench import Bench
    from smfa.eval.pipeline import EvalConfig, evaluate_loaded
    from smfa.methods.smfa import ANCHOR_ADAPTER, FORGET_ADAPTER, FORGET_TEXT_ADAPTER, adapters_dir
    from smfa.models.loading import LoadedModel, load_model
    from smfa.report import plot_k_sweep
    from smfa.sculpt import merge_sculpted_into, write_sculpt_report

    run = Path(cfg.run)
    manifest = _adapter_run(run)
    if not cfg.ks:
        raise ConfigError("--k needs at least one value")
    ucfg = manifest["config"]
    hp = manifest.get("hyperparameters", {})
    dual = bool(hp.get("dual")) and (adapters_dir(run) / FORGET_TEXT_ADAPTER).is_dir()
    bench = Bench.load(ucfg["bench"])
    from smfa.models.placement import resolve_placement

    vanilla = load_model(ucfg["model"], placement=resolve_placement(cfg.device, cfg.dtype))
    out = Path(cfg.out) if cfg.out else run / f"sweep-{cfg.mode}"
    from smfa.data import ImageCache

    images = ImageCache(bench)  # the same questions at every k: encode them once
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with atomic_run_dir(out, overwrite=cfg.overwrite) as stage:
        for k in cfg.ks:
            model = copy.deepcopy(vanilla.model)
            report = merge_sculpted_into(
                model, adapters_dir(run) / FORGET_ADAPTER, adapters_dir(run) / ANCHOR_ADAPTER, float(k), cfg.mode,
                forget_adapter_dir2=adapters_dir(run) / FORGET_TEXT_ADAPTER if dual else None,
                k2=float(hp.get("k_text", 10.0)) if dual else None, progress=False,
            )
            cell = stage / f"k={k:g}"
            write_sculpt_report(report, cell / "sculpt")
            loaded = LoadedModel(model=model, processor=vanilla.processor, family=vanilla.family, source=f"{run} k={k:g}")
            ecfg = EvalConfig(bench=ucfg["bench"], model=f"{run} (k={k:g}, mode={cfg.mode})",
                              **forget_group(manifest),  # a request's people, not its config's split
                              target=ucfg.get("target", "all"), limit=cfg.limit, judge=cfg.judge, progress=cfg.progress,
                              core_sets=cfg.core_sets, device=cfg.device, dtype=cfg.dtype)
            metrics = evaluate_loaded(loaded, bench, ecfg, cell, extra={"k": k, "mode": cfg.mode}, images=images)
            rows.append(sweep_row(float(k), metrics))
        write_json_atomic(stage / "sweep.json", {"mode": cfg.mode, "run": str(run), "rows": rows})
        write_text_atomic(stage / "sweep.md", _markdown(rows, cfg.mode, str(run)))
        plot_k_sweep(rows, stage / "k_sweep.png", title=f"SMFA k sweep (mode {cfg.mode})")
        write_manifest(stage, "sculpt", asdict(cfg), wall_time_s=round(time.perf_counter() - t0, 2),
                       source_run=str(run), bench={"checksum": bench.checksum})
    return out
