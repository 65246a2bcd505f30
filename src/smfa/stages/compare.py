"""``smfa compare``: every method at every forget ratio on the same vanilla model, evaluated by the same code,
in one table (the paper's main-table layout + leak rates, forget quality vs the oracle, wall time) with plots.

Under ``torchrun`` / ``accelerate launch`` every rank trains each cell together; the main process alone
evaluates and writes cells, tables and the report, and the other ranks wait for it before reading anything
it wrote (:mod:`smfa.distributed`), so every rank ends with the same tables.

It resumes: a finished cell (unlearning run, reference evaluation, trained oracle) is not recomputed when it
was computed as it would be now. One that was computed otherwise — another eval limit, seed, method
hyper-parameter, bench, vanilla, precision, smfa version — is refused before any work, naming the cell and the
fields; ``--overwrite`` redoes exactly those cells (:func:`stale_cells`)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smfa.distributed import barrier, on_main_process, wait_for_main
from smfa.errors import ConfigError, OutputError
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
    reference: str = "auto"  # data budget of every method: auto (self-full for smfa/idk/ties on a bench with a reference pool) | none (the paper recipe) | self | self-full (unlearn.resolve_reference)
    eval_limit: int | None = 200
    judge: str = "offline"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N for every stage (smfa.models.placement)
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32 for every stage
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method hyper-parameter overrides
    include_reference: bool = True  # also evaluate the vanilla (and the oracle) as reference rows
    allow_existing: bool = False  # write into an existing directory that is not a comparison (the demo's)
    overwrite: bool = False  # redo the finished cells computed with another config (else they are refused)
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


def _oracle_config(cfg: CompareConfig, forget: str, run: Path) -> Any:
    """The finetune config of the retain-only oracle for ``forget``: the vanilla's own recipe (its manifest)."""
    from dataclasses import fields, replace

    from smfa.stages.finetune import FinetuneConfig

    recipe = read_manifest(Path(cfg.model)).get("config") or {}
    known = {f.name for f in fields(FinetuneConfig)}
    base = FinetuneConfig(**{k: v for k, v in recipe.items() if k in known})
    return replace(base, bench=cfg.bench, out=str(run), people="retain", forget=forget, overwrite=True,
                   resume=True, progress=cfg.progress, device=cfg.device, dtype=cfg.dtype)


def _train_oracle(cfg: CompareConfig, forget: str, out: Path, redo: bool) -> str:
    """A retain-only model for ``forget`` with the vanilla's own recipe, trained once into ``out``."""
    from smfa.stages.finetune import finetune

    run = out / "oracles" / f"oracle-f{forget}"
    if redo or not (run / "manifest.json").is_file():
        with wait_for_main():  # every rank trains, the main process writes; the others read the oracle next
            finetune(_oracle_config(cfg, forget, run))
    return str(run)


def _reference_config(cfg: CompareConfig, source: str, label: str, forget: str, out: Path, oracle: str | None) -> Any:
    from smfa.eval.pipeline import EvalConfig

    return EvalConfig(bench=cfg.bench, model=source, out=str(out), forget=forget, target=cfg.target,
                      limit=cfg.eval_limit, judge=cfg.judge, oracle=oracle if label != "oracle" else None,
                      vanilla=cfg.model if oracle and label != "oracle" else None,
                      progress=cfg.progress, overwrite=True, device=cfg.device, dtype=cfg.dtype)


def _reference_eval(cfg: CompareConfig, source: str, label: str, forget: str, cells: Path, oracle: str | None,
                    redo: bool) -> Path:
    from smfa.eval.pipeline import evaluate

    out = cells / f"{label}-f{forget}"
    if redo or not (out / "metrics.json").is_file():
        evaluate(_reference_config(cfg, source, label, forget, out, oracle))  # on the main process; the others wait
    return out


def method_entry(entry: str) -> tuple[str, str | None]:
    """A ``--methods`` entry: a method name, or ``NAME@BUDGET`` for that method with its own data budget
    (``smfa@none``: SMFA's paper recipe beside the default one). Unknown names and budgets fail here."""
    from smfa.methods import get_method
    from smfa.reference import check_budget

    name, sep, budget = entry.partition("@")
    get_method(name)
    if sep:
        check_budget(budget)
    return name, (budget if sep else None)


