"""``fluxvit prepare SRC OUT``: a user's videos checked, optionally re-encoded, and split.

SRC is a folder dataset (``FOLDER/CLASS/video.mp4``) or an annotation list or CSV, as
:func:`~fluxvit.data.annotations.read_annotations` reads them. Every video is probed in worker
processes (:func:`probe_video`: opened, its frames indexed, a test view decoded, its bytes hashed)
and left out, with its reason, when it is

* **broken**: it does not open, has no video stream, no decodable frame, is truncated, ...;
* **too short**: fewer frames than ``min_frames``;
* **a duplicate**: the same bytes (BLAKE2b) as a file listed before it, which is kept - unless the
  copies carry different labels, and then every copy is left out (which label would be right?).

With ``short_side`` or ``keyframe_interval`` the kept videos are re-encoded
(:func:`reencode_video`: H.264 by libx264 where FFmpeg has it, else MPEG-4 Part 2, a key frame
every ``keyframe_interval`` frames) so that training decodes a few frames of each cheaply. Then a
stratified split (per class, shuffled by ``seed`` and the class name) is written to OUT:

    train.csv, val.csv, test.csv   ``path<TAB>label id`` lines (a split with no video is not written)
    classes.txt                    line i names label i (a folder's class folders, sorted)
    videos/CLASS/NAME_HASH.mp4     re-encoded copies; the lists name them relative to OUT, so OUT
                                   can move (without re-encoding the lists hold absolute paths)
    summary.json                   written last: the arguments, counts per class and split,
                                   durations, resolutions, and the files left out with reasons

A class with too few usable videos for every split is kept, never refused: its videos go to train
first (at least one), then val, then test; each class missing from val or test is warned about
in ``summary["warnings"]``.

Runs continue and never rewrite: OUT is new, or empty, or an unfinished preparation with the same
arguments (``OUT/.prepare/``: the arguments and a cache of probe results, saved as probing goes),
which continues where it stopped - cached probes are not redone, complete re-encoded copies are
kept (a copy is named by its source's hash, so a changed source gets a new copy). An OUT with a
``summary.json`` is finished: the same arguments again answer "already prepared" and touch
nothing; other arguments are refused. Every file is written atomically (:mod:`fluxvit.atomic`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from fluxvit import limits
from fluxvit.atomic import write_text
from fluxvit.data.annotations import CLASSES_FILE, Annotations, VideoRecord, one_field, read_annotations

# (the decoding modules, and torch with them, are imported where used: ``fluxvit prepare --help``
# reads this module's defaults and answers in a blink)
from fluxvit.data.encode import video_writer
from fluxvit.errors import ConfigError, VideoError
from fluxvit.files import inside, new_or_empty_directory, read_text
from fluxvit.typecheck import coerce, in_range, show
from fluxvit.workers import run_in_processes

log = logging.getLogger(__name__)

PREPARE_VERSION = 1
SUMMARY_NAME = "summary.json"
STATE_DIR = ".prepare"  # an unfinished run's state (hidden: a folder dataset scan skips it)
ARGUMENTS_NAME = "arguments.json"
PROBES_NAME = "probes.json"
VIDEOS_DIR = "videos"
SPLITS = ("train", "val", "test")
DEFAULT_KEYFRAME_INTERVAL = 16
CHECK_FRAMES = 8  # frames of one test view decoded when probing: what training would read
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing
SAVE_EVERY_S = 10.0  # the probe cache is saved at least this far apart (and at the end)


# ----------------------------------------------------------------------------- options
@dataclass
class PrepareOptions:
    """What a preparation does (its identity: a rerun must repeat these to continue).

    ``min_frames``: fewer frames is too short. ``short_side`` / ``keyframe_interval``: re-encode
    (either one; the other then keeps the resolution / is 16). ``val_fraction``,
    ``test_fraction``: each class's share in val and test. ``seed``: the split's shuffle."""

    min_frames: int = 8
    short_side: int | None = None
    keyframe_interval: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        hints = {"min_frames": int, "short_side": int | None, "keyframe_interval": int | None,
                 "val_fraction": float, "test_fraction": float, "seed": int}
        for name, hint in hints.items():
            setattr(self, name, coerce(getattr(self, name), hint, f"--{name.replace('_', '-')}", "option"))
        in_range(self.min_frames, "--min-frames", lo=1, what="option")
        in_range(self.short_side, "--short-side", lo=16, what="option")
        in_range(self.keyframe_interval, "--keyframe-interval", lo=1, what="option")
        in_range(self.val_fraction, "--val-fraction", lo=0, hi=1, what="option")
        in_range(self.test_fraction, "--test-fraction", lo=0, hi=1, what="option")
        in_range(self.seed, "--seed", lo=0, what="option")
        if self.short_side is not None:
            if self.short_side % 2:
                raise ConfigError(f"option '--short-side' must be even (H.264 in yuv420p), got {self.short_side}")
            limits.FRAME_PIXELS.check(self.short_side * self.short_side, f"--short-side {self.short_side}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"--val-fraction {self.val_fraction:g} and --test-fraction {self.test_fraction:g} "
                              "leave nothing to train on (their sum must be below 1)")

    @property
    def reencode(self) -> bool:
        return self.short_side is not None or self.keyframe_interval is not None

    @property
    def gop(self) -> int | None:
        """The key-frame interval of re-encoded copies (None: no re-encoding)."""
        if not self.reencode:
            return None
        return self.keyframe_interval if self.keyframe_interval is not None else DEFAULT_KEYFRAME_INTERVAL

    def arguments(self, src: Path, data_root: Path | None) -> dict:
        """The arguments a rerun is compared by (not the worker count: it changes no output)."""
        return {
            "version": PREPARE_VERSION, "source": str(src.resolve()),
            "data_root": str(data_root.resolve()) if data_root is not None else None,
            "min_frames": self.min_frames, "short_side": self.short_side, "keyframe_interval": self.gop,
            "val_fraction": self.val_fraction, "test_fraction": self.test_fraction, "seed": self.seed,
        }


# ----------------------------------------------------------------------------- one file
def file_hash(path: str | os.PathLike) -> str:
    """BLAKE2b (128-bit) of the file's bytes, read in chunks, as hex."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(path: str | os.PathLike, e: Exception) -> str:
    """An error's message without the leading ``PATH: `` (the table names the file)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def probe_video(path: str | os.PathLike) -> dict:
    """What prepare learns of one file, never raising for a bad video: ``ok`` and ``reason``
    (why not), and for a good one ``frames``, ``fps``, ``duration`` (s), ``width``, ``height``
    (displayed) and ``hash`` (:func:`file_hash`). A file is good when it opens, has a video
    stream, its packet index is whole (:class:`~fluxvit.data.video.PyAVReader`) and the frames of
    one test view (:data:`CHECK_FRAMES`, spread over the video) decode."""
    from fluxvit.data.sampling import segment_views
    from fluxvit.data.video import PyAVReader, check_file

    try:
        p = check_file(path)
        reader = PyAVReader(threads=1)
        info = reader.probe(p)
        reader.read(p, segment_views(info.num_frames, min(CHECK_FRAMES, info.num_frames), 1)[0])
        digest = file_hash(p)
    except VideoError as e:
        return {"ok": False, "reason": _reason(path, e)}
    except OSError as e:  # the file went away or became unreadable while it was hashed
        return {"ok": False, "reason": f"cannot read ({e.strerror or e})"}
    return {"ok": True, "reason": None, "frames": info.num_frames, "fps": round(info.fps, 3),
            "duration": round(info.duration, 3), "width": info.width, "height": info.height, "hash": digest}


def video_encoder() -> str:
    """``libx264`` if this FFmpeg can encode H.264 with it, else ``mpeg4`` (in every FFmpeg)."""
    import av

    try:
        av.codec.Codec("libx264", "w")
    except ValueError:  # av's UnknownCodecError
        return "mpeg4"
    return "libx264"


def _scaled(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side brought down to ``short_side`` (never up), even."""
    scale = min(1.0, short_side / min(width, height)) if short_side else 1.0
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def reencode_video(src: str | os.PathLike, dst: str | os.PathLike, short_side: int | None = None,
                   keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL, codec: str | None = None,
                   threads: int | None = None) -> Path:
    """Re-encode the video stream of ``src`` to the MP4 ``dst``: every frame in order, turned
    upright (the display rotation applied), its short side scaled down to ``short_side`` (None:
    kept; never up; sizes even), a key frame every ``keyframe_interval`` frames, at the source's
    average frame rate, no audio. ``codec``: None is :func:`video_encoder`'s choice. ``dst``
    appears complete or not at all. A source that cannot be decoded is a :class:`VideoError`."""
    import av

    from fluxvit.data.video import check_file, decoded_frames, reader_boundary, rotate_frame, video_stream

    src = check_file(src)
    codec = codec or video_encoder()
    with reader_boundary(src, "cannot re-encode"):
        with av.open(str(src)) as container:
            stream = video_stream(container, str(src), threads or 0)  # the reader's checks, before decoding
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            decoded = decoded_frames(container, stream, [])  # a damaged packet costs its frame, as in training
            first = next(decoded, None)
            if first is None:
                raise VideoError(f"{src}: no decodable frames")
            rotation = int(first.rotation or 0)
            turned = round(rotation / 90) % 2 == 1
            shown_w, shown_h = (first.height, first.width) if turned else (first.width, first.height)
            out_w, out_h = _scaled(shown_w, shown_h, short_side)
            coded_w, coded_h = (out_h, out_w) if turned else (out_w, out_h)
            fps = float(rate)
            bit_rate = None if codec == "libx264" else max(200_000, int(0.3 * out_w * out_h * fps))
            cap = limits.FRAME_PIXELS.value()
            with video_writer(dst, out_w, out_h, fps, codec, keyframe_interval, reproducible=False,
                              threads=threads, bit_rate=bit_rate) as write:
                for frame in itertools.chain([first], decoded):
                    if frame.width * frame.height > cap:  # a header can lie about the size
                        limits.FRAME_PIXELS.check(frame.width * frame.height, str(src), VideoError)
                    image = frame.reformat(width=coded_w, height=coded_h, format="rgb24",
                                           interpolation="AREA").to_ndarray()
                    write(rotate_frame(image, rotation))
    return Path(dst)


