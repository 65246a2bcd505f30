"""A request that verifies itself (#34): after training, ``unlearn`` and ``forget`` score the request's people;
above the leak target they try the method's stronger settings, and a run still above it is written, recorded as
such, and ends with exit status 3 and its numbers in one line — never a silent success."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smfa.cli.main import main
from smfa.eval.verify import RequestCheck
from smfa.methods import get_method

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own-data"


def test_a_check_passes_only_when_every_measured_leak_is_at_most_the_target() -> None:
    ok = RequestCheck(leak={"photo": 0.05, "name": 0.0, "paraphrase": None, "unseen_photo": None}, target=0.05, n=8)
    bad = RequestCheck(leak={"photo": 0.25, "name": 0.0, "paraphrase": 0.1, "unseen_photo": None}, target=0.05, n=8)
    assert ok.passed and not ok.failing
    assert not bad.passed and bad.failing == {"photo": 0.25, "paraphrase": 0.1}
    assert bad.summary() == ("photo 25.0 %, name 0.0 %, held-out phrasing 10.0 %, unseen photo – (n 8; target ≤ 5 % "
                             "on photo, name, held-out phrasing)")
    assert bad.to_dict()["passed"] is False
    # Unseen photos are measured and reported, not required (no recipe of this release reaches 5 % there).
    unseen = RequestCheck(leak={"photo": 0.0, "name": 0.0, "paraphrase": 0.02, "unseen_photo": 0.3}, target=0.05, n=8)
    assert unseen.passed and unseen.above == {"unseen_photo": 0.3}


def test_stronger_settings_are_tried_cheapest_first() -> None:
    smfa = get_method("smfa")
    hp = smfa.config(overrides={"k": 20.0, "epochs": 5.0, "min_steps": 200})
    assert smfa.escalations(hp) == [{"k": 40.0}, {"k": 40.0, "epochs": 10.0, "min_steps": 400}]  # re-sculpt, then steps
    ga = get_method("ga")
    hp = ga.config(overrides={"epochs": 3.0})
    assert ga.escalations(hp) == [{"epochs": 6.0, "min_steps": 0}, {"epochs": 12.0, "min_steps": 0}]


def test_the_step_floor_scales_training_to_small_data() -> None:
    from smfa.methods.base import MethodConfig
    from smfa.training.runs import optimizer_steps

    assert optimizer_steps(56, MethodConfig(batch_size=16, epochs=5)) == 20  # 4 steps an epoch
    assert optimizer_steps(56, MethodConfig(batch_size=16, epochs=5, min_steps=200)) == 200
    assert optimizer_steps(56, MethodConfig(batch_size=16, epochs=5, min_steps=200, max_steps=50)) == 50
    assert optimizer_steps(6400, MethodConfig(batch_size=16, epochs=5, min_steps=200)) == 2000  # large data: epochs decide


def test_bad_verification_options_fail_before_loading(capsys) -> None:
    for argv, msg in ((["--leak-target", "5"], "--leak-target must be a rate in [0, 1)"),
                      (["--verify-attempts", "-1"], "--verify-attempts must be an integer >= 0")):
        assert main(["unlearn", "--bench", "nowhere", "--model", "nowhere", "--out", "nowhere", *argv]) == 2
        assert msg in capsys.readouterr().err


def test_a_request_that_cannot_reach_the_target_ends_non_zero_with_its_numbers(micro_bench_dir: Path, micro_vanilla: Path,
                                                                                tmp_path: Path, capsys) -> None:
    """One optimiser step of the MFA forgets nothing: the k escalation is tried (a re-sculpt, no MFA retraining),
    then the run is written with the failed check in its manifest and audit, and the command exits 3."""
    out = tmp_path / "weak"
    rc = main(["forget", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--people", "p0011,p0029",
               "--out", str(out), "--param", "max_steps=1", "--verify-attempts", "1", "--no-eval"])
    err = capsys.readouterr().err
    assert rc == 3
    line = [ln for ln in err.splitlines() if ln.startswith("smfa forget: error:")]
    assert len(line) == 1 and "still leak after 2 attempt(s): photo" in line[0] and str(out) in line[0]
    record = json.loads((out / "manifest.json").read_text())["verification"]
    assert record["passed"] is False and [a["overrides"] for a in record["attempts"]] == [{}, {"k": 40.0}]
    assert record["attempts"][0]["leak"]["photo"] > 0.05
    assert json.loads((out / "audit.json").read_text())["verification"] == record
    assert not (out / ".attempts").exists()  # the attempts' shared adapters are not part of the run


@pytest.mark.slow
def test_the_readme_own_data_example_forgets_with_no_tuning_flags(tmp_path: Path, monkeypatch) -> None:
    """README "Your own data": 8 people, 56 rows, the vanilla as the README trains it, then `smfa unlearn
    --method smfa` with no tuning flag. Before the step floor (5 epochs = 15 optimiser steps) the forget people
    leaked 100 / 100 % by photo / name and the run reported success."""
    monkeypatch.setenv("SMFA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "own-data"
    shutil.copytree(EXAMPLE, data)
    bench, vanilla, run = tmp_path / "my-bench", tmp_path / "my-vanilla", tmp_path / "my-smfa"
    assert main(["bench", "import", "jsonl", str(data / "rows.jsonl"), "--images", str(data / "images"),
                 "--forget", str(data / "forget.txt"), "--out", str(bench)]) == 0
    assert main(["finetune", "--bench", str(bench), "--model", "tiny", "--out", str(vanilla), "--steps", "100",
                 "--batch-size", "16", "--lr", "3e-3"]) == 0
    assert main(["unlearn", "--method", "smfa", "--bench", str(bench), "--model", str(vanilla), "--forget", "user",
                 "--out", str(run)]) == 0
    overall = json.loads((run / "eval" / "metrics.json").read_text())["overall"]
    assert overall["forget_leak_image"] <= 0.05 and overall["forget_leak_text"] <= 0.05
    assert overall["retain_image_memory"] >= 0.9 and overall["retain_text_memory"] >= 0.9
    assert json.loads((run / "manifest.json").read_text())["verification"]["passed"] is True
