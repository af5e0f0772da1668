"""Training augmentation of the official release, on tensors: RandAugment and random erasing.

Both follow the release's ``single_modality/datasets/rand_augment.py`` and ``random_erasing.py``
(timm's AutoAugment and RandomErasing adapted to video): the same random choices in the same
order and with the same distributions, and the same op formulas. Two things differ in machinery:
every random number comes from the ``torch.Generator`` passed in (never Python's ``random`` or
NumPy's global state), so the numbers themselves are not the release's; and the ops work on float
tensors instead of 8-bit PIL images.

* :class:`RandAugment` works on float clips (3, T, H, W) in [0, 1], before normalisation. Which
  ops, whether each fires, its magnitude and its sign are drawn once per clip, so every frame gets
  the identical op, as the release's list-of-frames ``AugmentOp`` does. :func:`parse_rand_augment`
  reads timm strings such as ``rand-m7-n4-mstd0.5-inc1`` (the release's ``--aa``).
* :class:`RandomErasing` works on the normalised clip (3, T, H, W) and, by default, erases the
  same box on every frame (the release's ``cube=True``).

The single-op functions (:func:`auto_contrast` ... :func:`translate_y_rel`) mirror PIL's
``ImageOps`` / ``ImageEnhance`` / ``Image.transform`` on 8-bit images: the lookup-table ops
(posterize, solarize, solarize-add, equalize, autocontrast) quantise to 256 grey levels as PIL's
tables do; the blends and the geometric ops stay in float (PIL truncates each result to 8 bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import torch
import torch.nn.functional as F

from fluxvit.errors import ConfigError
from fluxvit.typecheck import show

ERASING_MODES = ("const", "rand", "pixel")

MAX_LEVEL = 10.0  # RandAugment's magnitude scale: level 10 is the strongest version of each op
FILL = 128 / 255  # the release's _FILL = (128, 128, 128): the colour geometric ops leave behind
OP_PROB = 0.5  # the release's AugmentOp prob: each drawn op fires with this probability

# Limits of a timm string that this module accepts (timm itself has none; larger values are
# surely typos). Magnitudes above 10 are accepted, as in timm, and act as 10 (clipped per op).
MAX_MAGNITUDE = 30
MAX_NUM_OPS = 16
MAX_MAGNITUDE_STD = 10.0

_LUMA = (0.299, 0.587, 0.114)  # PIL's "L" conversion (ITU-R 601-2)


# ----------------------------------------------------------------------------- helpers
def _levels(video: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> the nearest of 256 grey levels, as int64."""
    return (video * 255.0).round().clamp(0, 255).long()


