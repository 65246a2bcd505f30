"""`smfa demo` end to end, on a short schedule (the real demo uses the shipped vanilla and oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_default_and_paper_smfa_idk_and_the_oracle(tmp_path: Path, monkeypatch, capsys) -> None:
    from smfa.stages.demo import DemoConfig, run_demo

    import smfa.bench

    from conftest import MICRO

    monkeypatch.setenv("SMFA_CACHE_DIR", str(tmp_path / "cache"))
    # On the micro bench (60 people, the test suite's; tests/conftest.py) rather than the tiny one (200): what is
    # checked is the demo's sequence and report, and on the tiny bench encoding its 15,000 training rows for the
    # 10-step vanilla and the oracle and labelling its ~7,000 reference rows took most of 150 s (2 cores).
    tiny = smfa.bench.preset_config
    monkeypatch.setattr(smfa.bench, "preset_config", lambda preset, **kw: tiny(preset, **{**MICRO, **kw}))
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
