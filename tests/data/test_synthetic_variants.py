"""The synthetic benchmark's variants: the default unchanged, the events and clutter variants built
as documented, their files, their errors and the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

from fluxvit.cli import main
from fluxvit.data.sampling import segment_views
from fluxvit.data.synthetic import (
    _VARIANT_ACTORS,
    CLASSES,
    DEFAULT_CLASSES,
    DEFAULT_VARIANT,
    SYNTH_VERSION,
    VARIANTS,
    _paint_scene,
    clip_seed,
    describe_classes,
    flash_spans,
    get_variant,
    make_synthetic_dataset,
    render_clip,
)
from fluxvit.data.video import PyAVReader
from fluxvit.errors import ConfigError

# sha256 of render_clip(name, seed, 112, 16) (frames, then the actor's mask) computed with the
# code of format version 2 before the variants existed: the default variant must not move a pixel.
FORMAT_2_HASHES = {
    ("brighten", 0): ("2d0518df28fc1096277551ee6ac3846a4f72add8c81c1c3f2311b486e28955e7",
                      "56fb338886767f95c033ea2882637909a157dc4c30bacdf6ea83c3ea18c7ff43"),
    ("brighten", 11): ("75b61318b597878817955384338a5f14a5233ed6db216b91e9c337299608ff15",
                       "79406477cfa7d34766d17e928443b7db2d0f62f41a315257ae39938ae0844e16"),
    ("checker", 0): ("94273354cf8c7969a70e90cef7b875e8bbc3db266434be833edec1ddb06f6611",
                     "6ac5d0705d5f8b7dc687f7c4003519f233eb22612499bed0aa157ec5dd2d160a"),
    ("checker", 11): ("00e02d494883e3485d7b110bd6c8450bc454976447cf5f8010b294f16a1d59e7",
                      "30feb5575cf7b50655f9381d52819d59316d8d524027eb8b13ae9b9b04f52726"),
    ("slide_left", 0): ("6353431933bfe40e02ffe97a8b0036aa5375af5947e1b8f69441f674db32c619",
                        "7bab6f0303f9e999b7008126665ecd751e1977ab27e09d696f1ec9cfd6b7510a"),
    ("slide_left", 11): ("209c11177a5992db9c72862cacf3c2d1d6e3521b04c322b3456f0ba32d0cb7b5",
                         "695c874d59f765cb5a6899597e1f5a95bd8f76db004e252ea6c81b28e0b0e128"),
}
WEAVES = ("weave_diag", "weave_anti", "weave_grid", "weave_plain")


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _area_down(v: np.ndarray, f: int) -> np.ndarray:
    """Area-average downsampling of (T, H, W, C) by an integer factor."""
    t, h, w, c = v.shape
    return v.astype(np.float32).reshape(t, h // f, f, w // f, f, c).mean((2, 4))


def _actor_grey(clip: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T,) mean grey level of the pixels the actor fully covers, frame by frame."""
    inside = mask > 0.99
    return np.array([clip[t][inside[t]].astype(np.float32).mean() for t in range(len(clip))])


def _episodes(bright: np.ndarray) -> int:
    """Runs of True in a 1-D boolean series."""
    return int(bright[0]) + int(np.sum(bright[1:] & ~bright[:-1]))


# ----------------------------------------------------------------------------- the registry
@pytest.mark.parametrize("key", sorted(FORMAT_2_HASHES))
def test_default_variant_is_byte_identical_to_format_2(key):
    name, seed = key
    frames_hash, mask_hash = FORMAT_2_HASHES[key]
    clip, mask = render_clip(name, seed, 112, 16, return_mask=True)
    assert (_sha(clip), _sha(mask)) == (frames_hash, mask_hash)
    assert _sha(render_clip(name, seed, 112, 16, variant="default")) == frames_hash
    # ... and the dataset seeds of format 2 are kept too
    expected = np.random.SeedSequence([seed, zlib.crc32(name.encode()), 3])
    assert np.array_equal(clip_seed(seed, name, 3).generate_state(4), expected.generate_state(4))


