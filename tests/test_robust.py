"""#27's levers: the noised copy of UNDO-style distillation (smfa.methods.robust) and the MFA's data fields."""

from __future__ import annotations

import pytest
import torch

from smfa.errors import ConfigError
from smfa.methods.base import get_method
from smfa.methods.robust import noise_parameters, noised


def test_noised_mixes_shrunk_weights_with_noise_of_their_own_spread():
    w = torch.randn(256, 128, generator=torch.Generator().manual_seed(0)) * 0.02 + 0.5
    out = noised(w, 0.3, torch.Generator().manual_seed(1))
    eps = torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, 0.7 * w + 0.3 * w.std() * eps, atol=1e-6)
    assert not torch.equal(out, w)
    assert torch.equal(w, torch.randn(256, 128, generator=torch.Generator().manual_seed(0)) * 0.02 + 0.5)  # input kept
    assert torch.equal(noised(w, 0.0, torch.Generator().manual_seed(1)), w)
    full = noised(w, 1.0, torch.Generator().manual_seed(1))
    assert abs(float(full.std()) - float(w.std())) < 0.1 * float(w.std())  # pure noise at the matrix's own spread
    assert abs(float(torch.corrcoef(torch.stack([full.flatten(), w.flatten()]))[0, 1])) < 0.02


def test_noise_parameters_skips_vectors_and_prefixes_and_depends_on_seed_and_name_only():
    def model():
        torch.manual_seed(0)
        return torch.nn.ModuleDict({"vision": torch.nn.Linear(4, 4), "lm": torch.nn.Linear(8, 8)})

    a, b, c = model(), model(), model()
    kept_vision, kept_bias = a["vision"].weight.clone(), a["lm"].bias.clone()
    done = noise_parameters(a.named_parameters(), 0.5, seed=3, skip_prefixes=("vision",))
    assert done == ["lm.weight"]
    assert torch.equal(a["vision"].weight, kept_vision) and torch.equal(a["lm"].bias, kept_bias)
    assert not torch.equal(a["lm"].weight, c["lm"].weight)
    noise_parameters(reversed(list(b.named_parameters())), 0.5, seed=3, skip_prefixes=("vision",))  # order-free
    assert torch.equal(a["lm"].weight, b["lm"].weight)
    noise_parameters(c.named_parameters(), 0.5, seed=4, skip_prefixes=("vision",))
    assert not torch.equal(a["lm"].weight, c["lm"].weight)


@pytest.mark.parametrize("field,value", [("robust", "undo"), ("robust_noise", 1.5), ("robust_noise", float("nan")),
                                         ("robust_epochs", 0), ("robust_lr", -1.0), ("retain_augment", -1),
                                         ("retain_augment", 1.5)])
def test_bad_lever_values_are_refused_before_training(field, value):
    with pytest.raises(ConfigError, match=field):
        get_method("smfa").config(overrides={field: value})


def test_retain_augment_is_part_of_the_mfa_key_only_when_used():
    from types import SimpleNamespace

    from smfa.methods.smfa import mfa_key
    from smfa.models.placement import CPU_FP32

    data = SimpleNamespace(anchor_rows=[SimpleNamespace(id="a1", answer="x")], reference_rows=[])
    ctx = SimpleNamespace(model_digest="d", vanilla=None, seed=0, target="all", data=data, placement=CPU_FP32)
    rows = [SimpleNamespace(id="f1")]
    smfa = get_method("smfa")
    base = mfa_key(ctx, smfa.config(), rows)
    assert mfa_key(ctx, smfa.config(overrides={"retain_augment": 0}), rows) == base
    assert mfa_key(ctx, smfa.config(overrides={"retain_augment": 2}), rows) != base
    assert mfa_key(ctx, smfa.config(overrides={"robust": "distill"}), rows) == base  # the MFA is the same


def test_other_phrasings_ask_the_same_fact_with_other_training_templates_only():
    from smfa.bench.questions import TEMPLATES, other_phrasings
    from smfa.bench.schema import PARAPHRASE, TEXT_MEMORY, Question

    pool = TEMPLATES[(TEXT_MEMORY, "none", "home_city")]
    row = Question(id="p0001-tm-home_city-txt-t3", kind=TEXT_MEMORY, domain="none", attribute="home_city",
                   question=pool.train[3].format(name="Ada Brook"), answer="Ada Brook lives in Norvale.", fact="Norvale",
                   person_id="p0001", template_id=3)
    out = other_phrasings(row, "Ada Brook", 3)
    assert len(out) == 3 and len({q.template_id for q in out}) == 3 and 3 not in {q.template_id for q in out}
    for q in out:
        assert q.question in {t.format(name="Ada Brook") for t in pool.train}
        assert q.question not in {t.format(name="Ada Brook") for t in pool.paraphrase}
        assert (q.answer, q.fact, q.person_id, q.kind) == (row.answer, row.fact, row.person_id, row.kind)
        assert q.id == f"{row.id}-r{q.template_id}"
    from dataclasses import replace

    assert other_phrasings(row, "Ada Brook", 0) == []
    assert other_phrasings(replace(row, phrasing=PARAPHRASE), "Ada Brook", 2) == []  # never from a held-out row
    assert other_phrasings(replace(row, attribute="imported_thing"), "Ada Brook", 2) == []  # no pool: none
