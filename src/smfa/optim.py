"""AdamW whose state lives only on masked entries (MMUnlearner's saliency mask).

Dense AdamW keeps ``exp_avg`` and ``exp_avg_sq`` for every entry of every trainable parameter: at
LLaVA-1.5-7B's language model (6.5 B linear weights) that is 2 × 6.5 B values, although MMUnlearner moves
only the entries of its saliency mask. Here each parameter's state is two 1-D tensors of ``mask.sum()``
values (the masked entries in row-major order, as ``masked_select`` reads them); a step gathers the masked
gradient and weights, runs torch's own AdamW update on them (``torch.optim.adamw.adamw``, the functional the
dense ``torch.optim.AdamW`` calls, fused or not), and scatters the weights back. Entries outside the mask get
no state and are never written (not even by weight decay): the method freezes them.

The update runs in fp32 at least. A parameter narrower than that (bf16, fp16) keeps an fp32 **master copy**
of its masked entries beside fp32 moments, and its weights are written from the master (rounded to nearest):
a pure bf16 update loses every step under half a bf16 spacing (lr 1e-5 on a weight near 0.02, where the
spacing is 1.2e-4, never moves it), and a bf16 ``exp_avg_sq`` cannot decay by β2 = 0.999 at all. State is
then 12 bytes a masked entry (4 master + 2 × 4 moments) against 8 for an fp32 parameter.

On the masked entries the update is the dense one on fp32 values (same kernel, same hyper-parameters); on the
others dense AdamW with masked (zero) gradients and weight decay 0 leaves the weights untouched too, so the two
paths agree (docs/scale.md "MMUnlearner at 7B").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim.adamw import adamw

from smfa.errors import ConfigError


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a parameter's AdamW state (and of its master copy, where that differs from the
    parameter's own): fp32, or the parameter's dtype where it is wider."""
    return torch.promote_types(dtype, torch.float32)


def masked_values(t: Tensor, mask: Tensor, index: Tensor | None = None) -> Tensor:
    """The entries of ``t`` where ``mask`` is True, row-major, 1-D: gathered by flat position with ``index``
    (see :func:`masked_adamw_update_`), else by the mask."""
    return t.reshape(-1).index_select(0, index) if index is not None else t.masked_select(mask)


def masked_adamw_update_(
    param: Tensor,
    grad: Tensor,
    mask: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    fused: bool | None = None,
    index: Tensor | None = None,
    master: Tensor | None = None,
) -> None:
    """One AdamW step on the entries of ``param`` where ``mask`` is True, in place.

    ``exp_avg``/``exp_avg_sq`` are 1-D with ``mask.sum()`` values (the masked entries, row-major) and
    ``step`` is the 0-d step counter, all updated in place. ``master`` (optional, same layout, in the moments'
    dtype) is the masked entries' master copy: the step updates it and ``param`` gets its values rounded to
    ``param``'s dtype. ``index`` (optional) is the same entries as flat positions,
    ``mask.flatten().nonzero()[:, 0]`` of a contiguous ``param``: gathering by index is ~8x faster than by mask
    on the CPU, at 8 bytes per masked entry. Temporaries are the size of the masked entries of this one
    parameter (its gathered weights and gradient)."""
    values = masked_values(param, mask, index) if master is None else master
    masked_grad = masked_values(grad, mask, index).to(values.dtype)  # bf16 → fp32 is exact
    adamw([values], [masked_grad], [exp_avg], [exp_avg_sq], [], [step],
          foreach=None if fused else False, fused=fused, amsgrad=False, beta1=betas[0], beta2=betas[1],
          lr=lr, weight_decay=weight_decay, eps=eps, maximize=False)
    values = values.to(param.dtype)  # no copy without a master
    if index is not None:
        param.view(-1).index_copy_(0, index, values)
    else:
        param.masked_scatter_(mask, values)


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW over the entries of each parameter that its bool ``mask`` selects; the rest stay frozen and
    hold no state. A parameter narrower than fp32 trains through an fp32 master copy of its masked entries
    (state ``master``; the module docstring says why). ``masks`` maps each parameter (the tensor object) to a
    bool tensor of its shape on its device; the masks are shared with the caller, not copied. Parameter groups,
    ``lr`` (which a scheduler changes), ``betas``, ``eps``, ``weight_decay`` and ``fused`` mean what they mean
    for ``torch.optim.AdamW``.
    Contiguous parameters on the CPU also keep their masked entries' flat positions (``masked_select`` is slow
    there; on an accelerator the mask alone is read, 1 byte an entry)."""

    def __init__(self, params: Iterable[Any], masks: Mapping[Tensor, Tensor], *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 fused: bool | None = None):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "fused": fused})
        self.masks = dict(masks)
        for group in self.param_groups:
            for p in group["params"]:
                mask = self.masks.get(p)
                if mask is None or mask.shape != p.shape or mask.dtype != torch.bool or mask.device != p.device:
                    raise ValueError(
                        f"every parameter needs a bool mask of its shape on its device; got "
                        f"{None if mask is None else (tuple(mask.shape), mask.dtype, str(mask.device))} for a "
                        f"parameter of {(tuple(p.shape), str(p.device))}"
                    )
        # Parameters whose mask is all False: nothing to update, no state at all.
        self.untrained = {p for p, mask in self.masks.items() if not bool(mask.any())}
        self.indices = {p: mask.flatten().nonzero().squeeze(1) for p, mask in self.masks.items()
                        if p.device.type == "cpu" and p.is_contiguous() and p not in self.untrained}

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                mask = self.masks[p]
                if p.grad is None or p in self.untrained:
                    continue
                state = self.state[p]
                if not state:
                    count, dtype = int(mask.sum()), state_dtype(p.dtype)
                    if dtype != p.dtype:
                        state["master"] = masked_values(p.detach(), mask, self.indices.get(p)).to(dtype)
                    state["exp_avg"] = torch.zeros(count, dtype=dtype, device=p.device)
                    state["exp_avg_sq"] = torch.zeros(count, dtype=dtype, device=p.device)
                    # Where torch.optim.AdamW keeps its counter: on the device for the fused kernel.
                    state["step"] = (torch.zeros((), dtype=torch.float32, device=p.device) if group["fused"]
                                     else torch.tensor(0.0, dtype=torch.float32))
                masked_adamw_update_(p, p.grad, mask, state["exp_avg"], state["exp_avg_sq"], state["step"],
                                     lr=group["lr"], betas=group["betas"], eps=group["eps"],
                                     weight_decay=group["weight_decay"], fused=group["fused"],
                                     index=self.indices.get(p), master=state.get("master"))
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load casts floating state to its parameter's dtype, which would round a bf16 parameter's
        fp32 master and moments to bf16: they are put back in the dtype they were saved in."""
        super().load_state_dict(state_dict)
        saved = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for i, p in zip(saved, params):
            for key, value in state_dict["state"].get(i, {}).items():
                if key != "step" and isinstance(value, Tensor):
                    self.state[p][key] = value.to(device=p.device, copy=True)


