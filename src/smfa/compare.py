"""``smfa compare``: every method at every forget ratio on the same vanilla model, evaluated by the same code,
in one table (the paper's main-table layout + leak rates, forget quality vs the oracle, wall time) with plots.
It resumes: a cell whose run directory is complete is not recomputed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError
from smfa.rundir import check_output_dir, read_manifest, write_json_atomic, write_manifest, write_text_atomic


@dataclass
class CompareConfig:
    bench: str = ""
    model: str = ""  # vanilla run
    out: str = ""  # comparison directory (cells/ holds one unlearn run per method × forget)
    methods: tuple[str, ...] = ("smfa", "idk", "ga_diff", "kl_min", "npo", "mmunlearner", "ties", "ga")
    forget: tuple[str, ...] = ("5", "10", "15")
    target: str = "all"
    # Oracles for forget quality (KS p-value), one per ratio: "F=RUN,F=RUN", one RUN (valid for the one ratio
    # it left out), or "train" (trained here on retain only with the vanilla's recipe, one per ratio).
    oracle: str | None = None
    reference: str = "none"  # data budget of every method: none (anchor only) | self | self-full (+ the self-labelled reference pool, see unlearn.reference_questions)
    eval_limit: int | None = 200
    judge: str = "offline"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N for every stage (smfa.models.placement)
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32 for every stage
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method hyper-parameter overrides
    include_reference: bool = True  # also evaluate the vanilla (and the oracle) as reference rows
    allow_existing: bool = False  # write into an existing directory that is not a comparison (the demo's)
    progress: bool = True


def _cell_done(path: Path) -> bool:
    return (path / "manifest.json").is_file() and (path / "eval" / "metrics.json").is_file()


def parse_oracles(spec: str | None, forgets: tuple[str, ...]) -> dict[str, str | None]:
    """``--oracle`` → {forget ratio: oracle run or "train" or None}. A ratio missing from an "F=RUN" list has
    no oracle (no forget quality in its table)."""
    if not spec:
        return {f: None for f in forgets}
    if spec == "train" or "=" not in spec:
        return {f: spec for f in forgets}
    out: dict[str, str | None] = {f: None for f in forgets}
    for item in spec.split(","):
        ratio, sep, run = (x.strip() for x in item.partition("="))
        if not sep or not run or ratio not in forgets:
            raise ConfigError(f"--oracle item {item!r}: expected F=RUN with F one of the compared ratios ({', '.join(forgets)})")
        out[ratio] = run
    return out


def _train_oracle(cfg: CompareConfig, forget: str, out: Path) -> str:
    """A retain-only model for ``forget`` with the vanilla's own recipe (its manifest), trained once into ``out``."""
    from dataclasses import fields, replace

    from smfa.training import FinetuneConfig, finetune

    run = out / "oracles" / f"oracle-f{forget}"
    if not (run / "manifest.json").is_file():
        recipe = read_manifest(Path(cfg.model)).get("config") or {}
        known = {f.name for f in fields(FinetuneConfig)}
        base = FinetuneConfig(**{k: v for k, v in recipe.items() if k in known})
        finetune(replace(base, bench=cfg.bench, out=str(run), people="retain", forget=forget, overwrite=True,
                         resume=True, progress=cfg.progress, device=cfg.device, dtype=cfg.dtype))
    return str(run)


def _reference_eval(cfg: CompareConfig, source: str, label: str, forget: str, cells: Path, oracle: str | None) -> Path:
    from smfa.eval.pipeline import EvalConfig, evaluate

    out = cells / f"{label}-f{forget}"
    if not (out / "metrics.json").is_file():
        evaluate(EvalConfig(bench=cfg.bench, model=source, out=str(out), forget=forget, target=cfg.target,
                            limit=cfg.eval_limit, judge=cfg.judge, oracle=oracle if label != "oracle" else None,
                            vanilla=cfg.model if oracle and label != "oracle" else None,
                            progress=cfg.progress, overwrite=True, device=cfg.device, dtype=cfg.dtype))
    return out


def compare(cfg: CompareConfig) -> Path:
    from smfa.methods import get_method
    from smfa.report import compare_runs
    from smfa.unlearn import UnlearnConfig, unlearn

    if not cfg.methods or not cfg.forget:
        raise ConfigError("--methods and --forget need at least one value each")
    for name in cfg.methods:
        get_method(name)  # unknown names fail before any work
    from smfa.models.placement import resolve_placement

    resolve_placement(cfg.device, cfg.dtype)  # an impossible --device/--dtype too
    oracles = parse_oracles(cfg.oracle, tuple(cfg.forget))
    from smfa.bench import Bench
    from smfa.eval.pipeline import check_oracle

    bench = Bench.load(cfg.bench, verify_images=False)
    for forget, run in oracles.items():  # a wrong oracle fails before any training
        if run and run != "train":
            check_oracle(run, bench, forget)
    out = Path(cfg.out).expanduser().resolve()
    if out.exists() and not (out / "cells").is_dir() and not cfg.allow_existing:
        check_output_dir(out, overwrite=False)  # an unrelated existing directory: refuse
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Any] = {}
    t_all = time.perf_counter()
    for forget in cfg.forget:
        oracle = _train_oracle(cfg, forget, out) if oracles[forget] == "train" else oracles[forget]
        runs: list[Path] = []
        labels: list[str] = []
        walls: list[float | None] = []
        if cfg.include_reference:
            runs.append(_reference_eval(cfg, cfg.model, "vanilla", forget, cells, oracle))
            labels.append("vanilla")
            walls.append(None)
            if oracle:
                runs.append(_reference_eval(cfg, oracle, "oracle", forget, cells, oracle))
                labels.append("oracle")
                walls.append(None)
        for name in cfg.methods:
            cell = cells / f"{name}-f{forget}"
            if not _cell_done(cell):
                unlearn(UnlearnConfig(bench=cfg.bench, model=cfg.model, out=str(cell), method=name, forget=forget,
                                      target=cfg.target, seed=cfg.seed, params=dict(cfg.params.get(name, {})),
                                      reference=cfg.reference,
                                      eval_limit=cfg.eval_limit, judge=cfg.judge, oracle=oracle,
                                      overwrite=cell.exists(), progress=cfg.progress,
                                      device=cfg.device, dtype=cfg.dtype,
                                      shared_dir=str(cells / ".shared")))
            runs.append(cell / "eval")
            labels.append(name)
            walls.append(read_manifest(cell).get("wall_time_s"))
        paths = compare_runs(runs, labels, out / f"forget_{forget}", wall_times=walls)
        tables[forget] = {k: str(v) for k, v in paths.items()}
    summary = ["# Method comparison", "", f"- bench: `{cfg.bench}`", f"- vanilla: `{cfg.model}`",
               f"- setting: **{cfg.target}**", ""]
    for forget, paths in tables.items():
        summary += [f"## Forget {forget} %", "", Path(paths["markdown"]).read_text(encoding="utf-8"),
                    f"![methods](forget_{forget}/{Path(paths['bars']).name})",
                    f"![trade-off](forget_{forget}/{Path(paths['tradeoff']).name})",
                    f"![selectivity](forget_{forget}/{Path(paths['selectivity']).name})", ""]
    write_text_atomic(out / "report.md", "\n".join(summary))
    write_json_atomic(out / "tables.json", tables)
    write_manifest(out, "compare", asdict(cfg), wall_time_s=round(time.perf_counter() - t_all, 2))
    return out
