"""MaskedAdamW (smfa.optim): state only on the masked entries, and the same weights as dense AdamW over masked
gradients (what MMUnlearner trained with before)."""

from __future__ import annotations

import copy

import pytest
import torch

from smfa.errors import ConfigError
from smfa.optim import (MaskedAdamW, dense_adamw_state_bytes, masked_adamw_state_bytes, optimizer_state_bytes,
                        optimizer_state_numel)


def _params_and_masks(dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (13,), (3, 4, 6)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]
    masks = [torch.rand(s, generator=g) < share for s, share in zip(shapes, (0.3, 0.0, 0.7))]
    return params, masks


def _train(optimizer_of, dtype: torch.dtype, steps: int = 6,
           train_dtype: torch.dtype | None = None) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """``steps`` steps on parameters and gradients of ``dtype``; with ``train_dtype`` the parameters train as
    copies in that dtype (the gradients too, upcast exactly) and come back rounded to ``dtype``."""
    train_dtype = train_dtype or dtype
    params, masks = _params_and_masks(dtype)
    params = [torch.nn.Parameter(p.detach().to(train_dtype)) for p in params]
    optimizer = optimizer_of(params, masks)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / (2 * steps))  # lr changes each step
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p, m in zip(params, masks):
            # masked gradients, as the trainer leaves them
            p.grad = (torch.randn(p.shape, generator=g).to(dtype) * m).to(train_dtype)
        optimizer.step()
        scheduler.step()
    return [p.detach().to(dtype) for p in params], optimizer


def _masked_adamw(params, masks, gather: str, **kw) -> MaskedAdamW:
    optimizer = MaskedAdamW(params, dict(zip(params, masks)), **kw)
    if gather == "mask":
        optimizer.indices = {}  # the accelerator's way: gather with the bool mask, no flat positions kept
    return optimizer


@pytest.mark.parametrize("gather", ["index", "mask"])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_adamw_matches_dense_adamw_on_masked_gradients(fused: bool, dtype: torch.dtype, gather: str) -> None:
    """Bit-identical here; on the micro bench the CPU's fused kernel rounds the last few (< vector width)
    entries of a tensor on a scalar path, so a compacted entry that lands there can differ by 1 ulp a step
    (measured: max |Δw| 9e-8 after 210 MMUnlearner steps in fp32). bf16 weights train through an fp32 master
    copy of their masked entries: the reference is dense AdamW on fp32 copies, rounded to bf16 at the end."""
    kw = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "fused": fused}
    dense, _ = _train(lambda ps, ms: torch.optim.AdamW(ps, **kw), dtype, train_dtype=torch.float32)
    masked, optimizer = _train(lambda ps, ms: _masked_adamw(ps, ms, gather, **kw), dtype)
    start, masks = _params_and_masks(dtype)
    for d, m, p0, mask in zip(dense, masked, start, masks):
        assert torch.equal(d, m)  # bit-identical: the same AdamW kernel on the same values
        assert torch.equal(m[~mask], p0.detach()[~mask])  # entries outside the mask never written
        assert not mask.any() or not torch.equal(m[mask], p0.detach()[mask])


def test_state_is_two_values_per_masked_entry_and_none_elsewhere() -> None:
    _, optimizer = _train(lambda ps, ms: MaskedAdamW(ps, dict(zip(ps, ms)), lr=1e-2), torch.float32)
    params, masks = _params_and_masks()
    masked = sum(int(m.sum()) for m in masks)
    assert optimizer_state_numel(optimizer) == 2 * masked
    assert optimizer_state_bytes(optimizer) == 8 * masked == masked_adamw_state_bytes(dict(zip(params, masks)))
    assert dense_adamw_state_bytes(params) == 8 * sum(p.numel() for p in params)
    # The all-False parameter (index 1) holds no state at all.
    assert len(optimizer.state) == 2


