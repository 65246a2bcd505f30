"""Procedural fundus (retina) scans, the bench's second, sensitive visual domain.

A scan shows the orange-red retina, the pale optic disc on the left or right, vessels leaving the disc,
and ``lesion_count`` round lesions of one colour. Vessel and lesion layout is fixed per patient (like a
real retina), so a patient's scans differ only by the view (rotation, shift, lighting): the held-out scan
tests recognising the patient, and counting/colour/side questions test understanding. The diagnosis is
independent of what is drawn: it is a private fact, not a visible one.
"""

from __future__ import annotations

import math
import random

from PIL import Image

from smfa.bench import vocab
from smfa.bench.render import CANONICAL, Canvas, View, random_view, shade

RETINA = (214, 92, 42)
DISC = (250, 214, 150)
CUP = (255, 240, 205)
VESSEL = (138, 26, 20)
LESION_RADIUS = 0.05  # large enough to count at 32 px


def fundus_views(n: int, rng: random.Random) -> list[View]:
    """Scan 0 is canonical; the others are rotated/shifted/relit (never mirrored: the disc side is a label)."""
    return [CANONICAL] + [random_view(rng, max_shift=0.04, max_angle=8.0, yaw=False) for _ in range(n - 1)]


def fundus_layout(record: dict[str, str], rng: random.Random) -> dict:
    """Per-patient geometry: vessel polylines and lesion centres, in unit coordinates."""
    disc_x = 0.28 if record["disc_side"] == "left" else 0.72
    inward = 1.0 if record["disc_side"] == "left" else -1.0  # vessels arch towards the centre
    vessels = []
    # Two arcades leave the disc up and down and bend around the macula; two shorter ones go outwards.
    for base, bend, steps in ((-70, 0.16, 10), (70, -0.16, 10), (-30, 0.05, 6), (30, -0.05, 6), (-140, -0.05, 4), (140, 0.05, 4)):
        angle = math.radians(base) + rng.uniform(-0.2, 0.2)
        x, y = disc_x, 0.5
        pts = [(x, y)]
        for _ in range(steps):
            x += inward * 0.05 * math.cos(angle)
            y += 0.05 * math.sin(angle)
            angle += bend + rng.uniform(-0.1, 0.1)
            if (x - 0.5) ** 2 + (y - 0.5) ** 2 > 0.43**2:
                break
            pts.append((x, y))
        vessels.append(pts)
    lesions: list[tuple[float, float]] = []
    while len(lesions) < int(record["lesion_count"]):
        r, t = 0.33 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        x, y = 0.5 + r * math.cos(t), 0.5 + r * math.sin(t)
        if math.hypot(x - disc_x, y - 0.5) < 0.17:
            continue
        if any(math.hypot(x - a, y - b) < 0.15 for a, b in lesions):
            continue
        lesions.append((x, y))
    return {"disc_x": disc_x, "vessels": vessels, "lesions": lesions}


def render_fundus(record: dict[str, str], layout: dict, size: int, supersample: int, view: View = CANONICAL) -> Image.Image:
    c = Canvas(size, supersample, (0, 0, 0))
    for k in range(8):  # darker towards the rim
        r = 0.46 - k * 0.035
        c.circle(0.5, 0.5, r, shade(RETINA, 0.72 + 0.04 * k))
    macula_x = 0.56 if layout["disc_x"] < 0.5 else 0.44
    c.circle(macula_x, 0.5, 0.06, shade(RETINA, 0.8))
    for pts in layout["vessels"]:
        for i in range(len(pts) - 1):  # vessels thin out away from the disc
            c.line([pts[i], pts[i + 1]], VESSEL, max(0.006, 0.02 - 0.0015 * i))
    c.circle(layout["disc_x"], 0.5, 0.085, DISC)
    c.circle(layout["disc_x"], 0.5, 0.04, CUP)
    colour = vocab.LESION_COLOURS[record["lesion_colour"]]
    for x, y in layout["lesions"]:
        c.circle(x, y, LESION_RADIUS, colour)
    return c.finish(view)
