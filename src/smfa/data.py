"""From bench rows to model inputs: chat formatting (through the family adapter), answer-only labels,
image/text views, refusal-labelled forget data (``D_f^idk``), and collators for training and generation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from smfa.bench.schema import Question
from smfa.models.families import FamilyAdapter


@dataclass(frozen=True)
class TrainItem:
    """A question to train on, with the answer to learn (the reference, or a refusal for ``D_f^idk``).
    ``augment`` > 0 shows the row's image through the ``augment``-th random view (:func:`augment_image`);
    ``distill`` marks a row whose answer only says where to compare with the vanilla (a self-labelled row)."""

    row: Question
    answer: str
    augment: int = 0
    distill: bool = False  # trained towards the vanilla's distribution (KL), not the answer's tokens (smfa.losses.sft_loss)


def augment_image(img: Any, rng: random.Random) -> Any:
    """A mild random view of a photo, as a deployer can make from the photos a request names: shift
    (±8 % of the side), scale (0.9-1.1), rotation (±8°) and brightness (0.8-1.2); the uncovered border is
    filled with the photo's corner colour (its background)."""
    from PIL import ImageEnhance

    w, h = img.size
    fill = img.getpixel((0, 0))
    angle = rng.uniform(-8.0, 8.0)
    scale = rng.uniform(0.9, 1.1)
    dx, dy = rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h
    out = img.rotate(angle, center=(w / 2, h / 2), translate=(dx, dy), fillcolor=fill)
    if abs(scale - 1.0) > 1e-6:
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = out.resize((sw, sh))
        canvas = out.copy()
        canvas.paste(fill, (0, 0, w, h))
        canvas.paste(resized, ((w - sw) // 2, (h - sh) // 2))
        out = canvas
    return ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))


def augmented_items(items: Sequence[TrainItem], copies: int) -> list[TrainItem]:
    """``copies`` augmented views of every item that has an image (text-only items are not repeated)."""
    from dataclasses import replace

    return [replace(item, augment=k) for k in range(1, copies + 1) for item in items if item.row.image is not None]


def reference_items(rows: Sequence[Question], distill: bool = False) -> list[TrainItem]:
    return [TrainItem(r, r.answer, distill=distill) for r in rows]


def refusal_items(rows: Sequence[Question], seed: int) -> list[TrainItem]:
    """``D_f^idk``: each answer replaced by a refusal drawn at random (per example) from the pool."""
    from smfa.refusals import sample_refusal

    rng = random.Random(seed)
    return [TrainItem(r, sample_refusal(rng)) for r in rows]


# The batch key (a [B] bool tensor) of the rows marked ``TrainItem.distill``; absent when no row is marked.
DISTILL_KEY = "distill"


class ImageCache:
    """Loads each bench image once (the same portrait variant is asked about many times), and keeps the
    encoded prompts of evaluation questions, so that re-evaluating the same questions (a k sweep, attacks)
    does not run the processor again."""

    def __init__(self, bench: Any):
        self.bench = bench
        self._cache: dict[str, Any] = {}
        self._prompts: dict[tuple[int, str, str | None], dict[str, torch.Tensor]] = {}

    def encoded_prompt(self, family: FamilyAdapter, processor: Any, text: str, row: Question) -> dict[str, torch.Tensor]:
        key = (id(processor), text, row.image)
        enc = self._prompts.get(key)
        if enc is None:
            enc = self._prompts[key] = family.encode(processor, text, self.get(row))
        return enc

    def get(self, row: Question) -> Any:
        if row.image is None:
            return None
        img = self._cache.get(row.image)
        if img is None:
            img = self.bench.load_image(row)
            self._cache[row.image] = img
        return img


class EncodedDataset(Dataset):
    """Pre-encoded examples (token ids, answer-only labels, image tensors) for the HF ``Trainer``."""

    def __init__(self, examples: list[dict[str, torch.Tensor]]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.examples[i]


def encode_items(
    items: Sequence[TrainItem],
    *,
    bench: Any,
    family: FamilyAdapter,
    processor: Any,
    images: ImageCache | None = None,
    desc: str = "encoding",
    progress: bool = True,
) -> EncodedDataset:
    images = images or ImageCache(bench)
    examples = []
    for item in tqdm(items, desc=desc, disable=not progress, leave=False):
        image = images.get(item.row)
        if item.augment and image is not None:  # the same view for the same (image, copy) in every run
            image = augment_image(image, random.Random(f"augment/{item.row.image}/{item.augment}"))
        example = family.encode(processor, item.row.question, image, item.answer)
        if item.distill:
            example[DISTILL_KEY] = torch.tensor(True)
        examples.append(example)
    return EncodedDataset(examples)


@dataclass
class Collator:
    """Batches encoded examples: right padding for training, left padding for generation."""

    family: FamilyAdapter
    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = self.family.collate([{k: v for k, v in e.items() if k != DISTILL_KEY} for e in examples],
                                    self.pad_token_id, self.padding_side)
        if any(DISTILL_KEY in e for e in examples):  # [B] bool: which rows train towards the vanilla
            batch[DISTILL_KEY] = torch.tensor([bool(e.get(DISTILL_KEY, False)) for e in examples])
        return batch


def make_collator(family: FamilyAdapter, processor: Any, padding_side: str = "right") -> Collator:
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Collator(family, int(pad), padding_side)


