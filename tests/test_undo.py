"""UNDO as arXiv 2506.06278 does it (#37, smfa.methods.robust, docs/undo.md): the shrink-and-perturb noise
(norms included), hard refusal targets for the forget rows, the stop rule (retain within 5 % of the teacher
on held-out rows, or a step cap, recorded) and determinism."""

from __future__ import annotations

import json
import math

import pytest
import torch

from smfa.methods.robust import (RecoveryMonitor, RetainScore, recovery_gap, retain_score, shrink_perturb,
                                 shrink_perturb_parameters, split_holdout, undo_items)


def test_shrink_perturb_is_the_shrunk_matrix_plus_alpha_beta_xavier_noise():
    fan_out, fan_in, alpha, beta = 512, 256, 0.3, 0.1
    theta = torch.randn(fan_out, fan_in, generator=torch.Generator().manual_seed(0)) * 0.05 + 0.2
    kept = theta.clone()
    out = shrink_perturb(theta, alpha, beta, torch.Generator().manual_seed(1))
    assert torch.equal(theta, kept)  # the input is not modified
    xavier = torch.nn.init.xavier_uniform_(torch.empty(fan_out, fan_in), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, (1 - alpha) * theta + alpha * beta * xavier, atol=1e-7)
    noise = out - (1 - alpha) * theta  # what is left once the shrink is taken out: α·β·U(−b, b)
    bound = math.sqrt(6 / (fan_in + fan_out))
    var = (alpha * beta * bound) ** 2 / 3  # = (αβ)² · 2 / (fan_in + fan_out)
    n = noise.numel()
    assert abs(float(noise.mean())) < 4 * math.sqrt(var / n)
    assert float(noise.var()) == pytest.approx(var, rel=0.03)
    assert float(noise.abs().max()) <= alpha * beta * bound * (1 + 1e-5)
    # the old lever's noise was α·σ_W·N(0, 1): here the noise does not grow with the matrix's own values
    assert float((shrink_perturb(theta * 10, alpha, beta, torch.Generator().manual_seed(1)) - (1 - alpha) * theta * 10)
                 .var()) == pytest.approx(float(noise.var()), rel=1e-4)
    assert torch.equal(shrink_perturb(theta, 0.0, beta, torch.Generator().manual_seed(1)), theta)


def test_norms_and_biases_are_shrunk_without_noise_and_every_parameter_is_changed():
    from transformers import LlamaConfig, LlamaForCausalLM

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
        net = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.ndim == 1:
                    p.normal_(1.0, 0.1)  # norm gains away from their initial 1s
        return net

    alpha, beta = 0.4, 0.1
    vector = torch.linspace(0.5, 1.5, 32)
    assert torch.equal(shrink_perturb(vector, alpha, beta, torch.Generator().manual_seed(0)), (1 - alpha) * vector)

    a, b, c = model(), model(), model()
    before = {k: v.detach().clone() for k, v in a.named_parameters()}
    done = shrink_perturb_parameters(a.named_parameters(), alpha, beta, seed=3, skip_prefixes=("model.layers.0.mlp",))
    assert "model.norm.weight" in done and "model.embed_tokens.weight" in done
    assert not any(name.startswith("model.layers.0.mlp") for name in done)
    after = dict(a.named_parameters())
    for name, old in before.items():
        if name.startswith("model.layers.0.mlp"):
            assert torch.equal(after[name], old), name  # skipped (the vision tower and projector in smfa)
        elif old.ndim == 1:
            assert torch.allclose(after[name], (1 - alpha) * old, atol=1e-7), name  # norms: shrunk, no noise
        else:
            assert not torch.allclose(after[name], (1 - alpha) * old, atol=1e-4), name  # matrices: shrunk + noise
    shrink_perturb_parameters(reversed(list(b.named_parameters())), alpha, beta, seed=3,
                              skip_prefixes=("model.layers.0.mlp",))  # the order does not matter
    assert all(torch.equal(p, after[n]) for n, p in b.named_parameters())
    shrink_perturb_parameters(c.named_parameters(), alpha, beta, seed=4, skip_prefixes=("model.layers.0.mlp",))
    assert not torch.equal(dict(c.named_parameters())["model.embed_tokens.weight"], after["model.embed_tokens.weight"])


