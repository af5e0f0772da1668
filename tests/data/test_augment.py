"""RandAugment and random erasing: the release's semantics, clip consistency, and PIL's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from fluxvit.data import augment as A
from fluxvit.data.augment import RandAugment, RandomErasing, parse_rand_augment
from fluxvit.errors import ConfigError

# The release's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, written out independently.
RELEASE_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
               "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
               "TranslateYRel"]
RELEASE_INCREASING_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                          "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                          "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                          "TranslateYRel"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def still_clip(t: int = 4, h: int = 24, w: int = 28, lo: float = 0.0, hi: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(3, T, H, W) float on the 8-bit grid, every frame the same random picture in [lo, hi]."""
    levels = torch.randint(round(lo * 255), round(hi * 255) + 1, (3, 1, h, w), generator=gen(seed))
    return (levels.float() / 255.0).expand(3, t, h, w).contiguous()


# ----------------------------------------------------------------------------- the parser
def test_parse_the_release_recipe():
    ra = parse_rand_augment("rand-m7-n4-mstd0.5-inc1")
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.increasing, ra.weighted) == (7, 4, 0.5, True, False)
    assert list(ra.ops) == RELEASE_INCREASING_OPS


def test_parse_defaults_and_plain_set():
    assert parse_rand_augment("rand") == RandAugment(num_ops=2, magnitude=10, magnitude_std=0.0,
                                                     increasing=False, weighted=False)
    assert list(parse_rand_augment("rand-m9").ops) == RELEASE_OPS
    assert parse_rand_augment("rand-inc0").increasing is False
    # sections in any order
    assert parse_rand_augment("rand-inc1-n3-m5") == RandAugment(3, 5, 0.0, True, False)


def test_parse_weights():
    ra = parse_rand_augment("rand-m9-n3-w0")
    assert ra.weighted and ra.num_ops == 3 and ra.magnitude == 9


@pytest.mark.parametrize("text", ["rand-m7-n4-mstd0.5-inc1", "rand-m10-n2", "rand-m9-n3-mstd1-w0",
                                  "rand-m0-n0", "rand-m30-n16-mstd0.0001-inc1"])
def test_string_round_trip(text):
    ra = parse_rand_augment(text)
    assert str(ra) == text
    assert parse_rand_augment(str(ra)) == ra


def test_str_of_a_built_one_reads_back():
    for ra in (RandAugment(3, 7, 0.125, True, True), RandAugment(1, 2, 2.5), RandAugment(magnitude_std=1e-7)):
        assert parse_rand_augment(str(ra)) == ra


@pytest.mark.parametrize("text, words", [
    ("rand-m7-x4", "unknown section 'x4' (known: m, n, mstd, inc, w)"),
    ("augmix-m5", "must start with 'rand'"),
    ("", "must start with 'rand'"),
    ("rand-m", "needs an integer"),
    ("rand-m7.5", "needs an integer"),
    ("rand-n2.0", "needs an integer"),
    ("rand-mstd.", "needs a number"),
    ("rand-mstd0.5.1", "needs a number"),
    ("rand-m31", "above 30"),
    ("rand-n17", "above 16"),
    ("rand-mstd11", "above 10"),
    ("rand-inc2", "inc0 or inc1"),
    ("rand-w1", "only weights w0"),
    ("rand-n14-w0", "too many"),
    ("rand-m7-m8", "given twice"),
    ("rand--m7", "empty section"),
    ("rand-m7-", "empty section"),
    ("rand-m7x", "unknown section"),
])
def test_bad_strings_raise_one_line(text, words):
    with pytest.raises(ConfigError) as err:
        parse_rand_augment(text)
    message = str(err.value)
    assert repr(text) in message and words in message and "\n" not in message


