"""#27's levers: the lever fields' checks and the MFA's data fields (UNDO itself: tests/test_undo.py)."""

from __future__ import annotations

import pytest
import torch

from smfa.errors import ConfigError
from smfa.methods.base import get_method


@pytest.mark.parametrize("field,value", [("robust", "undo"), ("robust_noise", 1.5), ("robust_noise", float("nan")),
                                         ("robust_beta", -0.1), ("robust_max_steps", 0), ("robust_check_every", 2.5),
                                         ("robust_tolerance", 0), ("robust_holdout", 1.0), ("robust_stop", "loss"), ("robust_lr", -1.0),
                                         ("retain_augment", -1), ("retain_augment", 1.5)])
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


def test_floor_loss_lifts_a_remembered_answer_to_the_floor_and_no_further():
    from smfa.losses import answer_nll, floor_loss

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    labels = torch.tensor([[-100, -100, 2, 3, 4], [-100, 1, 2, -100, -100], [-100, -100, -100, 7, 8]])
    nll = answer_nll(logits, labels, reduction="none").detach()
    floor = torch.tensor([float(nll[0]) + 1.0, float("nan"), float(nll[2]) - 1.0])  # row 0 below, row 2 above
    loss = floor_loss(logits, labels, floor)
    assert float(loss) == pytest.approx(1.0 / 2, abs=1e-5)  # (1 + 0) / the 2 rows with a floor
    loss.backward()
    assert logits.grad[0].abs().sum() > 0  # pushed up
    assert logits.grad[1].abs().sum() == 0 and logits.grad[2].abs().sum() == 0  # no floor / already above: untouched
    # gradient ascent on row 0's NLL: one step along -grad raises it
    step = logits.detach() - 0.5 * logits.grad
    assert float(answer_nll(step, labels, reduction="none")[0]) > float(nll[0])
    assert float(floor_loss(logits, labels, torch.full((3,), float("nan")))) == 0.0


def test_the_loss_splits_floored_rows_from_trained_ones(monkeypatch):
    import smfa.losses as losses
    from smfa.data import FLOOR_KEY
    from smfa.losses import answer_nll, floor_loss
    from smfa.training.trainer import sft_loss_fn

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 4, 5]])
    monkeypatch.setattr(losses, "answer_logits", lambda model, batch: (logits, batch["labels"]))
    floor = torch.tensor([20.0, float("nan")])
    got = sft_loss_fn(None)(torch.nn.Identity(), {"labels": labels, FLOOR_KEY: floor})
    want = floor_loss(logits[:1], labels[:1], floor[:1]) + answer_nll(logits[1:], labels[1:])
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    only_floor = sft_loss_fn(None)(torch.nn.Identity(), {"labels": labels, FLOOR_KEY: torch.tensor([20.0, 20.0])})
    assert float(only_floor) == pytest.approx(float(floor_loss(logits, labels, torch.tensor([20.0, 20.0]))), rel=1e-6)


def test_the_collator_carries_each_rows_floor_nan_where_unset():
    from smfa.data import FLOOR_KEY, Collator

    class Family:
        @staticmethod
        def collate(examples, pad, side):
            return {"labels": torch.stack([e["labels"] for e in examples])}

    examples = [{"labels": torch.tensor([1, 2]), FLOOR_KEY: torch.tensor(3.5)}, {"labels": torch.tensor([3, 4])}]
    batch = Collator(Family(), 0)(examples)
    assert batch[FLOOR_KEY][0] == 3.5 and torch.isnan(batch[FLOOR_KEY][1])
    assert FLOOR_KEY not in Collator(Family(), 0)([examples[1]])


def test_calibrate_floor_is_refused_when_negative_and_keys_the_mfa():
    with pytest.raises(ConfigError, match="calibrate_floor"):
        get_method("smfa").config(overrides={"calibrate_floor": -1.0})
    from types import SimpleNamespace

    from smfa.methods.smfa import mfa_key
    from smfa.models.placement import CPU_FP32

    data = SimpleNamespace(anchor_rows=[], reference_rows=[])
    ctx = SimpleNamespace(model_digest="d", vanilla=None, seed=0, target="all", data=data, placement=CPU_FP32)
    smfa = get_method("smfa")
    assert mfa_key(ctx, smfa.config(overrides={"calibrate_floor": 4.0}), []) != mfa_key(ctx, smfa.config(), [])
