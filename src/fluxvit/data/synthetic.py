"""A procedural video benchmark whose classes need what real video needs: time and detail.

``make_synthetic_dataset`` writes real H.264 mp4 clips with ``train.csv``, ``val.csv`` (lines
``relative/path.mp4 label``, no header) and ``classes.txt`` (line i names label i), in the
annotation format of :mod:`fluxvit.data.annotations`. ``render_clip`` renders one clip as a uint8 array.
(Its length is the catalogue of classes, each a short renderer, documented below.)

The benchmark comes in *variants* (``VARIANTS``, ``variant=`` / ``fluxvit synth --variant``),
built differently so that a recipe tuned on one is never judged on that one alone; the
``default`` variant is described first, the others under "Variants" below.

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

Variants
--------
Each variant (:class:`Variant`) is a class catalogue plus scene settings; its format version is
recorded in ``synth.json`` with its name (``"variant"``) and, when it draws its own clip
lengths, the range (``"clip_frames"``). ``default`` is the benchmark above (version 2,
``frames`` source frames per clip, the ``frames`` argument).

``events`` (version 1) - other temporal evidence, and coarser, static fine detail. The scene is
the default's (background, 2-4 static distractors, the occasional drifting one, noise); every
clip has **24 source frames** (the ``frames`` argument is ignored, so that a flash is 3 frames):

* ``flash_1``, ``flash_2``, ``flash_3`` [time: counting] - a nearly static (<= 0.3 px/frame)
  disc or square, 36-48 px, dim most of the clip, flashes bright 1, 2 or 3 times. A flash lasts
  ceil(T/8) = 3 frames; flash j lies in the j-th of k equal parts of the clip, at a random place
  inside it kept 2 frames (half a flash, rounded up) from the part's ends, so two flashes are
  >= 4 dim frames apart (:func:`flash_spans`). The 8 segment-centre frames
  (``segment_views(24, 8, 1)``: 1, 4, ..., 22) therefore see every flash once and a dim frame
  between any two: 8 frames can count, 2 frames usually not. (One random frame per segment, as
  training samples, misses a flash that straddles two segments 2 times in 9.) The three classes
  draw the same actor (shape, size, colours, position) from the same seed; only the count differs.
* ``pulse_early``, ``pulse_late`` [time: position in time] - a nearly static disc (radius
  18-24 px) of mid brightness swells to full brightness once, a Gaussian bump whose width at
  half height is a quarter of the clip, peaking at frame T/6 .. T/3 - 1 (the first third);
  ``pulse_late`` is ``pulse_early`` played backwards (same seed), peaking in the last third.
* ``weave_diag``, ``weave_anti``, ``weave_grid``, ``weave_plain`` [detail] - a *static* square
  tile (26-34 px, whole-pixel corner) with a period-4 two-colour pattern of 50% duty: diagonal
  ``(x + y) mod 4 < 2``, anti-diagonal ``(x - y) mod 4 < 2``, a 2-px checker
  ``(x//2 + y//2) mod 2``, or a flat tile of the two colours' mean (random phase). Every 4x4
  window of a pattern holds 8 light and 8 dark pixels, so any averaging downsample to 1/4 maps
  the four to the same flat tile. A 2x2 area average keeps some of it, unlike the default's 1-px
  tiles that vanish at half resolution: the diagonal and the anti-diagonal both become a 1-px
  checker of half the contrast (the same one up to its phase: half resolution tells them from
  plain, not from each other), the 2-px checker a flat tile or, at one tile position in four, a
  full-contrast 1-px checker.

``clutter`` (version 1) - the default's ten time and detail classes, with the same names and
actor renderers (the same kind of clip; ``classes.txt`` looks like the default's, ``synth.json``
tells them apart), in a busier scene with varied clip lengths:

* 6-10 static distractors, 2-4 triangles drifting 0.5-2 px/frame (always), and 1-2 static
  *changing* distractors - an ellipse that brightens or darkens, or a triangle whose hue shifts
  by 0.25-0.45 of the colour wheel, over the clip - so "the tokens that change most" are not
  only the actor's;
* the actor drawn at 0.7-0.85 of the default's geometry (sizes, speeds; the 1-px detail
  patterns stay 1 px), a detail tile slowed when needed to stay in view over a long clip;
* each clip's source length drawn from its own seed, 12-40 frames (the ``frames`` argument is
  ignored), so the same number of sampled frames covers different durations.

Determinism: each clip's generator is seeded from ``(seed, crc32(class name), index)`` (and
``crc32(variant)`` for a variant other than ``default``, so that a class name two variants share
does not give correlated clips), so the same seed gives the same clips (and byte-identical
CSVs), and adding a class or changing the split does not change the other clips. A variant that
draws clip lengths draws a clip's length first from that clip's generator
(:meth:`Variant.draw_frames`). No global random state is touched.
"""

