"""Drawing plumbing shared by the portrait, fundus and shape renderers.

Scenes are drawn in unit coordinates on a supersampled canvas 1.5x the image (so shifted/rotated views
never run out of picture), box-downsampled (anti-aliased edges), then the view (shift, scale, rotation)
is applied at the output size and the lighting is changed. Everything is a pure function of its
arguments, so an image is byte-identical whichever process draws it.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance

MARGIN = 1.5  # canvas side / image side
SHARP_TRANSFORM_MAX = 96  # images up to this size are transformed at 2x and halved


@dataclass(frozen=True)
class View:
    """How one image variant differs from the canonical drawing (all mild: features stay visible at 32 px)."""

    dx: float = 0.0  # horizontal shift, fraction of the image side
    dy: float = 0.0  # vertical shift
    scale: float = 1.0  # zoom
    angle: float = 0.0  # rotation, degrees
    brightness: float = 1.0  # lighting factor
    yaw: float = 0.0  # -1..1: facial features turn left/right (portraits only)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


CANONICAL = View()


def random_view(rng: random.Random, max_shift: float = 0.06, max_angle: float = 7.0, yaw: bool = True) -> View:
    return View(
        dx=rng.uniform(-max_shift, max_shift),
        dy=rng.uniform(-max_shift, max_shift),
        scale=rng.uniform(0.9, 1.08),
        angle=rng.uniform(-max_angle, max_angle),
        brightness=rng.uniform(0.86, 1.14),
        yaw=rng.uniform(-1.0, 1.0) if yaw else 0.0,
    )


class Canvas:
    """A supersampled drawing surface addressed in unit coordinates (0..1 is the visible image)."""

    def __init__(self, size: int, supersample: int, background: tuple[int, int, int]):
        self.size = size
        self.supersample = supersample
        self.pad = math.ceil(size * (MARGIN - 1) / 2)  # output pixels of picture kept around the image
        self.side = size * supersample  # canvas pixels of the unit square
        self.offset = self.pad * supersample
        self.background = background
        full = (size + 2 * self.pad) * supersample
        self.image = Image.new("RGB", (full, full), background)
        self.draw = ImageDraw.Draw(self.image)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return (self.offset + x * self.side, self.offset + y * self.side)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*self.px(x0, y0), *self.px(x1, y1)]

    def width(self, w: float) -> int:
        return max(1, round(w * self.side))

    def ellipse(self, x0, y0, x1, y1, fill, outline=None, width: float = 0.0) -> None:
        self.draw.ellipse(self.box(x0, y0, x1, y1), fill=fill, outline=outline, width=self.width(width) if outline else 0)

    def circle(self, cx: float, cy: float, r: float, fill, outline=None, width: float = 0.0) -> None:
        self.ellipse(cx - r, cy - r, cx + r, cy + r, fill, outline, width)

    def rect(self, x0, y0, x1, y1, fill, radius: float = 0.0) -> None:
        self.draw.rounded_rectangle(self.box(x0, y0, x1, y1), radius=round(radius * self.side), fill=fill)

    def chord(self, x0, y0, x1, y1, start: float, end: float, fill) -> None:
        self.draw.chord(self.box(x0, y0, x1, y1), start, end, fill=fill)

    def line(self, points: list[tuple[float, float]], fill, width: float) -> None:
        self.draw.line([self.px(x, y) for x, y in points], fill=fill, width=self.width(width), joint="curve")

    def polygon(self, points: list[tuple[float, float]], fill) -> None:
        self.draw.polygon([self.px(x, y) for x, y in points], fill=fill)

    def arc(self, x0, y0, x1, y1, start: float, end: float, fill, width: float) -> None:
        self.draw.arc(self.box(x0, y0, x1, y1), start, end, fill=fill, width=self.width(width))

    def finish(self, view: View = CANONICAL) -> Image.Image:
        """Downsample (box filter: anti-aliased edges), apply ``view`` and relight.

        Small images are transformed at twice their size and then halved, so rotated variants stay as
        crisp as the canonical one at 32 px."""
        k = 2 if self.size <= SHARP_TRANSFORM_MAX and self.supersample % 2 == 0 else 1
        small = self.image.reduce(self.supersample // k) if self.supersample > k else self.image
        size, pad = self.size * k, self.pad * k
        if view.angle == 0 and view.scale == 1 and view.dx == 0 and view.dy == 0:
            img = small.crop((pad, pad, pad + size, pad + size))
        else:
            c = pad + size / 2
            cos, sin = math.cos(math.radians(view.angle)), math.sin(math.radians(view.angle))
            # PIL maps each output pixel back to the source: src = centre + R(-angle)/scale * (out - centre - shift).
            a, b, d, e = cos / view.scale, sin / view.scale, -sin / view.scale, cos / view.scale
            ox, oy = size / 2 + view.dx * size, size / 2 + view.dy * size
            data = (a, b, c - a * ox - b * oy, d, e, c - d * ox - e * oy)
            img = small.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=self.background)
        if k > 1:
            img = img.reduce(k)
        if view.brightness != 1.0:
            img = ImageEnhance.Brightness(img).enhance(view.brightness)
        return img


def shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, round(v * factor))) for v in rgb)  # type: ignore[return-value]


def luminance(rgb: tuple[int, int, int]) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def png_bytes(img: Image.Image) -> bytes:
    """PNG with fixed encoder settings and no metadata (no timestamp), so equal pixels give equal bytes."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(img))
