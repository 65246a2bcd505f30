"""Deletion requests (`smfa forget`): named people as the forget group, chains of requests, the audit record
and `smfa audit verify`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.cli.main import main

# Micro bench (tests/conftest.py): p0011, p0029, p0042 are forget_5; p0004 is an evaluation-pool person with
# rows in the retain anchor (a request may name anyone known, so the anchor must drop them); p0034, p0038,
# p0058 are in forget_15 only.
FIRST = ["p0004", "p0011", "p0029", "p0042"]
SECOND = ["p0034", "p0038", "p0058"]
# The micro bench forgets few rows: more epochs than the tiny defaults' 5 (test_methods.py uses 15); the second
# request of the chain is shorter (it checks the chain, not how well request 2 is forgotten). The paper recipe
# (--reference none), as when the floors below were measured: these tests check requests, chains and the audit,
# not the reference budget (tests/test_reference_budget.py), which multiplies the training time on the micro bench.
# The paper recipe as configured (its floors were measured without the leak check's stronger attempts).
ARGS = ["--param", "epochs=10", "--eval-limit", "30", "--reference", "none", "--no-verify"]
SECOND_ARGS = ["--param", "epochs=5", "--eval-limit", "30", "--reference", "none", "--no-verify"]


def _one_line_error(capsys, rc: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ---- no model needed -----------------------------------------------------------------------------------------
def test_people_from_a_comma_list_or_a_file(tmp_path: Path) -> None:
    from smfa.errors import ConfigError
    from smfa.bench.forget_set import parse_people

    assert parse_people(" p1, p2,,p1 ") == ["p1", "p2"]
    ids = tmp_path / "ids.txt"
    ids.write_text("# request 2026-11-27\np3\n\np4  # by e-mail\n")
    assert parse_people(str(ids)) == ["p3", "p4"]
    with pytest.raises(ConfigError, match="does not exist"):
        parse_people(str(tmp_path / "missing.txt"))


def test_the_forget_group_decides_forget_retain_and_anchor(micro_bench_dir: Path) -> None:
    from smfa.errors import ConfigError
    from smfa.stages.unlearn import select_data

    bench = Bench.load(micro_bench_dir)
    # A split resolves as before (val keeps forget_15 out of retain).
    assert bench.retain_people("val") == bench.known_people() - bench.forget_people("val") - \
        bench.forget_people("15") - bench.reference_people() - bench.anchor_people()
    first = bench.request_set(FIRST)
    assert bench.forget_people(first) == set(FIRST) and not bench.retain_people(first) & set(FIRST)
    second = bench.request_set(SECOND, earlier=(first.people,))
    assert not bench.retain_people(second) & (set(FIRST) | set(SECOND))
    assert {q.person_id for q in bench.forget_rows(second)} == set(SECOND)
    # p0004 has anchor rows; no request's people are ever in the anchor, earlier ones included.
    assert any(r.person_id == "p0004" for r in bench.anchor_rows())
    for group in (first, second):
        data = select_data(bench, group, "all", None, 0)
        assert not {r.person_id for r in data.anchor_rows} & group.forgotten
        assert len(data.anchor_rows) == len([r for r in bench.anchor_rows() if r.person_id != "p0004"])
    # A split's data is unchanged by the generalisation (no split person is in the anchor).
    assert [r.id for r in select_data(bench, "10", "all", None, 0).anchor_rows] == [r.id for r in bench.anchor_rows()]
    # --keep-earlier-refusals: a chain's forget rows also hold the earlier requests' people, this request's first.
    kept = select_data(bench, second, "all", None, 0, keep_earlier=True).forget_rows
    assert {q.person_id for q in kept} == set(FIRST) | set(SECOND)
    assert [q.id for q in kept[:len(bench.forget_rows(second))]] == [q.id for q in bench.forget_rows(second)]
    # the earlier people's rows are a suppression list: the question as asked, never the private answer
    suppressed = [q for q in kept if q.person_id in FIRST]
    assert suppressed and all(q.answer == "" and q.fact == "" and q.question for q in suppressed)
    truth = {q.id: q for q in bench.questions}
    assert all(truth[q.id].answer and truth[q.id].question == q.question for q in suppressed)
    from smfa.methods import get_method  # the default keeps them for methods that train refusals, and only those
    from smfa.stages.unlearn import UnlearnConfig
    assert UnlearnConfig().keep_earlier is True
    assert [m for m in ("smfa", "idk", "ties", "ga", "ga_diff", "npo", "kl_min", "mmunlearner")
            if get_method(m).trains_refusals] == ["smfa", "idk", "ties"]
    assert select_data(bench, first, "all", None, 0, keep_earlier=True).forget_rows == bench.forget_rows(first)
    with pytest.raises(ConfigError, match="already forgotten"):
        bench.request_set(["p0011"], earlier=(first.people,))
    holdout = sorted(bench.holdout_people())[0]
    with pytest.raises(ConfigError, match=f"{holdout} is a holdout person"):
        bench.request_set([holdout])


def test_methods_comparing_with_the_vanilla_use_the_chains_root() -> None:
    from types import SimpleNamespace

    from smfa.methods import get_method
    from smfa.methods.context import UnlearnContext, UnlearnData

    parent, root = SimpleNamespace(model="parent weights"), SimpleNamespace(model="root weights")
    ctx = UnlearnContext(bench=None, vanilla=parent, data=UnlearnData([], []), target="all", seed=0, work_dir=Path("."))
    assert ctx.reference_model == "parent weights"  # no chain: the vanilla is the root
    ctx.reference = root
    assert ctx.reference_model == "root weights"
    assert [m for m in ("npo", "kl_min", "smfa", "ga_diff") if getattr(get_method(m), "uses_reference_model", False)] \
        == ["npo", "kl_min"]


@pytest.mark.parametrize("name", ["npo", "kl_min"])
def test_a_chains_root_is_released_before_the_merge(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """NPO and KL Min train against the chain's root, then drop it: the merge's copy is the second model in memory."""
    from types import SimpleNamespace

    import torch

    import smfa.methods.context as context
    import smfa.training.runs as runs
    from smfa.methods import get_method
    from smfa.methods.context import UnlearnContext, UnlearnData

    seen: dict[str, object] = {}

    def train(ctx, model, hp, forget, retain, loss_fn, *, reference, tag):
        seen["trained against"] = reference
        return model

    def merge(model):
        seen["root at the merge"] = ctx.reference
        return model

    monkeypatch.setattr(runs, "prepare_trainable", lambda ctx, hp, model: model)
    monkeypatch.setattr(runs, "train_unlearner", train)
    monkeypatch.setattr(runs, "finish", merge)
    monkeypatch.setattr(context, "forget_dataset", lambda ctx: [])
    monkeypatch.setattr(context, "retain_dataset", lambda ctx: [])
    root = SimpleNamespace(model=torch.nn.Linear(2, 2))
    ctx = UnlearnContext(bench=None, vanilla=SimpleNamespace(model=torch.nn.Linear(2, 2)), data=UnlearnData([], []),
                         target="all", seed=0, work_dir=Path("."), reference=root)
    method = get_method(name)
    method.run(ctx, method.config())
    assert seen == {"trained against": root.model, "root at the merge": None}


def test_an_unknown_person_id_is_a_one_line_error(capsys, micro_bench_dir: Path, micro_vanilla: Path,
                                                  tmp_path: Path) -> None:
    rc = main(["forget", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--people", "p0011,p9999",
               "--out", str(tmp_path / "r")])
    _one_line_error(capsys, rc, "unknown person id p9999")
    assert not (tmp_path / "r").exists()


# ---- requests on the micro model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_request(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("requests")
    out = root / "first"
    with pytest.MonkeyPatch.context() as mp:  # the RA cache of `smfa forget`: this session's, not the user's
        mp.setenv("SMFA_CACHE_DIR", str(root / "cache"))
        assert main(["forget", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--people",
                     ",".join(FIRST), "--out", str(out), *ARGS]) == 0
    return out


@pytest.mark.slow
def test_forget_named_people(first_request: Path, micro_vanilla: Path, floor) -> None:
    from smfa.eval.schema import load_metrics
    from smfa.rundir import read_manifest

    m = load_metrics(first_request / "eval")
    audit = json.loads((first_request / "audit.json").read_text())
    o, parent = m.overall, audit["retain"]["parent"]
    # Measured (micro, 10 epochs, 2026-11-27): leak photo 0.13 / name 0.13 (vanilla ~0.95); retain memory 0.95
    # vs the parent's 1.00 on the same questions, understanding 1.00 vs 1.00, general VQA 0.43 vs 0.47.
    floor.at_most("forget leak, photo", o.forget_leak_image, 0.25)
    floor.at_most("forget leak, name", o.forget_leak_text, 0.25)
    floor.at_least("retain memory, 0.5 x parent's", o.retain_memory, 0.5 * parent["retain_memory"])
    floor.at_least("retain understanding, 0.8 x parent's", o.retain_understanding, 0.8 * parent["retain_understanding"])
    floor.at_least("general VQA, 0.75 x parent's", o.general_vqa, 0.75 * parent["general_vqa"])
    assert m.forget == "request" and [(r.request, r.people, r.current) for r in m.requests] == [(1, 4, True)]
    gens = [json.loads(line) for line in (first_request / "eval" / "generations.jsonl").read_text().splitlines()]
    assert {g["person_id"] for g in gens if g["set"].startswith("forget/")} == set(FIRST)
    assert not {g["person_id"] for g in gens if g["set"].startswith("retain/")} & set(FIRST)
    manifest = read_manifest(first_request)
    assert manifest["request"]["people"] == FIRST and manifest["chain"] == []
    assert manifest["parent"] == str(micro_vanilla.resolve())
    assert audit["request"]["people"] == FIRST and len(audit["request"]["forget_data_sha256"]) == 64
    assert audit["leak"]["photo"] == o.forget_leak_image


@pytest.mark.slow
def test_the_output_model_loads_with_auto_model_for_image_text_to_text(first_request: Path, micro_bench_dir: Path,
                                                                        floor) -> None:
    """The run's model/ is a plain HF checkpoint: AutoModelForImageTextToText + AutoProcessor load every saved
    tensor and answer as the unlearned model did in its evaluation."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from smfa.eval.generate import generate_answers
    from smfa.models.families import family_for_model_type
    from smfa.models.loading import LoadedModel

    model = AutoModelForImageTextToText.from_pretrained(first_request / "model", local_files_only=True)
    processor = AutoProcessor.from_pretrained(first_request / "model", local_files_only=True)
    state = list(model.state_dict().values())
    saved = load_file(str(first_request / "model" / "model.safetensors"))
    assert all(any(s.shape == t.shape and torch.equal(s, t) for s in state) for t in saved.values())
    bench = Bench.load(micro_bench_dir)
    by_id = {q.id: q for q in bench.questions}
    gens = [json.loads(line) for line in (first_request / "eval" / "generations.jsonl").read_text().splitlines()]
    gens = [g for g in gens if g["set"] in ("forget/image_memory", "retain/image_memory")]
    loaded = LoadedModel(model, processor, family_for_model_type(model.config.model_type), str(first_request))
    answers = generate_answers(loaded, [by_id[g["question_id"]] for g in gens], bench, progress=False)
    same = sum(a == g["answer"] for a, g in zip(answers, gens)) / len(gens)
    floor.at_least("answers as in the run's evaluation", same, 0.9)  # batch composition differs from the evaluation's (padding), so not always 100 %