from __future__ import annotations

import colorsys
import contextlib
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
from fluxvit.files import directory, new_or_empty_directory, read_text
from fluxvit.typecheck import show
from fluxvit.workers import run_in_processes

log = logging.getLogger(__name__)

#: The default variant's catalogue: name -> (what telling it apart needs, one-line description).
#: The default set comes first.
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

#: Format version of the default variant's dataset (recorded in synth.json); bump when clips change.
SYNTH_VERSION = 2
REFERENCE_SIZE = 112  # the size the geometry constants below are stated for
DEFAULT_FRAMES = 16  # source frames per clip, for the variants that do not draw their own
FPS = 16.0
CRF = 18  # below x264's default 23 so the 1-px patterns survive compression with most contrast
DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class SynthClass:
    """One class of a variant's catalogue."""

    name: str
    needs: str  # what telling it apart needs: "time", "detail" or "motion"
    description: str  # one line


@dataclass(frozen=True)
class Variant:
    """How one benchmark variant is built: its class catalogue and its scene settings.

    Ranges are inclusive ``(lo, hi)``, drawn per clip (counts as integers, the rest uniformly);
    a range with ``lo == hi`` draws nothing. Sizes and speeds are stated for 112 px
    (``REFERENCE_SIZE``) and scale with ``size / 112``; speeds are in pixels per source frame.
    """

    name: str
    description: str  # one line
    classes: tuple[SynthClass, ...]  # the catalogue, the default classes first
    version: int  # the format version recorded in synth.json; bump when this variant's clips change
    static_distractors: tuple[int, int] = (2, 4)  # static triangles and ellipses per clip
    moving_distractors: tuple[int, int] = (1, 1)  # drifting triangles, in the clips that have any
    moving_chance: float = 0.75  # the share of clips that have the moving distractors at all
    moving_speed: tuple[float, float] = (0.3, 1.0)  # px per source frame
    changing_distractors: tuple[int, int] = (0, 0)  # static shapes whose colour changes over the clip
    actor_scale: tuple[float, float] = (1.0, 1.0)  # the actor's geometry relative to the default's
    clip_frames: tuple[int, int] | None = None  # source frames per clip; None: the frames argument
    tile_speed: tuple[float, float] = (1.0, 2.5)  # the detail tiles' drift; (0, 0): static tiles
    tiles_stay_in_view: bool = False  # slow a drifting tile down where a long clip would carry it out

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def default_classes(self) -> tuple[str, ...]:
        """The classes a dataset of this variant has unless told: all but the opt-in motion ones."""
        return tuple(c.name for c in self.classes if c.needs != "motion")

    @property
    def catalogue(self) -> dict[str, tuple[str, str]]:
        """name -> (needs, description), like :data:`CLASSES` for the default variant."""
        return {c.name: (c.needs, c.description) for c in self.classes}

    def frame_range(self, frames: int) -> tuple[int, int]:
        """(shortest, longest) source frames of a clip, given the ``frames`` argument."""
        return (frames, frames) if self.clip_frames is None else self.clip_frames

    def draw_frames(self, rng: np.random.Generator, frames: int) -> int:
        """A clip's source length: ``frames`` (drawing nothing), or drawn from its generator."""
        if self.clip_frames is None:
            return frames
        return _count(rng, self.clip_frames)


def _count(rng: np.random.Generator, span: tuple[int, int]) -> int:
    """An integer drawn uniformly from the inclusive ``span``; no draw when it holds one value."""
    lo, hi = span
    return lo if lo == hi else int(rng.integers(lo, hi + 1))


def _draw(rng: np.random.Generator, span: tuple[float, float]) -> float:
    """A number drawn uniformly from ``span``; no draw when it holds one value."""
    lo, hi = span
    return lo if lo == hi else float(rng.uniform(lo, hi))


