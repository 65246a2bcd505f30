"""The relearning attacks' machinery (``relearn`` and ``relearn_sweep`` of :mod:`smfa.eval.attacks`): their config from
the command line, :func:`trainable` — the model under attack made trainable (a full copy, or a LoRA adapter injected
and removed) — and :func:`fit`, AdamW on the training engine's answer-view loss that stops at given step counts for
the caller to read the model (one run per learning rate serves every step count of the grid), batches drawn in a
seeded order that reshuffles each pass over the rows (:class:`SeededBatches`); :func:`relearned` is one run."""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch

from smfa.errors import ConfigError
from smfa.eval.attack_pieces import SEED, RelearnConfig, RelearnSweep, resolve_relearn
from smfa.training.engine import checkpointing_on, disable_checkpointing, enable_checkpointing

OPTIONS = ("steps", "lr", "share", "batch_size", "params", "repair_steps")  # cfg.relearn_<name>, None = not given


def _relearn_options(cfg: Any) -> dict[str, Any]:
    """``cfg``'s ``relearn_*`` fields (``smfa eval --relearn-*``; None = not given) by :func:`resolve_relearn` name."""
    return {k: getattr(cfg, f"relearn_{k}", None) for k in OPTIONS}


def relearn_config(loaded: Any, cfg: Any, sweep: bool = False) -> RelearnSweep:
    """The relearning attack's runs for ``loaded`` (``sweep``: the ``relearn_sweep`` attack's, else ``relearn``'s): its
    defaults (:func:`~smfa.eval.attack_pieces.relearn_defaults`, tiny or real scale,
    :func:`smfa.models.scale.is_real_scale`) with ``cfg``'s ``relearn_*`` fields put in where given."""
    from smfa.models.scale import is_real_scale

    return resolve_relearn(not is_real_scale(loaded.model), sweep=sweep, **_relearn_options(cfg))


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


def fit(model: torch.nn.Module, dataset: Any, collate: Any, params: list[torch.nn.Parameter], cfg: RelearnConfig,
        stops: Collection[int] = ()) -> Iterator[int]:
    """``cfg.steps`` AdamW steps of ``params`` (no weight decay, a constant lr, no clipping, no autocast) on the
    answer tokens of ``dataset`` in the :class:`SeededBatches` order, in train mode (gradient checkpointing on when
    ``cfg`` asks for it, off again at the end), yielding the step count after each one in ``stops`` with the model in
    eval mode for the caller to read; leaves ``model`` in eval mode. With a constant lr and the seeded order, the
    model read at step s is the model a run of s steps ends with. A loop of its own, not the ``Trainer``: the attack
    runs inside evaluation, which under a distributed launch is the main process's alone, and the ``Trainer`` would
    wrap the model for, and synchronise with, ranks that are not training."""
    from smfa.training.trainer import answer_nll_loss

    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    toggle = cfg.gradient_checkpointing and not checkpointing_on(model)
    if toggle:
        enable_checkpointing(model)
    model.train()
    try:
        for step, batch in enumerate(SeededBatches(len(dataset), cfg.batch_size, cfg.steps), 1):
            loss = answer_nll_loss(model, collate([dataset[i] for i in batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step in stops:
                model.eval()
                yield step
                model.train()
    finally:
        model.eval()
        if toggle:
            disable_checkpointing(model)


def train_steps(model: torch.nn.Module, dataset: Any, collate: Any, params: list[torch.nn.Parameter],
                cfg: RelearnConfig) -> None:
    """:func:`fit` run to its end."""
    for _ in fit(model, dataset, collate, params, cfg):
        pass


def encoded(ctx: Any, rows: Sequence[Any]) -> tuple[Any, Any]:
    """``rows``' reference answers encoded for training the model under attack, and its collator."""
    from smfa.data import encode_items, make_collator, reference_items

    loaded = ctx.loaded
    dataset = encode_items(reference_items(rows), bench=ctx.bench, family=loaded.family, processor=loaded.processor,
                           images=ctx.images, progress=False)
    return dataset, make_collator(loaded.family, loaded.processor)


@contextmanager
def trainable(ctx: Any, cfg: RelearnConfig) -> Iterator[tuple[Any, list[torch.nn.Parameter]]]:
    """The model under attack (``ctx``: a :class:`~smfa.eval.attacks.AttackContext`) made trainable as ``cfg.params``
    says, as (a ``LoadedModel`` sharing the processor and family, the parameters to train) for the ``with`` block,
    under a forked RNG seeded :data:`SEED` (LoRA's A matrices, dropout; the caller's RNG untouched).

    - ``"full"``: a deep copy with its whole language model trainable (vision tower and projector frozen) — two full
      copies resident plus AdamW state (~16 bytes per trained parameter): fine for the tiny model, out of memory for
      a 7B model on one 80 GB GPU.
    - ``"lora"``: a PEFT LoRA adapter (r ``cfg.lora_r`` on the family's LoRA targets, fp32 under a bf16 base, dropout
      0: a few steps to recover facts, dropout would only slow the attacker down) injected into the model under
      attack itself — no copy, optimizer state for the adapter only — and removed when the block exits, also on an
      error: its weights are then bit-identical to before (unload without merging), and its trainable flags,
      train/eval modes and checkpointing are as they were.
    """
    loaded = ctx.loaded
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        if cfg.params == "full":
            model = copy.deepcopy(loaded.model)
            frozen = tuple(loaded.family.vision_module_prefixes) + tuple(loaded.family.projector_module_prefixes)
            for name, p in model.named_parameters():
                p.requires_grad_(not name.startswith(frozen))
            try:
                yield replace(loaded, model=model), [p for p in model.parameters() if p.requires_grad]
            finally:
                del model
            return

        from peft import LoraConfig, get_peft_model

        model = loaded.model
        if not loaded.family.lora_targets(model):
            raise ConfigError(f"no LoRA target found for family {loaded.family.name} (regex "
                              f"{loaded.family.lora_target_regex()}); use --relearn-params full")
        # What the attack changes besides the injected modules, to put back exactly.
        trainable_flags = {name: p.requires_grad for name, p in model.named_parameters()}
        modes = {name: m.training for name, m in model.named_modules()}
        checkpointing = checkpointing_on(model)
        peft_model = None
        try:
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                              target_modules=loaded.family.lora_target_regex(), bias="none")
            peft_model = get_peft_model(model, lora)  # in place: the target Linears get LoRA layers, the rest frozen
            yield loaded, [p for p in model.parameters() if p.requires_grad]  # the same model, through its adapter
        finally:
            if peft_model is not None:
                peft_model.unload()  # the base layers back in place, unmerged: the weights never changed
            if checkpointing_on(model) and not checkpointing:
                disable_checkpointing(model)
            for name, p in model.named_parameters():
                p.requires_grad_(trainable_flags.get(name, False))  # .get: a failed injection may leave a stray LoRA layer
            for name, m in model.named_modules():
                m.training = modes.get(name, False)


@contextmanager
def relearned(ctx: Any, rows: Sequence[Any], cfg: RelearnConfig) -> Iterator[Any]:
    """The model under attack fine-tuned (:func:`trainable`, :func:`train_steps`) on ``rows``' reference answers, as a
    ``LoadedModel`` for the ``with`` block."""
    if not rows:
        raise ConfigError("the relearning attack has no forget facts to train on (each forget person needs >= 2 facts)")
    dataset, collate = encoded(ctx, rows)
    with trainable(ctx, cfg) as (attacked, params):
        train_steps(attacked.model, dataset, collate, params, cfg)
        yield attacked
