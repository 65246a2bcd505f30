"""`smfa demo` end to end, on a short schedule (the real demo uses the shipped vanilla and oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_default_and_paper_smfa_idk_and_the_oracle(tmp_path: Path, monkeypatch, capsys) -> None:
    from smfa.stages.demo import DemoConfig, run_demo

    monkeypatch.setenv("SMFA_CACHE_DIR", str(tmp_path / "cache"))
    out = run_demo(DemoConfig(out=str(tmp_path / "demo"), steps=10, method_steps=3, eval_limit=3))
    report = (out / "report.md").read_text()
    for row in ("smfa", "smfa@none", "idk", "vanilla", "oracle"):
        assert f"| {row} |" in report, row
    assert (out / "forget_10" / "methods.png").is_file() and (out / "forget_10" / "tradeoff.png").is_file()
    from smfa.rundir import read_manifest
    assert read_manifest(out / "cells" / "smfa-f10")["data"]["budget"] == "self-full"  # the default recipe
    assert read_manifest(out / "cells" / "smfa@none-f10")["data"]["budget"] == "none"  # the paper's
    printed = capsys.readouterr().out
    assert "report:" in printed and "leak photo" in printed and "% of vanilla" in printed
    assert "SMFA paper" in printed and "oracle" in printed
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "runs").iterdir())
    assert cached == ["oracle", "vanilla"]  # both cached for the next demo