def optimizer_state_numel(optimizer: torch.optim.Optimizer) -> int:
    """Values of optimizer state held in tensors of more than one entry (Adam's moments; step counters are
    0-d and not counted)."""
    return sum(t.numel() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, Tensor) and t.dim() > 0)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer state counted by ``optimizer_state_numel``."""
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, Tensor) and t.dim() > 0)


def dense_adamw_state_bytes(params: Iterable[Tensor]) -> int:
    """Bytes dense ``torch.optim.AdamW`` would hold for ``params``: two moments of each parameter's size and
    dtype."""
    return sum(2 * p.numel() * p.element_size() for p in params)


def masked_adamw_state_bytes(masks: Mapping[Tensor, Tensor]) -> int:
    """Bytes ``MaskedAdamW`` will hold for ``masks`` (parameter → bool mask): two moments of each masked entry
    in fp32 (:func:`state_dtype`), and an fp32 master copy of it for a parameter narrower than fp32."""
    total = 0
    for p, mask in masks.items():
        dtype = state_dtype(p.dtype)
        total += (2 if dtype == p.dtype else 3) * int(mask.sum()) * dtype.itemsize
    return total


def masked_adamw_for_trainer(trainer: Any, model: torch.nn.Module, masks: Mapping[str, Tensor]) -> MaskedAdamW:
    """The ``MaskedAdamW`` an HF ``Trainer`` builds instead of its AdamW when a gradient mask is given: the
    Trainer's own hyper-parameters and decay/no-decay split (``get_optimizer_cls_and_kwargs``,
    ``get_decay_parameter_names``), over the trainable parameters that ``masks`` (parameter name → bool
    tensor) names. Trainable parameters it does not name are not trained (MMUnlearner's masks name every
    parameter that had a gradient)."""
    optimizer_cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, model)
    if optimizer_cls is not torch.optim.AdamW or set(kwargs) - {"lr", "betas", "eps", "fused"}:
        raise ConfigError(
            f"a saliency-masked method (MMUnlearner) trains with AdamW state on its masked entries only; the "
            f"training arguments ask for optim={trainer.args.optim!r} ({optimizer_cls.__name__}, {sorted(kwargs)}): "
            "use adamw_torch or adamw_torch_fused"
        )
    decay = set(trainer.get_decay_parameter_names(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n in masks]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": trainer.args.weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    return MaskedAdamW([g for g in groups if g["params"]], {p: masks[n] for n, p in named}, **kwargs)