def _apply_lut(video: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map each pixel's grey level through ``lut`` (int levels), back to float in [0, 1].

    ``lut``: (256,) for one table, or (C, T, 256) for one table per channel and frame (PIL builds
    one per band of each image, and every frame is an image).
    """
    c, t, h, w = video.shape
    table = lut.expand(c, t, 256).reshape(c * t, 256)
    out = torch.gather(table, 1, _levels(video).reshape(c * t, h * w))
    return out.reshape(c, t, h, w).to(video.dtype) / 255.0


def _histograms(levels: torch.Tensor) -> torch.Tensor:
    """(C, T, H, W) int levels -> (C, T, 256) pixel counts per channel and frame."""
    c, t = levels.shape[:2]
    flat = levels.reshape(c * t, -1)
    counts = torch.zeros(c * t, 256, dtype=torch.long, device=levels.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    return counts.reshape(c, t, 256)


def _grey(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) -> (1, T, H, W) luma, the weights of PIL's ``convert("L")``."""
    weights = torch.tensor(_LUMA, dtype=video.dtype, device=video.device).view(3, 1, 1, 1)
    return (video * weights).sum(0, keepdim=True)


def _blend(degenerate: torch.Tensor, video: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)``, clipped: 0 gives ``degenerate``, 1 the
    image, above 1 extrapolates away from ``degenerate`` (how every ImageEnhance class works)."""
    return (degenerate + factor * (video - degenerate)).clamp(0.0, 1.0)


def _pil_affine(video: torch.Tensor, matrix: tuple[float, ...]) -> torch.Tensor:
    """PIL's ``img.transform(size, AFFINE, matrix, resample=BILINEAR, fillcolor=FILL)`` on every
    frame: the output pixel centred at (x + 0.5, y + 0.5) reads the input at
    (a x' + b y' + c, d x' + e y' + f) for (x', y') that centre; a point outside the input is
    the fill colour, a point inside is interpolated bilinearly with the edge pixels repeated."""
    a, b, c, d, e, f = matrix
    channels, t, h, w = video.shape
    ys = torch.arange(h, dtype=torch.float64, device=video.device) + 0.5
    xs = torch.arange(w, dtype=torch.float64, device=video.device) + 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    src_x = a * x + b * y + c
    src_y = d * x + e * y + f
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    # grid_sample (align_corners=False) puts pixel i's centre at normalised 2 (i + 0.5) / size - 1
    grid = torch.stack((2.0 * src_x / w - 1.0, 2.0 * src_y / h - 1.0), dim=-1).to(video.dtype)
    frames = video.transpose(0, 1)  # (T, C, H, W): time as the batch
    out = F.grid_sample(frames, grid.expand(t, h, w, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)
    out = torch.where(inside, out, torch.full_like(out, FILL))
    return out.transpose(0, 1).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- the ops
def auto_contrast(video: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.autocontrast``: per frame and channel, stretch the darkest level lo to 0 and
    the lightest hi to 255 (level v -> int((v - lo) * 255 / (hi - lo))); a flat band is kept."""
    levels = torch.arange(256, dtype=torch.float64, device=video.device)
    q = _levels(video)
    lo = q.amin(dim=(2, 3), keepdim=True).squeeze(-1).double()  # (C, T, 1)
    hi = q.amax(dim=(2, 3), keepdim=True).squeeze(-1).double()
    scale = 255.0 / (hi - lo).clamp_min(1.0)
    stretched = (levels * scale - lo * scale).trunc().clamp(0, 255).long()  # (C, T, 256)
    lut = torch.where(hi > lo, stretched, levels.long())
    return _apply_lut(video, lut)


def equalize(video: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize``: per frame and channel, level i -> (step // 2 + pixels below i)
    // step with step = (pixels - pixels of the top level) // 255; kept as is when step is 0."""
    hist = _histograms(_levels(video))  # (C, T, 256)
    total = hist.sum(-1, keepdim=True)
    top = hist.shape[-1] - 1 - (hist.flip(-1) > 0).long().argmax(-1, keepdim=True)  # highest used level
    step = (total - hist.gather(-1, top)) // 255
    below = hist.cumsum(-1) - hist
    lut = ((step // 2 + below) // step.clamp_min(1)).clamp(0, 255)
    identity = torch.arange(256, device=video.device).expand_as(lut)
    return _apply_lut(video, torch.where(step > 0, lut, identity))


def invert(video: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.invert``: 255 - v, i.e. 1 - x."""
    return 1.0 - video


def posterize(video: torch.Tensor, bits: int) -> torch.Tensor:
    """PIL's ``ImageOps.posterize``: keep the top ``bits`` bits of each level; 8 or more bits leave
    the clip unchanged, as the release's wrapper does. 0 bits gives black, as the Pillow of the
    release's day did (recent Pillow, 13 here, refuses 0; the increasing set asks for it at level 10)."""
    if bits >= 8:
        return video.clone()
    mask = ~(2 ** (8 - bits) - 1)
    return _apply_lut(video, torch.arange(256, device=video.device) & mask)


def solarize(video: torch.Tensor, thresh: int) -> torch.Tensor:
    """PIL's ``ImageOps.solarize``: levels at or above ``thresh`` become 255 - v (256: none)."""
    levels = torch.arange(256, device=video.device)
    return _apply_lut(video, torch.where(levels < thresh, levels, 255 - levels))


def solarize_add(video: torch.Tensor, add: int, thresh: int = 128) -> torch.Tensor:
    """The release's ``solarize_add``: levels below ``thresh`` get ``add`` more, capped at 255."""
    levels = torch.arange(256, device=video.device)
    return _apply_lut(video, torch.where(levels < thresh, (levels + add).clamp(max=255), levels))


def color(video: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance.Color``: blend with the grey (luma) version of each pixel."""
    return _blend(_grey(video).expand_as(video), video, factor)


def contrast(video: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance.Contrast``: blend with a flat frame of the frame's mean luma, rounded
    to a grey level as PIL does (``int(mean + 0.5)``); each frame uses its own mean."""
    mean = _grey(video).mean(dim=(2, 3), keepdim=True)  # (1, T, 1, 1)
    mean = torch.floor(mean * 255.0 + 0.5) / 255.0
    return _blend(mean.expand_as(video), video, factor)


def brightness(video: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance.Brightness``: blend with black, i.e. scale by ``factor``, clipped."""
    return _blend(torch.zeros_like(video), video, factor)


def sharpness(video: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance.Sharpness``: blend with ``ImageFilter.SMOOTH`` (3x3 kernel
    [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13), which leaves the one-pixel border unfiltered."""
    c, t, h, w = video.shape
    kernel = torch.ones(3, 3, dtype=video.dtype, device=video.device)
    kernel[1, 1] = 5.0
    frames = video.reshape(c * t, 1, h, w)
    smooth = frames.clone()
    if h > 2 and w > 2:
        smooth[:, :, 1:-1, 1:-1] = F.conv2d(frames, kernel.view(1, 1, 3, 3) / 13.0)
    return _blend(smooth.reshape(c, t, h, w), video, factor)


def rotate(video: torch.Tensor, degrees: float) -> torch.Tensor:
    """PIL's ``img.rotate(degrees)``: counter-clockwise about the frame centre (w / 2, h / 2),
    same size, corners filled with :data:`FILL`; PIL's own matrix, rounded as PIL rounds it."""
    degrees = degrees % 360.0
    if degrees == 0.0:
        return video.clone()
    h, w = video.shape[-2:]
    cx, cy = w / 2.0, h / 2.0
    angle = -math.radians(degrees)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = -b, a
    # output (x, y) -> input: rotate about the centre, (x - cx, y - cy) -> matrix -> + (cx, cy)
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return _pil_affine(video, (a, b, c, d, e, f))


def shear_x(video: torch.Tensor, factor: float) -> torch.Tensor:
    """The release's ``shear_x``: AFFINE (1, factor, 0, 0, 1, 0), output (x, y) reads (x + factor y, y)."""
    return _pil_affine(video, (1.0, factor, 0.0, 0.0, 1.0, 0.0))


def shear_y(video: torch.Tensor, factor: float) -> torch.Tensor:
    """The release's ``shear_y``: AFFINE (1, 0, 0, factor, 1, 0), output (x, y) reads (x, y + factor x)."""
    return _pil_affine(video, (1.0, 0.0, 0.0, factor, 1.0, 0.0))


def translate_x_rel(video: torch.Tensor, pct: float) -> torch.Tensor:
    """The release's ``translate_x_rel``: output (x, y) reads (x + pct * width, y)."""
    return _pil_affine(video, (1.0, 0.0, pct * video.shape[-1], 0.0, 1.0, 0.0))


def translate_y_rel(video: torch.Tensor, pct: float) -> torch.Tensor:
    """The release's ``translate_y_rel``: output (x, y) reads (x, y + pct * height)."""
    return _pil_affine(video, (1.0, 0.0, 0.0, 0.0, 1.0, pct * video.shape[-2]))


# ----------------------------------------------------------------------------- level -> argument
# Each takes the op's magnitude (0..10) and the generator (for the random sign of symmetric ops)
# and returns the op's arguments, with the release's formulas.
def _uniform(generator: torch.Generator) -> float:
    """One draw of U[0, 1) from ``generator``."""
    return float(torch.rand((), generator=generator, device=generator.device))


def _normal(generator: torch.Generator) -> float:
    """One draw of N(0, 1) from ``generator``."""
    return float(torch.randn((), generator=generator, device=generator.device))


def _random_sign(value: float, generator: torch.Generator) -> float:
    """``value`` negated with probability 0.5 (the release's ``_randomly_negate``)."""
    return -value if _uniform(generator) > 0.5 else value


def _rotate_arg(level: float, g: torch.Generator) -> tuple[float]:
    return (_random_sign(level / MAX_LEVEL * 30.0, g),)  # degrees in [-30, 30]


def _enhance_arg(level: float, g: torch.Generator) -> tuple[float]:
    return (level / MAX_LEVEL * 1.8 + 0.1,)  # factor in [0.1, 1.9], 1 (no change) at level 5


def _enhance_increasing_arg(level: float, g: torch.Generator) -> tuple[float]:
    return (1.0 + _random_sign(level / MAX_LEVEL * 0.9, g),)  # factor 1 -/+ up to 0.9


def _shear_arg(level: float, g: torch.Generator) -> tuple[float]:
    return (_random_sign(level / MAX_LEVEL * 0.3, g),)


def _translate_rel_arg(level: float, g: torch.Generator) -> tuple[float]:
    return (_random_sign(level / MAX_LEVEL * 0.45, g),)  # share of the frame size


def _posterize_arg(level: float, g: torch.Generator) -> tuple[int]:
    return (int(level / MAX_LEVEL * 4),)  # bits kept: 0 (level 0) .. 4 (level 10)


def _posterize_increasing_arg(level: float, g: torch.Generator) -> tuple[int]:
    return (4 - _posterize_arg(level, g)[0],)  # bits kept: 4 .. 0, stronger with the level


def _solarize_arg(level: float, g: torch.Generator) -> tuple[int]:
    return (int(level / MAX_LEVEL * 256),)  # threshold: 0 (all inverted) .. 256 (none)


def _solarize_increasing_arg(level: float, g: torch.Generator) -> tuple[int]:
    return (256 - _solarize_arg(level, g)[0],)


def _solarize_add_arg(level: float, g: torch.Generator) -> tuple[int]:
    return (int(level / MAX_LEVEL * 110),)  # added to levels below 128


def _no_arg(level: float, g: torch.Generator) -> tuple[()]:
    return ()


# name -> (op, level -> arguments): the release's NAME_TO_OP and LEVEL_TO_ARG in one table.
OPS: dict[str, tuple[Callable[..., torch.Tensor], Callable[[float, torch.Generator], tuple]]] = {
    "AutoContrast": (auto_contrast, _no_arg),
    "Equalize": (equalize, _no_arg),
    "Invert": (invert, _no_arg),
    "Rotate": (rotate, _rotate_arg),
    "Posterize": (posterize, _posterize_arg),
    "PosterizeIncreasing": (posterize, _posterize_increasing_arg),
    "Solarize": (solarize, _solarize_arg),
    "SolarizeIncreasing": (solarize, _solarize_increasing_arg),
    "SolarizeAdd": (solarize_add, _solarize_add_arg),
    "Color": (color, _enhance_arg),
    "ColorIncreasing": (color, _enhance_increasing_arg),
    "Contrast": (contrast, _enhance_arg),
    "ContrastIncreasing": (contrast, _enhance_increasing_arg),
    "Brightness": (brightness, _enhance_arg),
    "BrightnessIncreasing": (brightness, _enhance_increasing_arg),
    "Sharpness": (sharpness, _enhance_arg),
    "SharpnessIncreasing": (sharpness, _enhance_increasing_arg),
    "ShearX": (shear_x, _shear_arg),
    "ShearY": (shear_y, _shear_arg),
    "TranslateXRel": (translate_x_rel, _translate_rel_arg),
    "TranslateYRel": (translate_y_rel, _translate_rel_arg),
}

# The release's _RAND_TRANSFORMS (inc0) and _RAND_INCREASING_TRANSFORMS (inc1), in its order.
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
            "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
            "TranslateYRel")
_INCREASING = ("Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness")
RAND_INCREASING_OPS = tuple(name + "Increasing" if name in _INCREASING else name for name in RAND_OPS)

# The release's _RAND_CHOICE_WEIGHTS_0 (timm's "w0"). The release looks them up by position in
# RAND_OPS even for the increasing set; keying an increasing op by its plain name is the same.
RAND_CHOICE_WEIGHTS = {
    "Rotate": 0.3, "ShearX": 0.2, "ShearY": 0.2, "TranslateXRel": 0.1, "TranslateYRel": 0.1,
    "Color": 0.025, "Sharpness": 0.025, "AutoContrast": 0.025, "Solarize": 0.005, "SolarizeAdd": 0.005,
    "Contrast": 0.005, "Brightness": 0.005, "Equalize": 0.005, "Posterize": 0.0, "Invert": 0.0,
}
_WEIGHTED_OPS = sum(1 for v in RAND_CHOICE_WEIGHTS.values() if v > 0)  # most ops a weighted draw can pick


def _check_clip(video: torch.Tensor, what: str) -> None:
    """One ConfigError line unless ``video`` is a float (3, T, H, W) tensor."""
    if not isinstance(video, torch.Tensor) or not video.is_floating_point() or video.ndim != 4 \
            or video.shape[0] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        dtype = f"{video.dtype} " if isinstance(video, torch.Tensor) else ""
        raise ConfigError(f"{what} expects a float clip (3, T, H, W), got {dtype}{shape}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _format_number(value: float) -> str:
    """``value`` in plain decimal notation, the shortest that reads back as the same float."""
    text = format(Decimal(repr(float(value))), "f")
    return text[:-2] if text.endswith(".0") else text


# ----------------------------------------------------------------------------- RandAugment
@dataclass(frozen=True)
class RandAugment:
    """The release's RandAugment (timm's ``rand_augment_transform``) on a whole clip.

    Per clip: ``num_ops`` op names are drawn from :data:`RAND_OPS` (``increasing``:
    :data:`RAND_INCREASING_OPS`), uniformly with replacement, or, when ``weighted`` (timm's
    ``w0``), by :data:`RAND_CHOICE_WEIGHTS` without replacement. Each then fires with probability
    :data:`OP_PROB`; a firing op's magnitude is ``magnitude`` plus N(0, ``magnitude_std``) noise,
    clipped to [0, 10], and symmetric ops take a random sign. Every draw is made once per clip,
    from the generator alone, so all frames get the identical op.

    Geometric ops interpolate bilinearly; the release's recipe asks for bicubic (its
    ``--train_interpolation`` default), which PIL and torch define differently (kernel a = -0.5
    vs -0.75), so this module uses bilinear, the interpolation the two agree on exactly.
    """

    num_ops: int = 2
    magnitude: int = 10
    magnitude_std: float = 0.0
    increasing: bool = False
    weighted: bool = False

    def __post_init__(self) -> None:
        if not _is_int(self.num_ops) or not 0 <= self.num_ops <= MAX_NUM_OPS:
            raise ConfigError(f"rand_augment num_ops must be an integer in 0..{MAX_NUM_OPS}, got {self.num_ops!r}")
        if self.weighted and self.num_ops > _WEIGHTED_OPS:
            raise ConfigError(f"rand_augment with weights draws without replacement from {_WEIGHTED_OPS} ops, "
                              f"so num_ops must be at most {_WEIGHTED_OPS}, got {self.num_ops}")
        if not _is_int(self.magnitude) or not 0 <= self.magnitude <= MAX_MAGNITUDE:
            raise ConfigError(f"rand_augment magnitude must be an integer in 0..{MAX_MAGNITUDE} (above 10 acts "
                              f"as 10), got {self.magnitude!r}")
        std = self.magnitude_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0.0 <= std <= MAX_MAGNITUDE_STD:
            raise ConfigError(f"rand_augment magnitude_std must be a number in 0..{MAX_MAGNITUDE_STD:g}, got {std!r}")
        for name in ("increasing", "weighted"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"rand_augment {name} must be true or false, got {getattr(self, name)!r}")

    @property
    def ops(self) -> tuple[str, ...]:
        """The op names this RandAugment draws from."""
        return RAND_INCREASING_OPS if self.increasing else RAND_OPS

    def __str__(self) -> str:
        """The timm string, e.g. ``rand-m7-n4-mstd0.5-inc1``; :func:`parse_rand_augment` reads it back."""
        parts = ["rand", f"m{self.magnitude}", f"n{self.num_ops}"]
        if self.magnitude_std:
            parts.append(f"mstd{_format_number(self.magnitude_std)}")
        if self.increasing:
            parts.append("inc1")
        if self.weighted:
            parts.append("w0")
        return "-".join(parts)

    def draw_ops(self, generator: torch.Generator) -> list[str]:
        """The ``num_ops`` op names for one clip (before each op's own coin flip)."""
        names = self.ops
        if self.num_ops == 0:
            return []
        if self.weighted:
            plain = [name.removesuffix("Increasing") for name in names]
            weights = torch.tensor([RAND_CHOICE_WEIGHTS[n] for n in plain], dtype=torch.float64,
                                   device=generator.device)
            picks = torch.multinomial(weights, self.num_ops, replacement=False, generator=generator)
        else:
            picks = torch.randint(len(names), (self.num_ops,), generator=generator, device=generator.device)
        return [names[i] for i in picks.tolist()]

    def __call__(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment float (3, T, H, W) in [0, 1]; returns a new tensor (the input is never modified)."""
        return self.frozen(generator)(video)

    def frozen(self, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
        """One clip's draws (which ops fire, at which levels and signs), made now, as a function
        of float (3, T, H, W) clips. Every op works frame by frame, so a clip may be augmented in
        parts of its frames (bounding the memory of large frames) with the same result."""
        steps = []
        for name in self.draw_ops(generator):
            if _uniform(generator) >= OP_PROB:
                continue  # this op does not fire on this clip
            level = float(self.magnitude)
            if self.magnitude_std > 0:
                level += self.magnitude_std * _normal(generator)
            level = min(MAX_LEVEL, max(0.0, level))
            op, level_to_arg = OPS[name]
            steps.append((op, level_to_arg(level, generator)))

        def apply(video: torch.Tensor) -> torch.Tensor:
            _check_clip(video, "RandAugment")
            out = video
            for op, args in steps:
                out = op(out, *args)
            return out.clone() if out is video else out

        return apply


_SECTIONS = ("m", "n", "mstd", "inc", "w")


def parse_rand_augment(text: str) -> RandAugment:
    """A :class:`RandAugment` from a timm string ``rand-<section>-<section>...``.

    Sections (any order, each at most once): ``m<int>`` magnitude (default 10), ``n<int>`` ops
    per clip (default 2), ``mstd<float>`` magnitude std (default 0), ``inc0`` / ``inc1`` the
    increasing op set, ``w0`` the release's op-choice weights. Anything else raises one
    :class:`ConfigError` line naming the text and the problem.

    One reading differs from the release: its ``inc`` tests the text after ``inc`` for being
    non-empty, so there ``inc0`` picks the increasing set too; here ``inc0`` means the plain set.
    """
    if not isinstance(text, str):
        raise ConfigError(f"rand_augment must be a string such as 'rand-m7-n4-mstd0.5-inc1', got {show(text)}")

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"rand_augment {show(text)}: {problem}")

    head, *sections = text.split("-")
    if head != "rand":
        raise fail("must start with 'rand' (e.g. 'rand-m7-n4-mstd0.5-inc1')")
    values: dict[str, str] = {}
    for section in sections:
        if not section:
            raise fail("empty section (two dashes in a row, or a dash at the end)")
        key = section.rstrip("0123456789.")
        value = section[len(key):]
        if key not in _SECTIONS:
            raise fail(f"unknown section {section!r} (known: {', '.join(_SECTIONS)})")
        if key in values:
            raise fail(f"section {key!r} given twice")
        values[key] = value

    def number(key: str, kind: type) -> int | float | None:
        if key not in values:
            return None
        raw = values[key]
        try:
            if kind is int and not raw.isdigit():
                raise ValueError
            return kind(raw)
        except ValueError:
            word = "an integer" if kind is int else "a number"
            raise fail(f"section {key + raw!r} needs {word} after {key!r}") from None

    magnitude, num_ops, std = number("m", int), number("n", int), number("mstd", float)
    if magnitude is not None and magnitude > MAX_MAGNITUDE:
        raise fail(f"magnitude m{magnitude} is above {MAX_MAGNITUDE}")
    if num_ops is not None and num_ops > MAX_NUM_OPS:
        raise fail(f"n{num_ops} ops per clip is above {MAX_NUM_OPS}")
    if std is not None and std > MAX_MAGNITUDE_STD:
        raise fail(f"mstd{values['mstd']} is above {MAX_MAGNITUDE_STD:g}")
    if values.get("inc", "0") not in ("0", "1"):
        raise fail(f"inc must be inc0 or inc1, got 'inc{values['inc']}'")
    if values.get("w", "0") != "0":
        raise fail(f"only weights w0 exist, got 'w{values['w']}'")
    weighted = "w" in values
    num_ops = 2 if num_ops is None else num_ops
    if weighted and num_ops > _WEIGHTED_OPS:
        raise fail(f"w0 draws without replacement from {_WEIGHTED_OPS} ops, so n{num_ops} is too many")
    return RandAugment(
        num_ops=num_ops,
        magnitude=10 if magnitude is None else magnitude,
        magnitude_std=0.0 if std is None else std,
        increasing=values.get("inc") == "1",
        weighted=weighted,
    )


# ----------------------------------------------------------------------------- random erasing
@dataclass(frozen=True)
class RandomErasing:
    """The release's ``RandomErasing`` on a normalised clip (3, T, H, W).

    With probability ``prob`` it erases ``count`` boxes. Each box: up to 100 tries of an area share
    uniform in [``min_area``, ``max_area``] / ``count`` of the frame and an aspect (height / width)
    log-uniform in [``min_aspect``, 1 / ``min_aspect``]; h = round(sqrt(area * aspect)), w =
    round(sqrt(area / aspect)); the first try smaller than the frame (h < H, w < W) is placed at
    a uniform top-left. Fill (``mode``): ``const`` zeros (the mean colour, once normalised),
    ``rand`` one N(0, 1) colour per channel, ``pixel`` N(0, 1) per pixel.

    ``per_clip`` (the release's ``cube=True``): one coin and the same boxes for every frame; the
    fill is still drawn afresh for each frame, as the release does (so ``rand`` gives each frame
    its own colour). ``per_clip=False`` is the release's per-frame path: each frame flips its own
    coin and draws its own boxes, with 10 tries a box as there.
    """

    prob: float
    mode: str = "pixel"
    count: int = 1
    per_clip: bool = True
    min_area: float = 0.02
    max_area: float = 1 / 3
    min_aspect: float = 0.3

    def __post_init__(self) -> None:
        def is_number(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        if not is_number(self.prob) or not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"random erasing prob must be in [0, 1], got {self.prob!r}")
        if self.mode not in ERASING_MODES:
            raise ConfigError(f"random erasing mode {self.mode!r} is not one of {', '.join(ERASING_MODES)}")
        if not _is_int(self.count) or self.count < 1:
            raise ConfigError(f"random erasing count must be an integer >= 1, got {self.count!r}")
        if not isinstance(self.per_clip, bool):
            raise ConfigError(f"random erasing per_clip must be true or false, got {self.per_clip!r}")
        if not (is_number(self.min_area) and is_number(self.max_area) and 0.0 < self.min_area <= self.max_area <= 1.0):
            raise ConfigError(f"random erasing areas need 0 < min_area <= max_area <= 1, got "
                              f"{self.min_area!r} and {self.max_area!r}")
        if not is_number(self.min_aspect) or not 0.0 < self.min_aspect <= 1.0:
            raise ConfigError(f"random erasing min_aspect must be in (0, 1], got {self.min_aspect!r}")

    def draw_box(self, height: int, width: int, generator: torch.Generator,
                 tries: int = 100) -> tuple[int, int, int, int] | None:
        """One box (top, left, h, w) in a ``height`` x ``width`` frame, or None when every try
        was too large."""
        log_lo, log_hi = math.log(self.min_aspect), -math.log(self.min_aspect)
        for _ in range(tries):
            share = self.min_area + (self.max_area - self.min_area) * _uniform(generator)
            area = share * height * width / self.count
            aspect = math.exp(log_lo + (log_hi - log_lo) * _uniform(generator))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                top = int(torch.randint(height - h + 1, (), generator=generator, device=generator.device))
                left = int(torch.randint(width - w + 1, (), generator=generator, device=generator.device))
                return top, left, h, w
        return None

    def _fill(self, frames: int, h: int, w: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The erasing values for one box on ``frames`` frames, broadcastable to (3, frames, h, w)."""
        if self.mode == "const":
            return torch.zeros(3, 1, 1, 1, dtype=like.dtype, device=like.device)
        shape = (3, frames, h, w) if self.mode == "pixel" else (3, frames, 1, 1)
        noise = torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device)
        return noise.to(like.device)

    def _erase(self, out: torch.Tensor, generator: torch.Generator, tries: int) -> None:
        """Flip the coin and erase ``count`` boxes in ``out`` (3, T, H, W), in place, on all its frames."""
        if _uniform(generator) >= self.prob:
            return
        frames, height, width = out.shape[1:]
        for _ in range(self.count):
            box = self.draw_box(height, width, generator, tries)
            if box is not None:
                top, left, h, w = box
                out[:, :, top:top + h, left:left + w] = self._fill(frames, h, w, out, generator)

    def __call__(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Erase boxes of the normalised clip (3, T, H, W); returns a new tensor."""
        _check_clip(video, "RandomErasing")
        out = video.clone()
        if self.per_clip:
            self._erase(out, generator, tries=100)
        else:
            for t in range(out.shape[1]):
                self._erase(out[:, t:t + 1], generator, tries=10)
        return out