def test_registry_describes_each_variant():
    assert list(VARIANTS) == ["default", "events", "clutter"] and DEFAULT_VARIANT == "default"
    default = get_variant("default")
    assert default.catalogue == CLASSES and default.default_classes == DEFAULT_CLASSES
    assert default.version == SYNTH_VERSION == 2
    for v in VARIANTS.values():
        assert set(v.default_classes) <= set(v.class_names)
        assert set(_VARIANT_ACTORS[v.name]) == set(v.class_names)  # a renderer for each class, no other
        assert {c.needs for c in v.classes} <= {"time", "detail", "motion"}
        lines = describe_classes(v.name).splitlines()
        assert [line.split()[0] for line in lines] == list(v.class_names)
    assert VARIANTS["events"].class_names == ("flash_1", "flash_2", "flash_3", "pulse_early", "pulse_late",
                                              *WEAVES)
    assert VARIANTS["events"].clip_frames == (24, 24) and VARIANTS["events"].tile_speed == (0.0, 0.0)
    # clutter's classes are the default's kinds of clip: same names, needs and descriptions
    clutter = VARIANTS["clutter"]
    assert clutter.catalogue == {n: CLASSES[n] for n in DEFAULT_CLASSES}
    assert clutter.clip_frames == (12, 40) and clutter.actor_scale == (0.7, 0.85)


@pytest.mark.parametrize("variant", ["events", "clutter"])
def test_variant_clips_are_deterministic(variant):
    v = VARIANTS[variant]
    lo, hi = v.clip_frames
    for name in v.class_names:
        a = render_clip(name, 7, size=48, variant=variant)
        assert a.dtype == np.uint8 and a.shape[1:] == (48, 48, 3) and lo <= a.shape[0] <= hi
        assert np.array_equal(a, render_clip(name, np.random.default_rng(7), size=48, variant=variant))
        b = render_clip(name, 8, size=48, variant=variant)
        assert a.shape != b.shape or not np.array_equal(a, b)


def test_adding_a_class_leaves_the_other_clips_alone(tmp_path):
    kw = dict(per_class=2, size=32, val_fraction=0.5, workers=1, seed=3)
    make_synthetic_dataset(tmp_path / "one", variant="events", classes=["weave_grid"], **kw)
    make_synthetic_dataset(tmp_path / "two", variant="events", classes=["flash_2", "weave_grid"], **kw)
    for rel in ("train/weave_grid/weave_grid_0000.mp4", "val/weave_grid/weave_grid_0001.mp4"):
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
    # a class name two variants share still gives unrelated clips: the variant is in the seed
    assert not np.array_equal(clip_seed(3, "brighten", 0, "clutter").generate_state(4),
                              clip_seed(3, "brighten", 0).generate_state(4))


# ----------------------------------------------------------------------------- events
def test_flashes_are_counted_by_8_segment_centre_frames():
    seen_by_two = {1: set(), 2: set(), 3: set()}
    for seed in range(12):
        clips = {k: render_clip(f"flash_{k}", seed, 64, variant="events", return_mask=True) for k in (1, 2, 3)}
        masks = [m for _, m in clips.values()]
        # same seed: the same actor in the same place for the three counts
        assert all(np.array_equal(masks[0], m) for m in masks[1:])
        dim = {}
        for k, (clip, mask) in clips.items():
            grey = _actor_grey(clip, mask)
            frames = len(grey)
            assert frames == 24
            bright = grey > (grey.min() + grey.max()) / 2
            dim[k] = ~bright
            assert grey.max() - grey.min() > 60, (k, seed, grey)
            assert _episodes(bright) == k, (k, seed, grey.round())
            # each flash lasts 1/8 of the clip: 3 frames
            assert bright.sum() == 3 * k
            eight = segment_views(frames, 8, 1)[0].numpy()
            assert eight.tolist() == [1, 4, 7, 10, 13, 16, 19, 22]
            assert _episodes(bright[eight]) == k and bright[eight].sum() == k, (k, seed)
            seen_by_two[k].add(int(bright[segment_views(frames, 2, 1)[0].numpy()].sum()))
        # the counts differ only where a flash is: the frames where flash_1 and flash_3 are both
        # dim are the same pixels (the noise is drawn after the actor, from the same state)
        both = dim[1] & dim[3]
        assert both.sum() >= 24 - 3 - 9 and np.array_equal(clips[1][0][both], clips[3][0][both])
    # 2 frames cannot count: every count shows 0 and 1 bright frames in some clips
    assert all({0, 1} <= seen for seen in seen_by_two.values()), seen_by_two