def get_variant(name: str) -> Variant:
    """The variant called ``name``, or one :class:`ConfigError` line listing the known ones."""
    if isinstance(name, str) and name in VARIANTS:
        return VARIANTS[name]
    raise ConfigError(f"unknown synthetic variant {show(name)} (known: {', '.join(VARIANTS)})")


def describe_classes(variant: str = DEFAULT_VARIANT) -> str:
    """One line per class of ``variant``: name, what it needs, description (for ``--help``)."""
    v = get_variant(variant)
    return "\n".join(f"  {c.name:<12} [{c.needs:<6}] {c.description}" for c in v.classes)


def describe_variants() -> str:
    """One line per variant: name, clip length, description (for ``--help``)."""
    lines = []
    for v in VARIANTS.values():
        length = "--frames" if v.clip_frames is None else "-".join(str(n) for n in sorted(set(v.clip_frames)))
        lines.append(f"  {v.name:<8} [{length}{'' if v.clip_frames is None else ' frames'}] {v.description}")
    return "\n".join(lines)


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`make_synthetic_dataset` wrote. ``frames`` is the longest clip's source frame
    count (every clip's, unless the variant draws lengths); ``clip_frames`` (shortest, longest)."""

    root: Path
    classes: tuple[str, ...]
    num_train: int
    num_val: int
    size: int
    frames: int
    seed: int
    seconds: float
    workers: int
    variant: str = DEFAULT_VARIANT
    clip_frames: tuple[int, int] | None = None  # None: every clip has ``frames`` frames

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
        lo, hi = self.clip_frames or (self.frames, self.frames)
        length = f"{hi} frames" if lo == hi else f"{lo}-{hi} frames"
        return (f"wrote {self.num_train} train + {self.num_val} val clips ({len(self.classes)} classes of variant "
                f"{self.variant}, {length} x {self.size} px, seed {self.seed}) to {self.root} "
                f"in {self.seconds:.1f} s with {self.workers} worker(s)")


# ----------------------------------------------------------------------------- rendering
def render_clip(
    class_name: str,
    rng: np.random.Generator | int | Sequence[int],
    size: int = REFERENCE_SIZE,
    frames: int = DEFAULT_FRAMES,
    *,
    variant: str = DEFAULT_VARIANT,
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render one clip of ``class_name`` of ``variant``: uint8 (T, H, W, 3) RGB with H = W = size.

    T = frames, unless the variant has its own clip lengths (``Variant.clip_frames``: then
    ``frames`` is checked but ignored, and T is drawn first from ``rng``). ``rng`` is a numpy
    Generator (consumed) or a seed for one. With ``return_mask`` also return the actor's
    coverage (T, H, W) float32 in [0, 1] - where the class evidence is, for tests and for
    checking what a token selector keeps. The two clips of a time-reversed pair drawn from the
    same seed share everything, and the actor of one is the other's played backwards.
    """
    v = get_variant(variant)
    actor = _actor(v, class_name)
    _check_geometry(size, frames, v)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    frames = v.draw_frames(rng, frames)
    s = size / REFERENCE_SIZE
    video, _ = _paint_scene(rng, size, frames, s, v)
    alpha, colour = actor(rng, size, frames, s * _draw(rng, v.actor_scale))
    alpha = np.broadcast_to(alpha, (frames, size, size))
    _over_box(video, alpha, colour)
    # Sensor-like noise, fresh per frame, so that no token is exactly static.
    sigma = rng.uniform(1.5, 4.0)
    video += rng.standard_normal(video.shape, dtype=np.float32) * np.float32(sigma)
    out = np.clip(np.rint(video), 0, 255).astype(np.uint8)
    return (out, alpha.astype(np.float32)) if return_mask else out


def _actor(v: Variant, class_name: str) -> Actor:
    """The renderer of ``class_name`` in ``v``, or one ConfigError line listing ``v``'s classes."""
    table = _VARIANT_ACTORS[v.name]
    if isinstance(class_name, str) and class_name in table:
        return table[class_name]
    elsewhere = [o.name for o in VARIANTS.values() if o.name != v.name and class_name in o.class_names]
    hint = f"; it is a class of variant{'s' * (len(elsewhere) > 1)} {' and '.join(elsewhere)}" if elsewhere else ""
    raise ConfigError(f"unknown synthetic class {class_name!r} in variant {v.name} "
                      f"(known: {', '.join(v.class_names)}){hint}")


def _check_geometry(size: int, frames: int, v: Variant | None = None) -> None:
    if not _is_int(size) or size < 32 or size % 2:
        raise ConfigError(f"size {show(size)} must be an even number of pixels >= 32 (H.264 4:2:0 needs even sizes)")
    if not _is_int(frames) or frames < 2:
        raise ConfigError(f"frames {show(frames)} must be an integer >= 2 (the temporal classes need motion)")
    # a clip is rendered whole, in float32, before it is encoded: check the longest one the variant draws
    longest = frames if v is None else v.frame_range(frames)[1]
    limits.CLIP_PIXELS.check(longest * size * size, f"clips of {longest} frames of {size}x{size}")


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
    return _triangle_on(yy, xx, cy, cx, r, angle)


def _triangle_on(yy: np.ndarray, xx: np.ndarray, cy, cx, r: float, angle: float) -> np.ndarray:
    """:func:`_triangle` at the pixel centres ``yy``, ``xx`` (float32); nothing covers pixels
    farther than ``r + 1`` from the centre."""
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


def _paint_scene(rng: np.random.Generator, size: int, frames: int, s: float,
                 v: Variant) -> tuple[np.ndarray, dict[str, object]]:
    """The background and the distractors of ``v``, (T, H, W, 3) float32, and what was painted.

    The static shapes are painted on the background before it is repeated over time (the same
    pixels as painting every frame, at 1/T of the cost). The record says how many shapes of each
    kind were painted, and holds the coverage of the moving ones (T, H, W) and of the changing
    ones (1, H, W), for tests.
    """
    background = _background(rng, size)[None]
    n_static = _count(rng, v.static_distractors)
    for _ in range(n_static):
        r = rng.uniform(6, 12) * s
        cy, cx = (np.full((1, 1, 1), rng.uniform(r, size - 1 - r), dtype=np.float32) for _ in range(2))
        if rng.uniform() < 0.5:
            alpha = _triangle(size, cy, cx, r, rng.uniform(0, 2 * math.pi))
        else:
            alpha = _ellipse(size, cy, cx, r, r * rng.uniform(0.35, 0.6), rng.uniform(0, math.pi))
        _over(background, alpha, _vivid(rng))
    video = np.broadcast_to(background, (frames, size, size, 3)).copy()
    changing = np.zeros((1, size, size), np.float32)
    n_changing = _count(rng, v.changing_distractors)
    for _ in range(n_changing):
        alpha, colour = _changing_shape(rng, size, frames, s)
        _over_box(video, alpha, colour)
        np.maximum(changing, alpha, out=changing)
    moving = np.zeros((frames, size, size), np.float32)
    n_moving = 0
    if v.moving_chance >= 1.0 or rng.uniform() < v.moving_chance:
        n_moving = _count(rng, v.moving_distractors)
    lo, hi = v.moving_speed
    for _ in range(n_moving):
        r = rng.uniform(6, 10) * s
        cy, cx = _mid_track(rng, size, frames, _random_velocity(rng, lo * s, hi * s), r)
        _sprite_triangle(video, moving, cy, cx, r, rng.uniform(0, 2 * math.pi), _vivid(rng))
    return video, {"static": n_static, "changing": n_changing, "moving": n_moving,
                   "changing_mask": changing, "moving_mask": moving}


def _changing_shape(rng: np.random.Generator, size: int, frames: int, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A static distractor whose colour changes over the clip: coverage (1, H, W), colours (T, 1, 1, 3).

    Half are ellipses that brighten or darken (value 0.1-0.3 <-> 0.75-1), half triangles whose hue
    shifts by 0.25-0.45 of the colour wheel either way - the same kinds of change as the actors'.
    """
    r = rng.uniform(7, 12) * s
    cy, cx = (np.full((1, 1, 1), rng.uniform(r, size - 1 - r), dtype=np.float32) for _ in range(2))
    hue, sat = rng.uniform(), rng.uniform(0.5, 1.0)
    if rng.uniform() < 0.5:
        alpha = _ellipse(size, cy, cx, r, r * rng.uniform(0.45, 0.7), rng.uniform(0, math.pi))
        dim, bright = _hsv(hue, sat, rng.uniform(0.1, 0.3)), _hsv(hue, sat, rng.uniform(0.75, 1.0))
        start, end = (dim, bright) if rng.uniform() < 0.5 else (bright, dim)
    else:
        alpha = _triangle(size, cy, cx, r, rng.uniform(0, 2 * math.pi))
        val = rng.uniform(0.7, 1.0)
        shift = rng.uniform(0.25, 0.45) * (1 if rng.uniform() < 0.5 else -1)
        start, end = _hsv(hue, sat, val), _hsv(hue + shift, sat, val)
    return alpha, _ramp(frames, start, end)


def _over(video: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-composite ``colour`` with coverage ``alpha`` ((1 or T), H, W) over ``video`` in place."""
    a = alpha[..., None]
    video *= 1.0 - a
    video += a * colour


def _over_box(video: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """:func:`_over` inside the bounding box of what ``alpha`` covers in any frame: the same
    pixels (where nothing covers, compositing leaves a pixel as it is), at the box's cost.
    ``colour`` is (3,), (T or 1, 1, 1, 3) (one colour per frame) or (T or 1, H, W, 3)."""
    rows, cols = np.nonzero(alpha.max(axis=0) > 0)
    if rows.size:
        box = (slice(None), slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        per_pixel = colour.ndim == 4 and colour.shape[1:3] != (1, 1)
        _over(video[box], alpha[box], colour[box] if per_pixel else colour)


def _sprite_triangle(video: np.ndarray, coverage: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: float,
                     angle: float, colour: np.ndarray) -> None:
    """Composite a triangle moving along ``(cy, cx)`` (T, 1, 1) over ``video`` in place, and add
    it to ``coverage`` (T, H, W); the same pixels as :func:`_triangle` over whole frames, but
    computed frame by frame in a window around the shape only."""
    frames, size = video.shape[0], video.shape[1]
    w = min(size, math.ceil(2 * r + 5))  # the shape reaches r + 1 from its centre
    k = np.arange(w)
    y = np.clip(np.floor(cy - r - 2).astype(int), 0, size - w) + k[:, None]  # (T, w, 1)
    x = np.clip(np.floor(cx - r - 2).astype(int), 0, size - w) + k[None, :]  # (T, 1, w)
    t = np.arange(frames)[:, None, None]
    alpha = _triangle_on(y.astype(np.float32), x.astype(np.float32), cy, cx, r, angle)  # (T, w, w)
    patch = video[t, y, x]
    _over(patch, alpha, colour)
    video[t, y, x] = patch
    coverage[t, y, x] = np.maximum(coverage[t, y, x], alpha)


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


def _tile_corner(rng: np.random.Generator, size: int, frames: int, s: float, side: int,
                 speed: tuple[float, float], stay_in_view: bool) -> tuple[np.ndarray, np.ndarray]:
    """Whole-pixel top-left corners (y0, x0) of a ``side``-px tile, each (T or 1, 1, 1) int.

    Whole-pixel corners keep a pixel pattern aligned with the pixel grid as the tile moves. A
    static tile (``speed`` (0, 0)) lies anywhere with a pixel to spare; a drifting one follows a
    :func:`_mid_track`, slowed first when ``stay_in_view`` and the clip is too long for its speed.
    """
    if speed[1] <= 0:
        y0, x0 = (np.full((1, 1, 1), int(rng.integers(1, size - side))) for _ in range(2))
        return y0, x0
    vel = _random_velocity(rng, speed[0] * s, speed[1] * s)
    if stay_in_view:
        room = (size - side - 4) / (frames - 1)
        fastest = max(abs(vel[0]), abs(vel[1]))
        if fastest > room:
            vel = (vel[0] * room / fastest, vel[1] * room / fastest)
    cy, cx = _mid_track(rng, size, frames, vel, side / 2 + 1)
    return np.rint(cy - side / 2).astype(int), np.rint(cx - side / 2).astype(int)


def _tile_base(rng: np.random.Generator, size: int, frames: int, s: float, sides: tuple[float, float],
               speed: tuple[float, float], stay_in_view: bool):
    """A square tile's pixel offsets (ry, rx) from its corner, coverage (T or 1, H, W) and its two
    colours (light, dark) of one hue, drawn in this order (the default variant's clips depend on it)."""
    side = int(round(rng.uniform(*sides) * s))
    y0, x0 = _tile_corner(rng, size, frames, s, side, speed, stay_in_view)
    yy, xx = _coords(size)
    ry, rx = yy - y0, xx - x0
    alpha = ((ry >= 0) & (ry < side) & (rx >= 0) & (rx < side)).astype(np.float32)
    hue, sat = rng.uniform(), rng.uniform(0.3, 0.9)
    light = _hsv(hue, sat, rng.uniform(0.8, 1.0))
    dark = _hsv(hue, sat, rng.uniform(0.15, 0.35))
    return ry, rx, alpha, light, dark


def _tile(pattern: str, speed: tuple[float, float] = (1.0, 2.5), stay_in_view: bool = False) -> Actor:
    def actor(rng, size, frames, s):
        ry, rx, alpha, light, dark = _tile_base(rng, size, frames, s, (34, 44), speed, stay_in_view)
        phase = int(rng.integers(2))
        if pattern == "plain":
            return alpha, (light + dark) / 2
        parity = {"stripes_h": ry, "stripes_v": rx, "checker": ry + rx}[pattern].astype(int) + phase
        on = (parity % 2 == 0)[..., None]
        return alpha, np.where(on, light, dark)
    return actor


# ----------------------------------------------------------------------------- the events actors
_MAX_FLASHES = 3


def flash_spans(frames: int, count: int, jitter: Sequence[float]) -> list[tuple[int, int]]:
    """(start, length) of each of ``count`` flashes in a clip of ``frames`` frames.

    A flash lasts ``max(2, ceil(frames / 8))`` frames; flash j lies in the j-th of ``count``
    equal parts of the clip, at ``jitter[j]`` (in [0, 1)) of the starts that keep it
    ``ceil(ceil(frames / 8) / 2)`` frames from both ends of its part. So a flash spans at
    least one of the 8 segment-centre frames and two flashes are at least ``ceil(frames / 8)``
    dim frames apart, which holds one of them: 8 evenly spaced frames see every flash, apart.
    """
    step = math.ceil(frames / 8)
    length, guard = max(2, step), math.ceil(step / 2)
    spans = []
    for j in range(count):
        first = math.ceil(j * frames / count) + guard
        last = math.floor((j + 1) * frames / count) - guard - length
        if last < first:  # a clip too short for the guards: the middle of the part
            first = last = max(0, (first + last) // 2)
        start = first + min(int(jitter[j] * (last - first + 1)), last - first)
        spans.append((start, length))
    return spans


def _flash(count: int) -> Actor:
    def actor(rng, size, frames, s):
        square = rng.uniform() < 0.5
        half = rng.uniform(18, 24) * s  # half side or radius: 36-48 px across at 112 px
        cy, cx = _mid_track(rng, size, frames, _random_velocity(rng, 0.0, 0.3 * s), half + 1)
        alpha = _square(size, cy, cx, half) if square else _disc(size, cy, cx, half)
        hue, sat = rng.uniform(), rng.uniform(0.3, 0.9)
        dim, bright = _hsv(hue, sat, rng.uniform(0.1, 0.25)), _hsv(hue, sat, rng.uniform(0.85, 1.0))
        # As many draws whatever the count: flash_1, _2 and _3 of one seed share the rest of the clip.
        jitter = rng.uniform(size=_MAX_FLASHES)
        on = np.zeros(frames, dtype=bool)
        for start, length in flash_spans(frames, count, jitter):
            on[start:start + length] = True
        colour = np.where(on[:, None], bright, dim).astype(np.float32)[:, None, None, :]
        return alpha, colour
    return actor


def _pulse(late: bool) -> Actor:
    def actor(rng, size, frames, s):
        r = rng.uniform(18, 24) * s
        cy, cx = _mid_track(rng, size, frames, _random_velocity(rng, 0.0, 0.3 * s), r + 1)
        hue, sat = rng.uniform(), rng.uniform(0.3, 0.9)
        base, peak = _hsv(hue, sat, rng.uniform(0.3, 0.45)), _hsv(hue, sat, rng.uniform(0.9, 1.0))
        # The peak lies in the first third, its width at half height is a quarter of the clip.
        centre = rng.uniform(frames / 6, frames / 3 - 1)
        sigma = frames / 4 / (2 * math.sqrt(2 * math.log(2)))
        t = np.arange(frames, dtype=np.float32)
        bump = np.exp(-0.5 * ((t - centre) / sigma) ** 2)[:, None]
        colour = ((1.0 - bump) * base + bump * peak).astype(np.float32)[:, None, None, :]
        alpha = _disc(size, cy, cx, r)
        return (alpha[::-1], colour[::-1]) if late else (alpha, colour)
    return actor


def _weave(pattern: str, speed: tuple[float, float] = (0.0, 0.0)) -> Actor:
    def actor(rng, size, frames, s):
        ry, rx, alpha, light, dark = _tile_base(rng, size, frames, s, (26, 34), speed, False)
        py, px = (int(rng.integers(4)) for _ in range(2))
        if pattern == "weave_plain":
            return alpha, (light + dark) / 2
        y, x = ry.astype(int) + py, rx.astype(int) + px
        on = {"weave_diag": (x + y) % 4 < 2, "weave_anti": (x - y) % 4 < 2,
              "weave_grid": (x // 2 + y // 2) % 2 == 0}[pattern]
        return alpha, np.where(on[..., None], light, dark)
    return actor


# ----------------------------------------------------------------------------- the variants
def _classes(table: dict[str, tuple[str, str]]) -> tuple[SynthClass, ...]:
    return tuple(SynthClass(name, needs, text) for name, (needs, text) in table.items())


_EVENTS_CLASSES: dict[str, tuple[str, str]] = {
    "flash_1": ("time", "a dim disc or square flashes bright once"),
    "flash_2": ("time", "the dim actor flashes twice (only the count differs)"),
    "flash_3": ("time", "the dim actor flashes three times"),
    "pulse_early": ("time", "a disc swells to full brightness once, in the first third"),
    "pulse_late": ("time", "the pulse comes in the last third (pulse_early reversed)"),
    "weave_diag": ("detail", "a static tile with diagonal 2-px stripes (period 4)"),
    "weave_anti": ("detail", "a static tile with anti-diagonal 2-px stripes (period 4)"),
    "weave_grid": ("detail", "a static tile with a 2-px checkerboard"),
    "weave_plain": ("detail", "a static flat tile of the same mean colour"),
}
# The same kinds of clip as the default's (the same renderers, smaller), hence the same names.
_CLUTTER_CLASSES: dict[str, tuple[str, str]] = {name: CLASSES[name] for name in DEFAULT_CLASSES}
_TILES = ("stripes_h", "stripes_v", "checker", "plain")
_WEAVES = ("weave_diag", "weave_anti", "weave_grid", "weave_plain")

_DEFAULT = Variant(
    "default", "the benchmark: in-place changes over time, drifting 1-px detail tiles, a quiet scene",
    _classes(CLASSES), SYNTH_VERSION)
_EVENTS = Variant(
    "events", "count flashes, place a pulse in time, tell static period-4 weaves apart",
    _classes(_EVENTS_CLASSES), 1, clip_frames=(24, 24), tile_speed=(0.0, 0.0))
_CLUTTER = Variant(
    "clutter", "the default's 10 classes, smaller, in a busy scene that changes too, varied lengths",
    _classes(_CLUTTER_CLASSES), 1, static_distractors=(6, 10),
    moving_distractors=(2, 4), moving_chance=1.0, moving_speed=(0.5, 2.0), changing_distractors=(1, 2),
    actor_scale=(0.7, 0.85), clip_frames=(12, 40), tiles_stay_in_view=True)

#: The benchmark variants, by name.
VARIANTS: dict[str, Variant] = {v.name: v for v in (_DEFAULT, _EVENTS, _CLUTTER)}

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
    **{name: _tile(name, _DEFAULT.tile_speed, _DEFAULT.tiles_stay_in_view) for name in _TILES},
}
# Each variant's renderers, class by class (its catalogue's names, in its catalogue's order).
_VARIANT_ACTORS: dict[str, dict[str, Actor]] = {
    "default": _ACTORS,
    "events": {
        **{f"flash_{k}": _flash(k) for k in range(1, _MAX_FLASHES + 1)},
        "pulse_early": _pulse(False),
        "pulse_late": _pulse(True),
        **{name: _weave(name, _EVENTS.tile_speed) for name in _WEAVES},
    },
    "clutter": {
        name: _tile(name, _CLUTTER.tile_speed, _CLUTTER.tiles_stay_in_view) if name in _TILES else _ACTORS[name]
        for name in _CLUTTER_CLASSES
    },
}


# ----------------------------------------------------------------------------- the dataset
def clip_seed(seed: int, class_name: str, index: int, variant: str = DEFAULT_VARIANT) -> np.random.SeedSequence:
    """The seed of clip ``index`` of ``class_name``: independent of the other classes and the split.

    A variant other than the default is mixed in, so that two variants' clips of a class name
    they share are unrelated (the default's seeds are those of format version 2)."""
    key = [seed, zlib.crc32(class_name.encode()), index]
    if variant != DEFAULT_VARIANT:
        key.append(zlib.crc32(variant.encode()))
    return np.random.SeedSequence(key)


def make_synthetic_dataset(
    out: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    per_class: int = 80,
    size: int = REFERENCE_SIZE,
    frames: int = DEFAULT_FRAMES,
    seed: int = 0,
    val_fraction: float = 0.25,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    variant: str = DEFAULT_VARIANT,
) -> SynthSummary:
    """Write the benchmark to ``out``: ``train/``, ``val/`` mp4s, the two CSVs, classes.txt, synth.json.

    ``per_class`` clips per class of ``variant`` (default: its default classes), of which
    ``round(per_class * val_fraction)`` go to val. ``frames`` is every clip's source length,
    unless the variant draws its own (then it is checked but ignored; ``synth.json`` records the
    range as ``clip_frames``). Every argument is checked before anything is written. ``workers``
    processes encode in parallel (default: up to 2, the cores this was designed for).
    ``progress`` shows a bar.
    """
    v = get_variant(variant)
    names = check_classes(classes, v)
    _check_geometry(size, frames, v)
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
            jobs.append((name, seed, i, str(root / rel), size, frames, v.name))
    for split in rows:
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)

    # An earlier dataset's lists and record go first: a rewrite cut short never looks complete
    # (its old lists would name clips that are now half this run's).
    for name in ("synth.json", "train.csv", "val.csv", "classes.txt"):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
    start = time.perf_counter()
    run_in_processes(_write_clip, jobs, workers, progress, "synth", chunksize=8, unit="clip")
    # The CSVs come last, so an interrupted run never looks like a complete dataset.
    shortest, longest = v.frame_range(frames)
    meta = synth_record(v.name, names, per_class, size, frames, seed, val_fraction)
    write_text(root / "classes.txt", "".join(f"{n}\n" for n in names))
    write_text(root / "synth.json", json.dumps(meta, indent=1) + "\n")
    for split, lines in rows.items():
        write_text(root / f"{split}.csv", "".join(lines))
    summary = SynthSummary(root, names, n_train * len(names), n_val * len(names), size, longest, seed,
                           time.perf_counter() - start, workers, v.name,
                           None if v.clip_frames is None else (shortest, longest))
    log.info("%s", summary)
    return summary


def synth_record(variant: str, classes: Sequence[str] | None, per_class: int, size: int, frames: int, seed: int,
                 val_fraction: float) -> dict:
    """What ``synth.json`` says of a dataset made with these arguments (``classes`` None: the
    variant's default classes); two datasets with equal records hold the same clips."""
    v = get_variant(variant)
    shortest, longest = v.frame_range(frames)
    meta = {"version": v.version, "variant": v.name, "classes": list(check_classes(classes, v)),
            "per_class": per_class, "size": size, "frames": longest}
    if v.clip_frames is not None:
        meta["clip_frames"] = [shortest, longest]
    meta.update({"seed": seed, "val_fraction": val_fraction, "fps": FPS, "crf": CRF})
    return meta


def read_record(folder: str | os.PathLike) -> dict | None:
    """The ``synth.json`` in ``folder`` (a record from before the variants is the default's: the
    same clips), or None when there is none or it is damaged."""
    try:
        record = json.loads(read_text(Path(folder) / "synth.json", "synth record"))
    except (ConfigError, ValueError, RecursionError):
        return None
    if isinstance(record, dict):
        record.setdefault("variant", DEFAULT_VARIANT)
    return record


def check_classes(classes: Sequence[str] | None, v: Variant) -> tuple[str, ...]:
    """``classes`` of variant ``v`` checked (None: its default classes), or one ConfigError line."""
    if classes is None:
        return v.default_classes
    names = tuple(classes)
    if not names:
        raise ConfigError("no classes given")
    for n in names:
        _actor(v, n)
    if len(set(names)) != len(names):
        raise ConfigError(f"must name each class once, got {', '.join(names)}")
    return names


def _write_clip(job: tuple[str, int, int, str, int, int, str]) -> str:
    """Render and encode one clip (runs in a worker process)."""
    from fluxvit.data.encode import write_video

    name, seed, index, path, size, frames, variant = job
    rng = np.random.default_rng(clip_seed(seed, name, index, variant))
    clip = render_clip(name, rng, size, frames, variant=variant)
    write_video(path, clip, fps=FPS, crf=CRF)
    return path