def _cell_config(cfg: CompareConfig, entry: str, forget: str, cell: Path, oracle: str | None) -> Any:
    from smfa.stages.unlearn import UnlearnConfig

    name, budget = method_entry(entry)
    return UnlearnConfig(bench=cfg.bench, model=cfg.model, out=str(cell), method=name, forget=forget,
                         target=cfg.target, seed=cfg.seed, params=dict(cfg.params.get(entry, cfg.params.get(name, {}))),
                         reference=budget or cfg.reference, eval_limit=cfg.eval_limit, judge=cfg.judge, oracle=oracle,
                         overwrite=cell.exists(), progress=cfg.progress, device=cfg.device, dtype=cfg.dtype,
                         shared_dir=str(cell.parent / ".shared"),
                         leak_target=None)  # a comparison measures each recipe as configured: no stronger attempts


# ---- finished cells computed otherwise ---------------------------------------------------------------------
# A finished cell is reused only when it was computed as it would be now. Refusing a stale one (rather than
# silently redoing it) is what a user of a many-hour comparison expects: a changed option is often a slip,
# and a redo replaces results that cost hours; --overwrite redoes just the stale cells, a fresh --out all.
# Not compared: where things are and how progress shows (out, shared_dir, overwrite, progress). The inputs are
# compared by content instead of by path: the bench by checksum, the vanilla by its weight files' digest (the
# cell's audit record), --device/--dtype by the resolved precision and device kind, ``params`` by the
# method's resolved hyper-parameters (with the real-checkpoint layer where the unlearn stage adds it:
# :func:`_vanilla_is_real`); the oracle and the evaluated model by resolved path. The smfa version that
# computed a cell counts too: another version may compute it otherwise.
_NOT_COMPARED = frozenset({"bench", "model", "out", "shared_dir", "overwrite", "progress", "device", "dtype",
                           "params", "oracle", "vanilla"})


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _field_changes(recorded: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any], skip=frozenset()) -> list[str]:
    """``field old -> new`` for each field of ``now`` that differs from ``recorded``; a field missing from an
    older record counts as its default (fields are added with the behaviour before them as default)."""
    recorded, now, defaults = _plain(recorded), _plain(now), _plain(defaults)
    return [f"{k} {recorded.get(k, defaults.get(k))!r} -> {v!r}" for k, v in now.items()
            if k not in skip and recorded.get(k, defaults.get(k)) != v]


def _path_changes(recorded: dict[str, Any], now: Any, names: tuple[str, ...]) -> list[str]:
    def resolved(p: Any) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else None

    return [f"{k} {recorded.get(k)!r} -> {getattr(now, k)!r}" for k in names
            if resolved(recorded.get(k)) != resolved(getattr(now, k))]


def _common_changes(manifest: dict[str, Any], bench: Any, where: dict[str, str]) -> list[str]:
    """The bench (by checksum), the precision and device kind (runs written before --device/--dtype existed ran
    in fp32 on the CPU) and the smfa version (``where["smfa"]``) a finished run recorded."""
    out = []
    version = (manifest.get("versions") or {}).get("smfa")
    if version != where["smfa"]:
        out.append(f"smfa version {version!r} -> {where['smfa']!r}")
    checksum = (manifest.get("bench") or {}).get("checksum")
    if checksum != bench.checksum:
        out.append(f"bench checksum {str(checksum)[:12]} -> {bench.checksum[:12]}")
    ran = manifest.get("placement") or {"device": "cpu", "dtype": "fp32"}
    if ran.get("dtype") != where["dtype"]:
        out.append(f"dtype {ran.get('dtype')!r} -> {where['dtype']!r}")
    if str(ran.get("device")).split(":")[0] != where["device"].split(":")[0]:
        out.append(f"device {ran.get('device')!r} -> {where['device']!r}")
    return out


def _vanilla_digest(model: str) -> str | None:
    from smfa.models.digest import model_digest, weight_hashes
    from smfa.models.loading import model_dir_of

    path = model_dir_of(model)
    return model_digest(weight_hashes(path)) if path is not None else None