def test_small_lr_steps_move_bf16_weights() -> None:
    """lr 1e-5 on bf16 weights near 0.02, where bf16's spacing is 2^-13 (1.2e-4): a pure bf16 update (torch's
    AdamW on the bf16 weight, as MaskedAdamW did before) is under half a spacing each step and rounds to
    nothing, for ever. The fp32 master copy of the masked entries accumulates the steps and the bf16 weight
    is written from it: after 20 steps it is dense fp32 AdamW's result rounded to bf16, ~2 spacings away."""
    start = torch.full((64,), 0.02).to(torch.bfloat16)
    mask = torch.arange(64) % 4 != 0
    masked, pure, fp32 = (torch.nn.Parameter(start.clone().to(dt)) for dt in (torch.bfloat16, torch.bfloat16,
                                                                               torch.float32))
    optimizers = [MaskedAdamW([masked], {masked: mask}, lr=1e-5), torch.optim.AdamW([pure], lr=1e-5, weight_decay=0.0),
                  torch.optim.AdamW([fp32], lr=1e-5, weight_decay=0.0)]
    for _ in range(20):
        for p, optimizer in zip((masked, pure, fp32), optimizers):
            p.grad = (torch.ones(64) * mask).to(p.dtype)
            optimizer.step()
    assert torch.equal(pure.detach(), start)  # the loss this fixes: bf16 updates round to nothing
    assert torch.equal(masked.detach(), fp32.detach().to(torch.bfloat16))
    assert (masked.detach()[mask].float() < 0.02 - 1.5e-4).all()  # moved by ~20 × 1e-5
    assert torch.equal(masked.detach()[~mask], start[~mask])
    state = optimizers[0].state[masked]
    assert {state[k].dtype for k in ("master", "exp_avg", "exp_avg_sq")} == {torch.float32}
    assert optimizer_state_bytes(optimizers[0]) == 12 * int(mask.sum()) == masked_adamw_state_bytes({masked: mask})


def test_state_dict_round_trip_keeps_the_fp32_master_and_moments() -> None:
    """torch's ``load_state_dict`` casts floating state to its parameter's dtype: the bf16 parameter's fp32
    master and moments must come back in fp32, and training resumed from them must match training on."""
    def fresh():
        params, masks = _params_and_masks(torch.bfloat16)
        return params, masks, MaskedAdamW(params, dict(zip(params, masks)), lr=1e-3)

    def step(params, masks, optimizer, seed):
        g = torch.Generator().manual_seed(seed)
        for p, m in zip(params, masks):
            p.grad = (torch.randn(p.shape, generator=g) * m).to(torch.bfloat16)
        optimizer.step()

    params, masks, optimizer = fresh()
    for seed in range(3):
        step(params, masks, optimizer, seed)
    # state_dict() holds the live tensors: a copy, as a checkpoint on disk is
    saved, weights = copy.deepcopy(optimizer.state_dict()), [p.detach().clone() for p in params]
    step(params, masks, optimizer, 3)
    resumed_params, resumed_masks, resumed = fresh()
    with torch.no_grad():
        for p, w in zip(resumed_params, weights):
            p.copy_(w)
    resumed.load_state_dict(saved)
    assert {t.dtype for s in resumed.state.values() for k, t in s.items() if k != "step"} == {torch.float32}
    step(resumed_params, resumed_masks, resumed, 3)
    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params))


def test_weight_decay_touches_masked_entries_only() -> None:
    params, masks = _params_and_masks()
    before = [p.detach().clone() for p in params]
    optimizer = MaskedAdamW(params, dict(zip(params, masks)), lr=1e-2, weight_decay=0.5)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p, b, m in zip(params, before, masks):
        assert torch.equal(p.detach()[~m], b[~m])
        assert torch.allclose(p.detach()[m], b[m] * (1 - 1e-2 * 0.5))


