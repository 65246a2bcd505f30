"""Shipped pretrained vanillas: the tiny model already trained on a known bench, so that the demo and the
tests start from weights that are identical on every machine instead of training them (minutes, and
floating-point results that differ between CPUs).

A shipped model is a directory with ``model/`` (``save_pretrained`` output) and ``pretrained.json``: the
bench's *content checksum* (training rows, people, generator config and version — not the PNG bytes,
which depend on the image library's compressor, nor evaluation rows or splits, which change nothing a
vanilla trains on), the recipe key (:func:`training_key` of the finetune config, tiny architecture
included), the recipe itself and the package versions it was trained with. ``smfa finetune --model tiny``
(and everything built on it: the demo, the test fixtures) uses a shipped model when both keys match and
says so; otherwise it says why and trains.

Searched: the package's own ``smfa/pretrained/`` and every directory in ``$SMFA_PRETRAINED_PATH``
(``os.pathsep``-separated; the test suite adds its fixtures this way). ``scripts/train_shipped_vanilla.py``
retrains them from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

PRETRAINED_JSON = "pretrained.json"

# The shipped models: the bench they were trained on (preset + overrides) and the finetune recipe
# (FinetuneConfig overrides). ``tiny-seed0`` ships in the package (the demo's vanilla); ``micro-seed0`` and its oracle in
# tests/fixtures/pretrained (the test suite's vanilla, a 60-person bench).
RECIPES: dict[str, dict[str, Any]] = {
    "tiny-seed0": {"bench": {"preset": "tiny", "seed": 0}, "finetune": {}},
    # The gold standard of the demo's forget-10 rows: the same recipe on the retain people only.
    "tiny-seed0-oracle10": {"bench": {"preset": "tiny", "seed": 0}, "finetune": {"people": "retain", "forget": "10"}},
    "micro-seed0": {
        # 60 people: a 0.3 reference share keeps 23 people in the forget-10 retain evaluation pool (0.6: 13)
        "bench": {"preset": "tiny", "seed": 0, "n_people": 60, "n_shape_images": 160, "anchor_size": 24,
                  "reference_share": 0.3, "neighbour_pairs": 0},
        "finetune": {"steps": 2000, "lr": 2e-3, "save_steps": 500},
    },
    # The test suite's forget-10 oracle (tests/test_pipeline.py, test_attacks.py): half the vanilla's steps on
    # the micro bench's retain people; shipped so that a fresh clone does not train it (~3 min on 2 cores).
    "micro-seed0-oracle10": {
        "bench": {"preset": "tiny", "seed": 0, "n_people": 60, "n_shape_images": 160, "anchor_size": 24,
                  "reference_share": 0.3, "neighbour_pairs": 0},
        "finetune": {"steps": 1000, "lr": 2e-3, "people": "retain", "forget": "10"},
    },
}
# Bench config fields that decide only the splits, not a training row: left out of the content checksum.
SPLIT_ONLY_FIELDS = frozenset({"reference_share"})
# Generator fields added after weights were shipped, left out of the key at the value that adds no row, so a
# bench built with them at that value keeps its vanilla.
NEUTRAL_AT = {"multi_fact_phrasings": 0}


def content_checksum(bench: Any) -> str:
    """sha256 of what a vanilla learns from a bench: its training rows, its people, the generator config and
    the bench version. Evaluation-only rows (held-out phrasings, unseen photos) and the splits are left out:
    they change nothing a vanilla is trained on."""
    h = hashlib.sha256()
    for q in bench.training_rows():
        h.update(json.dumps(q.to_dict(), sort_keys=True).encode())
    h.update((Path(bench.root) / "people.jsonl").read_bytes())
    config = {k: v for k, v in (bench.meta.get("config") or {}).items()
              if k not in SPLIT_ONLY_FIELDS and not (k in NEUTRAL_AT and v == NEUTRAL_AT[k])}
    meta = {"version": bench.meta.get("version"), "config": config}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


# FinetuneConfig fields that do not decide the trained weights (paths, flags, where it runs).
NOT_RECIPE = frozenset({"bench", "out", "overwrite", "resume", "progress", "pretrained", "device"})


def recipe_of(cfg: Any) -> dict[str, Any]:
    """The fields of a finetune config that decide the trained weights. ``dtype`` counts only when asked
    for explicitly in half precision (``auto``/``fp32``), ``augment``, ``exclude`` and ``slices`` only when
    used: the keys of models trained before the options."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in NOT_RECIPE}
    if fields.get("dtype", "auto") in ("auto", "fp32"):
        fields.pop("dtype", None)
    if not fields.get("augment"):
        fields.pop("augment", None)
    if not fields.get("exclude"):  # options added later: the keys of models trained before them
        fields.pop("exclude", None)
    if fields.get("slices", 1) == 1:
        fields.pop("slices", None)
    if fields.get("gradient_checkpointing") is None:  # auto: off for the tiny model, whose recipes say false
        fields["gradient_checkpointing"] = False
    return fields