def test_flash_spans_keep_flashes_apart():
    rng = np.random.default_rng(0)
    for _ in range(200):
        for k in (1, 2, 3):
            spans = flash_spans(24, k, rng.uniform(size=3))
            assert [length for _, length in spans] == [3] * k
            for j, (start, length) in enumerate(spans):
                assert j * 24 // k <= start and start + length <= (j + 1) * 24 // k  # inside its part
            gaps = [b[0] - (a[0] + a[1]) for a, b in zip(spans, spans[1:])]
            assert all(g >= 4 for g in gaps), spans


def test_pulse_late_is_pulse_early_reversed():
    for seed in range(10):
        early, emask = render_clip("pulse_early", seed, 64, variant="events", return_mask=True)
        late, lmask = render_clip("pulse_late", seed, 64, variant="events", return_mask=True)
        assert np.array_equal(lmask, emask[::-1])
        ge, gl = _actor_grey(early, emask), _actor_grey(late, lmask)
        frames = len(ge)
        # the actor's brightness played backwards, up to the fresh noise averaged over its pixels
        assert np.abs(gl - ge[::-1]).max() < 2.0, seed
        assert int(np.argmax(ge)) < frames / 3 and int(np.argmax(gl)) >= 2 * frames / 3
        assert ge.max() - ge.min() > 50
        # one pulse: brightness rises to the peak, then falls (up to noise)
        peak = int(np.argmax(ge))
        assert np.all(np.diff(ge[:peak + 1]) > -2) and np.all(np.diff(ge[peak:]) < 2)
        outside = (emask.max(0) == 0) & (lmask.max(0) == 0)
        assert np.array_equal(early[:, outside], late[:, outside])


def test_weaves_share_the_mean_and_vanish_at_quarter_resolution():
    for seed in range(4):
        clips = {n: render_clip(n, seed, 112, variant="events", return_mask=True) for n in WEAVES}
        mask = clips["weave_plain"][1]
        assert all(np.array_equal(mask, m) for _, m in clips.values())  # same tile from the same seed
        assert np.array_equal(mask, np.broadcast_to(mask[0], mask.shape))  # static
        inside = mask[0] > 0.99
        side = int(np.sqrt(inside.sum()))
        assert 26 <= side <= 34 and side * side == inside.sum()
        quarter = _area_down(mask[:1, ..., None], 4)[0, ..., 0] > 0.99
        half = _area_down(mask[:1, ..., None], 2)[0, ..., 0] > 0.99
        stats = {}
        for n, (clip, _) in clips.items():
            c = clip.astype(np.float32)
            stats[n] = (c[:, inside].mean(),
                        c[:, inside].std(axis=1).mean(),
                        _area_down(c, 2)[:, half].std(axis=1).mean(),
                        _area_down(c, 4)[:, quarter].std(axis=1).mean())
        plain = stats["weave_plain"]
        assert plain[1] < 6  # flat up to noise
        for n in WEAVES[:3]:
            mean, full, half_std, quarter_std = stats[n]
            assert abs(mean - plain[0]) < 1.5, (n, seed, stats)  # the same pixel mean
            assert full > 30  # at full resolution the pattern is there
            if n != "weave_grid":  # 2x2 averages keep half the diagonals' contrast (the grid's: by phase)
                assert 0.3 * full < half_std < 0.7 * full, (n, seed, stats)
            assert quarter_std < plain[3] + 0.5, (n, seed, stats)  # 4x4 averages: a flat tile
        # full resolution tells the patterns apart, pixel by pixel
        diag, anti = (clips[n][0][:, inside].astype(np.float32) for n in ("weave_diag", "weave_anti"))
        assert np.abs(diag - anti).mean() > 30


