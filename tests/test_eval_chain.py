"""`smfa eval` of an unlearning run scores the groups its manifest records: a chain's earlier requests' people
as earlier requests (their leak reported apart), never as retain people."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smfa.cli.main import main

# Micro bench (tests/conftest.py): p0034, p0038 and p0058 are in forget_15 only, so the default split (forget_10)
# scores them as retain people; p0011 is in forget_5 and forget_10.
FIRST = ["p0034", "p0038", "p0058"]
SECOND = ["p0011"]
# One optimiser step of gradient ascent per request: the chain's bookkeeping is under test, not the forgetting.
CHEAP = ["--method", "ga", "--param", "max_steps=1", "--no-eval", "--no-verify"]


@pytest.fixture(scope="module")
def chain(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two deletion requests, the second made on the first's run: the second run's directory."""
    root = tmp_path_factory.mktemp("eval-chain")
    for people, model, out in ((FIRST, micro_vanilla, root / "first"), (SECOND, root / "first", root / "second")):
        assert main(["forget", "--bench", str(micro_bench_dir), "--model", str(model), "--people", ",".join(people),
                     "--out", str(out), *CHEAP]) == 0
    return root / "second"


def test_eval_of_a_chain_scores_earlier_people_as_earlier(capsys, micro_bench_dir: Path, chain: Path,
                                                          tmp_path: Path) -> None:
    from smfa.eval.schema import load_metrics

    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--bench", str(micro_bench_dir), "--model", str(chain), "--out", str(out), "--limit", "5"]) == 0
    m = load_metrics(out)
    assert m.forget == "request"
    assert [(r.request, r.people, r.current) for r in m.requests] == [(1, 3, False), (2, 1, True)]
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    by_group: dict[str, set[str]] = {}
    for g in gens:
        by_group.setdefault(g["set"].split("/")[0], set()).add(g["person_id"])
    assert by_group["earlier1"] and by_group["earlier1"] <= set(FIRST)
    assert by_group["forget"] == set(SECOND)
    assert not by_group["retain"] & set(FIRST + SECOND)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["earlier"] == [sorted(FIRST)] and manifest["config"]["forget_people"] == "p0011"
    said = capsys.readouterr().out  # and it says which groups it took
    assert "groups its manifest records" in said and "1 earlier request(s): 3 people" in said, said


def test_eval_of_a_chain_refuses_another_forget_group(capsys, micro_bench_dir: Path, chain: Path,
                                                      tmp_path: Path) -> None:
    from smfa.eval.schema import load_metrics

    capsys.readouterr()
    out = tmp_path / "eval"
    for named in (["--forget", "5"], ["--forget-people", "p0011,p0029"], ["--forget-people", "p0034"]):
        assert main(["eval", "--bench", str(micro_bench_dir), "--model", str(chain), "--out", str(out), *named]) == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(err) == 1 and "forgot a request of 1 person after 1 earlier request(s)" in err[0], err
        assert "leave out --forget and --forget-people" in err[0]
    assert not out.exists()
    # The run's own people named: its earlier request is still read from the manifest.
    assert main(["eval", "--bench", str(micro_bench_dir), "--model", str(chain), "--out", str(out), "--limit", "2",
                 "--forget-people", "p0011"]) == 0
    assert [(r.request, r.current) for r in load_metrics(out).requests] == [(1, False), (2, True)]


def test_a_run_is_scored_in_the_setting_it_unlearned_in(tmp_path: Path) -> None:
    from smfa.rundir import MANIFEST
    from smfa.stages.evaluate import run_target

    visual = tmp_path / "visual-run"
    visual.mkdir()
    (visual / MANIFEST).write_text(json.dumps({"stage": "unlearn", "config": {"target": "visual"}}))
    assert run_target(str(visual), "all") == "visual"  # the default follows the run: its kept name memory is no leak
    assert run_target(str(visual), "visual") == "visual"
    assert run_target(str(tmp_path / "gone"), "all") == "all"
    plain = tmp_path / "all-run"
    plain.mkdir()
    (plain / MANIFEST).write_text(json.dumps({"stage": "unlearn", "config": {"target": "all"}}))
    assert run_target(str(plain), "visual") == "visual"  # a setting asked for is kept
