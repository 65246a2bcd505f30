"""What an epoch means (optimiser steps under gradient accumulation and several processes), and the ways into
a request chain: an unlearning run's directory, its ``model/``, a checkpoint ``smfa sculpt --merge-to`` wrote
from it — and ``smfa sculpt`` sweeping the people a request named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.cli.main import main

# forget_15 people outside forget_10 (tests/conftest.py's micro bench): a sweep that evaluates forget_10
# instead of the request never meets them.
PEOPLE = ["p0034", "p0038", "p0058"]


# ---- epochs: passes over the data, whatever the batch, accumulation and processes -------------------------
@pytest.mark.parametrize("rows, batch, accum, world, epochs, steps", [
    (100, 16, 1, 1, 5.0, 35),  # ceil(100 / 16) = 7 steps a pass (the last one short)
    (100, 16, 2, 1, 5.0, 20),  # 32 rows a step: 4 a pass
    (100, 16, 1, 2, 5.0, 20),  # two processes of 16: the same 32 rows a step
    (100, 16, 2, 2, 5.0, 10),
    (10, 1, 1, 1, 1.1, 11),  # 1.1 × 10 is 11 steps (not 12 from the float's rounding)
    (3, 16, 1, 1, 0.5, 1),  # at least one step
])
def test_optimiser_steps_count_passes_over_the_rows(monkeypatch, rows, batch, accum, world, epochs, steps) -> None:
    from smfa.methods.base import MethodConfig
    from smfa.training.runs import optimizer_steps

    monkeypatch.setenv("WORLD_SIZE", str(world))
    assert optimizer_steps(rows, MethodConfig(batch_size=batch, grad_accum=accum, epochs=epochs)) == steps
    assert optimizer_steps(rows, MethodConfig(batch_size=batch, grad_accum=accum, epochs=epochs, max_steps=3)) == min(3, steps)


class _Counted:
    """A dataset that counts the examples the Trainer reads."""

    def __init__(self, inner) -> None:
        self.inner, self.reads = inner, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.inner[i]


def test_gradient_accumulation_halves_the_steps_and_keeps_the_examples(micro_bench_dir: Path, micro_vanilla: Path,
                                                                       tmp_path: Path) -> None:
    from smfa.data import reference_items
    from smfa.methods.base import MethodConfig
    from smfa.methods.context import UnlearnContext, UnlearnData
    from smfa.training.runs import prepare_trainable, train_sft
    from smfa.models.loading import load_model

    bench = Bench.load(micro_bench_dir)
    vanilla = load_model(micro_vanilla)
    seen = {}
    for accum in (1, 2):
        ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=UnlearnData([], []), target="all", seed=0,
                             work_dir=tmp_path / f"accum{accum}", progress=False)
        dataset = _Counted(ctx.encode(reference_items(bench.anchor_rows()[:22])))
        hp = MethodConfig(epochs=2.0, batch_size=4, grad_accum=accum, lr=1e-4)
        train_sft(ctx, prepare_trainable(ctx, hp, ctx.fresh_model()), hp, dataset, tag="sft")
        log = [json.loads(x) for x in (ctx.work_dir / "train_logs" / "sft.jsonl").read_text().splitlines()]
        seen[accum] = (log[-1]["step"], dataset.reads)
    # 22 rows, 2 passes: 6 batches of 4 a pass (the last of 2) → 12 optimiser steps, or 6 with two batches a step.
    assert seen == {1: (12, 44), 2: (6, 44)}


# ---- a request run, and the ways into its chain ------------------------------------------------------------------
@pytest.fixture(scope="module")
def request_run(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SMFA deletion request (two optimiser steps per adapter: the chain and the sweep are under test here,
    not the forgetting)."""
    out = tmp_path_factory.mktemp("entries") / "request"
    assert main(["forget", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--people", ",".join(PEOPLE),
                 "--out", str(out), "--param", "max_steps=2", "--param", "grad_accum=2", "--no-eval",
                 "--no-anchor-cache", "--no-verify"]) == 0
    return out


