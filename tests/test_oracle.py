"""An oracle is the "never saw them" floor only for the forget split it left out: eval, unlearn and compare
refuse any other (one line, exit 2), before any model is loaded or trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.cli.main import main
from smfa.stages.compare import parse_oracles
from smfa.errors import ConfigError
from smfa.eval.pipeline import check_oracle


def _fake_run(path: Path, bench: Bench, *, people: str = "retain", forget: str | None = "10", stage: str = "finetune",
              checksum: str | None = None) -> Path:
    path.mkdir(parents=True)
    manifest = {"stage": stage, "config": {}, "bench": {"checksum": checksum or bench.checksum},
                "data": {"people": people, "forget_left_out": forget if people == "retain" else None}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def bench(tiny_bench_dir: Path) -> Bench:
    return Bench.load(tiny_bench_dir, verify_images=False)


@pytest.mark.parametrize("forget", ["5", "10", "15", "val"])
def test_an_oracle_fits_exactly_its_own_split(bench: Bench, tmp_path: Path, forget: str) -> None:
    check_oracle(_fake_run(tmp_path / "o", bench, forget=forget), bench, forget)


@pytest.mark.parametrize(
    ("left_out", "evaluated", "message"),
    [
        ("10", "15", r"saw 9 of the 27 forget-15 people"),  # forget_10 ⊂ forget_15
        ("15", "10", r"never saw 9 retain people of forget 10"),
        ("10", "5", r"never saw 9 retain people of forget 5"),
        ("val", "10", r"saw 18 of the 18 forget-10 people"),
    ],
)
def test_a_mismatched_oracle_is_refused(bench: Bench, tmp_path: Path, left_out: str, evaluated: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_oracle(_fake_run(tmp_path / "o", bench, forget=left_out), bench, evaluated)


def test_a_vanilla_a_foreign_bench_or_a_bare_model_is_not_an_oracle(bench: Bench, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a retain-only finetune run"):
        check_oracle(_fake_run(tmp_path / "v", bench, people="all"), bench, "10")
    with pytest.raises(ConfigError, match="trained on another bench"):
        check_oracle(_fake_run(tmp_path / "b", bench, checksum="0" * 64), bench, "10")
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigError, match="has no manifest.json"):
        check_oracle(tmp_path / "bare", bench, "10")


def test_eval_and_unlearn_refuse_before_loading_a_model(bench: Bench, tmp_path: Path, capsys) -> None:
    oracle = _fake_run(tmp_path / "o15", bench, forget="15")
    missing_model = str(tmp_path / "no-such-model")  # never reached: the oracle check comes first
    args = ["--bench", str(bench.root), "--model", missing_model, "--forget", "10", "--oracle", str(oracle)]
    assert main(["eval", *args, "--out", str(tmp_path / "e")]) == 2
    assert "never saw 9 retain people of forget 10" in capsys.readouterr().err
    assert main(["unlearn", *args, "--out", str(tmp_path / "u")]) == 2
    assert "never saw 9 retain people of forget 10" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "u").exists()


def test_compare_takes_one_oracle_per_ratio(tmp_path: Path) -> None:
    assert parse_oracles(None, ("5", "10")) == {"5": None, "10": None}
    assert parse_oracles("train", ("5", "10")) == {"5": "train", "10": "train"}
    assert parse_oracles("5=a, 10=b", ("5", "10", "15")) == {"5": "a", "10": "b", "15": None}
    with pytest.raises(ConfigError, match="F=RUN"):
        parse_oracles("20=a", ("5", "10"))