def training_key(bench_checksum: str, cfg) -> str:
    """A digest of everything that decides the trained weights (not paths, not progress/overwrite flags),
    including the built-in tiny model's architecture and initialisation, so a change there retrains."""
    from smfa.models.tiny import TinyModelConfig

    fields = recipe_of(cfg)
    if fields.get("sampler") == "random":  # the default: keep the keys of models cached before the option existed
        fields.pop("sampler")
    arch = asdict(TinyModelConfig()) if cfg.model == "tiny" else None
    blob = json.dumps({"bench": bench_checksum, "config": fields, "tiny_model": arch}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def recipe_key(bench: Any, cfg: Any) -> str:
    return training_key(content_checksum(bench), cfg)


def search_path() -> list[Path]:
    dirs = [Path(__file__).parent / "pretrained"]
    dirs += [Path(p) for p in os.environ.get("SMFA_PRETRAINED_PATH", "").split(os.pathsep) if p]
    return dirs


def shipped_models() -> list[tuple[Path, dict[str, Any]]]:
    """(directory, pretrained.json) of every shipped model on the search path."""
    found = []
    for base in search_path():
        if not base.is_dir():
            continue
        for sub in sorted(base.iterdir()):
            meta_path = sub / PRETRAINED_JSON
            if meta_path.is_file() and (sub / "model" / "config.json").is_file():
                found.append((sub, json.loads(meta_path.read_text(encoding="utf-8"))))
    return found


def find_pretrained(bench: Any, cfg: Any) -> tuple[Path | None, str]:
    """The shipped model for (bench, finetune config), or ``None`` and one line saying why none fits."""
    if cfg.model != "tiny" or cfg.lora:
        return None, "shipped models are tiny models trained from scratch (--model tiny, no LoRA)"
    models = shipped_models()
    if not models:
        return None, "no shipped tiny vanilla is installed"
    content = content_checksum(bench)
    same_bench = [(d, m) for d, m in models if m.get("bench_content") == content]
    if not same_bench:
        names = ", ".join(f"{d.name} ({m.get('bench', {}).get('preset')} seed {m.get('bench', {}).get('seed')})"
                          for d, m in models)
        return None, f"no shipped vanilla was trained on this bench (content {content[:12]}); shipped: {names}"
    key = recipe_key(bench, cfg)
    for d, m in same_bench:
        if m.get("recipe_key") == key and m.get("left_out", []) == _left_out(bench, cfg):
            what = "vanilla" if cfg.people == "all" else f"oracle (never saw forget split {cfg.forget})"
            return d, f"shipped {what} {d.name} (trained on this bench with this recipe)"
    # the closest one explains the miss: the same people (vanilla or oracle) and split first
    d, m = min(same_bench, key=lambda dm: ((dm[1].get("recipe") or {}).get("people") != cfg.people,
                                           (dm[1].get("recipe") or {}).get("forget") != cfg.forget))
    mine = recipe_of(cfg)
    differs = sorted(k for k, v in (m.get("recipe") or {}).items() if k in mine and mine[k] != v)
    why = f"its recipe differs in {', '.join(differs)}" if differs else "its model architecture or recipe differs"
    return None, f"shipped vanilla {d.name} fits this bench but {why}"


def _left_out(bench: Any, cfg: Any) -> list[str]:
    """The people an oracle never saw (splits are not in the content checksum, so they are checked apart)."""
    return sorted(bench.forget_people(cfg.forget)) if cfg.people == "retain" else []


def install_pretrained(src: Path, bench: Any, cfg: Any, out: Path) -> Path:
    """Copy a shipped model into the run directory ``out`` (written atomically) with a finetune manifest
    that records where the weights came from."""
    from smfa.rundir import atomic_run_dir, write_manifest

    meta = json.loads((src / PRETRAINED_JSON).read_text(encoding="utf-8"))
    with atomic_run_dir(out, overwrite=cfg.overwrite) as stage:
        shutil.copytree(src / "model", stage / "model")
        write_manifest(
            stage, "finetune", asdict(cfg), seed=cfg.seed,
            bench={"path": str(bench.root), "checksum": bench.checksum, "preset": bench.meta.get("preset")},
            data={"rows": meta.get("rows"), "people": cfg.people,
                  "forget_left_out": cfg.forget if cfg.people == "retain" else None},
            pretrained={"source": str(src), "name": src.name, "trained_with": meta.get("versions"),
                        "recipe_key": meta.get("recipe_key")},
            final_loss=meta.get("final_loss"),
        )
    return out


def write_pretrained(run: Path, bench: Any, cfg: Any, dest: Path) -> Path:
    """Package the finetune run ``run`` (trained on ``bench`` with ``cfg``) as a shipped model in ``dest``."""
    from smfa.rundir import atomic_run_dir, read_manifest, write_json_atomic

    manifest = read_manifest(run)
    with atomic_run_dir(dest, overwrite=True) as stage:
        shutil.copytree(Path(run) / "model", stage / "model")
        write_json_atomic(stage / PRETRAINED_JSON, {
            "bench_content": content_checksum(bench),
            "bench": {"preset": bench.meta.get("preset"), "seed": bench.meta.get("seed"),
                      "version": bench.meta.get("version"), "checksum": bench.checksum},
            "recipe_key": recipe_key(bench, cfg),
            "recipe": recipe_of(cfg),
            **({"left_out": _left_out(bench, cfg)} if cfg.people == "retain" else {}),
            "rows": (manifest.get("data") or {}).get("rows"),
            "final_loss": manifest.get("final_loss"),
            "versions": manifest.get("versions"),
            "retrain": "python scripts/train_shipped_vanilla.py",
        })
    return dest


def package_run(run: Path, bench: Any, cfg: Any, dest: Path) -> Path:
    """:func:`write_pretrained` after checking that ``run`` was trained on ``bench``'s training rows with
    ``cfg``'s recipe (its manifest's config): packaging a model under the wrong keys is refused."""
    from smfa.errors import ConfigError
    from smfa.rundir import read_manifest

    recorded = read_manifest(run).get("config") or {}
    recipe = recipe_of(cfg)  # resolved as the run records it (gradient_checkpointing auto: the tiny model's false)
    differs = sorted(n for n, v in recipe.items() if n in recorded and recorded[n] != v)
    if differs:
        raise ConfigError(f"{run} was trained with another recipe ({', '.join(differs)}); retrain it")
    return write_pretrained(run, bench, cfg, dest)
