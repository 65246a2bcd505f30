"""scripts/tune_on_validation.py: every method's search grid is found (or refused with a clear message)
before any evaluation starts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from smfa.methods import method_names

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "tune_on_validation.py"


@pytest.fixture(scope="module")
def tune():
    spec = importlib.util.spec_from_file_location("tune_on_validation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_method_has_a_grid_in_both_settings(tune) -> None:
    for method in method_names():
        assert tune.grid_for(method, "all") == tune.GRIDS[method]
        expected = tune.GRIDS_VISUAL.get(method, tune.GRIDS[method])  # visual grid where there is one
        assert tune.grid_for(method, "visual") == expected


def test_a_method_without_a_grid_is_refused(tune) -> None:
    """Bug: ``grids.get(method, GRIDS[method])`` raised a bare KeyError for any method missing from GRIDS."""
    with pytest.raises(SystemExit, match="no search grid for method 'bogus'; methods with one: .*smfa"):
        tune.grid_for("bogus", "visual")


def test_the_script_refuses_it_before_evaluating(tune, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["tune", "--bench", str(tmp_path / "no-bench"), "--model", str(tmp_path / "no-model"),
                                      "--out", str(tmp_path / "out"), "--methods", "smfa,bogus"])
    with pytest.raises(SystemExit, match="no search grid for method 'bogus'"):
        tune.main()
    assert not (tmp_path / "out").exists()  # refused before the vanilla's evaluation


def test_k_is_chosen_by_the_worst_seed() -> None:
    """The validation numbers behind the shipped k (docs/archive/selectivity.md, 81 reference people, seeds 0 / 7 / 1):
    k 10 keeps more on the mean but leaks 9 % by photo on seed 1, so k 20 is chosen."""
    from types import SimpleNamespace as O

    spec = importlib.util.spec_from_file_location("selectivity_table", SCRIPT.parent / "selectivity_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    van = [O(retain_memory=1.0)] * 3
    run = lambda photo, mem: O(forget_leak_image=photo, forget_leak_text=0.0, retain_memory=mem)  # noqa: E731
    groups = {"k5": [run(0.40, 0.92), run(0.03, 0.93), run(0.44, 0.90)],
              "k10": [run(0.03, 0.90), run(0.00, 0.91), run(0.09, 0.87)],
              "k20": [run(0.01, 0.87), run(0.00, 0.88), run(0.00, 0.85)],
              "k40": [run(0.01, 0.86), run(0.00, 0.87), run(0.00, 0.84)]}
    assert table.choose_worst_seed(groups, van) == "k20"
    assert table.choose_worst_seed({"k5": groups["k5"]}, van) is None
    # The held-out phrasings count too (the request check holds a run to them, #34). The validation numbers behind
    # the shipped forget_repeat 2 (docs/results.md; seeds 0 / 7 / 1: leak photo, held-out phrasing, retain memory):
    # 10 MFA epochs keep more, but leak 7.8 % in held-out phrasings on seed 1; the old default leaks 14.5 % by photo.
    held = lambda photo, para, mem: O(forget_leak_image=photo, forget_leak_text=0.0,  # noqa: E731
                                      forget_leak_paraphrase=para, retain_memory=mem)
    candidates = {"default": [held(0.025, 0.01, 0.924), held(0.01, 0.01, 0.799), held(0.145, 0.078, 0.802)],
                  "epochs 10": [held(0.0, 0.01, 0.901), held(0.0, 0.0, 0.779), held(0.0, 0.078, 0.812)],
                  "forget_repeat 2": [held(0.005, 0.01, 0.863), held(0.0, 0.005, 0.692), held(0.015, 0.015, 0.765)]}
    assert table.choose_worst_seed(candidates, van) == "forget_repeat 2"
    photo_name_only = {k: [O(**{**vars(o), "forget_leak_paraphrase": None}) for o in v] for k, v in candidates.items()}
    assert table.choose_worst_seed(photo_name_only, van) == "epochs 10"
    # --baseline: where the shipped default itself leaks above 5 % on a seed (bench v3, validation seed 0: 10.2 % in
    # held-out phrasings), candidates are held to its worst leak instead — no worse forgetting, then most retained.
    v3 = {"default": [held(0.0, 0.102, 0.59), held(0.0, 0.019, 0.673)],
          "decoys 30": [held(0.005, 0.058, 0.762), held(0.0, 0.034, 0.764)],
          "d30 look 10": [held(0.02, 0.117, 0.841), held(0.0, 0.078, 0.864)]}
    assert table.choose_worst_seed(v3, van) is None
    assert table.worst_gated_leak(v3["default"]) == 0.102
    assert table.choose_worst_seed(v3, van, table.worst_gated_leak(v3["default"])) == "decoys 30"


def test_the_neighbour_plot_reads_the_worst_leak_and_the_worst_refusal_above_the_vanilla(tmp_path: Path) -> None:
    """scripts/selectivity_table.py --plot (issue 36): x the worst gated leak, y the worst refusal excess over every
    neighbour set and slice, one point per seed; a PNG is written."""
    from types import SimpleNamespace as O

    from smfa.bench.neighbours import NEIGHBOUR_SETS, NEIGHBOUR_VARIANTS
    from smfa.bench.schema import MEMORY_KINDS
    from smfa.eval.metrics import neighbour_metric_name

    spec = importlib.util.spec_from_file_location("selectivity_table", SCRIPT.parent / "selectivity_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    keys = [neighbour_metric_name(w, k, m, v) for w in NEIGHBOUR_SETS for k in MEMORY_KINDS for m in ("memory", "refusal")
            for v in NEIGHBOUR_VARIANTS]

    def run(leaks: tuple[float, float, float], refusals: dict[str, float]) -> O:
        values = dict.fromkeys(keys)
        values.update(refusals)
        return O(forget_leak_image=leaks[0], forget_leak_text=leaks[1], forget_leak_paraphrase=leaks[2], **values)

    name_txt = neighbour_metric_name("name", MEMORY_KINDS[1], "refusal", "")
    look_img = neighbour_metric_name("look", MEMORY_KINDS[0], "refusal", NEIGHBOUR_VARIANTS[1])
    vanilla = run((1.0, 1.0, 0.6), {name_txt: 0.0, look_img: 0.10})
    groups = {"a": [run((0.02, 0.0, 0.04), {name_txt: 0.50, look_img: 0.20})],
              "b": [run((0.0, 0.01, 0.0), {name_txt: 0.03, look_img: 0.05})]}
    points = table.tradeoff_points(groups, [vanilla])
    assert [tuple(round(v, 6) for v in p) for p in points["a"]] == [(4.0, 50.0)]
    assert [tuple(round(v, 6) for v in p) for p in points["b"]] == [(1.0, 3.0)]
    from smfa.plots import plot_neighbour_tradeoff

    png = plot_neighbour_tradeoff(points, tmp_path / "n.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
