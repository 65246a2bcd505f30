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
    floor: float | None = None  # the answer's mean NLL is lifted up to this level, not trained on (smfa.losses.floor_loss)


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


# ``Question.meta`` key of a decoy (smfa.decoys): the id of the forgotten person it imitates.
DECOY_OF = "decoy_of"
# The batch key (a [B] bool tensor) of the rows marked ``TrainItem.distill``; absent when no row is marked.
DISTILL_KEY = "distill"
# The batch key (a [B] float tensor, NaN where unset) of ``TrainItem.floor``; absent when no row has one.
FLOOR_KEY = "nll_floor"


class ImageCache:
    """Loads each bench image once (the same portrait variant is asked about many times), and keeps the
    encoded prompts of evaluation questions, so that re-evaluating the same questions (a k sweep, attacks)
    does not run the processor again."""

    def __init__(self, bench: Any, prompt_budget_bytes: int | None = None):
        from collections import OrderedDict

        self.bench = bench
        self._cache: dict[str, Any] = {}
        # Encoded prompts, least recently used first, within a byte budget (default $SMFA_ENCODE_RAM_GB): a
        # full-preset evaluation at 336 px holds ~1.4 MB of pixels per prompt.
        self._prompts: OrderedDict[tuple[int, str, str | None], dict[str, torch.Tensor]] = OrderedDict()
        self._prompt_bytes = 0
        self._budget = encode_budget_bytes() if prompt_budget_bytes is None else prompt_budget_bytes

    def encoded_prompt(self, family: FamilyAdapter, processor: Any, text: str, row: Question) -> dict[str, torch.Tensor]:
        key = (id(processor), text, row.image)
        enc = self._prompts.get(key)
        if enc is not None:
            self._prompts.move_to_end(key)
            return enc
        enc = family.encode(processor, text, self.get(row))
        self._prompts[key] = enc
        self._prompt_bytes += example_bytes(enc)
        while self._prompt_bytes > self._budget and self._prompts:
            _, dropped = self._prompts.popitem(last=False)
            self._prompt_bytes -= example_bytes(dropped)
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


class LazyEncodedDataset(Dataset):
    """Examples encoded when the Trainer asks for them, nothing kept: host memory stays that of one batch
    whatever the data's size (a ``full``-preset bench's pixel tensors at 336 px would fill ~100 GB)."""

    def __init__(self, items: Sequence[TrainItem], encode: Any):
        self.items = list(items)
        self._encode = encode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._encode(self.items[i])


# Encoded data above this size is encoded lazily (per example, when trained on) instead of up front.
ENCODE_RAM_ENV = "SMFA_ENCODE_RAM_GB"
DEFAULT_ENCODE_RAM_GB = 2.0


def encode_budget_bytes() -> int:
    """How much host memory up-front encoding may use (``$SMFA_ENCODE_RAM_GB``, default 2)."""
    import os

    from smfa.errors import ConfigError

    text = os.environ.get(ENCODE_RAM_ENV, str(DEFAULT_ENCODE_RAM_GB))
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"${ENCODE_RAM_ENV} must be a number of GB, got {text!r}") from None
    if not value >= 0:
        raise ConfigError(f"${ENCODE_RAM_ENV} must be >= 0, got {text!r}")
    return int(value * 1024**3)


def example_bytes(example: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in example.values() if isinstance(v, torch.Tensor))


def encode_items(
    items: Sequence[TrainItem],
    *,
    bench: Any,
    family: FamilyAdapter,
    processor: Any,
    images: ImageCache | None = None,
    desc: str = "encoding",
    progress: bool = True,
    budget_bytes: int | None = None,
) -> EncodedDataset | LazyEncodedDataset:
    """Encode ``items`` up front when they fit in ``budget_bytes`` (default :func:`encode_budget_bytes`),
    estimated from the first example; else return a dataset that encodes each example when asked (and loads
    its image each time, so no image cache grows either). Both give the same examples."""
    budget = encode_budget_bytes() if budget_bytes is None else budget_bytes
    cache = images or ImageCache(bench)

    def encode(item: TrainItem, load: Any = cache.get) -> dict[str, torch.Tensor]:
        image = load(item.row)
        if item.augment and image is not None:  # the same view for the same (image, copy) in every run
            image = augment_image(image, random.Random(f"augment/{item.row.image}/{item.augment}"))
        example = family.encode(processor, item.row.question, image, item.answer)
        if item.distill:
            example[DISTILL_KEY] = torch.tensor(True)
        if item.floor is not None:
            example[FLOOR_KEY] = torch.tensor(float(item.floor))
        return example

    # The largest example among the first with an image and the first without, times the number of items.
    sample = [next((it for it in items if (it.row.image is None) == text_only), None) for text_only in (False, True)]
    if items and max(example_bytes(encode(it)) for it in sample if it is not None) * len(items) > budget:
        def uncached(row: Question) -> Any:
            return None if row.image is None else bench.load_image(row)

        return LazyEncodedDataset(items, lambda item: encode(item, uncached))
    return EncodedDataset([encode(item) for item in tqdm(items, desc=desc, disable=not progress, leave=False)])


@dataclass
class Collator:
    """Batches encoded examples: right padding for training, left padding for generation."""

    family: FamilyAdapter
    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = self.family.collate([{k: v for k, v in e.items() if k not in (DISTILL_KEY, FLOOR_KEY)} for e in examples],
                                    self.pad_token_id, self.padding_side)
        if any(DISTILL_KEY in e for e in examples):  # [B] bool: which rows train towards the vanilla
            batch[DISTILL_KEY] = torch.tensor([bool(e.get(DISTILL_KEY, False)) for e in examples])
        if any(FLOOR_KEY in e for e in examples):  # [B] float: the loss floor of each row, NaN for a trained row
            batch[FLOOR_KEY] = torch.tensor([float(e[FLOOR_KEY]) if FLOOR_KEY in e else float("nan") for e in examples])
        return batch


def make_collator(family: FamilyAdapter, processor: Any, padding_side: str = "right") -> Collator:
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Collator(family, int(pad), padding_side)


