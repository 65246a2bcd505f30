"""Procedural portraits: a simple face whose visible features (``Person.visual``) identify the person.

Features are drawn large and in flat, well-separated colours so that they survive downsampling to 32 px:
background, shirt, hair colour and style, skin tone, glasses and hat are all recognisable there; eye
colour and beard are drawn too but only matter at larger sizes. Image variants change shift, scale,
rotation, lighting and the turn of the face (``View``), never a feature.
"""

from __future__ import annotations

import math
import random

from PIL import Image

from smfa.bench import vocab
from smfa.bench.render import CANONICAL, Canvas, View, luminance, random_view, shade

MOUTH = (150, 45, 50)
DARK_RIMS = (20, 20, 24)
LIGHT_RIMS = (235, 235, 240)


def portrait_views(n_variants: int, rng: random.Random) -> list[View]:
    """Variant 0 is the canonical view; the others are mild random views."""
    return [CANONICAL] + [random_view(rng) for _ in range(n_variants - 1)]


def _hair_back(c: Canvas, style: str, hair: tuple[int, int, int]) -> None:
    """Hair that shows behind the head and shoulders."""
    if style == "long":
        c.rect(0.265, 0.22, 0.735, 0.76, hair, radius=0.08)
    elif style == "curly":
        c.ellipse(0.23, 0.11, 0.77, 0.60, hair)
        for k in range(9):  # curls around the outline
            t = math.pi * (0.95 + 1.1 * k / 8)
            c.circle(0.5 + 0.26 * math.cos(t), 0.36 + 0.24 * math.sin(t), 0.07, hair)
    elif style == "ponytail":
        c.ellipse(0.64, 0.30, 0.84, 0.66, hair)


def _hair_top(c: Canvas, style: str, hair: tuple[int, int, int]) -> None:
    """The hair cap over the forehead (hidden under a hat)."""
    if style == "curly":
        c.chord(0.285, 0.12, 0.715, 0.50, 180, 360, hair)
        for k in range(6):
            c.circle(0.34 + 0.064 * k, 0.29, 0.04, hair)
    else:
        c.chord(0.30, 0.155, 0.70, 0.47, 180, 360, hair)
        if style == "short":
            c.rect(0.30, 0.28, 0.335, 0.36, hair)
            c.rect(0.665, 0.28, 0.70, 0.36, hair)


def render_portrait(visual: dict[str, str], size: int, supersample: int, view: View = CANONICAL) -> Image.Image:
    """Draw the face described by ``visual`` (see :data:`smfa.bench.profiles.VISUAL_FEATURES`)."""
    bg = vocab.NAMED_COLOURS[visual["background_colour"]]
    shirt = vocab.NAMED_COLOURS[visual["shirt_colour"]]
    hair = vocab.HAIR_COLOURS[visual["hair_colour"]]
    skin = vocab.SKIN_TONES[visual["skin_tone"]]
    eye = vocab.EYE_COLOURS[visual["eye_colour"]]
    style = visual["hair_style"]
    hat = visual["hat"] == "yes"
    yaw = view.yaw * 0.025  # features turn with the head

    c = Canvas(size, supersample, bg)
    _hair_back(c, style, hair)
    c.rect(0.44, 0.56, 0.56, 0.82, shade(skin, 0.92))  # neck
    c.ellipse(0.13, 0.74, 0.87, 1.45, shirt)  # shoulders
    c.polygon([(0.43, 0.74), (0.57, 0.74), (0.5, 0.84)], shade(skin, 0.92))  # collar opening
    c.ellipse(0.295, 0.38, 0.345, 0.48, skin)  # ears
    c.ellipse(0.655, 0.38, 0.705, 0.48, skin)
    c.ellipse(0.32, 0.20, 0.68, 0.645, skin)  # head
    if not hat:
        _hair_top(c, style, hair)
    brow = shade(hair, 0.8) if luminance(hair) > 90 else hair
    for ex in (0.435, 0.565):
        x = ex + yaw
        c.line([(x - 0.035, 0.362), (x + 0.03, 0.358)], brow, 0.012)
        c.ellipse(x - 0.032, 0.392, x + 0.032, 0.428, (250, 250, 250))
        c.circle(x + yaw * 0.3, 0.41, 0.017, eye)
        c.circle(x + yaw * 0.3, 0.41, 0.007, (15, 15, 15))
    c.line([(0.5 + yaw * 1.2, 0.43), (0.49 + yaw * 1.2, 0.50), (0.505 + yaw * 1.2, 0.505)], shade(skin, 0.7), 0.01)
    if visual["beard"] == "yes":
        c.chord(0.32, 0.30, 0.68, 0.645, 10, 170, hair)
    c.arc(0.45 + yaw, 0.50, 0.55 + yaw, 0.565, 20, 160, MOUTH, 0.014)
    if visual["glasses"] == "yes":
        rims = LIGHT_RIMS if luminance(skin) < 120 else DARK_RIMS
        for ex in (0.435, 0.565):
            c.circle(ex + yaw, 0.41, 0.05, None, rims, 0.026)
        c.line([(0.485 + yaw, 0.405), (0.515 + yaw, 0.405)], rims, 0.02)
        c.line([(0.385 + yaw, 0.405), (0.325, 0.395)], rims, 0.016)
        c.line([(0.615 + yaw, 0.405), (0.675, 0.395)], rims, 0.016)
    if hat:
        hat_colour = (50, 44, 62) if luminance(bg) > 120 else (226, 200, 140)
        band = vocab.NAMED_COLOURS["red"] if hat_colour[0] < 100 else (60, 40, 30)
        c.rect(0.335, 0.04, 0.665, 0.235, hat_colour, radius=0.04)
        c.rect(0.335, 0.185, 0.665, 0.215, band)
        c.rect(0.24, 0.215, 0.76, 0.26, hat_colour, radius=0.02)
    return c.finish(view)
