"""Reports: report.md of one run, the comparison (markdown + PNGs) of two fake runs, the k-sweep plot and
its measured direction, and the ``smfa report`` command."""

from __future__ import annotations

import pytest

from smfa.cli.main import main
from smfa.errors import ConfigError, OutputError
from smfa.eval.metrics import compute_overall
from smfa.eval.schema import GoldStandard, Metrics, SetMetrics, save_metrics
from smfa.report import (
    compare_markdown,
    compare_runs,
    default_labels,
    k_direction,
    plot_k_sweep,
    write_eval_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sm(n, accuracy, leak=None, meaningful=8.0):
    return SetMetrics(n=n, rouge_l=0.6, fact_score=6.0, meaningful_score=meaningful, accuracy=accuracy,
                      refusal_rate=0.1, leak_rate=leak, mean_loss=1.25)


def _fake_metrics(forget_mem, retain_und, target="all", gold=None, attacks=None, model="runs/m"):
    text_set = "forget/text_memory" if target == "all" else "forget_text/text_memory/paraphrase"
    sets = {
        "forget/image_memory": _sm(20, forget_mem, leak=forget_mem),
        text_set: _sm(20, forget_mem + 0.1, leak=forget_mem + 0.1),
        "forget/understanding": _sm(20, retain_und - 0.05),
        "retain/image_memory": _sm(60, 0.9, leak=0.9),
        "retain/text_memory": _sm(60, 0.85, leak=0.85),
        "retain/understanding": _sm(60, retain_und),
        "general_vqa": _sm(40, 0.97, meaningful=9.5),
    }
    return Metrics(target=target, model=model, forget="10", judge="offline", sets=sets,
                   overall=compute_overall(sets, target), gold=gold, attacks=attacks)


@pytest.fixture()
def two_runs(tmp_path):
    vanilla = tmp_path / "vanilla"
    smfa = tmp_path / "smfa"
    save_metrics(_fake_metrics(0.95, 0.9), vanilla)
    save_metrics(
        _fake_metrics(0.05, 0.8, gold=GoldStandard(0.35, 1e-6, 40, "runs/oracle"),
                      attacks={"prefix_injection": {"forget_memory": 0.1, "leak_image": 0.12},
                               "quant_4bit": {"forget_memory": 0.2, "bits": 4}}),
        smfa,
    )
    return vanilla, smfa


def test_write_eval_report_has_sets_overall_gold_and_attacks(tmp_path):
    m = _fake_metrics(0.05, 0.8, gold=GoldStandard(0.35, 1e-6, 40, "runs/oracle"),
                      attacks={"relearn": {"forget_memory": 0.4, "steps": 20}})
    path = write_eval_report(m, tmp_path)
    text = path.read_text()
    assert path.name == "report.md"
    assert "setting: **all**" in text
    assert "| `forget/image_memory` | 20 | 60.0 | 6.00 | 8.00 | 5.0 | 10.0 | 5.0 | 1.25 |" in text
    assert "| Overall memory (retain − forget) | 77.5 | ↑ |" in text  # 87.5 − 10.0
    assert "| this model | 0.35 | 40 |" in text and "| vanilla | 1e-06 | 40 |" in text
    assert "| `relearn` | 0.4 | 20 |" in text


def test_the_oracle_test_is_named_for_what_it_is(tmp_path, two_runs):
    """Bug: a KS test on per-question answer NLL was labelled TOFU's forget quality (a test on truth ratios)."""
    import smfa.eval.gold as gold

    m = _fake_metrics(0.05, 0.8, gold=GoldStandard(0.35, 1e-6, 40, "runs/oracle"))
    text = write_eval_report(m, tmp_path).read_text()
    assert "Kolmogorov-Smirnov test between this model's and the oracle's per-question answer NLL" in text
    assert "| model | forget NLL KS p | n |" in text
    assert text.lower().count("forget quality") == text.count("Not TOFU's forget quality") == 1
    md = compare_runs(list(two_runs), ["Vanilla", "SMFA"], tmp_path / "cmp")["markdown"].read_text()
    assert "Forget NLL KS p ↑" in md.splitlines()[4] and "forget quality" not in md.lower()
    for doc in (gold.__doc__, gold.forget_quality.__doc__, GoldStandard.__doc__):
        assert "answer NLL" in doc and "TOFU's forget quality:" not in doc and "as TOFU measures it" not in doc


def test_eval_report_labels_the_visual_setting(tmp_path):
    text = write_eval_report(_fake_metrics(0.05, 0.8, target="visual"), tmp_path).read_text()
    assert "setting: **visual**" in text
    assert "| Forget people's text memory (kept in this setting) | 15.0 | ↑ |" in text
    assert "Forget memory (image only)" in text


def test_compare_runs_writes_markdown_and_pngs(two_runs, tmp_path):
    out = tmp_path / "cmp"
    paths = compare_runs(list(two_runs), ["Vanilla", "SMFA"], out, wall_times=[None, 95.0])
    assert {p.name for p in paths.values()} == {"compare.md", "methods.png", "tradeoff.png", "selectivity.png"}
    md = paths["markdown"].read_text()
    header = md.splitlines()[4]
    for column in ("Forget I-Und ↑", "Forget I-Mem ↓", "Forget T-Mem ↓", "Retain I-Und ↑", "Retain I-Mem ↑",
                   "Retain T-Mem ↑", "Overall I-Und ↑", "Overall Memory ↑", "Meaningful ↑", "General VQA ↑",
                   "Forget leak image ↓", "Forget leak text ↓", "Forget NLL KS p ↑", "Wall time"):
        assert column in header
    smfa_row = next(line for line in md.splitlines() if line.startswith("| SMFA |"))
    assert smfa_row.startswith("| SMFA | all | 75.0 | 5.0 | 15.0 | 80.0 | 90.0 | 85.0 | 77.5 | 77.5 |")
    assert smfa_row.endswith("| 0.35 | 95 s |")
    assert "| Vanilla | all |" in md and "### SMFA" in md and "`quant_4bit`" in md
    for key in ("bars", "tradeoff", "selectivity"):
        data = paths[key].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_compare_runs_label_errors(two_runs, tmp_path):
    with pytest.raises(ConfigError, match="2 runs"):
        compare_runs(list(two_runs), ["only one"], tmp_path / "x")
    with pytest.raises(ConfigError, match="distinct"):
        compare_runs(list(two_runs), ["A", "A"], tmp_path / "x")
    with pytest.raises(OutputError, match="has no metrics.json"):
        compare_runs([tmp_path], None, tmp_path / "x")


def test_default_labels_are_distinct(tmp_path):
    assert default_labels([tmp_path / "a" / "eval", tmp_path / "b" / "eval", tmp_path / "c"]) == ["a/eval", "b/eval", "c"]


def test_compare_markdown_relabels_kept_columns_when_every_run_is_visual():
    md = compare_markdown([_fake_metrics(0.1, 0.8, target="visual")] * 2, ["A", "B"])
    header = md.splitlines()[4]
    assert "Forget T-Mem (kept) ↑" in header and "Forget name answers (kept) ↑" in header
    assert "Forget T-Mem ↓" not in header and "Forget leak text ↓" not in header


def test_compare_markdown_notes_the_visual_setting():
    md = compare_markdown([_fake_metrics(0.1, 0.8), _fake_metrics(0.1, 0.8, target="visual")], ["A", "B"])
    assert "| B | visual |" in md
    assert "Setting *visual*" in md and "not directly comparable" in md


@pytest.mark.parametrize(
    ("forget", "expected"),
    [
        ([0.9, 0.6, 0.3, 0.1], "larger k → more forgetting (forget memory 90% at k=0 → 10% at k=100)"),
        ([0.1, 0.3, 0.6, 0.9], "larger k → less forgetting"),
        ([0.4, 0.4, 0.4, 0.4], "does not change with k"),
        ([0.4, None, None, None], "too few k values"),
    ],
)
def test_k_direction_is_measured_from_the_data(forget, expected):
    assert expected in k_direction([0, 1, 10, 100], forget)


def test_plot_k_sweep_writes_a_titled_png(tmp_path):
    rows = [
        {"k": k, "forget_memory": fm, "retain_memory": rm, "understanding": u, "general_vqa": g}
        for k, fm, rm, u, g in [(0, 0.6, 0.9, 0.88, 0.97), (1, 0.45, 0.85, 0.86, 0.95),
                                (5, 0.2, 0.7, 0.8, 0.9), (10, 0.1, 0.55, 0.7, None), (100, 0.02, 0.3, 0.5, 0.6)]
    ]
    path = plot_k_sweep(rows, tmp_path / "k_sweep.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ConfigError, match="row 1 lacks general_vqa"):
        plot_k_sweep([rows[0], {"k": 2, "forget_memory": 0.1, "retain_memory": 0.1, "understanding": 0.1}], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="k must be a finite number"):
        plot_k_sweep([{**rows[0], "k": -1}], tmp_path / "x.png")


def test_smfa_report_command(two_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_runs), "--labels", "Vanilla", "SMFA", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"compare.md", "methods.png", "tradeoff.png", "selectivity.png", "manifest.json"}
    assert "| SMFA | all |" in (out / "compare.md").read_text()
    # An existing --out needs --overwrite; a directory without metrics.json is a clear error.
    assert main(["report", *map(str, two_runs), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["report", str(two_runs[0]), "--out", str(out), "--overwrite"]) == 0
    assert "| vanilla | all |" in (out / "compare.md").read_text()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "has no metrics.json" in err and "smfa evaluate" in err
    assert not (tmp_path / "r2").exists()


def test_runs_sharing_a_label_are_aggregated_as_mean_and_spread(tmp_path, capsys):
    runs = []
    for i, forget_mem in enumerate((0.1, 0.2, 0.3)):  # one run per "seed"
        save_metrics(_fake_metrics(forget_mem, 0.8), tmp_path / f"smfa-s{i}")
        runs.append(str(tmp_path / f"smfa-s{i}"))
    save_metrics(_fake_metrics(0.95, 0.9), tmp_path / "vanilla")
    out = tmp_path / "agg"
    assert main(["report", *runs, str(tmp_path / "vanilla"), "--labels", "SMFA", "SMFA", "SMFA", "Vanilla",
                 "--aggregate", "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| SMFA | 3 |"))
    # Forget I-Mem: mean 20.0, sample standard deviation 10.0; Retain I-Mem identical in every run: ± 0.0.
    assert "| 20.0 ± 10.0 |" in row and "| 90.0 ± 0.0 |" in row
    assert "| Vanilla | 1 |" in md and "| 95.0 |" in md.split("| Vanilla | 1 |")[1].splitlines()[0]
    assert "| SMFA #3 | all |" in md  # the per-run table below
    # A metric group no run has (MLLMU-Bench's task columns on our bench) is left out of both tables.
    assert "n/a | n/a" not in md and "classification acc." not in md
    # Without --aggregate a repeated label stays an error.
    assert main(["report", *runs, "--labels", "A", "A", "B", "--out", str(tmp_path / "x")]) == 2
    assert "distinct" in capsys.readouterr().err


def test_selectivity_curves_join_variant_points_and_seeds_share_a_point():
    from smfa.plots import selectivity_curves, selectivity_point

    labels = ["smfa@k=5", "smfa@k=20", "idk", "smfa@k=5", "oracle"]
    assert selectivity_curves(labels) == {"smfa": [0, 1, 3], "idk": [2], "oracle": [4]}
    m = _fake_metrics(0.2, 0.8)  # leak photo 20 %, name 30 %; retain memory (90 + 85) / 2
    leak, retain = selectivity_point(m)
    assert leak == pytest.approx(25.0) and retain == pytest.approx(87.5)
    visual = _fake_metrics(0.2, 0.8, target="visual")  # the name questions are kept knowledge: photo leak only
    assert selectivity_point(visual)[0] == pytest.approx(20.0)


def test_the_selectivity_axis_says_what_it_averages():
    from smfa.plots import _selectivity_xlabel

    assert "mean of photo and name (%)" in _selectivity_xlabel({"all"})
    assert "by photo (%)" in _selectivity_xlabel({"visual"})
    assert "photo only for visual-setting runs" in _selectivity_xlabel({"all", "visual"})


def test_runs_with_attacks_get_one_table_of_attacks_by_run(tmp_path):
    """Two attacked runs: one table, an attack a row and a run a column, each cell the attack's headline."""
    from smfa.report import compare_markdown

    a = {"paraphrase": {"leak": 0.03, "retain_leak": 0.17}, "relearn": {"leak_before": 0.23, "leak_after": 1.0},
         "cross_modal": {"leak": 0.4, "leak_text_only": 0.07, "leak_image_only": 0.33}, "mia": {"auc": 0.973},
         "quantize_4bit": {"leak": 0.27, "retain_leak": 0.53, "general_vqa_accuracy": 0.56}}
    b = {"paraphrase": {"leak": 0.0, "retain_leak": 0.28}, "relearn": {"leak_before": 0.02, "leak_after": 0.95}}
    text = compare_markdown([_fake_metrics(0.2, 0.8, attacks=a), _fake_metrics(0.0, 0.9, attacks=b)], ["anchor", "budget"])
    assert "| attack | anchor | budget |" in text
    assert "| `paraphrase` (retain kept) | 3 (17) | 0 (28) |" in text
    assert "| `relearn` before → after | 23 → 100 | 2 → 95 |" in text
    assert "| `cross_modal` name only / photo only / either | 7 / 33 / 40 | n/a |" in text
    assert "| `quantize_4bit` (retain kept; general VQA) | 27 (53; 56) | n/a |" in text
    assert "| `mia` | AUC 0.97 | n/a |" in text