@pytest.mark.slow
def test_a_chain_of_two_requests_reports_the_earlier_peoples_leak(micro_bench_dir: Path, first_request: Path,
                                                                  micro_vanilla: Path, tmp_path: Path, floor,
                                                                  monkeypatch) -> None:
    from smfa.eval.schema import load_metrics
    from smfa.rundir import read_manifest

    monkeypatch.setenv("SMFA_CACHE_DIR", str(tmp_path / "cache"))  # the RA cache: this test's, not the user's
    out = tmp_path / "second"
    assert main(["forget", "--bench", str(micro_bench_dir), "--model", str(first_request), "--people",
                 ",".join(SECOND), "--out", str(out), *SECOND_ARGS]) == 0
    manifest = read_manifest(out)
    assert manifest["parent"] == str(first_request.resolve())
    assert manifest["chain"] == [{"run": str(first_request.resolve()), "label": "request", "people": FIRST}]
    assert manifest["root"] == str(micro_vanilla.resolve())
    m = load_metrics(out / "eval")
    first, second = m.requests
    assert (first.request, first.people, first.current) == (1, 4, False) and first.n > 0
    assert (second.request, second.people, second.current) == (2, 3, True)
    # Measured: request 1's people after request 2 leak 0.10 / 0.10 (photo / name; 0.13 / 0.13 before it; the
    # tiny bench shows it can also rise, docs/results.md), request 2's 0.03 / 0.03, the vanilla's ~0.95.
    floor.at_most("request 1 leak after request 2, photo", first.leak_image, 0.4)
    floor.at_most("request 1 leak after request 2, name", first.leak_text, 0.4)
    floor.at_most("request 2 leak, photo", second.leak_image, 0.4)
    floor.at_most("request 2 leak, name", second.leak_text, 0.4)
    gens = [json.loads(line) for line in (out / "eval" / "generations.jsonl").read_text().splitlines()]
    assert not {g["person_id"] for g in gens if g["set"].startswith("retain/")} & set(FIRST + SECOND)
    assert {g["person_id"] for g in gens if g["set"].startswith("earlier1/")} == set(FIRST)
    assert "| 1 | 4 |" in (out / "audit.md").read_text()
    # the default keeps request 1's people refused, and the audit says what is kept: never a private answer
    audit = json.loads((out / "audit.json").read_text())
    kept = audit["suppression"]
    assert kept["people"] == sorted(FIRST) and kept["rows"] > 0 and kept["private_answers_kept"] is False
    assert "earlier requests kept refused" in (out / "audit.md").read_text()