# ----------------------------------------------------------------------------- clutter
def test_clutter_scene_has_its_distractors():
    v = VARIANTS["clutter"]
    counts, changes = [], []
    for seed in range(16):
        rng = np.random.default_rng(seed)
        frames = v.draw_frames(rng, 16)
        video, info = _paint_scene(rng, 112, frames, 1.0, v)
        assert video.shape == (frames, 112, 112, 3)
        assert 6 <= info["static"] <= 10 and 2 <= info["moving"] <= 4 and 1 <= info["changing"] <= 2, info
        counts.append((info["static"], info["moving"], info["changing"]))
        # the changing shapes change in place: where one covers and no mover passes, the first and
        # last frames differ by far more than noise (none is added yet: exactly 0 elsewhere)
        inside = (info["changing_mask"][0] > 0.99) & (info["moving_mask"].max(0) == 0)
        if inside.sum() > 10:
            changes.append(np.median(np.abs(video[-1][inside] - video[0][inside]).max(-1)))
        still = (info["changing_mask"][0] == 0) & (info["moving_mask"].max(0) == 0)
        assert np.array_equal(video[-1][still], video[0][still])
    assert len({c[0] for c in counts}) >= 3 and len({c[1] for c in counts}) >= 2 and {c[2] for c in counts} == {1, 2}
    assert len(changes) >= 12 and min(changes) > 40, changes
    # the default scene: 2-4 static shapes, at most one mover, nothing that changes in place
    for seed in range(8):
        _, info = _paint_scene(np.random.default_rng(seed), 64, 8, 64 / 112, VARIANTS["default"])
        assert 2 <= info["static"] <= 4 and info["moving"] <= 1 and info["changing"] == 0


def _top_tokens_off_actor(clip: np.ndarray, mask: np.ndarray, k: int = 9) -> float:
    """Share of the k 14-px tokens that change most (mean |frame difference|) the actor never touches."""
    change = _area_down(np.abs(np.diff(clip.astype(np.float32), axis=0)), 14).mean(-1).mean(0)
    touched = _area_down(mask[..., None], 14)[..., 0].max(0) > 0
    top = np.argsort(change.ravel())[::-1][:k]
    return float(np.mean(~touched.ravel()[top]))


def test_clutter_changes_more_than_the_actor():
    """The tokens that change most are not only the actor's in clutter (measured: a third of the
    top 9 on average, 3% in the default variant)."""
    shares = {"default": [], "clutter": []}
    for variant in shares:
        for name in ("brighten", "expand", "warm_to_cool"):
            for seed in range(3):
                clip, mask = render_clip(name, seed, 112, 16, variant=variant, return_mask=True)
                shares[variant].append(_top_tokens_off_actor(clip, mask))
                if variant == "clutter":
                    # in every clip some pixels the actor never covers change far beyond noise
                    away = mask.max(0) == 0
                    jump = np.abs(clip[-1].astype(np.float32) - clip[0]).max(-1)
                    assert ((jump > 40) & away).mean() > 0.005, (name, seed)
    assert np.mean(shares["clutter"]) > 0.2 > 0.1 > np.mean(shares["default"]), shares


def test_clutter_actors_are_smaller_and_tiles_keep_1px_patterns():
    sides = {"default": [], "clutter": []}
    for seed in range(8):
        for variant in sides:
            _, mask = render_clip("brighten", seed, 112, 16, variant=variant, return_mask=True)
            sides[variant].append(np.sqrt((mask[0] > 0.5).sum()))
    assert 36 <= min(sides["default"]) and max(sides["default"]) <= 49
    assert 0.7 * 36 - 1 <= min(sides["clutter"]) and max(sides["clutter"]) <= 0.85 * 48 + 1
    for seed in range(4):
        plain, mask = render_clip("plain", seed, 64, variant="clutter", return_mask=True)
        stripes = render_clip("stripes_h", seed, 64, variant="clutter")
        inside1 = mask > 0.99
        inside2 = _area_down(mask[..., None], 2)[..., 0] > 0.99
        assert inside1.sum((1, 2)).min() == inside1.sum((1, 2)).max()  # the tile stays in view
        full = np.abs(stripes.astype(np.float32) - plain).max(-1)[inside1].mean()
        half = np.abs(_area_down(stripes, 2) - _area_down(plain, 2)).max(-1)[inside2].mean()
        assert full > 30 and half < 1.0, (seed, full, half)


