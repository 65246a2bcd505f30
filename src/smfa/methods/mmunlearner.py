"""MMUnlearner (arXiv 2502.11051): geometry-constrained gradient ascent.

1. Diagonal Fisher (mean squared gradient of the answer NLL) of every language-model target weight on the
   forget set (F_f) and on the preserve set (F_p). The paper's preserve set is the text-only questions of all
   people plus retain image questions; ours obeys the data rule of every method (SPEC.md): the few-shot
   retain anchor plus, with a reference budget, the reference pool's rows labelled by the vanilla — never a
   row of a person on whom a retain metric is computed (those rows once made the mask from test data).
2. Saliency mask = F_f / F_p ≥ threshold: the entries that matter more for the forget set than for what
   must be kept.
3. Gradient ascent on forget interleaved with NLL descent on retain, every step; the update touches only
   masked entries — everything outside the mask (and every non-target parameter) stays frozen.
Full fine-tuning of the masked entries (saliency is per weight entry, so not LoRA).

Memory (docs/scale.md "MMUnlearner at 7B"): the vanilla waits in host memory from the Fisher passes to the
end of training (:func:`parked_in_host_memory`), so the trainee is the one model on the device; the forget
Fisher is moved to the CPU when the model is on an accelerator while the preserve Fisher accumulates, both are
consumed into the bool mask parameter by parameter, and nothing Fisher-sized is alive during training; AdamW
keeps state only for the masked entries, in fp32 with an fp32 master copy of bf16 weights
(``smfa.optim.MaskedAdamW``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from smfa.data import make_collator, reference_items
from smfa.losses import accumulate_fisher, answer_logits, ga_diff_loss, mask_share, saliency_mask
from smfa.methods.base import Method, MethodConfig, register_method
from smfa.methods.context import UnlearnContext, forget_dataset, retain_dataset
from smfa.optim import dense_adamw_state_bytes, masked_adamw_state_bytes
from smfa.rundir import write_json_atomic
from smfa.training.engine import enable_checkpointing
from smfa.training.runs import train_unlearner
from smfa.training.trainer import answer_nll_loss


@dataclass
class MMUnlearnerConfig(MethodConfig):
    lora: bool = False  # saliency masks weight entries: full fine-tuning of the masked entries only
    threshold: float = 1.0  # mask = F_f / F_p ≥ threshold (paper: 1)


@contextlib.contextmanager
def parked_in_host_memory(model: torch.nn.Module) -> Iterator[None]:
    """For the block, ``model``'s parameters hold empty tensors on their device and their values wait in host
    memory (on the CPU already: the same tensors, no copy); afterwards they are back, bit-identical, on their
    device, also on error. On an accelerator this frees the model's weights there; any use of the model
    inside the block fails (a size mismatch) instead of reading weights that are not there."""
    params = list(model.parameters())
    homes = [p.device for p in params]
    saved = [p.data.to("cpu") for p in params]
    for p in params:
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)
    try:
        yield
    finally:
        for p, home, host in zip(params, homes, saved):
            p.data = host.to(home)


def fisher_diagonal(model: torch.nn.Module, dataset, collate, batch_size: int, names: set[str],
                    desc: str = "Fisher", progress: bool = True) -> dict[str, torch.Tensor]:
    """Mean over batches of grad² of the answer NLL, for the parameters in ``names``: a gradient pass over
    the data (no optimiser step), with the training runs' answer-view loss."""
    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    fisher: dict[str, torch.Tensor] = {}
    n = len(loader)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        model.zero_grad(set_to_none=True)
        answer_nll_loss(model, batch).backward()
        accumulate_fisher(fisher, ((k, p) for k, p in model.named_parameters() if k in names), scale=1.0 / n)
    model.zero_grad(set_to_none=True)
    return fisher


def saliency(model: torch.nn.Module, forget_ds, preserve_ds, collate, batch_size: int, names: set[str],
             threshold: float, progress: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """The saliency mask ``F_f / F_p ≥ threshold`` (bool, on the model's device) and whether the forget
    Fisher was offloaded. At most one fp32 Fisher dict is on the model's device at a time: on an accelerator
    the finished forget Fisher waits on the CPU (one host copy, ~26 GB at 7B) while the preserve Fisher
    accumulates, then both are consumed into the mask parameter by parameter. Accumulating on the CPU every
    batch instead would cost a device-to-host copy and a CPU add of every weight per batch."""
    f_forget = fisher_diagonal(model, forget_ds, collate, batch_size, names, "Fisher (forget)", progress)
    offloaded = any(t.device.type != "cpu" for t in f_forget.values())
    for name in list(f_forget):  # one parameter at a time: the device copy is freed as its host copy lands
        f_forget[name] = f_forget[name].cpu()
    f_preserve = fisher_diagonal(model, preserve_ds, collate, batch_size, names, "Fisher (preserve)", progress)
    return saliency_mask(f_forget, f_preserve, threshold=threshold, free=True), offloaded


@register_method
class MMUnlearner(Method):
    name = "mmunlearner"
    config_cls = MMUnlearnerConfig
    description = "Fisher-saliency-masked gradient ascent on forget + descent on retain"

    def run(self, ctx: UnlearnContext, hp: MMUnlearnerConfig) -> torch.nn.Module:  # type: ignore[override]
        model = ctx.fresh_model()
        # Nothing below reads the vanilla's weights: they wait in host memory, not beside the trainee's.
        with parked_in_host_memory(ctx.vanilla.model):
            model = self.mask_and_train(ctx, hp, model)
            gc.collect()  # the Trainer and its optimizer state may sit in reference cycles: freed before the return
        return model

    def mask_and_train(self, ctx: UnlearnContext, hp: MMUnlearnerConfig, model: torch.nn.Module) -> torch.nn.Module:
        """Saliency mask, then masked training of ``model`` (a copy of the vanilla) in place."""
        targets = {f"{m}.weight" for m in ctx.vanilla.family.lora_targets(model)}
        for name, p in model.named_parameters():
            p.requires_grad_(name in targets)
        if hp.gradient_checkpointing:
            enable_checkpointing(model)
        collate = make_collator(ctx.vanilla.family, ctx.vanilla.processor)
        forget_ds = forget_dataset(ctx)
        preserve_ds = ctx.encode(reference_items(ctx.data.preserve_rows), desc="encoding preserve")
        mask, offloaded = saliency(model, forget_ds, preserve_ds, collate, hp.batch_size, targets, hp.threshold,
                                   progress=ctx.progress)
        params = dict(model.named_parameters())
        write_json_atomic(ctx.work_dir / "saliency.json", {
            "threshold": hp.threshold, "share_masked": mask_share(mask),
            "per_parameter": {k: float(v.float().mean()) for k, v in mask.items()},
            "preserve_rows": len(ctx.data.preserve_rows),
            "fisher_offloaded": offloaded,
            # What the masked AdamW will hold (fp32 moments of each masked entry and, for weights narrower than
            # fp32, their fp32 master copy) against dense AdamW.
            "optimizer_state_bytes": masked_adamw_state_bytes({params[k]: v for k, v in mask.items()}),
            "dense_adamw_state_bytes": dense_adamw_state_bytes(params[k] for k in mask),
            "mask_bytes": sum(v.numel() * v.element_size() for v in mask.values()),
        })

        def loss_fn(m, forget, retain):
            return ga_diff_loss(*answer_logits(m, forget), *answer_logits(m, retain), hp.retain_weight)

        return train_unlearner(ctx, model, hp, forget_ds, retain_dataset(ctx), loss_fn,
                               grad_mask=mask, tag="mmunlearner")