def test_forget_rows_train_on_hard_refusals_and_retain_rows_on_the_teacher():
    from types import SimpleNamespace

    from smfa.refusals import refusal_pool

    retain = [SimpleNamespace(id=f"r{i}", answer=f"kept {i}", image=None) for i in range(10)]
    forget = [SimpleNamespace(id=f"f{i}", answer=f"secret {i}", image=None) for i in range(6)]
    items = undo_items(retain, forget, seed=0)
    by_id = {it.row.id: it for it in items}
    assert len(items) == 16
    pool = set(refusal_pool())
    for row in forget:
        item = by_id[row.id]
        assert not item.distill and item.answer in pool  # hard targets: the refusal's tokens, cross-entropy
    for row in retain:
        assert by_id[row.id].distill and by_id[row.id].answer == row.answer  # the teacher's distribution (KL)
    assert [it.answer for it in undo_items(retain, forget, seed=0)] == [it.answer for it in items]

    trained, held = split_holdout(retain, 0.2, seed=5)
    assert len(held) == 2 and not {r.id for r in trained} & {r.id for r in held}
    assert sorted(r.id for r in trained + held) == sorted(r.id for r in retain)
    assert split_holdout(retain, 0.2, seed=5) == (trained, held)


def drive(monitor: RecoveryMonitor) -> int:
    """The stop rule as the distillation runs it: a check before the first step, then after every step."""
    if monitor.check(0):
        return 0
    step = 0
    while True:
        step += 1
        if monitor.after_step(step):
            return step


def test_the_stop_rule_stops_within_five_percent_and_records_not_recovered_at_the_cap():
    teacher = RetainScore(nll=0.5, accuracy=0.8)
    measured = iter([RetainScore(2.0, 0.1), RetainScore(1.5, 0.5), RetainScore(1.2, 0.75), RetainScore(1.1, 0.761)])
    monitor = RecoveryMonitor(teacher, "accuracy", tolerance=0.05, every=10, max_steps=100, measure=lambda: next(measured))
    assert drive(monitor) == 30 and monitor.recovered and monitor.steps == 30  # 0.761 >= 0.95 x 0.8
    assert [c["step"] for c in monitor.checks] == [0, 10, 20, 30]
    assert monitor.checks[-1]["gap"] == pytest.approx((0.8 - 0.761) / 0.8) and monitor.checks[-1]["nll"] == 1.1
    assert recovery_gap(RetainScore(0.5, 0.759), teacher, "accuracy") > 0.05
    assert recovery_gap(RetainScore(0.52, 0.0), teacher, "nll") == pytest.approx(0.04)  # the paper's rule: NLL
    assert recovery_gap(RetainScore(0.1, 0.9), teacher, "nll") < 0  # better than the teacher: recovered

    stuck = RecoveryMonitor(teacher, "nll", tolerance=0.05, every=10, max_steps=25, measure=lambda: RetainScore(0.53, 0.8))
    assert drive(stuck) == 25 and not stuck.recovered and stuck.steps == 25
    assert [c["step"] for c in stuck.checks] == [0, 10, 20, 25]  # the cap is measured too