@pytest.mark.parametrize("kwargs", [dict(num_ops=-1), dict(num_ops=17), dict(num_ops=1.0), dict(magnitude=31),
                                    dict(magnitude=-1), dict(magnitude=7.5), dict(magnitude_std=-0.1),
                                    dict(magnitude_std=10.5), dict(increasing=1), dict(weighted=True, num_ops=14)])
def test_bad_fields_raise(kwargs):
    with pytest.raises(ConfigError):
        RandAugment(**kwargs)


def test_not_a_string_or_not_a_clip():
    with pytest.raises(ConfigError, match="must be a string"):
        parse_rand_augment(7)
    with pytest.raises(ConfigError, match=r"float clip \(3, T, H, W\)"):
        RandAugment()(torch.zeros(4, 2, 8, 8), gen(0))
    with pytest.raises(ConfigError, match=r"float clip"):
        RandAugment()(torch.zeros(3, 2, 8, 8, dtype=torch.uint8), gen(0))


# ----------------------------------------------------------------------------- RandAugment draws
@pytest.mark.parametrize("text", ["rand-m7-n4-mstd0.5-inc1", "rand-m9-n3-mstd1-w0", "rand-m10-n4"])
def test_every_frame_gets_the_same_ops(text):
    ra = parse_rand_augment(text)
    clip = still_clip()
    changed = 0
    for seed in range(40):
        out = ra(clip, gen(seed))
        assert out.shape == clip.shape
        assert torch.equal(out, out[:, :1].expand_as(out)), f"seed {seed}: frames differ"
        assert out.min() >= 0.0 and out.max() <= 1.0
        changed += not torch.equal(out, clip)
    assert changed > 20  # the test is not vacuous: most clips were augmented