def test_clutter_clip_lengths_vary_and_are_reproducible():
    v = VARIANTS["clutter"]
    lengths = []
    for seed in range(30):
        clip = render_clip("plain", seed, 32, frames=5, variant="clutter")
        assert clip.shape[0] == v.draw_frames(np.random.default_rng(seed), 5)  # drawn first, from the clip's seed
        assert render_clip("plain", seed, 32, frames=30, variant="clutter").shape[0] == clip.shape[0]
        lengths.append(clip.shape[0])
    assert min(lengths) >= 12 and max(lengths) <= 40 and len(set(lengths)) >= 10, lengths
    # both clips of a reversed pair have the same length, the actor reversed
    for seed in range(3):
        a, am = render_clip("brighten", seed, 32, variant="clutter", return_mask=True)
        b, bm = render_clip("darken", seed, 32, variant="clutter", return_mask=True)
        assert np.array_equal(bm, am[::-1])
    assert render_clip("flash_1", 0, 32, frames=5, variant="events").shape[0] == 24


# ----------------------------------------------------------------------------- the files
def test_clutter_dataset_decodes_with_the_drawn_lengths(tmp_path):
    root = tmp_path / "clutter"
    summary = make_synthetic_dataset(root, variant="clutter", per_class=2, size=64, workers=0)
    assert summary.variant == "clutter" and summary.clip_frames == (12, 40) and summary.frames == 40
    assert "variant clutter" in str(summary) and "12-40 frames" in str(summary)
    meta = json.loads((root / "synth.json").read_text())
    assert (meta["variant"], meta["version"], meta["clip_frames"], meta["frames"]) == ("clutter", 1, [12, 40], 40)
    assert (root / "classes.txt").read_text().split() == list(DEFAULT_CLASSES)
    reader = PyAVReader()
    lengths = []
    rows = [line.split() for line in (root / "train.csv").read_text().splitlines()]
    assert len(rows) == 20
    for rel, label in rows:
        name = DEFAULT_CLASSES[int(label)]
        index = int(rel.rsplit("_", 1)[1].split(".")[0])
        expected = render_clip(name, np.random.default_rng(clip_seed(0, name, index, "clutter")), 64,
                               variant="clutter")
        assert reader.num_frames(root / rel) == len(expected), rel
        lengths.append(len(expected))
        if rel.endswith("brighten_0000.mp4"):
            decoded = reader.read(root / rel, list(range(len(expected)))).numpy()
            assert decoded.shape == expected.shape
            assert 10 * np.log10(255**2 / np.mean((decoded.astype(float) - expected) ** 2)) > 26
    assert len(set(lengths)) >= 5 and 12 <= min(lengths) and max(lengths) <= 40


def test_synth_json_records_the_variant(tmp_path):
    kw = dict(per_class=1, size=32, frames=3, val_fraction=0.0, workers=1)
    make_synthetic_dataset(tmp_path / "d", classes=["plain"], **kw)
    meta = json.loads((tmp_path / "d" / "synth.json").read_text())
    assert meta == {"version": 2, "variant": "default", "classes": ["plain"], "per_class": 1, "size": 32,
                    "frames": 3, "seed": 0, "val_fraction": 0.0, "fps": 16.0, "crf": 18}
    s = make_synthetic_dataset(tmp_path / "e", classes=["weave_anti"], variant="events", **kw)
    meta = json.loads((tmp_path / "e" / "synth.json").read_text())
    assert (meta["version"], meta["variant"], meta["frames"], meta["clip_frames"]) == (1, "events", 24, [24, 24])
    assert s.frames == 24 and "24 frames x 32 px" in str(s)
    assert PyAVReader().num_frames(tmp_path / "e" / "train/weave_anti/weave_anti_0000.mp4") == 24


