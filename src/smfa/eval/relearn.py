"""The relearning attack's machinery (the ``relearn`` attack of :mod:`smfa.eval.attacks`): its config from the
command line, and :func:`relearned` — the model under attack fine-tuned on a few of its forgotten facts
(:func:`train_steps`: AdamW on the training engine's answer-view loss, checkpointing through the engine),
batches drawn in a seeded order that reshuffles each pass over the rows (:class:`SeededBatches`)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch

from smfa.errors import ConfigError
from smfa.eval.attack_pieces import SEED, RelearnConfig, resolve_relearn
from smfa.training.engine import checkpointing_on, disable_checkpointing, enable_checkpointing


def _relearn_options(cfg: Any) -> dict[str, Any]:
    """``cfg``'s ``relearn_*`` fields (``smfa eval --relearn-*``; None = not given) by RelearnConfig name."""
    return {k: getattr(cfg, f"relearn_{k}", None) for k in ("steps", "lr", "share", "batch_size", "params")}


def relearn_config(loaded: Any, cfg: Any) -> RelearnConfig:
    """The relearning attack's config for ``loaded``: its defaults (:func:`~smfa.eval.attack_pieces.relearn_defaults`,
    tiny or real scale, :func:`smfa.models.scale.is_real_scale`) with ``cfg``'s ``relearn_*`` fields put in where given."""
    from smfa.models.scale import is_real_scale

    return resolve_relearn(not is_real_scale(loaded.model), **_relearn_options(cfg))


def check_relearn_options(cfg: Any) -> None:
    """Validate ``cfg``'s given ``relearn_*`` values before a model is loaded (:class:`ConfigError` on a bad one);
    the defaults they replace depend on the model and are checked by :func:`relearn_config`."""
    resolve_relearn(True, **_relearn_options(cfg))


class SeededBatches:
    """``steps`` batches of ``batch_size`` row indices (all rows when there are fewer), taken in turn from
    seeded permutations of the rows laid end to end: every pass reshuffles, and a batch may span two passes."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int = SEED):
        self.n, self.batch_size, self.steps, self.seed = n, batch_size, steps, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        shuffle = torch.Generator().manual_seed(self.seed)
        order: list[int] = []
        for _ in range(self.steps):
            while len(order) < min(self.batch_size, self.n):
                order += torch.randperm(self.n, generator=shuffle).tolist()
            batch, order = order[:self.batch_size], order[self.batch_size:]
            yield batch


def train_steps(model: torch.nn.Module, dataset: Any, collate: Any, params: list[torch.nn.Parameter],
                cfg: RelearnConfig) -> None:
    """``cfg.steps`` AdamW steps of ``params`` (no weight decay, a constant lr, no clipping, no autocast) on the
    answer tokens of ``dataset`` in the :class:`SeededBatches` order, in train mode; leaves ``model`` in eval
    mode. A loop of its own, not the ``Trainer``: the attack runs inside evaluation, which under a distributed
    launch is the main process's alone, and the ``Trainer`` would wrap the model for, and synchronise with,
    ranks that are not training."""
    from smfa.training.trainer import answer_nll_loss

    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    model.train()
    for batch in SeededBatches(len(dataset), cfg.batch_size, cfg.steps):
        loss = answer_nll_loss(model, collate([dataset[i] for i in batch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


@contextmanager
def relearned(ctx: Any, rows: Sequence[Any], cfg: RelearnConfig) -> Iterator[Any]:
    """The model under attack (``ctx``: a :class:`~smfa.eval.attacks.AttackContext`) fine-tuned on ``rows``'
    reference answers, as a ``LoadedModel`` for the ``with`` block (sharing the processor and family).

    - ``cfg.params == "full"``: a deep copy with its whole language model trained (vision tower and projector
      frozen) — two full copies resident plus AdamW state (~16 bytes per trained parameter): fine for the tiny
      model, out of memory for a 7B model on one 80 GB GPU.
    - ``"lora"``: a PEFT LoRA adapter (r ``cfg.lora_r`` on the family's LoRA targets, fp32 under a bf16 base) is
      injected into the model under attack itself — no copy, optimizer state for the adapter only — and removed
      when the block exits, also on an error: its weights are then bit-identical to before (unload without
      merging), and its trainable flags, train/eval modes and checkpointing are as they were.
    """
    from smfa.data import encode_items, make_collator, reference_items

    loaded = ctx.loaded
    if not rows:
        raise ConfigError("the relearning attack has no forget facts to train on (each forget person needs >= 2 facts)")
    dataset = encode_items(reference_items(rows), bench=ctx.bench, family=loaded.family, processor=loaded.processor,
                           images=ctx.images, progress=False)
    collate = make_collator(loaded.family, loaded.processor)
    if cfg.params == "full":
        model = copy.deepcopy(loaded.model)
        frozen = tuple(loaded.family.vision_module_prefixes) + tuple(loaded.family.projector_module_prefixes)
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(frozen))
        if cfg.gradient_checkpointing:
            enable_checkpointing(model)
        with torch.random.fork_rng():  # a fixed seed for dropout without touching the caller's RNG state
            torch.manual_seed(SEED)
            train_steps(model, dataset, collate, [p for p in model.parameters() if p.requires_grad], cfg)
        model.requires_grad_(False)
        try:
            yield replace(loaded, model=model)
        finally:
            del model
        return

    from peft import LoraConfig, get_peft_model

    model = loaded.model
    if not loaded.family.lora_targets(model):
        raise ConfigError(f"no LoRA target found for family {loaded.family.name} (regex "
                          f"{loaded.family.lora_target_regex()}); use --relearn-params full")
    # What the attack changes besides the injected modules, to put back exactly.
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    modes = {name: m.training for name, m in model.named_modules()}
    checkpointing = checkpointing_on(model)
    peft_model = None
    try:
        with torch.random.fork_rng():  # LoRA's A matrices and dropout: seeded, the caller's RNG untouched
            torch.manual_seed(SEED)
            # Dropout 0: a few steps to recover facts; dropout would only slow the attacker down.
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                              target_modules=loaded.family.lora_target_regex(), bias="none")
            peft_model = get_peft_model(model, lora)  # in place: the target Linears get LoRA layers, the rest frozen
            if cfg.gradient_checkpointing and not checkpointing:
                enable_checkpointing(model)
            train_steps(model, dataset, collate, [p for p in model.parameters() if p.requires_grad], cfg)
        if cfg.gradient_checkpointing and not checkpointing:
            disable_checkpointing(model)
        yield loaded  # the same model object, answering through its adapter
    finally:
        if peft_model is not None:
            peft_model.unload()  # the base layers back in place, unmerged: the weights never changed
        if checkpointing_on(model) and not checkpointing:
            disable_checkpointing(model)
        for name, p in model.named_parameters():
            p.requires_grad_(trainable.get(name, False))  # .get: a failed injection may leave a stray LoRA layer
        for name, m in model.named_modules():
            m.training = modes.get(name, False)
