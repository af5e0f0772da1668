"""A procedural video benchmark whose classes need what real video needs: time and detail.

``make_synthetic_dataset`` writes real H.264 mp4 clips with ``train.csv``, ``val.csv`` (lines
``relative/path.mp4 label``, no header) and ``classes.txt`` (line i names label i), in the
annotation format of :mod:`fluxvit.data.annotations`. ``render_clip`` renders one clip as a uint8 array.
(Its length is the catalogue of classes, each a short renderer, documented below.)

What every clip looks like
--------------------------
A static, textured background (a smooth colour field, a mid-frequency luminance texture and
a fixed fine grain), 2-4 static distractor shapes (triangles and ellipses in the same vivid
colours the actors use), usually one distractor drifting slowly (0.3-1 px/frame), one *actor*
whose appearance over time, or whose fine texture, carries the class, and fresh Gaussian noise
on every frame (sigma 1.5-4 grey levels). Most tokens are therefore redundant, as in real
video: the background never changes apart from noise, and the class lives on an object of
roughly 3x3 patches (patch 14 at 112 px, 8-20% of the frame) whose tokens change from frame
to frame, so a selector that keeps the tokens which change most finds it. Every nuisance is
drawn per clip: background, colours, distractors, actor position, size, speed and direction.

The classes
-----------
Temporal classes (pairs that are time reversals of each other: drawn from the same seed, the
actor of one is the other's played backwards, and with an odd frame count the two middle
frames are identical pixel for pixel, so one frame cannot tell them apart). The evidence is a
change *in place* - each token covering the actor changes steadily over the clip - so two
frames far enough apart suffice in principle, and more frames make it clearer:

* ``brighten``     - a square (36-48 px, drifting <= 0.6 px/frame) goes from dark to light.
* ``darken``       - the square goes from light to dark (``brighten`` played backwards).
* ``expand``       - a disc grows from a dot (radius 3-5 px) to radius 22-28 px.
* ``contract``     - the disc shrinks to a dot (``expand`` played backwards).
* ``warm_to_cool`` - a disc (radius 18-24 px) turns from red/orange to cyan/blue.
* ``cool_to_warm`` - the disc turns from cyan/blue to red/orange (``warm_to_cool`` reversed).

Detail classes (a 34-44 px square tile drifting 1-2.5 px/frame in a random direction; the four
differ only in a 1-pixel pattern made of two colours, whose pixel mean is the same for all four,
so any averaging downsample to half size or less - area, bilinear, antialiased - maps the four
to the same flat tile; nearest-neighbour subsampling would alias instead):

* ``stripes_h`` - horizontal 1-px stripes (period 2 px).
* ``stripes_v`` - vertical 1-px stripes.
* ``checker``   - a 1-px checkerboard.
* ``plain``     - a flat tile of the two colours' mean.

So a model that sees a single frame can at best tell the temporal pairs apart by chance, and a
model that sees the clip at half resolution can at best guess among the detail classes; both
need the coarse cue (which kind of actor it is), which every sampling keeps.

Opt-in *motion* classes (not in the default set; pass them with ``classes``) make a harder
benchmark: telling their pairs apart needs the direction of a motion, i.e. relating
neighbouring tokens across frames, which the 6-layer demo model does not learn in its few
hundred steps (the first version of this benchmark used them; see the README's diagnosis):

* ``slide_left`` / ``slide_right`` - a filled disc slides left / right (2-4 px/frame).
* ``grow`` / ``shrink``             - a thin ring widens from radius ~5 to ~17 px / narrows.
* ``turn_cw`` / ``turn_ccw``        - a clock hand turns clockwise / counter-clockwise.

Geometry (sizes, speeds) scales with ``size / 112``; the detail patterns stay 1 px, the finest
detail a frame holds. Speeds are in pixels per *source* frame; a slide is slowed when needed so
that the disc stays in view for the whole clip. Format version 2 (``SYNTH_VERSION``, recorded in
``synth.json``) has the in-place temporal classes and 34-44 px tiles; version 1 had the motion
classes in the default set and 22-28 px tiles.

Determinism: each clip's generator is seeded from ``(seed, crc32(class name), index)``, so the
same seed gives the same clips (and byte-identical CSVs), and adding a class or changing the
split does not change the other clips. No global random state is touched.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fluxvit import limits
from fluxvit.atomic import write_text
from fluxvit.errors import ConfigError
from fluxvit.files import directory, new_or_empty_directory
from fluxvit.typecheck import show
from fluxvit.workers import run_in_processes

log = logging.getLogger(__name__)

#: name -> (what telling it apart needs, one-line description). The default set comes first.
CLASSES: dict[str, tuple[str, str]] = {
    "brighten": ("time", "a square brightens from dark to light"),
    "darken": ("time", "a square darkens (brighten reversed)"),
    "expand": ("time", "a disc grows from a dot"),
    "contract": ("time", "a disc shrinks to a dot (expand reversed)"),
    "warm_to_cool": ("time", "a disc's colour shifts from red/orange to blue/cyan"),
    "cool_to_warm": ("time", "a disc's colour shifts from blue/cyan to red/orange (reversed)"),
    "stripes_h": ("detail", "a drifting tile with horizontal 1-px stripes"),
    "stripes_v": ("detail", "a drifting tile with vertical 1-px stripes"),
    "checker": ("detail", "a drifting tile with a 1-px checkerboard"),
    "plain": ("detail", "a drifting flat tile of the same mean colour"),
    # Harder, opt-in: the direction of a motion (needs relating neighbouring tokens over time).
    "slide_left": ("motion", "a disc slides leftwards"),
    "slide_right": ("motion", "a disc slides rightwards (slide_left reversed)"),
    "grow": ("motion", "a thin ring widens"),
    "shrink": ("motion", "a thin ring narrows (grow reversed)"),
    "turn_cw": ("motion", "a clock hand turns clockwise"),
    "turn_ccw": ("motion", "a clock hand turns counter-clockwise (turn_cw reversed)"),
}
#: The benchmark's classes: six that need time (three reversed pairs), four that need detail.
DEFAULT_CLASSES: tuple[str, ...] = tuple(n for n, (needs, _) in CLASSES.items() if needs != "motion")

#: Format version of the written dataset (recorded in synth.json); bump when clips change.
SYNTH_VERSION = 2
REFERENCE_SIZE = 112  # the size the geometry constants below are stated for
FPS = 16.0
CRF = 18  # below x264's default 23 so the 1-px patterns survive compression with most contrast


def describe_classes() -> str:
    """One line per class: name, what it needs, description (for ``--help``)."""
    return "\n".join(f"  {name:<12} [{needs:<6}] {text}" for name, (needs, text) in CLASSES.items())


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`make_synthetic_dataset` wrote."""

    root: Path
    classes: tuple[str, ...]
    num_train: int
    num_val: int
    size: int
    frames: int
    seed: int
    seconds: float
    workers: int

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def val_csv(self) -> Path:
        return self.root / "val.csv"

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.txt"

    def __str__(self) -> str:
        return (f"wrote {self.num_train} train + {self.num_val} val clips ({len(self.classes)} classes, "
                f"{self.frames} frames x {self.size} px, seed {self.seed}) to {self.root} "
                f"in {self.seconds:.1f} s with {self.workers} worker(s)")