def test_an_unlearn_manifest_records_the_effective_batch_size(request_run: Path) -> None:
    from smfa.rundir import read_manifest

    manifest = read_manifest(request_run)
    hp = manifest["hyperparameters"]
    assert hp["grad_accum"] == 2
    assert (manifest["effective_batch_size"], manifest["world_size"]) == (hp["batch_size"] * 2, 1)


def test_the_sweep_of_a_request_evaluates_its_people(request_run: Path, tmp_path: Path) -> None:
    from smfa.stages.sweep import SweepConfig, sculpt_sweep

    out = sculpt_sweep(SweepConfig(run=str(request_run), ks=(5.0,), limit=6, progress=False,
                                   out=str(tmp_path / "sweep")))
    cell = out / "k=5"
    assert json.loads((cell / "metrics.json").read_text())["forget"] == "request"
    gens = [json.loads(line) for line in (cell / "generations.jsonl").read_text().splitlines()]
    forget = {g["person_id"] for g in gens if g["set"].startswith("forget/")}
    assert forget and forget <= set(PEOPLE), forget
    assert not {g["person_id"] for g in gens if g["set"].startswith("retain/")} & set(PEOPLE)


def test_a_request_on_the_runs_model_dir_continues_its_chain(micro_bench_dir: Path, micro_vanilla: Path,
                                                            request_run: Path, tmp_path: Path) -> None:
    from smfa.stages.forget import read_chain
    from smfa.rundir import read_manifest

    bench = Bench.load(micro_bench_dir)
    chain = read_chain(request_run / "model", bench)
    assert chain == read_chain(request_run, bench)
    run = str(request_run.resolve())
    assert [(r.run, r.label, list(r.people)) for r in chain.requests] == [(run, "request", PEOPLE)]
    assert chain.root == str(micro_vanilla.resolve())
    out = tmp_path / "second"
    assert main(["forget", "--bench", str(micro_bench_dir), "--model", str(request_run / "model"), "--people", "p0011",
                 "--out", str(out), "--method", "ga", "--param", "max_steps=1", "--no-eval", "--no-verify"]) == 0
    manifest = read_manifest(out)
    assert manifest["chain"] == [{"run": str(request_run.resolve()), "label": "request", "people": PEOPLE}]
    assert manifest["root"] == str(micro_vanilla.resolve())


def test_a_request_on_a_merged_checkpoint_continues_the_runs_chain(capsys, micro_bench_dir: Path, request_run: Path,
                                                                   tmp_path: Path) -> None:
    from smfa.errors import ConfigError
    from smfa.stages.forget import read_chain
    from smfa.rundir import MANIFEST

    bench = Bench.load(micro_bench_dir)
    merged = tmp_path / "merged"
    assert main(["sculpt", str(request_run), "--merge-to", str(merged)]) == 0
    capsys.readouterr()  # the merge's progress bar
    assert read_chain(merged, bench) == read_chain(request_run, bench)

    def variant(name: str, edit) -> Path:
        path = tmp_path / name
        shutil.copytree(merged, path)
        manifest = json.loads((path / MANIFEST).read_text())
        edit(manifest)
        (path / MANIFEST).write_text(json.dumps(manifest))
        return path

    # No source run recorded (sculpt_checkpoint called without it): the chain cannot be told — a one-line error.
    anonymous = variant("anonymous", lambda m: m.pop("source_run"))
    rc = main(["forget", "--bench", str(micro_bench_dir), "--model", str(anonymous), "--people", "p0011",
               "--out", str(tmp_path / "never")])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert rc == 2 and len(err) == 1 and "records no source run" in err[0], err
    assert not (tmp_path / "never").exists()
    # The source run gone, or another run's adapters in its place: refused, never a silent new chain.
    gone = variant("gone", lambda m: m.update(source_run=str(tmp_path / "moved")))
    with pytest.raises(ConfigError, match="not an unlearning run directory"):
        read_chain(gone, bench)
    other = variant("other", lambda m: m.update(adapter_digests={"x": "0" * 64}))
    with pytest.raises(ConfigError, match="adapter is not the one merged"):
        read_chain(other, bench)
