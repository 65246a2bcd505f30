"""General VQA: pictures of 1-4 shapes in the corners of a 2x2 grid, unrelated to any person.

Within a picture every (colour, kind) pair is distinct, so "Where is the red circle?" has one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from smfa.bench import vocab
from smfa.bench.config import BenchConfig
from smfa.bench.render import Canvas

BACKGROUND = (244, 244, 240)
CELL_CENTRES = {"top left": (0.27, 0.27), "top right": (0.73, 0.27), "bottom left": (0.27, 0.73), "bottom right": (0.73, 0.73)}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    position: str  # one of vocab.SHAPE_POSITIONS
    cx: float
    cy: float
    half: float  # half the side / radius, unit coordinates


@dataclass(frozen=True)
class ShapeScene:
    scene_id: str  # "s0001"
    shapes: tuple[Shape, ...]
    image_split: str  # "train" | "heldout"

    @property
    def image(self) -> str:
        return f"images/shapes/{self.scene_id}.png"


def make_shape_scenes(cfg: BenchConfig) -> list[ShapeScene]:
    rng = cfg.rng("shapes")
    n_heldout = max(1, round(cfg.n_shape_images * cfg.shape_heldout_share))
    heldout = set(rng.sample(range(cfg.n_shape_images), n_heldout))
    pairs = [(k, c) for k in vocab.SHAPE_KINDS for c in vocab.SHAPE_COLOURS]
    scenes = []
    for i in range(cfg.n_shape_images):
        n = rng.randint(1, 4)
        positions = rng.sample(list(vocab.SHAPE_POSITIONS), n)
        chosen = rng.sample(pairs, n)
        shapes = []
        for pos, (kind, colour) in zip(positions, chosen):
            cx, cy = CELL_CENTRES[pos]
            jx, jy, half = rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), rng.uniform(0.12, 0.17)
            shapes.append(Shape(kind, colour, pos, round(cx + jx, 4), round(cy + jy, 4), round(half, 4)))
        scenes.append(ShapeScene(f"s{i + 1:04d}", tuple(shapes), "heldout" if i in heldout else "train"))
    return scenes


def render_shapes(scene: ShapeScene, size: int, supersample: int) -> Image.Image:
    c = Canvas(size, supersample, BACKGROUND)
    for s in scene.shapes:
        rgb = vocab.SHAPE_COLOURS[s.colour]
        if s.kind == "circle":
            c.circle(s.cx, s.cy, s.half, rgb)
        elif s.kind == "square":
            h = s.half * 0.9  # a square of the same area reads as bigger than a circle
            c.rect(s.cx - h, s.cy - h, s.cx + h, s.cy + h, rgb)
        else:
            h = s.half * 1.1
            c.polygon([(s.cx, s.cy - h), (s.cx + h, s.cy + h * 0.8), (s.cx - h, s.cy + h * 0.8)], rgb)
    return c.finish()