def _vanilla_is_real(model: str) -> bool:
    """Whether the unlearn stage gives ``model`` the real-checkpoint hyper-parameters (it asks
    :func:`smfa.models.scale.is_real_scale` of the loaded vanilla), told without reading its weights: the model
    is built from its config on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from smfa.models.loading import hub_id, model_dir_of
    from smfa.models.scale import is_real_scale

    local = model_dir_of(model) if hub_id(model) is None else None
    if local is None and hub_id(model) is None:
        raise ConfigError(f"model {model} does not exist; pass the vanilla run directory the cells were trained from")
    config = AutoConfig.from_pretrained(local or hub_id(model), local_files_only=local is not None)
    with torch.device("meta"):
        return is_real_scale(AutoModelForImageTextToText.from_config(config))


def stale_cells(cfg: CompareConfig, out: Path, bench: Any, oracles: dict[str, str | None]) -> dict[Path, list[str]]:
    """``{finished cell: the fields it was computed with otherwise}`` for every finished cell of the comparison
    ``cfg`` in ``out`` whose config differs from what would run now (empty: every finished cell is reusable)."""
    from dataclasses import asdict

    from smfa.models.digest import model_digest
    from smfa.stages.audit import AUDIT_JSON
    from smfa.eval.pipeline import EvalConfig
    from smfa.methods import get_method
    from smfa.models.placement import resolve_placement
    from smfa.pretrained import recipe_of
    from smfa.rundir import package_versions, read_json
    from smfa.stages.unlearn import UnlearnConfig

    where = {**resolve_placement(cfg.device, cfg.dtype).describe(), "smfa": package_versions().get("smfa")}
    real: bool | None = None  # the vanilla's scale: told once, when a finished cell needs it
    cells = out / "cells"
    stale: dict[Path, list[str]] = {}
    for forget in cfg.forget:
        oracle = oracles[forget]
        if oracle == "train":
            oracle = str(out / "oracles" / f"oracle-f{forget}")
            if (Path(oracle) / "manifest.json").is_file():
                manifest = read_manifest(Path(oracle))
                now = _oracle_config(cfg, forget, Path(oracle))
                recorded = type(now)(**{k: v for k, v in manifest["config"].items() if k in asdict(now)})
                stale[Path(oracle)] = (_field_changes(recipe_of(recorded), recipe_of(now), {})
                                       + _common_changes(manifest, bench, where))
        vanilla_changed = False
        for name in cfg.methods:
            cell = cells / f"{name}-f{forget}"
            if not _cell_done(cell):
                continue
            manifest, now = read_manifest(cell), _cell_config(cfg, name, forget, cell, oracle)
            changes = _field_changes(manifest.get("config") or {}, asdict(now), asdict(UnlearnConfig()), _NOT_COMPARED)
            # The budget the cell resolved ``reference`` to (a changed ``reference`` or bench is caught above).
            budget = (manifest.get("data") or {}).get("budget") or now.reference
            if real is None:
                real = _vanilla_is_real(cfg.model)
            hp = get_method(now.method).config(now.method_config, now.params, target=now.target, reference=budget,
                                               real=real)
            changes += _field_changes(manifest.get("hyperparameters") or {}, asdict(hp), asdict(type(hp)()))
            changes += _path_changes(manifest.get("config") or {}, now, ("oracle",))
            changes += _common_changes(manifest, bench, where)
            if (cell / AUDIT_JSON).is_file():
                audit = read_json(cell / AUDIT_JSON, lambda msg: OutputError(f"{msg}: delete the cell to redo it"))
                files = ((audit.get("weights") or {}).get("input") or {}).get("files")
                vanilla = _vanilla_digest(cfg.model)  # memoised: hashed once per process (smfa.stages.audit.weight_hashes)
                if vanilla is not None and files and model_digest(files) != vanilla:
                    changes.append("vanilla weights (the vanilla's weight files differ from the ones it started from)")
                    vanilla_changed = True
            else:  # a cell from before audit records: the vanilla by path
                changes += _path_changes(manifest.get("config") or {}, now, ("model",))
            stale[cell] = changes
        for label, source in (("vanilla", cfg.model), ("oracle", oracle)):
            cell = cells / f"{label}-f{forget}"
            if not cfg.include_reference or not source or not (cell / "metrics.json").is_file():
                continue
            manifest, now = read_manifest(cell), _reference_config(cfg, source, label, forget, cell, oracle)
            changes = _field_changes(manifest.get("config") or {}, asdict(now), asdict(EvalConfig()), _NOT_COMPARED)
            changes += _path_changes(manifest.get("config") or {}, now, ("model", "oracle", "vanilla"))
            changes += _common_changes(manifest, bench, where)
            # An evaluation records no weights: the model it evaluated changed when the cells trained from
            # the vanilla saw it change, or when the oracle is retrained.
            if (label == "vanilla" and vanilla_changed) or (label == "oracle" and stale.get(Path(oracle))):
                changes.append(f"{label} weights (the {label} was retrained since)")
            stale[cell] = changes
    return {cell: changes for cell, changes in stale.items() if changes}


def _stale_message(out: Path, stale: dict[Path, list[str]]) -> str:
    """One line: each change with the cells it concerns (the first three named)."""
    by_change: dict[str, list[str]] = {}
    for cell, changes in stale.items():
        for change in changes:
            by_change.setdefault(change, []).append(cell.relative_to(out).as_posix())
    parts = [f"{change} ({', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''})"
             for change, names in by_change.items()]
    return (f"{len(stale)} finished cell(s) of {out} were computed with another config: {'; '.join(parts)}; pass "
            "--overwrite to redo them, delete those cell directories, or choose a fresh --out")


def compare(cfg: CompareConfig) -> Path:
    from smfa.report import compare_runs
    from smfa.stages.unlearn import unlearn

    if not cfg.methods or not cfg.forget:
        raise ConfigError("--methods and --forget need at least one value each")
    for entry in cfg.methods:
        method_entry(entry)  # unknown names and budgets fail before any work
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
    stale = stale_cells(cfg, out, bench, oracles)
    barrier()  # every rank has read the finished cells before the main process rewrites any
    if stale and not cfg.overwrite:
        raise ConfigError(_stale_message(out, stale))
    if stale and cfg.progress:
        print(f"redoing {len(stale)} finished cell(s) computed with another config (--overwrite)", flush=True)
    # The shared MFAs are keyed by the rows' ids, not their contents (and older ones by the vanilla's path).
    drop_shared = any(c.startswith(("vanilla weights", "bench checksum")) for changes in stale.values() for c in changes)
    cells = out / "cells"
    on_main_process(_prepare_cells, cells, drop_shared)
    tables: dict[str, Any] = {}
    t_all = time.perf_counter()
    for forget in cfg.forget:
        oracle = oracles[forget]
        if oracle == "train":
            oracle = _train_oracle(cfg, forget, out, redo=out / "oracles" / f"oracle-f{forget}" in stale)
        runs: list[Path] = []
        labels: list[str] = []
        walls: list[float | None] = []
        if cfg.include_reference:
            runs.append(_reference_eval(cfg, cfg.model, "vanilla", forget, cells, oracle,
                                        redo=cells / f"vanilla-f{forget}" in stale))
            labels.append("vanilla")
            walls.append(None)
            if oracle:
                runs.append(_reference_eval(cfg, oracle, "oracle", forget, cells, oracle,
                                            redo=cells / f"oracle-f{forget}" in stale))
                labels.append("oracle")
                walls.append(None)
        for name in cfg.methods:
            cell = cells / f"{name}-f{forget}"
            if cell in stale or not _cell_done(cell):
                unlearn(_cell_config(cfg, name, forget, cell, oracle))  # returns once the main process wrote it
            runs.append(cell / "eval")
            labels.append(name)
            walls.append(read_manifest(cell).get("wall_time_s"))
        paths = on_main_process(compare_runs, runs, labels, out / f"forget_{forget}", wall_times=walls)
        tables[forget] = {k: str(v) for k, v in paths.items()}
    summary = ["# Method comparison", "", f"- bench: `{cfg.bench}`", f"- vanilla: `{cfg.model}`",
               f"- setting: **{cfg.target}**", ""]
    for forget, paths in tables.items():
        summary += [f"## Forget {forget} %", "", Path(paths["markdown"]).read_text(encoding="utf-8"),
                    f"![methods](forget_{forget}/{Path(paths['bars']).name})",
                    f"![trade-off](forget_{forget}/{Path(paths['tradeoff']).name})",
                    f"![selectivity](forget_{forget}/{Path(paths['selectivity']).name})", ""]
    on_main_process(_write_summary, out, "\n".join(summary), tables, cfg, round(time.perf_counter() - t_all, 2))
    return out


def _prepare_cells(cells: Path, drop_shared: bool) -> None:
    if drop_shared and (cells / ".shared").exists():
        shutil.rmtree(cells / ".shared")
    cells.mkdir(parents=True, exist_ok=True)


def _write_summary(out: Path, report: str, tables: dict[str, Any], cfg: CompareConfig, wall_s: float) -> None:
    write_text_atomic(out / "report.md", report)
    write_json_atomic(out / "tables.json", tables)
    write_manifest(out, "compare", asdict(cfg), wall_time_s=wall_s)
