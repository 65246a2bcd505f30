"""`smfa compare` resumes a finished cell only when it was computed as it would be now: a cell computed with
another config is refused in one line naming it and the fields, and `--overwrite` redoes exactly those cells."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smfa.cli.main import main

pytestmark = pytest.mark.slow


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def test_a_cell_computed_with_another_config_is_refused_and_overwrite_redoes_it(capsys, micro_bench_dir: Path,
                                                                                micro_vanilla: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    recipe = {"bench": str(micro_bench_dir), "model": str(micro_vanilla), "out": str(out), "methods": ["ga"],
              "forget": ["10"], "eval_limit": 2, "reference": "none", "params": {"ga": {"max_steps": 1}}, "progress": False}

    def compare(**changes) -> int:
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({**recipe, **changes}))
        return main(["compare", "--config", str(path)])

    assert compare() == 0
    cell, vanilla = out / "cells" / "ga-f10", out / "cells" / "vanilla-f10"
    stamps = {p: (p / "manifest.json").stat().st_mtime_ns for p in (cell, vanilla)}
    assert compare() == 0  # the same config: every cell reused
    assert {p: (p / "manifest.json").stat().st_mtime_ns for p in stamps} == stamps
    capsys.readouterr()
    # Other options: refused before any work, naming the fields and the cells.
    _one_line_error(capsys, compare(eval_limit=3), "2 finished cell(s)", "eval_limit 2 -> 3", "limit 2 -> 3",
                    "cells/ga-f10", "cells/vanilla-f10", "--overwrite")
    _one_line_error(capsys, compare(params={"ga": {"max_steps": 2}}), "max_steps 1 -> 2", "cells/ga-f10")
    _one_line_error(capsys, compare(seed=1), "seed 0 -> 1", "cells/ga-f10")
    _one_line_error(capsys, compare(dtype="bf16"), "dtype 'fp32' -> 'bf16'")
    assert {p: (p / "manifest.json").stat().st_mtime_ns for p in stamps} == stamps
    # --overwrite redoes the stale cells with the options asked now.
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**recipe, "params": {"ga": {"max_steps": 2}}}))
    assert main(["compare", "--config", str(path), "--overwrite"]) == 0
    from smfa.rundir import read_manifest

    assert read_manifest(cell)["hyperparameters"]["max_steps"] == 2
    assert (vanilla / "manifest.json").stat().st_mtime_ns == stamps[vanilla]  # not stale: kept
    assert compare(params={"ga": {"max_steps": 2}}) == 0


def test_cells_on_a_real_scale_vanilla_resume_and_another_smfa_version_is_stale(capsys, monkeypatch, micro_bench_dir: Path,
                                                                               micro_vanilla: Path, tmp_path: Path) -> None:
    """On a real checkpoint the unlearn stage layers the real-checkpoint plan (configs/methods/real.yaml) over a
    method's values: a finished cell computed so is reused, not taken for another config. A cell computed by
    another smfa version is stale."""
    import json

    import smfa.models.scale

    monkeypatch.setattr(smfa.models.scale, "is_real_scale", lambda model: True)  # the micro vanilla, as a 7B
    out = tmp_path / "cmp"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"bench": str(micro_bench_dir), "model": str(micro_vanilla), "out": str(out),
                                    "methods": ["ga"], "forget": ["10"], "eval_limit": 2, "reference": "none",
                                    "params": {"ga": {"max_steps": 1}}, "include_reference": False, "progress": False}))
    assert main(["compare", "--config", str(path)]) == 0
    cell = out / "cells" / "ga-f10"
    from smfa.rundir import read_manifest

    assert read_manifest(cell)["hyperparameters"]["grad_accum"] == 4  # the real-checkpoint plan
    stamp = (cell / "manifest.json").stat().st_mtime_ns
    assert main(["compare", "--config", str(path)]) == 0
    assert (cell / "manifest.json").stat().st_mtime_ns == stamp  # reused
    manifest = json.loads((cell / "manifest.json").read_text())
    manifest["versions"]["smfa"] = "0.0.1"
    (cell / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    _one_line_error(capsys, main(["compare", "--config", str(path)]), "smfa version '0.0.1' -> ", "cells/ga-f10")