def _reencode_job(job: tuple[str, str, int | None, int, str, int | None]) -> dict:
    """Re-encode one kept video unless its copy is complete already, then probe the copy
    (runs in a worker process)."""
    from fluxvit.data.video import PyAVReader

    src, dst, short_side, gop, codec, threads = job
    encoded = False
    try:
        if not os.path.exists(dst):
            reencode_video(src, dst, short_side, gop, codec, threads)
            encoded = True
        info = PyAVReader(threads=1).probe(dst)
    except VideoError as e:
        return {"ok": False, "reason": f"re-encoding failed: {_reason(src, e)}", "encoded": encoded}
    return {"ok": True, "reason": None, "frames": info.num_frames, "width": info.width, "height": info.height,
            "duration": round(info.duration, 3), "encoded": encoded}


# ----------------------------------------------------------------------------- many files
def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


class _ProbeCache:
    """Probe results by absolute path, valid while the file keeps its size and mtime; saved to
    ``path`` (atomically) as probing goes, so a killed run loses little."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.is_file():
            try:
                data = json.loads(read_text(path, "probe cache", ConfigError))
                self.entries = data if isinstance(data, dict) else {}
            except (ValueError, ConfigError):
                log.warning("%s: unreadable probe cache ignored", path)
        self.saved_at, self.save_cost = time.monotonic(), 0.0

    def get(self, key: str) -> dict | None:
        entry = self.entries.get(key)
        stat = _stat_key(key)
        return entry["probe"] if isinstance(entry, dict) and stat is not None and entry.get("stat") == stat else None

    def put(self, key: str, stat: list[int] | None, probe: dict) -> None:
        if stat is not None:
            self.entries[key] = {"stat": stat, "probe": probe}
        if time.monotonic() - self.saved_at > max(SAVE_EVERY_S, 5 * self.save_cost):
            self.save()

    def save(self) -> None:
        start = time.monotonic()
        write_text(self.path, json.dumps(self.entries))
        self.saved_at, self.save_cost = time.monotonic(), time.monotonic() - start


def probe_all(paths: Sequence[Path], cache: _ProbeCache, workers: int, progress: bool) -> dict[str, dict]:
    """Probe results by absolute path: cached ones reused, the others probed in ``workers``."""
    keys = sorted({os.path.abspath(p) for p in paths})
    results = {k: r for k in keys if (r := cache.get(k)) is not None}
    todo = [k for k in keys if k not in results]
    stats = [_stat_key(k) for k in todo]  # before probing: a file changed meanwhile is probed again next time

    def done(i: int, probe: dict) -> None:
        results[todo[i]] = probe
        cache.put(todo[i], stats[i], probe)

    log.info("probing %d videos (%d cached)", len(todo), len(keys) - len(todo))
    try:
        run_in_processes(probe_video, todo, workers, progress, "probe", done, chunksize=4)
    finally:
        if todo:
            cache.save()
    return results


# ----------------------------------------------------------------------------- selection and split
@dataclass
class _Kept:
    record: VideoRecord
    probe: dict
    path: str  # what the lists name: the absolute source, or the copy relative to OUT
    copy: dict | None = None  # the re-encoded copy's probe


def _listable(text: str) -> bool:
    """Whether a path can be one field of a ``path<TAB>label`` line and read back the same."""
    return one_field(text) and "\t" not in text


def _select(ann: Annotations, names: Sequence[str], probes: dict[str, dict], min_frames: int,
            reencode: bool) -> tuple[list[_Kept], dict[str, list[dict]]]:
    """The videos kept, in listing order, and those left out (``broken``, ``short``,
    ``duplicate``) with their reasons."""
    left: dict[str, list[dict]] = {"broken": [], "short": [], "duplicate": []}
    kept: list[_Kept] = []
    first_copy: dict[str, int] = {}  # hash -> index into kept
    mixed: dict[int, str] = {}  # kept index -> the other label its copy carries
    for r in ann.records:
        key = os.path.abspath(r.path)
        probe = probes[key]
        row = {"path": key, "class": names[r.label]}
        if not probe["ok"]:
            left["broken"].append({**row, "reason": probe["reason"]})
        elif not reencode and not _listable(key):
            left["broken"].append({**row, "reason": "its name has a tab, a line break, spaces at its ends or bytes "
                                                    "that are not UTF-8, which an annotation line cannot hold "
                                                    "(re-encoding names the copy anew)"})
        elif probe["frames"] < min_frames:
            left["short"].append({**row, "frames": probe["frames"],
                                  "reason": f"{probe['frames']} frames, fewer than --min-frames {min_frames}"})
        elif probe["hash"] in first_copy:
            j = first_copy[probe["hash"]]
            other = kept[j].record
            if other.label != r.label:
                mixed[j] = names[r.label]
            labelled = ("" if other.label == r.label
                        else f" (labelled {names[other.label]!r} there: every copy left out)")
            why = "listed twice" if kept[j].path == key else f"same bytes as {kept[j].path}"
            left["duplicate"].append({**row, "same_as": kept[j].path, "reason": why + labelled})
        else:
            first_copy[probe["hash"]] = len(kept)
            kept.append(_Kept(r, probe, key))
    for j, other_label in mixed.items():
        r = kept[j].record
        left["duplicate"].append({"path": kept[j].path, "class": names[r.label], "same_as": None,
                                  "reason": f"a copy of it is labelled {other_label!r}: every copy left out"})
    return [k for j, k in enumerate(kept) if j not in mixed], left


def _round(x: float) -> int:
    return math.floor(x + 0.5)  # half up, not to even: 2.5 videos is 3


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes of a class of ``n`` videos: the fractions rounded, at least one
    video in each split with a fraction > 0 while the class has enough; train first (at least
    one), then val, then test."""
    val = _round(n * val_fraction) or (1 if val_fraction > 0 else 0)
    test = _round(n * test_fraction) or (1 if test_fraction > 0 else 0)
    while n - val - test < 1 and (val or test):
        if test:
            test -= 1
        else:
            val -= 1
    return n - val - test, val, test


