"""Batched greedy generation (left padding, KV cache, stop at the end token) and per-question answer losses
(mean per answer, or every answer token's)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from smfa.bench.schema import Question
from smfa.data import ImageCache, make_collator
from smfa.losses import answer_logits, answer_mask, answer_nll, token_nll
from smfa.models.placement import move_batch


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.inference_mode()
def generate_answers(
    loaded: Any,
    rows: Sequence[Question],
    bench: Any,
    *,
    questions: Sequence[str] | None = None,
    batch_size: int = 64,
    max_new_tokens: int = 24,
    images: ImageCache | None = None,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """Greedy answers for ``rows`` (``questions`` overrides the question text, e.g. for prompt attacks)."""
    model, processor, family = loaded.model, loaded.processor, loaded.family
    model.eval()
    images = images or ImageCache(bench)
    texts = list(questions) if questions is not None else [r.question for r in rows]
    collate = make_collator(family, processor, padding_side="left")
    end_ids = family.end_token_ids(processor)
    # Similar lengths in a batch waste less padding: sort by question length, restore order after.
    order = sorted(range(len(rows)), key=lambda i: (rows[i].image is not None, len(texts[i])))
    answers: list[str] = [""] * len(rows)
    for idx in tqdm(_batches(len(order), batch_size), desc=desc, disable=not progress, leave=False):
        ids = [order[i] for i in idx]
        enc = [images.encoded_prompt(family, processor, texts[i], rows[i]) for i in ids]
        batch = move_batch(collate(enc), model)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            eos_token_id=end_ids,
            pad_token_id=collate.pad_token_id,
        )
        new = out[:, batch["input_ids"].shape[1]:]
        for i, seq in zip(ids, new):
            answers[i] = processor.tokenizer.decode(seq, skip_special_tokens=True).strip()
    return answers


def _answer_logits(loaded: Any, rows: Sequence[Question], bench: Any, answers: Sequence[str] | None, batch_size: int,
                   images: ImageCache | None, progress: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(logits, labels)`` in the answer view for each batch of ``rows`` in order, the reference answers (or
    ``answers``) as labels; consumed inside an ``inference_mode`` caller."""
    model, processor, family = loaded.model, loaded.processor, loaded.family
    model.eval()
    images = images or ImageCache(bench)
    targets = list(answers) if answers is not None else [r.answer for r in rows]
    collate = make_collator(family, processor, padding_side="right")
    for idx in tqdm(_batches(len(rows), batch_size), desc="answer losses", disable=not progress, leave=False):
        enc = [family.encode(processor, rows[i].question, images.get(rows[i]), targets[i]) for i in idx]
        yield answer_logits(model, move_batch(collate(enc), model))


@torch.inference_mode()
def answer_token_losses(
    loaded: Any,
    rows: Sequence[Question],
    bench: Any,
    *,
    answers: Sequence[str] | None = None,
    batch_size: int = 64,
    images: ImageCache | None = None,
    progress: bool = True,
    per_token: bool = True,
) -> tuple[list[float], list[list[float]]]:
    """From one batched forward pass: the mean per-token NLL of each reference answer (or ``answers``) given
    its question and, with ``per_token``, the NLL of each of its answer tokens in order (what Min-K% Prob
    ranks; else empty lists)."""
    means: list[float] = []
    tokens: list[list[float]] = []
    for logits, labels in _answer_logits(loaded, rows, bench, answers, batch_size, images, progress):
        means.extend(answer_nll(logits, labels, reduction="none").tolist())
        if per_token:
            tokens.extend(nll[mask].tolist() for nll, mask in zip(token_nll(logits, labels), answer_mask(labels)))
    return means, tokens


def answer_losses(loaded: Any, rows: Sequence[Question], bench: Any, **options: Any) -> list[float]:
    """Mean per-token NLL of each reference answer (or ``answers=``) given its question: the per-question loss
    used for the KS forget-quality test and for membership inference (options: :func:`answer_token_losses`)."""
    return answer_token_losses(loaded, rows, bench, per_token=False, **options)[0]


def load_reference(source: str, cfg: Any) -> Any:
    """A model an evaluation compares with (the oracle, the vanilla), placed as ``cfg`` (an
    :class:`smfa.eval.pipeline.EvalConfig`) places the evaluated one: ``device``, ``dtype``, ``trust_remote_code``."""
    from smfa.models.loading import load_model
    from smfa.models.placement import resolve_placement

    return load_model(source, placement=resolve_placement(cfg.device, cfg.dtype),
                      trust_remote_code=cfg.trust_remote_code)


def pick_option(losses: dict[str, float]) -> str:
    """The multiple-choice rule: the option letter whose text has the lowest mean per-token NLL as the answer
    to the question (ties: the first letter in the question's order). Scoring every option's text, rather
    than reading a generated letter, gives every model an answer, also one never trained to answer by letter."""
    if not losses:
        raise ValueError("pick_option needs at least one option")
    return min(losses, key=lambda letter: (losses[letter], list(losses).index(letter)))


def choose_options(
    loaded: Any,
    rows: Sequence[Question],
    bench: Any,
    *,
    batch_size: int = 64,
    images: ImageCache | None = None,
    progress: bool = True,
) -> list[str]:
    """The option letter :func:`pick_option` picks for each multiple-choice row (its ``options``), all options
    of all rows scored in one batched pass of :func:`answer_losses`."""
    pairs = [(i, letter, text) for i, r in enumerate(rows) for letter, text in (r.options or {}).items()]
    if any(not r.options for r in rows):
        raise ValueError("choose_options got a row without options")
    losses = answer_losses(loaded, [rows[i] for i, _, _ in pairs], bench, answers=[t for _, _, t in pairs],
                           batch_size=batch_size, images=images, progress=progress)
    per_row: list[dict[str, float]] = [{} for _ in rows]
    for (i, letter, _), loss in zip(pairs, losses):
        per_row[i][letter] = loss
    return [pick_option(d) for d in per_row]
