"""The one HF ``Trainer`` of every training run — the vanilla fine-tune and every unlearning method's phases —
and the answer-view losses runs train on: a run passes ``loss`` (a function of the model and a collated
batch) or none for the model's own loss, a ``grad_mask`` to freeze weight entries, a frozen ``reference``
model, a ``sampler``. (The relearning attack's few steps, inside evaluation, are a loop of their own on the
same loss: ``smfa.eval.relearn.train_steps``.)"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from smfa.errors import ConfigError

# A run's loss: (the model being trained, one collated batch on the training device) → a scalar.
LossFn = Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor]


def check_mask_supported(trainer: Any, grad_mask: dict[str, torch.Tensor] | None) -> None:
    """Refuse a gradient mask under FSDP or DeepSpeed, before training: both flatten or shard parameters and
    their gradients, so a per-entry mask keyed on parameter names cannot reach the gradients a step updates
    with, and skipping it would train the frozen entries silently."""
    if grad_mask and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        raise ConfigError("a saliency-masked method (MMUnlearner) cannot train under FSDP or DeepSpeed "
                          "(parameters are flattened/sharded); use DDP (configs/accelerate/ddp.yaml) or one GPU")


@functools.cache
def trainer_class() -> type:
    """The ``Trainer`` subclass every run trains with (built on first use: importing it loads transformers)."""
    from transformers import Trainer

    from smfa.training.samplers import LengthBucketSampler

    class SmfaTrainer(Trainer):
        """The HF ``Trainer`` with what smfa's runs add to it, each off unless asked for:

        - ``loss``: the run's loss (:data:`LossFn`), each batch's mean divided by the accumulation steps;
          None trains on the model's own loss;
        - ``grad_mask`` (parameter name → 0/1 tensor): entries outside it stay frozen, and AdamW keeps state
          for the masked entries only (:mod:`smfa.optim`);
        - ``reference``: a frozen model a loss reads, moved to the training device and put in eval mode;
        - ``sampler="length_buckets"``: :class:`~smfa.training.samplers.LengthBucketSampler`;
        - a resume that restores the model for every architecture (:meth:`_load_from_checkpoint`).
        """

        def __init__(self, *args: Any, loss: LossFn | None = None, grad_mask: dict[str, torch.Tensor] | None = None,
                     reference: torch.nn.Module | None = None, sampler: str = "random", **kwargs: Any):
            super().__init__(*args, **kwargs)
            check_mask_supported(self, grad_mask)
            self.loss, self.sampler = loss, sampler
            if loss is not None:
                self.model_accepts_loss_kwargs = False  # the mean of the batch, not a sum over num_items_in_batch
            # The mask and the frozen reference model follow the trainee to its training device.
            self.grad_mask = {k: v.to(self.args.device) for k, v in grad_mask.items()} if grad_mask else grad_mask
            self.reference = reference.to(self.args.device).eval() if reference is not None else None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = self.loss(model, inputs)
            return (loss, None) if return_outputs else loss

        def create_optimizer(self, model=None):
            # With a mask, Adam state only for the masked entries (smfa.optim): dense AdamW would hold two
            # moments of every trained weight, 26 GB in bf16 at 7B (README "MMUnlearner at 7B: memory plan").
            if self.grad_mask and self.optimizer is None:
                from smfa.optim import masked_adamw_for_trainer

                bare = self.accelerator.unwrap_model(self.model if model is None else model)
                self.optimizer = masked_adamw_for_trainer(self, bare, self.grad_mask)
            return super().create_optimizer(model)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self.grad_mask:
                # Parameters outside the saliency mask stay frozen: zero their gradients every step. The mask
                # is keyed on the bare model's names; under DDP ``model`` is the wrapper (names "module.…").
                for name, p in self.accelerator.unwrap_model(model).named_parameters():
                    m = self.grad_mask.get(name)
                    if m is not None and p.grad is not None:
                        p.grad.mul_(m.to(p.grad.dtype))
            return loss

        def _get_train_sampler(self, train_dataset=None):
            if self.sampler != "length_buckets":
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [len(example["input_ids"]) for example in dataset]
            return LengthBucketSampler(lengths, self.args.train_batch_size, self.args.seed)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
            # transformers saves some architectures (LLaVA among them) under legacy tensor names that the
            # Trainer's own resume passes to ``load_state_dict(strict=False)`` unmapped — silently restoring
            # nothing. ``from_pretrained`` maps the names; the strict load then fails loudly on anything missing.
            model = model if model is not None else self.model
            if hasattr(model, "peft_config"):  # adapter checkpoints use PEFT's own names
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            dtype = next(model.parameters()).dtype
            restored = type(model).from_pretrained(resume_from_checkpoint, dtype=dtype, local_files_only=True)
            model.load_state_dict(restored.state_dict(), strict=True)
            return None

    return SmfaTrainer


# ---- the losses a run passes ---------------------------------------------------------------------------
def answer_nll_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The answer tokens' mean NLL on the answer view (``losses.answer_logits``: the LM head runs at answer
    positions only), image tensors cast to the model's dtype first (``placement.move_batch``)."""
    from smfa.losses import answer_logits, answer_nll
    from smfa.models.placement import move_batch

    return answer_nll(*answer_logits(model, move_batch(batch, model)))


def sft_loss_fn(reference: torch.nn.Module | None) -> LossFn:
    """The answer cross-entropy on the answer view — the model's own loss without running the LM head over
    prompt and image tokens — where rows marked ``distill`` pay KL to ``reference`` (the frozen vanilla)
    instead (``losses.sft_loss``; distill rows without a reference: ValueError), and rows with a loss floor
    pay the calibrated ascent term instead (``losses.floor_loss``, added to the mean over the other rows)."""
    from smfa.data import DISTILL_KEY, FLOOR_KEY
    from smfa.losses import answer_logits, floor_loss, sft_loss

    def loss(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        batch = {k: v for k, v in inputs.items() if k not in (DISTILL_KEY, FLOOR_KEY)}
        distill, floor = inputs.get(DISTILL_KEY), inputs.get(FLOOR_KEY)
        logits, labels = answer_logits(model, batch)
        reference_logits = None
        if reference is not None and distill is not None and bool(distill.any()):
            with torch.no_grad():
                reference_logits, _ = answer_logits(reference, batch)
        floored = torch.isfinite(floor) if floor is not None else None
        if floored is None or not bool(floored.any()):
            return sft_loss(logits, labels, distill, reference_logits)
        term = floor_loss(logits, labels, floor)
        keep = ~floored
        if not bool(keep.any()):
            return term
        return term + sft_loss(logits[keep], labels[keep], distill[keep] if distill is not None else None,
                               reference_logits[keep] if reference_logits is not None else None)

    return loss


def paired_loss_fn(loss_fn: Callable[[torch.nn.Module, Any, Any], torch.Tensor]) -> LossFn:
    """A method's ``loss_fn(model, forget batch, retain batch or None)`` over a :class:`PairedCollator` batch."""
    return lambda model, inputs: loss_fn(model, inputs["forget"], inputs.get("retain"))