def stratified_split(kept: Sequence[_Kept], names: Sequence[str], options: PrepareOptions
                     ) -> tuple[dict[str, list[_Kept]], list[str]]:
    """Each class's videos shuffled by (seed, class name) and cut by :func:`split_counts`; each
    split in listing order. Also the warnings about classes missing from a split."""
    by_class: dict[int, list[int]] = {}
    for i, k in enumerate(kept):
        by_class.setdefault(k.record.label, []).append(i)
    chosen: dict[str, list[int]] = {s: [] for s in SPLITS}
    warnings = []
    for label, name in enumerate(names):
        members = by_class.get(label, [])
        if not members:
            warnings.append(f"class {name!r} has no usable video")
            continue
        n_train, n_val, n_test = split_counts(len(members), options.val_fraction, options.test_fraction)
        rng = np.random.default_rng([options.seed, zlib.crc32(name.encode())])
        order = [members[j] for j in rng.permutation(len(members))]
        chosen["test"] += order[:n_test]
        chosen["val"] += order[n_test:n_test + n_val]
        chosen["train"] += order[n_test + n_val:]
        missing = [s for s, n, f in (("val", n_val, options.val_fraction), ("test", n_test, options.test_fraction))
                   if f > 0 and n == 0]
        if missing:
            warnings.append(f"class {name!r} has {len(members)} usable video{'s' if len(members) > 1 else ''}: "
                            f"in train only, not in {' or '.join(missing)}")
    return {s: [kept[i] for i in sorted(idx)] for s, idx in chosen.items()}, warnings