# ----------------------------------------------------------------------------- rendering
def render_clip(
    class_name: str,
    rng: np.random.Generator | int | Sequence[int],
    size: int = REFERENCE_SIZE,
    frames: int = 16,
    *,
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render one clip of ``class_name``: uint8 (T, H, W, 3) RGB with T = frames, H = W = size.

    ``rng`` is a numpy Generator (consumed) or a seed for one. With ``return_mask`` also return
    the actor's coverage (T, H, W) float32 in [0, 1] - where the class evidence is, for tests
    and for checking what a token selector keeps. The two clips of a time-reversed pair drawn
    from the same seed share everything, and the actor of one is the other's played backwards.
    """
    if class_name not in CLASSES:
        raise ConfigError(f"unknown synthetic class {class_name!r} (known: {', '.join(CLASSES)})")
    _check_geometry(size, frames)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    s = size / REFERENCE_SIZE
    video = np.broadcast_to(_background(rng, size), (frames, size, size, 3)).copy()
    _paint_distractors(video, rng, s)
    alpha, colour = _ACTORS[class_name](rng, size, frames, s)
    a = alpha[..., None]
    video *= 1.0 - a
    video += a * colour
    # Sensor-like noise, fresh per frame, so that no token is exactly static.
    sigma = rng.uniform(1.5, 4.0)
    video += rng.standard_normal(video.shape, dtype=np.float32) * np.float32(sigma)
    out = np.clip(np.rint(video), 0, 255).astype(np.uint8)
    return (out, alpha.astype(np.float32)) if return_mask else out


def _check_geometry(size: int, frames: int) -> None:
    if not _is_int(size) or size < 32 or size % 2:
        raise ConfigError(f"size {show(size)} must be an even number of pixels >= 32 (H.264 4:2:0 needs even sizes)")
    if not _is_int(frames) or frames < 2:
        raise ConfigError(f"frames {show(frames)} must be an integer >= 2 (the temporal classes need motion)")
    # a clip is rendered whole, in float32, before it is encoded
    limits.CLIP_PIXELS.check(frames * size * size, f"clips of {frames} frames of {size}x{size}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@lru_cache(maxsize=8)
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (1, H, W) float32, broadcastable over time."""
    c = np.arange(size, dtype=np.float32)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy[None], xx[None]


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D linear interpolation with aligned corners."""
    pos = np.linspace(0.0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small (h, w, C) field to (size, size, C)."""
    my, mx = _interp_matrix(size, grid.shape[0]), _interp_matrix(size, grid.shape[1])
    return np.einsum("yh,hwc,xw->yxc", my, grid.astype(np.float32), mx)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static textured background (H, W, 3) float32: muted colour field + texture + grain."""
    base = rng.uniform(70, 180) + rng.uniform(-25, 25, (4, 4, 3))
    texture = rng.normal(0.0, 12.0, (max(size // 8, 2), max(size // 8, 2), 1))
    # A fixed fine grain gives the background some pixel-level energy too, so that "has fine
    # detail somewhere" alone does not reveal a detail class.
    grain = rng.normal(0.0, rng.uniform(2.0, 6.0), (size, size, 1))
    return (_upsample(base, size) + _upsample(texture, size) + grain).astype(np.float32)


def _vivid(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour (3,) float32, the palette shared by actors and distractors."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    return np.array([r, g, b], dtype=np.float32) * 255


def _mid_track(rng: np.random.Generator, size: int, frames: int, vel: tuple[float, float], margin: float):
    """Centre (cy, cx), each (T, 1, 1), moving at ``vel`` px/frame, inside ``margin`` of the edges.

    The mid-clip position is drawn uniformly over the positions that keep the whole track in
    view; as this range is symmetric, a track and its time reversal are equally likely.
    """
    t = np.arange(frames, dtype=np.float32) - (frames - 1) / 2
    out = []
    for v in vel:
        half = abs(v) * (frames - 1) / 2
        lo, hi = margin + half, size - 1 - margin - half
        mid = rng.uniform(lo, hi) if hi > lo else (size - 1) / 2
        out.append((mid + v * t)[:, None, None])
    return out[0], out[1]


def _random_velocity(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float]:
    angle, speed = rng.uniform(0, 2 * math.pi), rng.uniform(lo, hi)
    return speed * math.sin(angle), speed * math.cos(angle)


def _disc(size: int, cy, cx, r) -> np.ndarray:
    """Antialiased coverage (T, H, W) of a disc of radius ``r`` (one pixel of soft edge)."""
    yy, xx = _coords(size)
    return np.clip(r + 0.5 - np.hypot(yy - cy, xx - cx), 0.0, 1.0)


def _triangle(size: int, cy, cx, r: float, angle: float) -> np.ndarray:
    """Coverage of an equilateral triangle of circumradius ``r`` rotated by ``angle``."""
    yy, xx = _coords(size)
    inside = None
    for k in range(3):
        # Edge k faces direction angle + pi/3 + 2*pi*k/3 at distance r/2 from the centre.
        a = angle + math.pi / 3 + 2 * math.pi * k / 3
        d = r / 2 - ((xx - cx) * math.cos(a) + (yy - cy) * math.sin(a))
        inside = d if inside is None else np.minimum(inside, d)
    return np.clip(inside + 0.5, 0.0, 1.0)


def _ellipse(size: int, cy, cx, a: float, b: float, angle: float) -> np.ndarray:
    """Coverage of an ellipse with semi-axes ``a``, ``b`` rotated by ``angle``."""
    yy, xx = _coords(size)
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return np.clip((1.0 - q) * min(a, b) + 0.5, 0.0, 1.0)


def _paint_distractors(video: np.ndarray, rng: np.random.Generator, s: float) -> None:
    """Paint 2-4 static shapes and, in 3 clips of 4, one slowly drifting triangle, in place."""
    frames, size = video.shape[0], video.shape[1]
    for _ in range(int(rng.integers(2, 5))):
        r = rng.uniform(6, 12) * s
        cy, cx = (np.full((1, 1, 1), rng.uniform(r, size - 1 - r), dtype=np.float32) for _ in range(2))
        if rng.uniform() < 0.5:
            alpha = _triangle(size, cy, cx, r, rng.uniform(0, 2 * math.pi))
        else:
            alpha = _ellipse(size, cy, cx, r, r * rng.uniform(0.35, 0.6), rng.uniform(0, math.pi))
        _over(video, alpha, _vivid(rng))
    if rng.uniform() < 0.75:
        r = rng.uniform(6, 10) * s
        cy, cx = _mid_track(rng, size, frames, _random_velocity(rng, 0.3 * s, 1.0 * s), r)
        _over(video, _triangle(size, cy, cx, r, rng.uniform(0, 2 * math.pi)), _vivid(rng))


def _over(video: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-composite ``colour`` with coverage ``alpha`` ((1 or T), H, W) over ``video`` in place."""
    a = alpha[..., None]
    video *= 1.0 - a
    video += a * colour


# ----------------------------------------------------------------------------- actors
# Each actor draws its parameters from rng (the same draws for both classes of a reversed pair)
# and returns coverage (T, H, W) and colour ((3,) or (T, H, W, 3)).
Actor = Callable[[np.random.Generator, int, int, float], tuple[np.ndarray, np.ndarray]]


def _slide(reverse: bool) -> Actor:
    def actor(rng, size, frames, s):
        r = rng.uniform(8, 12) * s
        # Slow down if needed so the disc stays in view from the first frame to the last.
        speed = min(rng.uniform(2, 4) * s, (size - 2 * r - 4) / (frames - 1))
        drift = rng.uniform(-0.5, 0.5) * s
        cy, cx = _mid_track(rng, size, frames, (drift, -speed), r + 1)
        alpha = _disc(size, cy, cx, r)
        return (alpha[::-1] if reverse else alpha), _vivid(rng)
    return actor


def _grow(reverse: bool) -> Actor:
    def actor(rng, size, frames, s):
        r0, r1 = rng.uniform(4, 6) * s, rng.uniform(15, 19) * s
        thick = max(3 * s, 1.5)
        cy, cx = _mid_track(rng, size, frames, _random_velocity(rng, 0.0, 1.0 * s), r1 + 1)
        radius = np.linspace(r0, r1, frames, dtype=np.float32)[:, None, None]
        yy, xx = _coords(size)
        d = np.hypot(yy - cy, xx - cx)
        alpha = np.clip(np.minimum(radius + 0.5 - d, d - (radius - thick) + 0.5), 0.0, 1.0)
        return (alpha[::-1] if reverse else alpha), _vivid(rng)
    return actor


def _turn(reverse: bool) -> Actor:
    def actor(rng, size, frames, s):
        length, width, knob = rng.uniform(12, 16) * s, max(3 * s, 1.5), 4 * s
        cy, cx = _mid_track(rng, size, frames, _random_velocity(rng, 0.0, 1.0 * s), length + knob + 1)
        # Image y points down, so a growing angle turns clockwise on screen. Fewer than 22.5
        # deg/frame keeps the direction unambiguous even when only every 8th frame is seen.
        omega = math.radians(rng.uniform(8, 16))
        angle = rng.uniform(0, 2 * math.pi) + omega * np.arange(frames, dtype=np.float32)[:, None, None]
        dy, dx = np.sin(angle), np.cos(angle)
        yy, xx = _coords(size)
        py, px = yy - cy, xx - cx
        along = np.clip(py * dy + px * dx, 0.0, length)
        arm = np.clip(width / 2 + 0.5 - np.hypot(py - along * dy, px - along * dx), 0.0, 1.0)
        tip = _disc(size, cy + length * dy, cx + length * dx, knob)
        hub = _disc(size, cy, cx, width)
        alpha = np.maximum(np.maximum(arm, tip), hub)
        return (alpha[::-1] if reverse else alpha), _vivid(rng)
    return actor


def _temporal_track(rng: np.random.Generator, size: int, frames: int, s: float, margin: float):
    """A slowly drifting centre (0-0.6 px/frame) for the in-place temporal actors."""
    return _mid_track(rng, size, frames, _random_velocity(rng, 0.0, 0.6 * s), margin)


def _square(size: int, cy, cx, half: float) -> np.ndarray:
    """Antialiased coverage of an axis-aligned square of half-side ``half``."""
    yy, xx = _coords(size)
    return np.clip(half + 0.5 - np.abs(yy - cy), 0.0, 1.0) * np.clip(half + 0.5 - np.abs(xx - cx), 0.0, 1.0)


def _ramp(frames: int, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Colours (T, 1, 1, 3) going linearly from ``start`` to ``end`` over the clip."""
    w = np.linspace(0.0, 1.0, frames, dtype=np.float32)[:, None]
    return ((1.0 - w) * start + w * end)[:, None, None, :].astype(np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _brighten(reverse: bool) -> Actor:
    def actor(rng, size, frames, s):
        half = rng.uniform(18, 24) * s
        cy, cx = _temporal_track(rng, size, frames, s, half + 1)
        hue, sat = rng.uniform(), rng.uniform(0.3, 0.9)
        colour = _ramp(frames, _hsv(hue, sat, rng.uniform(0.08, 0.25)), _hsv(hue, sat, rng.uniform(0.85, 1.0)))
        alpha = np.broadcast_to(_square(size, cy, cx, half), (frames, size, size))
        return (alpha[::-1], colour[::-1]) if reverse else (alpha, colour)
    return actor


def _expand(reverse: bool) -> Actor:
    def actor(rng, size, frames, s):
        r0, r1 = rng.uniform(3, 5) * s, rng.uniform(22, 28) * s
        cy, cx = _temporal_track(rng, size, frames, s, r1 + 1)
        radius = np.linspace(r0, r1, frames, dtype=np.float32)[:, None, None]
        alpha = _disc(size, cy, cx, radius)
        return (alpha[::-1] if reverse else alpha), _vivid(rng)
    return actor


def _warm_to_cool(reverse: bool) -> Actor:
    def actor(rng, size, frames, s):
        r = rng.uniform(18, 24) * s
        cy, cx = _temporal_track(rng, size, frames, s, r + 1)
        sat, val = rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)
        warm = _hsv(rng.uniform(-0.03, 0.1), sat, val)  # red .. orange
        cool = _hsv(rng.uniform(0.5, 0.66), sat, val)  # cyan .. blue
        alpha = _disc(size, cy, cx, r)
        colour = _ramp(frames, warm, cool)
        return (alpha[::-1], colour[::-1]) if reverse else (alpha, colour)
    return actor


def _tile(pattern: str) -> Actor:
    def actor(rng, size, frames, s):
        side = int(round(rng.uniform(34, 44) * s))
        cy, cx = _mid_track(rng, size, frames, _random_velocity(rng, 1.0 * s, 2.5 * s), side / 2 + 1)
        # Whole-pixel corners keep the 1-px pattern aligned with the pixel grid as it moves.
        y0 = np.rint(cy - side / 2).astype(int)
        x0 = np.rint(cx - side / 2).astype(int)
        yy, xx = _coords(size)
        ry, rx = yy - y0, xx - x0
        alpha = ((ry >= 0) & (ry < side) & (rx >= 0) & (rx < side)).astype(np.float32)
        hue, sat = rng.uniform(), rng.uniform(0.3, 0.9)
        light = _hsv(hue, sat, rng.uniform(0.8, 1.0))
        dark = _hsv(hue, sat, rng.uniform(0.15, 0.35))
        phase = int(rng.integers(2))
        if pattern == "plain":
            return alpha, (light + dark) / 2
        parity = {"stripes_h": ry, "stripes_v": rx, "checker": ry + rx}[pattern].astype(int) + phase
        on = (parity % 2 == 0)[..., None]
        return alpha, np.where(on, light, dark)
    return actor


_ACTORS: dict[str, Actor] = {
    "brighten": _brighten(False),
    "darken": _brighten(True),
    "expand": _expand(False),
    "contract": _expand(True),
    "warm_to_cool": _warm_to_cool(False),
    "cool_to_warm": _warm_to_cool(True),
    "slide_left": _slide(False),
    "slide_right": _slide(True),
    "grow": _grow(False),
    "shrink": _grow(True),
    "turn_cw": _turn(False),
    "turn_ccw": _turn(True),
    "stripes_h": _tile("stripes_h"),
    "stripes_v": _tile("stripes_v"),
    "checker": _tile("checker"),
    "plain": _tile("plain"),
}


# ----------------------------------------------------------------------------- the dataset
def clip_seed(seed: int, class_name: str, index: int) -> np.random.SeedSequence:
    """The seed of clip ``index`` of ``class_name``: independent of the other classes and the split."""
    return np.random.SeedSequence([seed, zlib.crc32(class_name.encode()), index])


def make_synthetic_dataset(
    out: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    per_class: int = 80,
    size: int = REFERENCE_SIZE,
    frames: int = 16,
    seed: int = 0,
    val_fraction: float = 0.25,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> SynthSummary:
    """Write the benchmark to ``out``: ``train/``, ``val/`` mp4s, the two CSVs, classes.txt, synth.json.

    ``per_class`` clips per class, of which ``round(per_class * val_fraction)`` go to val.
    Every argument is checked before anything is written. ``workers`` processes encode in
    parallel (default: up to 2, the cores this was designed for). ``progress`` shows a bar.
    """
    names = _check_classes(classes)
    _check_geometry(size, frames)
    if not _is_int(per_class) or per_class < 1:
        raise ConfigError(f"per-class {show(per_class)} must be a positive number of clips")
    limits.SYNTH_CLIPS.check(per_class * len(names), f"{per_class} clips per class x {len(names)} classes")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val fraction {show(val_fraction)} must be in [0, 1)")
    n_val = int(round(per_class * val_fraction))
    n_train = per_class - n_val
    if n_train < 1:
        raise ConfigError(f"per-class {per_class} with val fraction {val_fraction} leaves no training clip")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed {show(seed)} must be a non-negative integer")
    if workers is not None:
        if not _is_int(workers) or workers < 0:
            raise ConfigError(f"workers {show(workers)} must be a non-negative integer (0 or 1: no extra process)")
        limits.WORKERS.check(workers, "workers")
    root = Path(out)
    if overwrite:
        if os.path.lexists(root):
            directory(root, "dataset folder")
    else:
        new_or_empty_directory(root, "dataset folder", advice=" (or overwrite it: synth --force)")
    workers = max(1, min(workers if workers is not None else min(2, os.cpu_count() or 1), per_class * len(names)))

    jobs, rows = [], {"train": [], "val": []}
    for label, name in enumerate(names):
        for i in range(per_class):
            split = "train" if i < n_train else "val"
            rel = f"{split}/{name}/{name}_{i:04d}.mp4"
            rows[split].append(f"{rel} {label}\n")
            jobs.append((name, seed, i, str(root / rel), size, frames))
    for split in rows:
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    run_in_processes(_write_clip, jobs, workers, progress, "synth", chunksize=8, unit="clip")
    # The CSVs come last, so an interrupted run never looks like a complete dataset.
    write_text(root / "classes.txt", "".join(f"{n}\n" for n in names))
    write_text(root / "synth.json", json.dumps({
        "version": SYNTH_VERSION, "classes": list(names), "per_class": per_class, "size": size,
        "frames": frames, "seed": seed, "val_fraction": val_fraction, "fps": FPS, "crf": CRF,
    }, indent=1) + "\n")
    for split, lines in rows.items():
        write_text(root / f"{split}.csv", "".join(lines))
    summary = SynthSummary(root, names, n_train * len(names), n_val * len(names), size, frames, seed,
                           time.perf_counter() - start, workers)
    log.info("%s", summary)
    return summary


def _check_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is None:
        return DEFAULT_CLASSES
    names = tuple(classes)
    if not names:
        raise ConfigError("no classes given")
    for n in names:
        if n not in CLASSES:
            raise ConfigError(f"unknown synthetic class {n!r} (known: {', '.join(CLASSES)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"classes repeat a name: {', '.join(names)}")
    return names


def _write_clip(job: tuple[str, int, int, str, int, int]) -> str:
    """Render and encode one clip (runs in a worker process)."""
    from fluxvit.data.encode import write_video

    name, seed, index, path, size, frames = job
    clip = render_clip(name, np.random.default_rng(clip_seed(seed, name, index)), size, frames)
    write_video(path, clip, fps=FPS, crf=CRF)
    return path