@pytest.mark.slow
def test_audit_verify_ok_and_a_changed_weight_file(capsys, first_request: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(first_request, run)
    assert main(["audit", "verify", str(run)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    weights = run / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    weights.write_bytes(bytes(data))
    rc = main(["audit", "verify", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "model.safetensors differs" in err[0], err
    weights.unlink()
    assert main(["audit", "verify", str(run)]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err


# ---- an unlearned model directory without its run's manifest --------------------------------------------------------
@pytest.fixture(scope="module")
def quick_request(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A request answered by one gradient-ascent step: the chain's records are under test, not the forgetting."""
    out = tmp_path_factory.mktemp("quick") / "run"
    assert main(["forget", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--people", ",".join(FIRST),
                 "--out", str(out), "--method", "ga", "--param", "max_steps=1", "--no-eval", "--no-verify"]) == 0
    return out


def _copy_model(run: Path, to: Path, only=None) -> Path:
    """``run``'s model/ copied to ``to`` (all its files, or those named in ``only``), without the run's manifest."""
    to.mkdir(parents=True)
    for f in (run / "model").iterdir():
        if only is None or f.name in only:
            shutil.copy2(f, to / f.name)
    return to


def test_the_model_directory_alone_continues_its_chain(quick_request: Path, micro_bench_dir: Path,
                                                       micro_vanilla: Path, tmp_path: Path) -> None:
    """RUN/model copied elsewhere without RUN/manifest.json: its smfa_chain.json marker continues the chain (the
    earlier people kept refused and re-measured), never a silent new chain."""
    from smfa.errors import ConfigError
    from smfa.stages.forget import read_chain

    bench = Bench.load(micro_bench_dir)
    chain = read_chain(quick_request, bench)
    assert [(r.run, r.label, list(r.people)) for r in chain.requests] == [(str(quick_request.resolve()), "request", FIRST)]
    assert chain.root == str(micro_vanilla.resolve())
    assert read_chain(_copy_model(quick_request, tmp_path / "copy"), bench) == chain
    # The weights and config.json alone: the run they name (config.json) still holds a marker for these weights.
    assert read_chain(_copy_model(quick_request, tmp_path / "bare", only={"model.safetensors", "config.json"}), bench) == chain
    # Other weights than the marker's (a checkpoint derived from them): nothing vouches for them — refused.
    changed = _copy_model(quick_request, tmp_path / "changed")
    data = bytearray((changed / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (changed / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="written by smfa unlearn.*--new-chain"):
        read_chain(changed, bench)
    # The weights without their marker, and the run config.json names gone: refused.
    orphan = _copy_model(quick_request, tmp_path / "orphan", only={"model.safetensors", "config.json"})
    config = json.loads((orphan / "config.json").read_text())
    (orphan / "config.json").write_text(json.dumps({**config, "smfa_unlearned": {"run": str(tmp_path / "moved")}}))
    with pytest.raises(ConfigError, match="no record of what they have forgotten resolves.*--new-chain"):
        read_chain(orphan, bench)
    # On purpose: a new chain whose root is the model itself.
    assert read_chain(orphan, bench, new_chain=True) == type(chain)((), str(orphan.resolve()))
    from smfa.stages.forget import CHAIN_MARKER

    marker = json.loads((quick_request / "model" / CHAIN_MARKER).read_text())
    assert marker["bench"] == bench.checksum and marker["root"] == str(micro_vanilla.resolve())


def test_new_chain_starts_one_and_a_chain_whose_root_is_gone_is_refused(capsys, quick_request: Path,
                                                                         micro_bench_dir: Path, tmp_path: Path) -> None:
    from smfa.rundir import read_manifest

    copy = _copy_model(quick_request, tmp_path / "copy")
    argv = ["forget", "--bench", str(micro_bench_dir), "--model", str(copy), "--people", "p0034",
            "--method", "ga", "--param", "max_steps=1", "--no-eval", "--no-verify"]
    out = tmp_path / "fresh"
    assert main(argv + ["--out", str(out), "--new-chain"]) == 0  # on purpose: the copy is the new chain's root
    manifest = read_manifest(out)
    assert manifest["chain"] == [] and manifest["root"] == str(copy.resolve()) and manifest["config"]["new_chain"]
    from smfa.stages.forget import CHAIN_MARKER

    assert [r["people"] for r in json.loads((out / "model" / CHAIN_MARKER).read_text())["requests"]] == [["p0034"]]
    # The copy's chain names a root that is gone: refused in one line, before any work.
    marker = json.loads((copy / CHAIN_MARKER).read_text())
    (copy / CHAIN_MARKER).write_text(json.dumps({**marker, "root": str(tmp_path / "gone")}))
    capsys.readouterr()  # the first request's progress
    rc = main(argv + ["--out", str(tmp_path / "never")])
    _one_line_error(capsys, rc, "whose original model", "is gone", "--new-chain")
    assert not (tmp_path / "never").exists()


def test_a_chains_root_is_recorded_absolute(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from smfa.stages.forget import read_chain

    shutil.copytree(micro_vanilla / "model", tmp_path / "plain")
    monkeypatch.chdir(tmp_path)
    assert read_chain("plain", Bench.load(micro_bench_dir)).root == str((tmp_path / "plain").resolve())


def test_from_root_answers_a_chain_in_one_run_from_its_root(quick_request: Path, micro_bench_dir: Path,
                                                             micro_vanilla: Path, tmp_path: Path) -> None:
    """--from-root: a request on a chain is one run from the chain's root over every person forgotten so far (their
    true forget rows), recorded as the chain's next request; on a model that is not a chain it changes nothing."""
    from smfa.bench.forget_set import ForgetSet
    from smfa.models.loading import model_dir_of
    from smfa.rundir import read_manifest
    from smfa.stages.audit import forget_data_digest
    from smfa.stages.forget import CHAIN_MARKER

    bench = Bench.load(micro_bench_dir)
    quick = ["--method", "ga", "--param", "max_steps=1", "--no-eval", "--no-verify", "--from-root"]
    out = tmp_path / "second"
    assert main(["forget", "--bench", str(micro_bench_dir), "--model", str(quick_request), "--people",
                 ",".join(SECOND), "--out", str(out), *quick]) == 0
    manifest, audit = read_manifest(out), json.loads((out / "audit.json").read_text())
    root_model = str(model_dir_of(micro_vanilla).resolve())
    assert audit["weights"]["input"]["dir"] == root_model  # loaded the root, not the parent
    assert audit["answered"] == manifest["answered"] == "from_root"
    everyone = bench.forget_rows(ForgetSet("request", frozenset(FIRST + SECOND)))  # true rows, answers included
    assert manifest["data"]["forget_rows"] == audit["request"]["rows"] == len(everyone)
    assert audit["request"]["forget_data_sha256"] == forget_data_digest(everyone, bench.root)
    assert not manifest["data"]["earlier_requests_refused"]  # no suppression list: the earlier people's own rows
    # the chain goes on: parent the --model given, root unchanged, this request's people recorded as its own
    assert manifest["parent"] == str(quick_request.resolve()) and manifest["root"] == str(micro_vanilla.resolve())
    assert manifest["request"]["people"] == sorted(SECOND) and [c["people"] for c in manifest["chain"]] == [FIRST]
    marker = json.loads((out / "model" / CHAIN_MARKER).read_text())
    assert [r["people"] for r in marker["requests"]] == [FIRST, sorted(SECOND)]
    assert "answered from the chain's root" in (out / "audit.md").read_text()
    # smfa unlearn takes it too; from a model that is not a chain the run is the one without it (quick_request's)
    plain = tmp_path / "plain"
    assert main(["unlearn", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--forget-people",
                 ",".join(FIRST), "--out", str(plain), *quick]) == 0
    plain_audit = json.loads((plain / "audit.json").read_text())
    assert plain_audit["answered"] == "from_parent" and read_manifest(plain)["config"]["from_root"]
    assert plain_audit["weights"]["output"]["files"] == \
        json.loads((quick_request / "audit.json").read_text())["weights"]["output"]["files"]