# ----------------------------------------------------------------------------- the run
@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` left in ``out``: ``summary`` is summary.json's content;
    ``already``: OUT was finished before with the same arguments and nothing was done."""

    out: Path
    summary: dict
    already: bool = False
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        """The files left out and why, as one markdown table (empty text when none was)."""
        return left_out_table(self.summary)

    def __str__(self) -> str:
        s = self.summary
        v, splits = s["videos"], s["splits"]
        left = f"{v['broken']} broken, {v['short']} too short, {v['duplicate']} duplicate"
        line = (f"{self.out}: {v['kept']} of {v['listed']} videos kept in {len(s['classes'])} classes ({left}); "
                + ", ".join(f"{k} {n}" for k, n in splits.items()))
        if s.get("reencoded"):
            r = s["reencoded"]
            line += (f"\nre-encoded with {r['codec']} (short side {r['short_side'] or 'kept'}, a key frame every "
                     f"{r['keyframe_interval']} frames) under {self.out / VIDEOS_DIR}: {r['encoded_now']} now, "
                     f"{r['kept_from_before']} from before")
        return line


def left_out_table(summary: dict) -> str:
    """The markdown table of the files ``summary`` left out: file, class, why."""
    from fluxvit.evaluate.report import markdown_table

    base = summary["root"].rstrip(os.sep) + os.sep

    def cell(text: str) -> str:  # one table cell: a tab or a line break escaped, a bar too
        return (text if text.isprintable() else repr(text)[1:-1]).replace("|", "\\|")

    def shown(path: str) -> str:  # relative to the source folder, where it lies there
        return cell(path[len(base):] if path.startswith(base) else path)

    rows = [{"file": shown(e["path"]), "class": cell(e["class"]),
             "why": cell(f"{kind}: {e['reason'].replace(base, '')}")}
            for kind, key in (("broken", "broken"), ("too short", "short"), ("duplicate", "duplicate"))
            for e in summary[key]]
    return markdown_table(rows, [("file", "file left out"), ("class", "class"), ("why", "why")]) if rows else ""


def _workers(workers: int | None) -> int:
    if workers is None:
        return min(2, os.cpu_count() or 1)
    workers = coerce(workers, int, "--workers", "option")
    in_range(workers, "--workers", lo=0, what="option")
    limits.WORKERS.check(workers, "--workers")
    return workers


def _check_places(src: Path, out: Path) -> None:
    """SRC outside OUT, and OUT outside a folder SRC (whose folders are scanned as classes)."""
    if inside(src, out):
        same = src.resolve() == out.resolve()
        raise ConfigError(f"SRC {src}: is {'OUT' if same else f'inside OUT {out}'}; prepare writes OUT, so it "
                          "may not hold what is read: choose an OUT outside SRC")
    if os.path.isdir(src) and inside(out, src):
        raise ConfigError(f"OUT {out}: is inside SRC {src}, whose folders are scanned as classes; choose an OUT "
                          "outside it")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ConfigError(f"OUT {out}: exists and is not a folder")


def _differences(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(f"{k}: {show(old.get(k))} there, {show(new.get(k))} now" for k in keys[:4])


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(read_text(path, what, ConfigError))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a fluxvit prepare {what} (not a JSON object); choose a new OUT")
    return data


def _finished(out: Path, arguments: dict) -> dict | None:
    """The summary of a finished preparation in ``out`` made with ``arguments``; None if there is
    none; ConfigError if it was made with other arguments."""
    path = out / SUMMARY_NAME
    if not os.path.lexists(path):
        return None
    summary = _read_json(path, "summary")
    if summary.get("arguments") != arguments:
        raise ConfigError(f"OUT {out}: holds a finished preparation made with other arguments "
                          f"({_differences(summary.get('arguments') or {}, arguments)}); nothing is rewritten: "
                          "choose a new OUT")
    return summary


def _start(out: Path, arguments: dict) -> None:
    """Begin a preparation in ``out`` (new or empty), or continue the unfinished one there when
    it has the same arguments; anything else is refused."""
    state = out / STATE_DIR / ARGUMENTS_NAME
    if os.path.lexists(state):
        before = _read_json(state, "state")
        if before != arguments:
            raise ConfigError(f"OUT {out}: holds an unfinished preparation with other arguments "
                              f"({_differences(before, arguments)}); repeat them to continue it, or choose a new OUT")
        return
    new_or_empty_directory(out, "OUT folder", advice=" (or an unfinished fluxvit prepare output); choose a new folder")
    write_text(state, json.dumps(arguments, indent=1) + "\n")


def _safe_name(name: str, limit: int = 80) -> str:
    """``name`` as one folder or file name: separators, control characters and spaces at the ends
    replaced, no leading dot, at most ``limit`` characters."""
    text = "".join("_" if c in "/\\\0" or not c.isprintable() else c for c in name).strip() or "_"
    return ("_" + text[1:] if text.startswith(".") else text)[:limit]


def _copy_path(k: _Kept, names: Sequence[str]) -> str:
    """Where the re-encoded copy of ``k`` lives, relative to OUT: named by its class and its
    source's name and hash (unique, and new when the source changes)."""
    name = names[k.record.label]
    folder = name if _safe_name(name, 100) == name else f"class_{k.record.label:04d}"
    return f"{VIDEOS_DIR}/{folder}/{_safe_name(k.record.path.stem)}_{k.probe['hash'][:12]}.mp4"


def _reencode_all(kept: list[_Kept], names: Sequence[str], out: Path, options: PrepareOptions, workers: int,
                  progress: bool, left: dict[str, list[dict]]) -> tuple[list[_Kept], dict]:
    """Re-encode the kept videos (complete copies are kept); those whose copy fails go to
    ``left["broken"]`` (or ``["short"]``). Returns the videos kept and the re-encoding's summary."""
    codec = video_encoder()
    threads = 1 if workers > 1 else None  # the workers already share the cores
    for k in kept:
        k.path = _copy_path(k, names)
    jobs = [(str(k.record.path), str(out / k.path), options.short_side, options.gop, codec, threads)
            for k in kept]
    results: list[dict] = [{}] * len(jobs)

    def done(i: int, result: dict) -> None:
        results[i] = result

    run_in_processes(_reencode_job, jobs, workers, progress, "re-encode", done)
    good = []
    for k, r in zip(kept, results):
        row = {"path": os.path.abspath(k.record.path), "class": names[k.record.label]}
        if not r["ok"]:
            left["broken"].append({**row, "reason": r["reason"]})
        elif r["frames"] < options.min_frames:
            why = f"{r['frames']} frames once re-encoded, fewer than --min-frames {options.min_frames}"
            left["short"].append({**row, "frames": r["frames"], "reason": why})
        else:
            k.copy = r
            good.append(k)
    encoded = sum(bool(r.get("encoded")) for r in results)
    info = {"codec": codec, "short_side": options.short_side, "keyframe_interval": options.gop,
            "encoded_now": encoded, "kept_from_before": len(results) - encoded,
            "resolutions": _resolutions([k.copy for k in good])}
    return good, info


def _resolutions(probes: Sequence[dict]) -> dict[str, int]:
    counts = Counter(f"{p['width']}x{p['height']}" for p in probes)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _stats(values: Sequence[float]) -> dict:
    if not values:
        return {"total": 0, "mean": None, "min": None, "max": None}
    total = sum(values)
    return {"total": round(total, 3), "mean": round(total / len(values), 3), "min": min(values), "max": max(values)}


def _write_once(path: Path, text: str) -> Path:
    """Write ``path`` unless it holds ``text`` already (a continued run leaves it untouched)."""
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    return write_text(path, text)


def prepare_dataset(src: str | os.PathLike, out: str | os.PathLike, options: PrepareOptions | None = None,
                    data_root: str | os.PathLike | None = None, workers: int | None = None,
                    progress: bool = False) -> PrepareResult:
    """Check, optionally re-encode, and split the dataset ``src`` into ``out`` (see the module
    docstring for what is written and the rules of reruns). ``data_root``: what a list's paths are
    relative to (default: its folder). ``workers``: probing and encoding processes (default: up to
    2; 0 or 1: in this process). ``progress``: show progress bars."""
    options = options if options is not None else PrepareOptions()
    workers = _workers(workers)
    src, out = Path(src), Path(out)
    root = Path(data_root) if data_root is not None else None
    _check_places(src, out)
    arguments = options.arguments(src, root)
    summary = _finished(out, arguments)
    if summary is not None:
        return PrepareResult(out, summary, already=True)
    ann = read_annotations(src, root)  # refuses an empty or one-class folder, a bad list line
    names = list(ann.classes) if ann.classes else [str(i) for i in range(ann.num_classes)]
    _start(out, arguments)
    cache = _ProbeCache(out / STATE_DIR / PROBES_NAME)
    probes = probe_all([r.path for r in ann.records], cache, workers, progress)
    kept, left = _select(ann, names, probes, options.min_frames, options.reencode)
    reencoded = None
    if options.reencode and kept:
        kept, reencoded = _reencode_all(kept, names, out, options, workers, progress, left)
    splits, warnings = stratified_split(kept, names, options)
    if not splits["train"]:
        raise ConfigError(f"{src}: none of its {len(ann)} videos is usable ({len(left['broken'])} broken, "
                          f"{len(left['short'])} too short, {len(left['duplicate'])} duplicate); nothing to split")
    if len({k.record.label for k in kept}) < 2:
        warnings.append("only one class has usable videos: a classifier cannot be trained on this split")

    files = [_write_once(out / CLASSES_FILE, "".join(f"{n}\n" for n in names))]
    for split, members in splits.items():
        if members:
            files.append(_write_once(out / f"{split}.csv", "".join(f"{k.path}\t{k.record.label}\n" for k in members)))
    shown_from = os.path.abspath(src if os.path.isdir(src) else root if root is not None else src.parent)
    summary = _summary(arguments, shown_from, names, ann, kept, splits, left, reencoded, warnings)
    files.append(write_text(out / SUMMARY_NAME, json.dumps(summary, indent=1, allow_nan=False) + "\n"))
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)  # finished: summary.json holds the arguments
    return PrepareResult(out, summary, files=files)


def _summary(arguments: dict, root: str, names: Sequence[str], ann: Annotations, kept: Sequence[_Kept],
             splits: dict[str, list[_Kept]], left: dict[str, list[dict]], reencoded: dict | None,
             warnings: list[str]) -> dict:
    """summary.json's content."""
    per_class = {n: {"listed": 0, "kept": 0, "broken": 0, "short": 0, "duplicate": 0, "train": 0, "val": 0, "test": 0}
                 for n in names}
    for r in ann.records:
        per_class[names[r.label]]["listed"] += 1
    for kind, rows in left.items():
        for row in rows:
            per_class[row["class"]][kind] += 1
    for split, members in splits.items():
        for k in members:
            per_class[names[k.record.label]][split] += 1
            per_class[names[k.record.label]]["kept"] += 1
    return {
        "version": PREPARE_VERSION,
        "arguments": arguments,
        "root": root,  # the folder the videos lie in (a folder dataset) or are listed relative to
        "classes": list(names),
        "videos": {"listed": len(ann), "kept": len(kept), **{kind: len(rows) for kind, rows in left.items()}},
        "splits": {s: len(m) for s, m in splits.items()},
        "files": {s: f"{s}.csv" for s, m in splits.items() if m} | {"classes": CLASSES_FILE},
        "per_class": per_class,
        "durations_s": _stats([k.probe["duration"] for k in kept]),
        "frames": _stats([k.probe["frames"] for k in kept]),
        "resolutions": _resolutions([k.probe for k in kept]),
        "reencoded": reencoded,
        "broken": left["broken"],
        "short": left["short"],
        "duplicate": left["duplicate"],
        "warnings": warnings,
    }