def test_same_seed_same_output_other_seed_other_output():
    ra = parse_rand_augment("rand-m7-n4-mstd0.5-inc1")
    clip = still_clip()
    assert torch.equal(ra(clip, gen(3)), ra(clip, gen(3)))
    outs = [ra(clip, gen(seed)) for seed in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_input_is_not_modified_and_output_is_new():
    ra = RandAugment(num_ops=0)
    clip = still_clip()
    before = clip.clone()
    out = ra(clip, gen(0))
    assert torch.equal(out, clip) and out.data_ptr() != clip.data_ptr()
    parse_rand_augment("rand-m9-n4")(clip, gen(1))
    assert torch.equal(clip, before)


def test_each_op_fires_half_of_the_time():
    # inc1 at m9: every op of the set changes a picture in [0.2, 0.8] when it fires (the plain set
    # would not: Solarize at threshold 230 or AutoContrast on a full-range picture do nothing).
    ra = parse_rand_augment("rand-m9-n1-inc1")
    clip = still_clip(t=2, h=12, w=14, lo=0.2, hi=0.8)
    trials = 400
    unchanged = sum(torch.equal(ra(clip, gen(seed)), clip) for seed in range(trials))
    assert abs(unchanged - trials / 2) <= 40  # 4 standard deviations of Binomial(400, 0.5)


def test_uniform_choice_is_with_replacement():
    ra = RandAugment(num_ops=4)
    draws = [ra.draw_ops(gen(seed)) for seed in range(60)]
    assert all(len(d) == 4 and set(d) <= set(RELEASE_OPS) for d in draws)
    # P(no repeat in 4 of 15) = 0.65, so 60 clips without one would be a 1e-11 event
    assert any(len(set(d)) < 4 for d in draws)
    assert len({name for d in draws for name in d}) == 15


def test_weighted_choice_is_without_replacement_by_the_release_weights():
    full = RandAugment(num_ops=13, weighted=True, increasing=True)
    for seed in range(20):
        picked = full.draw_ops(gen(seed))
        # the 13 ops of non-zero weight, each once; Posterize and Invert weigh 0
        assert sorted(picked) == sorted(set(RELEASE_INCREASING_OPS) - {"PosterizeIncreasing", "Invert"})
    one = RandAugment(num_ops=1, weighted=True)
    trials = 2000
    firsts = [one.draw_ops(gen(seed))[0] for seed in range(trials)]
    assert abs(firsts.count("Rotate") / trials - 0.3) < 0.05  # sd 0.01
    assert abs(firsts.count("ShearX") / trials - 0.2) < 0.05


def test_levels_to_arguments_follow_the_release():
    g = gen(0)

    def args(name, level):
        return A.OPS[name][1](level, g)

    assert args("Posterize", 7) == (2,) and args("PosterizeIncreasing", 7) == (2,)
    assert args("Posterize", 10) == (4,) and args("PosterizeIncreasing", 10) == (0,)
    assert args("Solarize", 7) == (179,) and args("SolarizeIncreasing", 7) == (77,)
    assert args("SolarizeAdd", 7) == (77,) and args("SolarizeAdd", 10) == (110,)
    assert args("Color", 7)[0] == pytest.approx(1.36) and args("Sharpness", 0)[0] == pytest.approx(0.1)
    assert args("AutoContrast", 7) == () and args("Equalize", 3) == () and args("Invert", 9) == ()
    symmetric = {"Rotate": 21.0, "ShearX": 0.21, "ShearY": 0.21, "TranslateXRel": 0.315, "TranslateYRel": 0.315}
    for name, size in symmetric.items():
        values = {round(args(name, 7)[0], 9) for _ in range(40)}
        assert values == {size, -size}, name
    increasing = {round(args("ContrastIncreasing", 7)[0], 9) for _ in range(40)}
    assert increasing == {0.37, 1.63}
    negative = sum(args("Rotate", 5)[0] < 0 for _ in range(400))
    assert abs(negative - 200) <= 40  # the sign is a fair coin (4 sd of Binomial(400, 0.5))


def test_magnitudes_above_ten_act_as_ten():
    # Solarize at level 10 has threshold 256 and leaves every picture alone; at level 7 (threshold
    # 179) it changes a full-range picture. So m10 and m30 never change a clip whose one op is
    # Solarize, while m7 does whenever the op fires.
    clip = still_clip()
    for magnitude, changes in ((10, False), (30, False), (7, True)):
        ra = RandAugment(num_ops=1, magnitude=magnitude)
        seeds = [seed for seed in range(300) if ra.draw_ops(gen(seed)) == ["Solarize"]]
        assert len(seeds) >= 8
        changed = [not torch.equal(ra(clip, gen(seed)), clip) for seed in seeds]
        assert any(changed) == changes, magnitude


# ----------------------------------------------------------------------------- the ops against PIL
FILL = (128, 128, 128)
BILINEAR = Image.BILINEAR


def _affine(matrix):
    return lambda im: im.transform(im.size, Image.AFFINE, matrix, resample=BILINEAR, fillcolor=FILL)


# name: (our op on a (3, 1, H, W) clip, PIL on the RGB frame, largest mean |difference| in grey levels)
# Measured on 32x40 frames (uniform noise and a noisy gradient): the lookup-table ops match exactly
# (0.000), as does contrast at factor 0 (a flat frame of the rounded mean luma); the blends differ by
# mean 0.25-0.48, max 1.25 levels, and the geometric ops by mean 0.36-0.45, max 1.0 (rotate by 180
# and whole-pixel translation: 0). PIL truncates every result to 8 bits (the signed mean is
# +0.25..+0.45: PIL is the darker one) and rounds "L" to a level; this module stays in float.
W, H = 40, 32
PIL_CASES = {
    "auto_contrast": (A.auto_contrast, ImageOps.autocontrast, 0.0),
    "equalize": (A.equalize, ImageOps.equalize, 0.0),
    "invert": (A.invert, ImageOps.invert, 0.0),
    "posterize2": (lambda v: A.posterize(v, 2), lambda im: ImageOps.posterize(im, 2), 0.0),
    "posterize4": (lambda v: A.posterize(v, 4), lambda im: ImageOps.posterize(im, 4), 0.0),
    "posterize0": (lambda v: A.posterize(v, 0), lambda im: im.point([0] * 768), 0.0),  # Pillow 13 refuses 0
    "solarize100": (lambda v: A.solarize(v, 100), lambda im: ImageOps.solarize(im, 100), 0.0),
    "solarize_add60": (lambda v: A.solarize_add(v, 60),
                       lambda im: im.point([min(255, i + 60) if i < 128 else i for i in range(256)] * 3), 0.0),
    "color0.3": (lambda v: A.color(v, 0.3), lambda im: ImageEnhance.Color(im).enhance(0.3), 0.6),
    "color1.7": (lambda v: A.color(v, 1.7), lambda im: ImageEnhance.Color(im).enhance(1.7), 0.6),
    "contrast0": (lambda v: A.contrast(v, 0.0), lambda im: ImageEnhance.Contrast(im).enhance(0.0), 0.0),
    "contrast0.3": (lambda v: A.contrast(v, 0.3), lambda im: ImageEnhance.Contrast(im).enhance(0.3), 0.6),
    "contrast1.7": (lambda v: A.contrast(v, 1.7), lambda im: ImageEnhance.Contrast(im).enhance(1.7), 0.6),
    "brightness0.4": (lambda v: A.brightness(v, 0.4), lambda im: ImageEnhance.Brightness(im).enhance(0.4), 0.6),
    "brightness1.6": (lambda v: A.brightness(v, 1.6), lambda im: ImageEnhance.Brightness(im).enhance(1.6), 0.6),
    "sharpness0.2": (lambda v: A.sharpness(v, 0.2), lambda im: ImageEnhance.Sharpness(im).enhance(0.2), 0.6),
    "sharpness1.8": (lambda v: A.sharpness(v, 1.8), lambda im: ImageEnhance.Sharpness(im).enhance(1.8), 0.6),
    "rotate23": (lambda v: A.rotate(v, 23.0), lambda im: im.rotate(23.0, resample=BILINEAR, fillcolor=FILL), 0.6),
    "rotate-17": (lambda v: A.rotate(v, -17.0), lambda im: im.rotate(-17.0, resample=BILINEAR, fillcolor=FILL), 0.6),
    "rotate180": (lambda v: A.rotate(v, 180.0), lambda im: im.rotate(180.0, resample=BILINEAR, fillcolor=FILL), 0.01),
    "shear_x0.25": (lambda v: A.shear_x(v, 0.25), _affine((1, 0.25, 0, 0, 1, 0)), 0.6),
    "shear_y-0.2": (lambda v: A.shear_y(v, -0.2), _affine((1, 0, 0, -0.2, 1, 0)), 0.6),
    "translate_x0.3": (lambda v: A.translate_x_rel(v, 0.3), _affine((1, 0, 0.3 * W, 0, 1, 0)), 0.01),
    "translate_y-0.23": (lambda v: A.translate_y_rel(v, -0.23), _affine((1, 0, 0, 0, 1, -0.23 * H)), 0.6),
}


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    y, x = np.mgrid[0:H, 0:W]
    gradient = np.stack([x * 5, y * 6, (x + y) * 3], -1) + rng.integers(0, 40, (H, W, 3))
    return [noise, np.clip(gradient, 0, 255).astype(np.uint8)]


@pytest.mark.parametrize("name", list(PIL_CASES))
def test_op_matches_pil(name):
    ours, pil, mean_bound = PIL_CASES[name]
    for frame in _frames():
        clip = torch.from_numpy(frame).permute(2, 0, 1)[:, None].float() / 255.0  # (3, 1, H, W)
        out = ours(clip)
        assert out.shape == clip.shape and out.dtype == clip.dtype
        mine = out[:, 0].permute(1, 2, 0).double().numpy() * 255.0
        ref = np.asarray(pil(Image.fromarray(frame)), dtype=np.float64)
        diff = np.abs(mine - ref)
        assert diff.mean() <= mean_bound + 1e-3, f"{name}: mean {diff.mean():.3f}"
        assert diff.max() <= (1e-3 if mean_bound == 0.0 else 1.3), f"{name}: max {diff.max():.3f}"


def test_rotation_is_counter_clockwise():
    clip = torch.zeros(3, 1, 21, 21)
    clip[:, :, 10, 15:] = 1.0  # a bar pointing right from the centre
    out = A.rotate(clip, 90.0)
    assert out[0, 0, 0:6, 10].min() > 0.9 and out[0, 0, 6:10, 10].max() < 0.1  # now it points up
    assert out[0, 0, 10, 15:].max() < 0.1


# ----------------------------------------------------------------------------- random erasing
def flat_clip(t: int = 4, h: int = 48, w: int = 64, value: float = 5.0) -> torch.Tensor:
    """A normalised-looking clip no fill can reproduce (5 is far off N(0, 1) and not 0)."""
    return torch.full((3, t, h, w), value)


def erased_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the bounding box of an (H, W) mask, asserting it is a full rectangle."""
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    h, w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert int(mask.sum()) == h * w, "the erased region is not one rectangle"
    return top, left, h, w


def test_prob_zero_leaves_the_clip_and_returns_a_copy():
    clip = flat_clip()
    for mode in A.ERASING_MODES:
        out = RandomErasing(0.0, mode)(clip, gen(0))
        assert torch.equal(out, clip) and out.data_ptr() != clip.data_ptr()


def test_one_const_box_same_on_every_frame_with_the_release_sizes():
    clip = flat_clip()
    h_frame, w_frame = clip.shape[-2:]
    shapes = []
    for seed in range(150):
        out = RandomErasing(1.0, "const")(clip, gen(seed))
        assert torch.equal(clip, flat_clip())  # the input is untouched
        changed = out != clip  # (3, T, H, W)
        assert torch.equal(changed, changed[:1].expand_as(changed)), "channels differ"
        mask = changed[0]
        assert torch.equal(mask, mask[:1].expand_as(mask)), "frames differ"
        top, left, h, w = erased_box(mask[0])
        assert torch.all(out[:, :, top:top + h, left:left + w] == 0.0)
        # area share in [0.02, 1/3] and aspect in [0.3, 1/0.3], both up to rounding h and w
        assert (h + 0.5) * (w + 0.5) >= 0.02 * h_frame * w_frame
        assert (h - 0.5) * (w - 0.5) <= h_frame * w_frame / 3
        assert (h + 0.5) / (w - 0.5) >= 0.3 and (h - 0.5) / (w + 0.5) <= 1 / 0.3
        shapes.append((h, w))
    assert any(h > 1.5 * w for h, w in shapes) and any(w > 1.5 * h for h, w in shapes)
    shares = [h * w / (h_frame * w_frame) for h, w in shapes]
    assert min(shares) < 0.08 and max(shares) > 0.25  # the whole area range is used


def test_count_boxes_each_their_own_colour():
    clip = flat_clip(t=1)
    exact = 0
    for seed in range(60):
        out = RandomErasing(1.0, "rand", count=3)(clip, gen(seed))
        changed = (out != clip).any(0)[0]
        colours = {tuple(out[:, 0, y, x].tolist()) for y, x in changed.nonzero().tolist()}
        assert 1 <= len(colours) <= 3
        exact += len(colours) == 3  # fewer only when one box hides another
        share = float(changed.float().mean())
        assert share <= 1 / 3 + 0.05  # three boxes of at most a third of 1/3 each
    assert exact >= 50


def test_rand_mode_is_one_colour_per_channel_drawn_per_frame():
    clip = flat_clip(t=3)
    out = RandomErasing(1.0, "rand")(clip, gen(1))
    top, left, h, w = erased_box((out != clip)[0, 0])
    box = out[:, :, top:top + h, left:left + w]
    assert torch.equal(box, box[:, :, :1, :1].expand_as(box))  # constant inside, per channel and frame
    colours = box[:, :, 0, 0]  # (3, T)
    assert not torch.equal(colours[:, 0], colours[:, 1])  # the release draws it again for each frame
    assert not torch.equal(colours[0], colours[1])  # and per channel


def test_pixel_mode_same_box_fresh_noise_per_frame():
    clip = flat_clip(t=3)
    for seed in range(10):
        out = RandomErasing(1.0, "pixel")(clip, gen(seed))
        mask = (out != clip).all(0)  # noise is continuous: every erased value differs from 5
        assert torch.equal(mask, mask[:1].expand_as(mask))
        top, left, h, w = erased_box(mask[0])
        box = out[:, :, top:top + h, left:left + w]
        assert not torch.equal(box[:, 0], box[:, 1])
        if h * w >= 200:
            assert abs(float(box.mean())) < 0.3 and abs(float(box.std()) - 1.0) < 0.2


def test_per_frame_mode_draws_coins_and_boxes_per_frame():
    clip = flat_clip(t=6)
    boxes_differ = coins_differ = False
    for seed in range(20):
        out = RandomErasing(0.5, "const", per_clip=False)(clip, gen(seed))
        masks = (out != clip)[0]  # (T, H, W)
        erased = masks.flatten(1).any(1)
        coins_differ |= bool(erased.any() and not erased.all())
        boxes = [erased_box(m) for m, e in zip(masks, erased) if e]
        boxes_differ |= len(set(boxes)) > 1
    assert coins_differ and boxes_differ
    # per clip at the same probability: a clip is erased on all its frames or on none
    for seed in range(20):
        erased = (RandomErasing(0.5, "const")(clip, gen(seed)) != clip)[0].flatten(1).any(1)
        assert bool(erased.all()) or not bool(erased.any())


def test_erasing_probability_and_determinism():
    clip = flat_clip(t=1, h=16, w=16)
    er = RandomErasing(0.25, "pixel")
    trials = 400
    hits = sum(not torch.equal(er(clip, gen(seed)), clip) for seed in range(trials))
    assert abs(hits / trials - 0.25) < 0.09  # 4 standard deviations
    assert torch.equal(RandomErasing(1.0)(clip, gen(5)), RandomErasing(1.0)(clip, gen(5)))
    assert not torch.equal(RandomErasing(1.0)(clip, gen(5)), RandomErasing(1.0)(clip, gen(6)))


@pytest.mark.parametrize("kwargs, words", [
    (dict(prob=1.5), "prob must be in [0, 1]"),
    (dict(prob=-0.1), "prob must be in [0, 1]"),
    (dict(prob=float("nan")), "prob must be in [0, 1]"),
    (dict(prob=0.25, mode="noise"), "mode 'noise' is not one of const, rand, pixel"),
    (dict(prob=0.25, count=0), "count must be an integer >= 1"),
    (dict(prob=0.25, count=1.5), "count must be an integer >= 1"),
    (dict(prob=0.25, per_clip="yes"), "per_clip must be true or false"),
    (dict(prob=0.25, min_area=0.5, max_area=0.4), "0 < min_area <= max_area <= 1"),
    (dict(prob=0.25, min_area=0.0), "0 < min_area <= max_area <= 1"),
    (dict(prob=0.25, min_aspect=2.0), "min_aspect must be in (0, 1]"),
])
def test_bad_erasing_arguments(kwargs, words):
    with pytest.raises(ConfigError) as err:
        RandomErasing(**kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_erasing_needs_a_clip():
    with pytest.raises(ConfigError, match="RandomErasing expects a float clip"):
        RandomErasing(1.0)(torch.zeros(3, 8, 8), gen(0))
