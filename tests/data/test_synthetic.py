"""The synthetic benchmark: determinism, the property each class is built on, the files, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from fluxvit.cli import main
from fluxvit.data.synthetic import CLASSES, clip_seed, make_synthetic_dataset, render_clip
from fluxvit.errors import ConfigError

SEEDS = range(12)


def _decode(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _centroids(mask: np.ndarray) -> np.ndarray:
    """(T, H, W) coverage -> (T, 2) centre of mass (x, y), y pointing down."""
    t, h, w = mask.shape
    total = mask.sum((1, 2))
    x = (mask * np.arange(w)).sum((1, 2)) / total
    y = (mask * np.arange(h)[:, None]).sum((1, 2)) / total
    return np.stack([x, y], 1)


def _area_down(v: np.ndarray, f: int) -> np.ndarray:
    """Area-average downsampling of (T, H, W, C) by an integer factor."""
    t, h, w, c = v.shape
    return v.astype(np.float32).reshape(t, h // f, f, w // f, f, c).mean((2, 4))


# ----------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("name", list(CLASSES))
def test_render_shape_and_determinism(name):
    a = render_clip(name, 7, size=64, frames=6)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_clip(name, np.random.default_rng(7), size=64, frames=6))
    assert not np.array_equal(a, render_clip(name, 8, size=64, frames=6))


def test_render_does_not_touch_global_rng():
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    render_clip("grow", 1, size=64, frames=4)
    assert np.random.random() == before


def test_bad_render_arguments():
    with pytest.raises(ConfigError, match="unknown synthetic class"):
        render_clip("jump", 0)
    with pytest.raises(ConfigError, match="size"):
        render_clip("grow", 0, size=63)
    with pytest.raises(ConfigError, match="frames"):
        render_clip("grow", 0, frames=1)


@pytest.mark.parametrize("name, sign", [("slide_left", -1), ("slide_right", 1)])
def test_slides_move_in_their_direction(name, sign):
    for seed in SEEDS:
        _, mask = render_clip(name, seed, return_mask=True)
        c = _centroids(mask)
        dx, dy = np.diff(c[:, 0]), np.diff(c[:, 1])
        # Every step goes the labelled way, by 2-4 px/frame, and the vertical drift stays small.
        assert np.all(sign * dx > 1.5), (seed, dx)
        assert np.abs(dy).max() < 0.6


def test_grow_widens_and_shrink_is_grow_reversed():
    for seed in SEEDS:
        grow, gmask = render_clip("grow", seed, return_mask=True)
        shrink, smask = render_clip("shrink", seed, return_mask=True)
        area = gmask.sum((1, 2))
        assert area[-1] > 2.5 * area[0]
        # Same seed: same scene, and the actor is exactly the other's played backwards.
        assert np.array_equal(smask, gmask[::-1])
        outside = (gmask.max(0) == 0) & (smask.max(0) == 0)
        assert np.abs(grow[:, outside].astype(int) - shrink[:, outside]).max() == 0


def _turning(mask: np.ndarray) -> float:
    """Sum over time of cross(velocity, acceleration) of the hand's centroid.

    The hub's straight drift cancels in the acceleration, so the sign is the turning sense:
    positive = clockwise on screen (x right, y down).
    """
    c = _centroids(mask)
    v, a = np.diff(c, axis=0)[:-1], np.diff(c, n=2, axis=0)
    return float((v[:, 0] * a[:, 1] - v[:, 1] * a[:, 0]).sum())


def test_turn_directions():
    for seed in SEEDS:
        _, cw = render_clip("turn_cw", seed, return_mask=True)
        _, ccw = render_clip("turn_ccw", seed, return_mask=True)
        assert _turning(cw) > 0 > _turning(ccw), seed
        assert np.array_equal(ccw, cw[::-1])


PAIRS = [("brighten", "darken"), ("expand", "contract"), ("warm_to_cool", "cool_to_warm"),
         ("slide_left", "slide_right"), ("grow", "shrink"), ("turn_cw", "turn_ccw")]


@pytest.mark.parametrize("forward, backward", PAIRS)
def test_reversed_pairs_are_time_reversals_with_the_same_middle_frame(forward, backward):
    """Same seed: the actor of one is the other's played backwards, and with an odd number of
    frames the middle frames are identical pixel for pixel - one frame cannot tell them apart."""
    for seed in SEEDS[:6]:
        a, amask = render_clip(forward, seed, size=64, frames=9, return_mask=True)
        b, bmask = render_clip(backward, seed, size=64, frames=9, return_mask=True)
        assert np.array_equal(bmask, amask[::-1])
        assert np.array_equal(a[4], b[4])
        assert not np.array_equal(a[0], b[0])


def _actor_colour(clip: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, 3) mean RGB of the pixels the actor fully covers, frame by frame."""
    inside = mask > 0.99
    return np.stack([clip[t][inside[t]].astype(np.float32).mean(0) for t in range(len(clip))])