def test_bad_variant_or_class_is_one_line_error(tmp_path, monkeypatch):
    out = tmp_path / "out"
    for kw, words in ((dict(variant="nope"), ["unknown synthetic variant 'nope'", "default, events, clutter"]),
                      (dict(variant=None), ["unknown synthetic variant None"]),
                      (dict(classes=["flash_1"]), ["'flash_1' in variant default", "brighten, darken", "events"]),
                      (dict(variant="events", classes=["brighten"]),
                       ["'brighten' in variant events", "flash_1, flash_2", "variants default and clutter"]),
                      (dict(variant="clutter", classes=["grow"]), ["'grow' in variant clutter", "plain)"]),
                      (dict(variant="events", frames=1), ["frames 1"]),
                      (dict(variant="clutter", size=63), ["size 63"])):
        with pytest.raises(ConfigError) as e:
            make_synthetic_dataset(out, **kw)
        text = str(e.value)
        assert "\n" not in text and all(w in text for w in words), (kw, text)
        assert not out.exists()
    with pytest.raises(ConfigError, match="unknown synthetic variant 'nope'"):
        render_clip("plain", 0, variant="nope")
    with pytest.raises(ConfigError, match="in variant events"):
        render_clip("plain", 0, variant="events")
    # the clip-pixel cap is checked for the longest clip a variant can draw, not the frames argument
    monkeypatch.setenv("FLUXVIT_MAX_CLIP_PIXELS", str(20 * 32 * 32))
    render_clip("plain", 0, 32, 16)
    with pytest.raises(ConfigError, match="clips of 40 frames of 32x32"):
        make_synthetic_dataset(out, variant="clutter", size=32, frames=16, per_class=1)
    with pytest.raises(ConfigError, match="clips of 40 frames"):
        render_clip("plain", 0, 32, 16, variant="clutter")
    assert not out.exists()


# ----------------------------------------------------------------------------- the CLI
def test_cli_synth_variant_events(tmp_path):
    out = tmp_path / "events"
    done = subprocess.run([sys.executable, "-m", "fluxvit", "synth", str(out), "--variant", "events",
                           "--per-class", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()
    assert len(printed) == 1 and "18 train + 0 val clips (9 classes of variant events, 24 frames x 112 px" in printed[0]
    assert (out / "classes.txt").read_text().split() == list(VARIANTS["events"].class_names)
    assert json.loads((out / "synth.json").read_text())["variant"] == "events"
    assert PyAVReader().num_frames(out / "train/flash_3/flash_3_0001.mp4") == 24


def test_cli_synth_unknown_variant_exits_2_in_one_line(tmp_path):
    out = tmp_path / "nope"
    done = subprocess.run([sys.executable, "-m", "fluxvit", "synth", str(out), "--variant", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fluxvit synth: error: argument --variant: invalid choice: 'nope'")
    assert "Traceback" not in done.stderr and not out.exists()


def test_cli_synth_class_of_another_variant(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["synth", str(out), "--variant", "clutter", "--classes", "brighten,flash_2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fluxvit synth: error: unknown synthetic class 'flash_2' in variant "
                                               "clutter")
    assert not out.exists()


def test_cli_synth_help_lists_variants_and_their_classes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for v in VARIANTS.values():
        assert f"  {v.name:<8} [" in text
        assert all(name in text for name in v.class_names)
    assert "{default,events,clutter}" in text


def test_in_memory_source_renders_the_variant():
    """`data.source: synthetic` with `data.variant`: the trainer's in-memory clips are the variant's."""
    from fluxvit.data.sources import synthetic_source

    src = synthetic_source(None, 1, 32, 16, seed=0, split=0, variant="events")
    assert src.classes == list(VARIANTS["events"].default_classes)
    assert {tuple(v.shape) for v in src.videos} == {(24, 32, 32, 3)}  # events clips are 24 frames long
    clutter = synthetic_source(["brighten", "plain"], 3, 32, 16, seed=0, split=0, variant="clutter")
    lengths = [v.shape[0] for v in clutter.videos]
    assert all(12 <= n <= 40 for n in lengths) and len(set(lengths)) > 1
