"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smfa.pretrained import RECIPES


@pytest.fixture(scope="session")
def tiny_bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` bench preset (seed 0), built once per test session. Read-only: copy it before editing."""
    from smfa.bench import build_bench, preset_config

    out = tmp_path_factory.mktemp("bench") / "tiny"
    build_bench(preset_config("tiny", seed=0), out, progress=False)
    return out


# ---- the tiny pipeline, shared by the integration tests -------------------------------------------------
# A smaller bench than the tiny preset (60 people) so that the vanilla model trains in a few minutes on 2
# cores; the trained model is cached under $SMFA_CACHE_DIR (CI: a fresh directory per clone) keyed by the
# bench checksum and config, so local re-runs skip the training.
# The micro vanilla ships in tests/fixtures/pretrained (scripts/train_shipped_vanilla.py micro-seed0): the same
# weights on every machine, so test floors do not depend on how this CPU rounds.
os.environ["SMFA_PRETRAINED_PATH"] = str(Path(__file__).parent / "fixtures" / "pretrained")
_MICRO = RECIPES["micro-seed0"]
MICRO = {k: v for k, v in _MICRO["bench"].items() if k not in ("preset", "seed")}
MICRO_STEPS = _MICRO["finetune"]["steps"]
MICRO_LR = _MICRO["finetune"]["lr"]


@pytest.fixture(scope="session")
def micro_bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smfa.bench import build_bench, preset_config

    out = tmp_path_factory.mktemp("micro") / "bench"
    build_bench(preset_config("tiny", seed=0, **MICRO), out, progress=False)
    return out


# The smallest bench the generator accepts (40 people, one training photo and one phrasing per fact: ~820
# training rows where the micro bench has ~4,600), for tests of the training machinery (determinism, resume,
# samplers, DDP) that train a few steps from scratch and check no learned number: a finetune encodes every
# training row first, and on the micro bench that encoding was most of each such test's time.
NANO = {"n_people": 40, "n_variants": 2, "n_shape_images": 20, "image_phrasings": 1, "text_phrasings": 1,
        "anchor_size": 8}


@pytest.fixture(scope="session")
def nano_bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smfa.bench import build_bench, preset_config

    out = tmp_path_factory.mktemp("nano") / "bench"
    build_bench(preset_config("tiny", seed=0, **NANO), out, progress=False)
    return out


@pytest.fixture(scope="session")
def micro_vanilla(micro_bench_dir: Path) -> Path:
    """The vanilla tiny model trained on the micro bench (memorises every profile)."""
    from smfa.stages.cache import cached_finetune
    from smfa.stages.finetune import FinetuneConfig

    run, _ = cached_finetune(micro_bench_dir, FinetuneConfig(**_MICRO["finetune"], progress=False))
    return run


@pytest.fixture(scope="session")
def micro_vanilla_metrics(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory):
    """The vanilla's evaluation (the reference every method test compares with)."""
    from smfa.eval.pipeline import EvalConfig, evaluate
    from smfa.eval.schema import load_metrics

    out = tmp_path_factory.mktemp("eval") / "vanilla"
    evaluate(EvalConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out), forget="10",
                        limit=40, progress=False))
    return load_metrics(out)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: trained weights (hence measured numbers) that do not depend on the
    machine's thread count, and no slowdown from threads competing with other jobs on a small machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- floors on measured numbers ---------------------------------------------------------------------------
class Floors:
    """Assertions on measured numbers (a leak at most X, a retention at least Y) that also record what they
    measured: with ``$SMFA_FLOOR_LOG`` set, every check appends one JSON line (test, label, value, bound,
    op, threads) to that file, so the margins between measurement and floor can be compared across runs,
    thread counts and machines (``python scripts/floor_margins.py LOG [LOG ...]``, docs/archive/testbed.md)."""

    def __init__(self, test: str) -> None:
        self.test = test

    def _check(self, label: str, value: float, bound: float, op: str, detail: object) -> None:
        import json

        import torch

        log = os.environ.get("SMFA_FLOOR_LOG")
        if log:
            row = {"test": self.test, "label": label, "value": float(value), "bound": float(bound), "op": op,
                   "threads": torch.get_num_threads()}
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        ok = value >= bound if op == ">=" else value <= bound
        assert ok, f"{label}: {value:.4g} is not {op} {bound:.4g}" + (f" ({detail})" if detail is not None else "")

    def at_least(self, label: str, value: float, bound: float, detail: object = None) -> None:
        self._check(label, value, bound, ">=", detail)

    def at_most(self, label: str, value: float, bound: float, detail: object = None) -> None:
        self._check(label, value, bound, "<=", detail)


@pytest.fixture
def floor(request: pytest.FixtureRequest) -> Floors:
    return Floors(request.node.nodeid)


@pytest.fixture
def run_micro_mmunlearner(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path):
    """``run(placement, max_steps)``: MMUnlearner on a slice of the micro bench (32 forget rows, 16 anchor
    rows) written to ``tmp_path``; returns (the unlearned model, the vanilla's weights before)."""

    def run(placement, max_steps: int):
        from smfa.bench import Bench
        from smfa.methods import get_method
        from smfa.methods.context import UnlearnContext
        from smfa.models.loading import load_model
        from smfa.stages.unlearn import select_data

        bench = Bench.load(micro_bench_dir)
        data = select_data(bench, "10", "all", None, 0)
        data.forget_rows, data.anchor_rows = data.forget_rows[:32], data.anchor_rows[:16]
        vanilla = load_model(micro_vanilla, placement=placement)
        before = {k: v.detach().clone() for k, v in vanilla.model.named_parameters()}
        ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=data, target="all", seed=0, work_dir=tmp_path,
                             progress=False, placement=placement)
        method = get_method("mmunlearner")
        return method.run(ctx, method.config(None, {"max_steps": max_steps})), before

    return run