def test_brighten_and_darken_change_brightness_monotonically():
    for seed in SEEDS:
        clip, mask = render_clip("brighten", seed, return_mask=True)
        grey = _actor_colour(clip, mask).mean(1)
        # Value goes from 0.08-0.25 to 0.85-1.0 of the colour: every frame brighter than the last.
        assert np.all(np.diff(grey) > 0) and grey[-1] - grey[0] > 80, (seed, grey)
        dark, dmask = render_clip("darken", seed, return_mask=True)
        assert np.all(np.diff(_actor_colour(dark, dmask).mean(1)) < 0)


def test_expand_grows_and_contract_shrinks():
    for seed in SEEDS:
        _, mask = render_clip("expand", seed, return_mask=True)
        area = mask.sum((1, 2))
        assert np.all(np.diff(area) > 0) and area[-1] > 15 * area[0], (seed, area)
        _, cmask = render_clip("contract", seed, return_mask=True)
        assert np.all(np.diff(cmask.sum((1, 2))) < 0)


def test_warm_to_cool_shifts_colour_from_red_to_blue():
    for seed in SEEDS:
        clip, mask = render_clip("warm_to_cool", seed, return_mask=True)
        rgb = _actor_colour(clip, mask)
        red_minus_blue = rgb[:, 0] - rgb[:, 2]
        assert red_minus_blue[0] > 40 > -40 > red_minus_blue[-1], (seed, red_minus_blue)
        back, bmask = render_clip("cool_to_warm", seed, return_mask=True)
        rgb = _actor_colour(back, bmask)
        assert rgb[0, 0] - rgb[0, 2] < -40 and rgb[-1, 0] - rgb[-1, 2] > 40


def test_temporal_actors_are_the_tokens_that_change():
    """The class evidence sits on the 14-px tokens that change most between frames, which is what
    the group-dynamic selector keeps: tokens mostly covered by the actor change more (mean
    |frame difference|) than 95% of the tokens it never touches (noise, distractors)."""
    for name in ("brighten", "expand", "warm_to_cool"):
        for seed in SEEDS[:4]:
            clip, mask = render_clip(name, seed, return_mask=True)
            change = _area_down(np.abs(np.diff(clip.astype(np.float32), axis=0)), 14).mean(-1)
            cover = _area_down(np.minimum(mask[1:], mask[:-1])[..., None], 14)[..., 0]
            touched = _area_down(np.maximum(mask[1:], mask[:-1])[..., None], 14)[..., 0] > 0
            actor, rest = change[cover > 0.5], change[~touched]
            assert actor.size and np.median(actor) > np.quantile(rest, 0.95), (name, seed)


def _tile_gap(a: np.ndarray, b: np.ndarray, mask: np.ndarray, f: int) -> float:
    """Mean |a - b| (grey levels, worst channel) inside the tile after area-downsampling by ``f``."""
    inside = _area_down(mask[..., None], f)[..., 0] > 0.99  # blocks wholly inside the tile
    return float(np.abs(_area_down(a, f) - _area_down(b, f)).max(axis=-1)[inside].mean())


def test_detail_classes_differ_at_full_resolution_and_vanish_when_downsampled():
    """Same seed = same scene, tile and colours; only the 1-px pattern differs."""
    for other in ("stripes_h", "stripes_v", "checker"):
        gaps = []
        for seed in SEEDS:
            plain, mask = render_clip("plain", seed, return_mask=True)
            clip = render_clip(other, seed)
            gaps.append([_tile_gap(clip, plain, mask, f) for f in (1, 2, 4)])
        full, half, quarter = np.mean(gaps, axis=0)
        # Light and dark differ by >= 100 grey levels, so the pattern moves pixels ~50 from the
        # mean (measured: 61); averaging 2x2 or 4x4 blocks leaves only rounding (0.25, 0.13).
        assert full > 30 and half < 1.0 and quarter < 1.0, (other, full, half, quarter)
    for seed in SEEDS[:4]:
        _, mask = render_clip("stripes_h", seed, return_mask=True)
        h, v = render_clip("stripes_h", seed), render_clip("stripes_v", seed)
        assert _tile_gap(h, v, mask, 1) > 30 and _tile_gap(h, v, mask, 2) < 1.0


