"""Forget-photo augmentation (``forget_augment``): random views of the request's photos, the same in every
run, only for rows with an image, refused when negative."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from smfa.bench.schema import Question
from smfa.data import TrainItem, augment_image, augmented_items
from smfa.errors import ConfigError


def _photo() -> Image.Image:
    img = Image.new("RGB", (32, 32), (120, 40, 160))
    img.paste((230, 200, 170), (10, 6, 22, 24))  # a face-ish block on a uniform background
    return img


def _row(image: str | None) -> Question:
    return Question(id=f"q-{image}", kind="image_memory" if image else "text_memory", domain="portrait",
                    attribute="name", question="Who is this?", answer="Ana.", fact="Ana", person_id="p1",
                    image=image, variant=0 if image else None, image_split="train" if image else None,
                    phrasing="train", template_id=0, meta={})


def test_a_view_is_deterministic_keeps_the_size_and_moves_pixels() -> None:
    img = _photo()
    a = augment_image(img, random.Random("augment/x/1"))
    b = augment_image(img, random.Random("augment/x/1"))
    c = augment_image(img, random.Random("augment/x/2"))
    assert a.size == img.size and a.tobytes() == b.tobytes()
    assert a.tobytes() != img.tobytes() and a.tobytes() != c.tobytes()
    assert img.tobytes() == _photo().tobytes()  # the input is not modified


def test_augmented_items_only_for_photo_rows() -> None:
    items = [TrainItem(_row("images/p1-0.png"), "I can't say."), TrainItem(_row(None), "I can't say.")]
    out = augmented_items(items, 2)
    assert [(i.row.image, i.augment) for i in out] == [("images/p1-0.png", 1), ("images/p1-0.png", 2)]
    assert augmented_items(items, 0) == []


@pytest.mark.parametrize("method", ["smfa", "idk", "ties"])
def test_a_negative_augment_is_refused(method: str) -> None:
    from smfa.methods import get_method

    with pytest.raises(ConfigError, match="forget_augment"):
        get_method(method).config(None, {"forget_augment": -1})
    assert get_method(method).config(None, {"forget_augment": 2}).forget_augment == 2
