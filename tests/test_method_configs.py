"""Shipped method defaults: every method resolves for both settings, and the visual-setting layer
(``configs/methods/visual/NAME.yaml``) applies only with ``--target visual``, under the user's own values."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from smfa.methods import get_method, method_names


@pytest.mark.parametrize("method", method_names())
def test_every_method_resolves_in_both_settings(method: str) -> None:
    m = get_method(method)
    all_cfg, visual_cfg = m.config(), m.config(target="visual")
    layer = m.default_config_path("visual")
    changed = {k for k, v in asdict(visual_cfg).items() if asdict(all_cfg)[k] != v}
    expected = set(yaml.safe_load(layer.read_text())) if layer.is_file() else set()
    assert changed <= expected  # only the keys the visual layer sets differ


def test_visual_layer_sets_smfa_k_and_user_values_win(tmp_path: Path) -> None:
    smfa = get_method("smfa")
    layer = yaml.safe_load(smfa.default_config_path("visual").read_text())
    base = yaml.safe_load(smfa.default_config_path().read_text())
    assert layer["k"] != base["k"]  # tuned separately (docs/archive/tuning.md)
    assert smfa.config().k == base["k"]
    assert smfa.config(target="visual").k == layer["k"]
    assert smfa.config(target="visual").epochs == base["epochs"]  # the rest comes from smfa.yaml
    user = tmp_path / "mine.yaml"
    user.write_text("k: 7.5\n")
    assert smfa.config(str(user), target="visual").k == 7.5
    assert smfa.config(str(user), {"k": 2.0}, target="visual").k == 2.0


def test_idk_and_smfa_share_the_mfa_in_both_settings() -> None:
    """`smfa compare` trains SMFA's MFA once for SMFA and IDK only if their MFA hyper-parameters agree."""
    keys = ("lr", "epochs", "batch_size", "lora_r", "lora_alpha", "lora_dropout", "anchor_repeat")
    for target in ("all", "visual"):
        s, i = asdict(get_method("smfa").config(target=target)), asdict(get_method("idk").config(target=target))
        assert {k: s[k] for k in keys} == {k: i[k] for k in keys}, target


def test_ties_trains_the_same_adapters_as_smfa_in_both_settings() -> None:
    """TIES vs SMFA compares merge rules only if both merge the same MFA and RA."""
    from dataclasses import fields

    from smfa.methods.smfa import AdapterPairConfig

    keys = [f.name for f in fields(AdapterPairConfig)]
    assert "anchor_repeat" in keys and "anchor_epochs" in keys
    for target in ("all", "visual"):
        s, t = asdict(get_method("smfa").config(target=target)), asdict(get_method("ties").config(target=target))
        assert {k: s[k] for k in keys} == {k: t[k] for k in keys}, target


@pytest.mark.parametrize("field,value", [("k", 5.0), ("mode", "both"), ("dual", True), ("k_text", 10.0)])
def test_ties_refuses_smfa_sculpting_fields(field: str, value: object) -> None:
    """TIESConfig used to inherit SMFAConfig: it took k, mode, dual and k_text and silently ignored them."""
    from smfa.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"unknown TIESConfig field\(s\) {field};"):
        get_method("ties").config(overrides={field: value})


@pytest.mark.parametrize("bad", [{"density": 5.0}, {"density": 0.0}, {"majority_sign_method": "bogus"},
                                 {"forget_weight": float("nan")}, {"anchor_repeat": 0}])
def test_bad_ties_values_fail_before_any_training(bad: dict) -> None:
    """density=5.0 was accepted; majority_sign_method='bogus' failed only after both adapters were trained."""
    from smfa.errors import ConfigError
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    (name,) = bad
    with pytest.raises(ConfigError, match=name):
        get_method("ties").config(overrides=bad)
    # unlearn checks the hyper-parameters first: before the (here missing) bench or model is even opened.
    with pytest.raises(ConfigError, match=name):
        unlearn(UnlearnConfig(bench="/nonexistent/bench", model="/nonexistent/model", out="/nonexistent/out",
                              method="ties", params=bad, progress=False))


@pytest.mark.parametrize("method", method_names())
def test_the_reference_layer_applies_only_with_a_reference_budget(method: str) -> None:
    m = get_method(method)
    layer = m.reference_config_path()
    expected = set(yaml.safe_load(layer.read_text())) if layer.is_file() else set()
    for target in ("all", "visual"):
        plain, budget = asdict(m.config(target=target)), asdict(m.config(target=target, reference="self"))
        assert {k for k, v in budget.items() if plain[k] != v} <= expected
    if method in ("smfa", "idk"):  # the MFA they share is trained the same way under the budget
        budget, plain = m.config(reference="self"), m.config()
        assert (budget.reference_cap, budget.lr, budget.min_steps) == (1000, 2e-3, 200)  # #34: a fixed amount of work
        assert (plain.reference_cap, plain.lr, plain.min_steps) == (0, 1e-3, 0)  # the paper recipe is unchanged
    assert asdict(m.config(None, {"lr": 5e-4}, reference="self"))["lr"] == 5e-4  # the user's values win


@pytest.mark.parametrize("name", ["smfa", "ga_diff", "mmunlearner"])
def test_real_checkpoints_get_the_one_gpu_memory_plan_under_the_users_values(name: str) -> None:
    """>= 100 M parameters: gradient checkpointing and batch 4 x 4 accumulation (the tiny preset's 16 per
    step, so the same passes); the user's --param still wins; the tiny model keeps its preset."""
    from smfa.methods import get_method
    from smfa.models.scale import REAL_SCALE_PARAMS, is_real_scale

    method = get_method(name)
    tiny, real = method.config(), method.config(real=True)
    assert (real.batch_size, real.grad_accum, real.gradient_checkpointing) == (4, 4, True)
    assert real.batch_size * real.grad_accum == tiny.batch_size * tiny.grad_accum
    assert real.lr == tiny.lr and not tiny.gradient_checkpointing
    assert method.config(overrides={"batch_size": 2}, real=True).batch_size == 2
    assert not is_real_scale(torch.nn.Linear(10, 10))
    assert is_real_scale(torch.nn.Linear(REAL_SCALE_PARAMS // 1000, 1000, bias=False))