# ----------------------------------------------------------------------------- the dataset
def test_dataset_is_deterministic_and_decodes(tmp_path):
    kw = dict(classes=["grow", "stripes_v"], per_class=3, size=64, frames=6, val_fraction=1 / 3, workers=1)
    a = make_synthetic_dataset(tmp_path / "a", seed=5, **kw)
    make_synthetic_dataset(tmp_path / "b", seed=5, **kw)
    make_synthetic_dataset(tmp_path / "c", seed=6, **kw)
    assert (a.num_train, a.num_val) == (4, 2)
    for f in ("train.csv", "val.csv", "classes.txt", "synth.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "classes.txt").read_text() == "grow\nstripes_v\n"
    lines = (tmp_path / "a" / "val.csv").read_text().splitlines()
    assert lines == ["val/grow/grow_0002.mp4 0", "val/stripes_v/stripes_v_0002.mp4 1"]
    rel = lines[1].split()[0]
    va, vb, vc = (_decode(tmp_path / d / rel) for d in "abc")
    assert va.shape == (6, 64, 64, 3)
    assert np.array_equal(va, vb) and not np.array_equal(va, vc)
    # The file holds the rendered clip up to H.264 loss (crf 18): PSNR above 26 dB (measured:
    # 27.7; the 1-px tile is the hardest content there is for the codec) ...
    src, mask = render_clip("stripes_v", np.random.default_rng(clip_seed(5, "stripes_v", 2)), 64, 6,
                            return_mask=True)
    assert 10 * np.log10(255**2 / np.mean((va.astype(float) - src) ** 2)) > 26

    # ... and the class evidence survives it: inside the tile, the 1-px pattern (what a 2x2
    # average removes) keeps most of its energy.
    def pattern_energy(v: np.ndarray) -> float:
        fine = v.astype(np.float32) - np.repeat(np.repeat(_area_down(v, 2), 2, 1), 2, 2)
        return float(np.abs(fine)[mask > 0.99].mean())

    assert pattern_energy(va) > 0.6 * pattern_energy(src) > 10


def test_dataset_refuses_bad_arguments_before_writing(tmp_path):
    out = tmp_path / "out"
    for kw in (dict(per_class=0), dict(size=0), dict(size=-4), dict(frames=1), dict(classes=["nope"]),
               dict(classes=[]), dict(classes=["grow", "grow"]), dict(val_fraction=1.0), dict(seed=-1),
               dict(per_class=1, val_fraction=0.9)):
        with pytest.raises(ConfigError):
            make_synthetic_dataset(out, **kw)
        assert not out.exists()
    (out / "x").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not empty"):
        make_synthetic_dataset(out, per_class=1, classes=["plain"], size=32, frames=2)


# ----------------------------------------------------------------------------- the CLI
def test_cli_synth_writes_decodable_clips(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["synth", str(out), "--classes", "slide_left,turn_cw", "checker", "--per-class", "2",
               "--size", "48", "--frames", "5", "--val-fraction", "0.5", "--workers", "2"])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "3 train + 3 val clips" in printed[0]
    assert (out / "classes.txt").read_text().split() == ["slide_left", "turn_cw", "checker"]
    rows = [line.split() for line in (out / "train.csv").read_text().splitlines()]
    assert [int(label) for _, label in rows] == [0, 1, 2]
    v = _decode(out / rows[1][0])
    assert v.shape == (5, 48, 48, 3)


@pytest.mark.parametrize("args", [["--per-class", "0"], ["--size", "0"], ["--size", "-3"],
                                  ["--classes", "slide_left", "moonwalk"]])
def test_cli_synth_bad_argument(tmp_path, capsys, args):
    out = tmp_path / "synth"
    assert main(["synth", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fluxvit synth: error:")
    assert not out.exists()