def test_the_retain_score_is_the_answer_nll_and_the_share_of_rows_answered_exactly():
    from types import SimpleNamespace

    from smfa.losses import IGNORE_INDEX

    # two rows, prompt token then two answer tokens; the "model" predicts row 0's answer and half of row 1's
    labels = torch.tensor([[IGNORE_INDEX, 3, 4], [IGNORE_INDEX, 5, 6]])
    want = {(0, 0): 3, (0, 1): 4, (1, 0): 5, (1, 1): 1}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # where batches are moved to

        def forward(self, input_ids, logits_to_keep=None, **_):
            logits = torch.zeros(2, 3, 8)
            for (b, t), tok in want.items():
                logits[b, t, tok] = 4.0
            return SimpleNamespace(logits=logits[:, logits_to_keep] if logits_to_keep is not None else logits)

    data = [{"input_ids": torch.tensor([1, 2, 2]), "labels": labels[i]} for i in range(2)]
    collate = lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    score = retain_score(Model(), data, collate, batch_size=2)
    assert score.accuracy == 0.5
    p_hit = math.exp(4) / (math.exp(4) + 7)
    assert score.nll == pytest.approx((3 * -math.log(p_hit) - math.log(1 / (math.exp(4) + 7))) / 4, rel=1e-5)


@pytest.fixture
def undo_run(micro_bench_dir, micro_vanilla, tmp_path, one_torch_thread):
    """``run(name, **robust fields)``: UNDO on the micro vanilla (as its own teacher) over a slice of the micro
    bench (16 forget rows, 20 retain rows); returns (the student, its undo.json, the teacher's weights)."""
    import copy

    from smfa.bench import Bench
    from smfa.methods import get_method
    from smfa.methods.context import UnlearnContext
    from smfa.methods.robust import UNDO_RECORD, distill_into_noised
    from smfa.models.loading import load_model
    from smfa.stages.unlearn import select_data

    bench = Bench.load(micro_bench_dir)
    vanilla = load_model(micro_vanilla)

    def run(name: str, seed: int = 0, **fields):
        data = select_data(bench, "10", "all", None, 0)
        data.forget_rows, data.anchor_rows = data.forget_rows[:16], data.anchor_rows[:20]
        work = tmp_path / name
        work.mkdir()
        ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=data, target="all", seed=seed, work_dir=work,
                             progress=False)
        hp = get_method("smfa").config(None, {"robust": "distill", "batch_size": 8, **fields})
        teacher = copy.deepcopy(vanilla.model)
        student = distill_into_noised(ctx, teacher, hp)
        return student, json.loads((work / UNDO_RECORD).read_text()), teacher

    return run


def test_distillation_stops_on_recovery_or_at_the_cap_and_is_deterministic(undo_run):
    same, record, teacher = undo_run("same", robust_noise=0.0)  # α 0: the teacher itself, recovered before a step
    assert record["recovered"] and record["steps"] == 0 and record["checks"][0]["gap"] == pytest.approx(0, abs=1e-6)
    assert record["stop"] == "accuracy" and record["checks"][0]["accuracy"] == record["teacher_accuracy"] > 0.5
    assert all(torch.equal(p, q) for p, q in zip(same.parameters(), teacher.parameters()))

    fields = {"robust_noise": 0.5, "robust_max_steps": 6, "robust_check_every": 3, "robust_stop": "nll"}
    a, rec_a, _ = undo_run("a", **fields)
    assert not rec_a["recovered"] and rec_a["steps"] == 6 and [c["step"] for c in rec_a["checks"]] == [0, 3, 6]
    assert rec_a["checks"][0]["gap"] > 0.05  # the noise cost the held-out retain rows something
    assert rec_a["alpha"] == 0.5 and rec_a["beta"] == 0.1 and rec_a["retain_rows_held_out"] == 2
    b, rec_b, _ = undo_run("b", **fields)
    assert rec_b["checks"] == rec_a["checks"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # same seed: same weights
    other, _, _ = undo_run("other", seed=1, **fields)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), other.parameters()))

    # the same run with the tolerance met at step 3 stops there (the Trainer ends early), recorded as recovered
    early, rec_e, _ = undo_run("early", **fields, robust_tolerance=rec_a["checks"][1]["gap"] + 1e-4)
    assert rec_e["recovered"] and rec_e["steps"] == 3 and [c["step"] for c in rec_e["checks"]] == [0, 3]
    assert rec_e["checks"] == rec_a["checks"][:2]