def test_masks_must_fit_their_parameters() -> None:
    p = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="bool mask of its shape"):
        MaskedAdamW([p], {p: torch.ones(2, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool mask of its shape"):
        MaskedAdamW([p], {})


def test_trainer_builds_masked_adamw_from_its_arguments_and_refuses_other_optimizers(tmp_path) -> None:
    from transformers import Trainer, TrainingArguments

    from smfa.optim import masked_adamw_for_trainer

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    masks = {"0.weight": torch.rand(3, 4) < 0.5}
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=3e-4, adam_beta2=0.95, weight_decay=0.1,
                             use_cpu=True, report_to=[])
    optimizer = masked_adamw_for_trainer(Trainer(model=model, args=args), model, masks)
    (group,) = optimizer.param_groups  # only the masked parameter; bias and LayerNorm are not trained
    assert group["params"] == [model[0].weight]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3e-4, (0.9, 0.95), 0.1)
    args = TrainingArguments(output_dir=str(tmp_path), optim="adafactor", use_cpu=True, report_to=[])
    with pytest.raises(ConfigError, match="adamw_torch"):
        masked_adamw_for_trainer(Trainer(model=model, args=args), model, masks)


@pytest.mark.slow
def test_mmunlearner_trains_with_state_on_masked_entries_only(monkeypatch, run_micro_mmunlearner, tmp_path) -> None:
    """MMUnlearner on the micro bench: the Trainer's optimizer is MaskedAdamW with 2 values of state per masked
    entry, saliency.json reports those bytes against dense AdamW's, and entries outside the mask stay put."""
    import json

    import smfa.training.trainer as engine_trainer
    from smfa.models.placement import resolve_placement

    seen = {}
    make = engine_trainer.trainer_class

    def recording_class():
        class Recording(make()):
            def create_optimizer(self, model=None):
                seen["optimizer"], seen["mask"] = super().create_optimizer(model), self.grad_mask
                return seen["optimizer"]
        return Recording

    monkeypatch.setattr(engine_trainer, "trainer_class", recording_class)
    placement = resolve_placement("cpu", "fp32")
    model, before = run_micro_mmunlearner(placement, 2)

    optimizer, mask = seen["optimizer"], seen["mask"]
    assert isinstance(optimizer, MaskedAdamW)
    masked = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    assert 0 < masked < total
    assert optimizer_state_numel(optimizer) == 2 * masked
    saliency = json.loads((tmp_path / "saliency.json").read_text())
    assert saliency["share_masked"] == pytest.approx(masked / total)
    assert saliency["optimizer_state_bytes"] == optimizer_state_bytes(optimizer) == 8 * masked  # fp32 moments
    assert saliency["dense_adamw_state_bytes"] == 8 * total
    assert saliency["mask_bytes"] == total and saliency["fisher_offloaded"] is False  # the CPU: nothing to offload
    after = dict(model.named_parameters())
    for name, m in mask.items():
        assert torch.equal(after[name].detach()[~m], before[name][~m]), name
    assert any(not torch.equal(after[n].detach()[m], before[n][m]) for n, m in mask.items())
    assert all(torch.equal(after[n].detach(), before[n]) for n in before if n not in mask)  # non-targets frozen


@pytest.mark.slow
def test_mmunlearner_trains_with_the_vanilla_parked_in_host_memory(monkeypatch, run_micro_mmunlearner) -> None:
    """From the Fisher passes to the end of training the vanilla's parameters are emptied where they live (their
    values wait in host memory: on an accelerator that takes a 7B copy, 14 GB in bf16, off it), so the
    trainee is the one model on the device; afterwards they are back, bit-identical, on their device."""
    import smfa.methods.mmunlearner as mmu
    from smfa.models.placement import resolve_placement

    seen: dict = {}
    encode_forget, train = mmu.forget_dataset, mmu.train_unlearner

    def recording_forget_dataset(ctx):  # encoded just before the Fisher passes
        seen["ctx"], seen["fisher"] = ctx, {p.numel() for p in ctx.vanilla.model.parameters()}
        return encode_forget(ctx)

    def recording_train(ctx, *args, **kwargs):
        seen["training"] = {p.numel() for p in ctx.vanilla.model.parameters()}
        return train(ctx, *args, **kwargs)

    monkeypatch.setattr(mmu, "forget_dataset", recording_forget_dataset)
    monkeypatch.setattr(mmu, "train_unlearner", recording_train)
    model, before = run_micro_mmunlearner(resolve_placement("cpu", "bf16"), 1)
    assert seen["fisher"] == seen["training"] == {0}
    after = dict(seen["ctx"].vanilla.model.named_parameters())
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k].detach(), before[k]) and after[k].dtype == torch.bfloat16 for k in before)
    assert any(not torch.equal(p.detach(), before[k]) for k, p in model.named_parameters())  # the trainee trained
