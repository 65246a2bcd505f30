"""`smfa demo` end to end, on a short schedule (the real demo trains the vanilla for 3,000 steps)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_writes_report_with_three_methods(tmp_path: Path, monkeypatch, capsys) -> None:
    from smfa.demo import DemoConfig, run_demo

    monkeypatch.setenv("SMFA_CACHE_DIR", str(tmp_path / "cache"))
    out = run_demo(DemoConfig(out=str(tmp_path / "demo"), steps=10, method_steps=3, eval_limit=3))
    report = (out / "report.md").read_text()
    for method in ("smfa", "idk", "ga_diff", "vanilla"):
        assert f"| {method} |" in report
    assert (out / "forget_10" / "methods.png").is_file() and (out / "forget_10" / "tradeoff.png").is_file()
    printed = capsys.readouterr().out
    assert "report:" in printed and "leak photo" in printed
    assert any((tmp_path / "cache" / "runs").iterdir())  # the vanilla is cached for the next demo
