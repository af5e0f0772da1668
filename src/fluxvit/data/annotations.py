"""Annotations: which videos a dataset holds and their labels, from a list file or a folder.

**List files** - one clip a line, ``relative/path.mp4<sep>label``, the release's Kinetics/SSv2
format. The separator is a tab, a comma or whitespace (the release's lists use a space); the label
is the *last* field, so a tab- or comma-separated path may contain spaces. The release's SSv2
frame-folder lists (``path num_frames label``, space-separated) are read too: the frame count is
ignored (fluxvit counts frames itself; the path must still name a video file). A CSV may start
with a header line naming its columns: then the columns ``path`` and ``label`` are taken
(case-insensitive; other columns are ignored), and a header without them is an error. Paths are
resolved against a data root (default: the list's folder).

**Labels** are ids or class names. An optional ``classes.txt`` beside the list names label ``i`` on
its line ``i``; with it, a label may be either, and an id outside the list is an error. Without
one, the first label decides: ids throughout, or names throughout, numbered in sorted order.

**Folders** - ``FOLDER/CLASS/.../video.ext``: one class per subfolder (names sorted: label ``i``
is the ``i``-th name), videos found by :data:`VIDEO_EXTENSIONS` (case-insensitive) anywhere below
a class folder, sorted; hidden files and folders (``.name``) are skipped, a folder reached twice
through symbolic links is searched once (a link back to the dataset folder or into another class is
not followed; a class folder that is another one, or the dataset folder, is an error), and a link
that dangles or loops is listed, to be reported when it is read. A folder needs at least two
classes and every class folder a video.

Every bad line raises :class:`~fluxvit.errors.AnnotationError` naming ``file:line``; a bad folder
names the folder. How many videos a dataset may list is capped (:data:`fluxvit.limits.LISTED_VIDEOS`).
"""

from __future__ import annotations

import csv as csv_module
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fluxvit import limits
from fluxvit.errors import AnnotationError
from fluxvit.files import directory, read_text

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
# what counts as a video when a folder is searched (folder datasets, ``fluxvit predict DIR``)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated clip: the resolved ``path``, its ``label`` id and where it was written."""

    path: Path
    label: int
    source: str  # "file:line", for error messages

    def __str__(self) -> str:
        return f"{self.path} (label {self.label}, {self.source})"


@dataclass(frozen=True)
class Annotations:
    """The clips of one annotation file (or folder dataset), and the class names if known."""

    records: tuple[VideoRecord, ...]
    classes: tuple[str, ...] | None
    csv: Path  # the list file, or the dataset folder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> VideoRecord:
        return self.records[i]

    @property
    def num_classes(self) -> int:
        """Class count: the class list's length, else one more than the largest label."""
        if self.classes is not None:
            return len(self.classes)
        return max((r.label for r in self.records), default=-1) + 1


def text_lines(text: str) -> list[str]:
    """The lines of a list file, split at line ends only (LF, CRLF, CR) - not at the form feeds,
    U+0085 or U+2028 that ``str.splitlines`` also takes, which a path may hold: line numbers in
    errors stay the editor's."""
    lines = re.split(r"\r\n|\n|\r", text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def one_field(text: str) -> bool:
    """Whether ``text`` can be written as one field of a list or class-list line and read back
    the same: no spaces at its ends, no line end (as :func:`text_lines` splits), UTF-8."""
    return text == text.strip() and len(text_lines(text)) == 1 and encodes_as_utf8(text)


def read_classes(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names, one a line (line i names label i); blank lines are errors (they would shift ids)."""
    path = Path(path)
    lines = text_lines(read_text(path, "class list", AnnotationError))
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline or two is fine
    names = []
    for n, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            raise AnnotationError(f"{path}:{n}: empty class name (line i names label i-1)")
        names.append(name)
    if len(set(names)) != len(names):
        dup = next(x for x in names if names.count(x) > 1)
        raise AnnotationError(f"{path}: class {dup!r} is listed twice")
    if not names:
        raise AnnotationError(f"{path}: no class names")
    return tuple(names)


def parse_line(line: str) -> tuple[str, str]:
    """``(path, label)`` text of one line; ValueError if it has no separator or an empty field.
    A space-separated line of three fields whose middle one is a whole number is the SSv2
    frame-folder format (``path num_frames label``): the middle field is dropped."""
    text = line.strip()
    for sep in ("\t", ","):
        if sep in text:
            path, _, label = text.rpartition(sep)
            break
    else:
        parts = text.split()
        if len(parts) == 3 and parts[1].isdigit():
            parts = [parts[0], parts[2]]
        else:
            parts = text.rsplit(None, 1)
        path, label = (parts[0], parts[1]) if len(parts) == 2 else ("", text)
    path, label = path.strip(), label.strip()
    if not path or not label:
        raise ValueError("expected 'relative/path.mp4<sep>label' with a space, comma or tab between")
    if "\0" in path:
        raise ValueError("the path holds a NUL byte")
    return path, label


# Column names that make a first line a header (with no field that looks like a path or a number):
# a header must name ``path`` and ``label``; the others are recognised to refuse it in one line
# (Kinetics' own CSV: ``label,youtube_id,time_start,time_end,split``).
_HEADER_WORDS = frozenset({
    "path", "label", "video", "video_path", "file", "filename", "file_name", "class", "class_name",
    "classname", "category", "name", "id", "video_id", "youtube_id", "label_id", "split",
})


@dataclass(frozen=True)
class _Header:
    """A CSV's header: the separator (None: whitespace) and the path and label columns."""

    sep: str | None
    path: int
    label: int

    def fields(self, line: str) -> tuple[str, str]:
        row = _split(line, self.sep)
        if len(row) <= max(self.path, self.label):
            raise ValueError(f"expected at least {max(self.path, self.label) + 1} fields (the header's columns), "
                             f"got {len(row)}")
        path, label = row[self.path].strip(), row[self.label].strip()
        if not path or not label:
            raise ValueError("empty path or label field")
        if "\0" in path:
            raise ValueError("the path holds a NUL byte")
        return path, label


def _split(line: str, sep: str | None) -> list[str]:
    text = line.strip()
    return next(csv_module.reader([text], delimiter=sep)) if sep else text.split()


def _header(csv: Path, line: str) -> _Header | None:
    """The header a first ``line`` is, or None if it is a clip's line; AnnotationError for a
    header without ``path`` and ``label`` columns."""
    text = line.strip()
    sep = "\t" if "\t" in text else "," if "," in text else None
    try:
        fields = [f.strip() for f in _split(text, sep)]
    except csv_module.Error:
        return None
    low = [f.lower() for f in fields]
    looks_like_data = any(f.lstrip("+-").isdigit() or "/" in f or "\\" in f
                          or _is_video_name(f) for f in fields)
    if looks_like_data or not any(f in _HEADER_WORDS for f in low):
        return None
    twice = [c for c in ("path", "label") if low.count(c) > 1]
    if twice:  # which of them would be meant?
        raise AnnotationError(f"{csv}:1: the header names the {twice[0]!r} column {low.count(twice[0])} times; "
                              "name it once")
    missing = [c for c in ("path", "label") if c not in low]
    if missing:
        shown = ", ".join(fields) if len(text) <= 120 else text[:120] + "..."
        raise AnnotationError(f"{csv}:1: a header line without {' and '.join(repr(m) for m in missing)} "
                              f"column{'s' if len(missing) > 1 else ''} (its columns: {shown}); name the video "
                              "column 'path' and the class column 'label'")
    return _Header(sep, low.index("path"), low.index("label"))


def read_annotations(
    csv: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    skip_bad_lines: bool = False,
    known_classes: Sequence[str] | None = None,
) -> Annotations:
    """Parse the list file ``csv`` (or scan the folder dataset ``csv``: :func:`read_folder`) into
    :class:`Annotations`.

    ``data_root``: folder the paths are relative to (default: the list's folder; a folder dataset's
    videos are inside it, so it does not apply there). ``classes``: a class list, a classes.txt
    path, or None to use ``classes.txt`` beside the list when it exists. ``known_classes``: the
    class names to number class-name labels (and a folder's class folders) by when the data
    brings no class list of its own - the model's classes in evaluation, the training classes for
    validation - so that label i means the same class in both. ``skip_bad_lines``: log and drop
    lines that do not parse instead of raising (the count and the first bad line are logged,
    never silent). Whether the videos exist is checked when they are read.
    """
    csv = Path(csv)
    given = read_classes(classes) if isinstance(classes, (str, os.PathLike)) else classes
    if os.path.isdir(csv):
        return read_folder(csv, given if given is not None else known_classes)
    if _is_video_name(csv.name) and os.path.isfile(csv):
        raise AnnotationError(f"{csv}: a video file, not an annotation list or a folder of class folders "
                              "(CLASS/video.mp4)")
    root = Path(data_root) if data_root is not None else csv.parent
    where = "the class list"
    if given is None and (csv.parent / CLASSES_FILE).is_file():
        given, where = read_classes(csv.parent / CLASSES_FILE), CLASSES_FILE
    lines = text_lines(read_text(csv, "annotation file", AnnotationError))  # a byte-order mark dropped
    first = next((n for n, line in enumerate(lines) if line.strip()), None)
    header = _header(csv, lines[first]) if first is not None else None
    rows, bad = [], []  # rows: (line number, path text, label text)
    for n, line in enumerate(lines, 1):
        if not line.strip() or (header is not None and n == first + 1):
            continue
        try:
            rows.append((n, *(header.fields(line) if header else parse_line(line))))
        except (ValueError, csv_module.Error) as exc:
            bad.append(_bad_line(csv, n, line, exc, skip_bad_lines))
    limits.LISTED_VIDEOS.check(len(rows), str(csv), AnnotationError)
    names = _class_list(rows, given, known_classes)
    lookup = {name: i for i, name in enumerate(names)} if names else {}
    by_name = names is not None and given is None and known_classes is None  # numbered from the labels
    records = []
    for n, rel, label_text in rows:
        try:
            label = lookup[label_text] if by_name else _label(label_text, lookup, names, where)
        except ValueError as exc:
            bad.append(_bad_line(csv, n, lines[n - 1], exc, skip_bad_lines))
            continue
        records.append(VideoRecord(root / rel, label, f"{csv}:{n}"))
    if bad:
        log.warning("%s: skipped %d bad annotation line(s); first: %s", csv, len(bad), bad[0])
    if not records:
        raise AnnotationError(f"{csv}: no clips listed")
    if names is None:  # ids without a class list: the largest one says how many classes there are
        top = max(records, key=lambda r: r.label)
        limits.NUM_CLASSES.check(top.label + 1, f"{top.source}: label id {top.label}", AnnotationError)
    return Annotations(tuple(records), tuple(names) if names else None, csv)


def _bad_line(csv: Path, n: int, line: str, exc: Exception, skip: bool) -> str:
    """The message of a bad line; raised unless ``skip``."""
    err = AnnotationError(f"{csv}:{n}: {exc}: {line.strip()[:80]!r}")
    if not skip:
        raise err from exc
    return str(err)


def _is_id(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _class_list(rows: list[tuple[int, str, str]], given: Sequence[str] | None,
                known: Sequence[str] | None) -> tuple[str, ...] | None:
    """The class names labels are numbered by: the given list; else, when the labels are names
    (the first label is not an id), the known classes, or the names in sorted order; else None."""
    if given is not None:
        return tuple(given)
    if not rows or _is_id(rows[0][2]):
        return None
    if known is not None:
        return tuple(known)
    return tuple(sorted({label for _, _, label in rows}))


def _label(text: str, lookup: dict[str, int], names: tuple[str, ...] | None, where: str = "the class list") -> int:
    """A label id from its text: an integer, or a class name when a class list (``where``) is known."""
    try:
        label = int(text)
    except ValueError:
        if text in lookup:
            return lookup[text]
        shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
        why = (" nor a known class name" if names else
               " (the first label is an id, so every label must be one; a classes.txt beside the list "
               "lets ids and names mix)")
        raise ValueError(f"label {shown} is not an integer{why}") from None
    if label < 0 or (names is not None and label >= len(names)):
        bound = f" ({where} has {len(names)} classes)" if names is not None else ""
        raise ValueError(f"unknown label id {label}{bound}")
    return label


# ----------------------------------------------------------------------------- folder datasets
def _is_video_name(name: str, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> bool:
    return os.path.splitext(name)[1].lower() in extensions


def _listing(folder: Path) -> list[os.DirEntry]:
    """The non-hidden entries of ``folder``, sorted by name."""
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise AnnotationError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder, links followed (False for a link that dangles or loops)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder ``path`` (links followed); None if it cannot be reached."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_videos(folder: str | os.PathLike, listed: int = 0, extensions: Sequence[str] = VIDEO_EXTENSIONS,
                seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """Video files under ``folder`` (by ``extensions``, lower case with the dot, matched
    case-insensitively; default :data:`VIDEO_EXTENSIONS`), recursively, in
    sorted order (by name, folder by folder, depth first). Hidden entries are skipped; a folder
    reached again through a symbolic link is not searched twice; a file link that dangles or
    loops is listed (reading it reports it). ``seen``: the (device, inode) of folders not to
    enter (searched before, or a folder dataset's root and other classes); the folders searched
    are added to it. More than :data:`fluxvit.limits.LISTED_VIDEOS` videos
    (``listed`` of them found elsewhere before) is an AnnotationError; the search stops there."""
    folder = Path(folder)
    cap = limits.LISTED_VIDEOS.value()
    found: list[Path] = []
    seen = set() if seen is None else seen
    stack = [folder]
    while stack:
        current = stack.pop()
        key = _identity(current)
        if key is None or key in seen:
            continue
        seen.add(key)
        below = []
        for entry in _listing(current):
            if _is_dir(entry):
                below.append(Path(entry.path))
            elif _is_video_name(entry.name, extensions):
                found.append(Path(entry.path))
                if listed + len(found) > cap:
                    limits.LISTED_VIDEOS.check(listed + len(found), f"{folder} (listing stopped)", AnnotationError)
        stack.extend(reversed(below))  # the first subfolder is searched next
    return found


def _check_class_name(folder: Path, name: str) -> None:
    """A folder name that classes.txt cannot hold as one line of UTF-8 is refused (it would read
    back as another name, or not at all)."""
    if not one_field(name):
        raise AnnotationError(f"{str(folder / name)!r}: a class folder name with spaces at its ends, a line break "
                              "or bytes that are not UTF-8 cannot be a class name in classes.txt; rename the folder")


def encodes_as_utf8(text: str) -> bool:
    """Whether ``text`` (a file name: undecodable bytes are surrogates) can be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_folder(folder: str | os.PathLike, classes: Sequence[str] | None = None) -> Annotations:
    """The folder dataset ``folder`` (``FOLDER/CLASS/.../video.ext``; see the module docstring) as
    :class:`Annotations` whose ``csv`` is the folder.

    Classes are the class folders' names, sorted, or ``classes`` when given (then every class
    folder must be one of them, and label i is ``classes[i]``). Refused, naming the folder: no
    class folder, a single class, a class folder without videos, more videos than
    :data:`fluxvit.limits.LISTED_VIDEOS`. Videos outside any class folder are left out (logged)."""
    folder = directory(folder, "dataset folder", AnnotationError)
    entries = _listing(folder)
    class_dirs = [Path(e.path) for e in entries if _is_dir(e)]
    stray = [e.name for e in entries if not _is_dir(e) and _is_video_name(e.name)]
    lists = sorted(e.name for e in entries if e.name.endswith((".csv", ".txt", ".tsv")) and not _is_dir(e))
    hint = f" (it holds {', '.join(lists[:3])}: give a list instead?)" if lists else ""  # a `prepare` output
    if not class_dirs:
        more = f" ({len(stray)} video(s) lie directly in it, outside any class folder)" if stray else ""
        raise AnnotationError(f"{folder}: no class folders{more}; a folder dataset is FOLDER/CLASS/video.mp4, "
                              f"one folder per class{hint}")
    if len(class_dirs) == 1:
        raise AnnotationError(f"{folder}: only one class folder ({class_dirs[0].name!r}); classification needs at "
                              f"least two classes{hint}")
    limits.NUM_CLASSES.check(len(class_dirs), str(folder), AnnotationError)
    for d in class_dirs:
        _check_class_name(folder, d.name)
    names = tuple(classes) if classes is not None else tuple(d.name for d in class_dirs)
    lookup = {name: i for i, name in enumerate(names)}
    # each class folder is its own folder; a link in one back to the dataset folder or into
    # another class is not followed (its videos would be listed again, under this class's label)
    keys = [_identity(d) for d in class_dirs]
    owners: dict[tuple[int, int] | None, Path] = {_identity(folder): folder}
    for d, key in zip(class_dirs, keys):
        if key is not None and key in owners:
            other = owners[key]
            if other != folder and other.is_symlink() and not d.is_symlink():
                d, other = other, d  # name the link
            same = "the dataset folder itself" if other == folder else f"class folder {other.name!r}"
            raise AnnotationError(f"{d}: the same folder as {same} (a symbolic link); each class needs a folder "
                                  "of its own")
        owners[key] = d
    seen = {key for key in owners if key is not None}
    records: list[VideoRecord] = []
    for d, key in zip(class_dirs, keys):
        if d.name not in lookup:
            raise AnnotationError(f"{d}: class {d.name!r} is not one of the {len(names)} known classes "
                                  f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
        seen.discard(key)  # this class's turn: its search adds it back
        videos = find_videos(d, len(records), seen=seen)
        if not videos:
            raise AnnotationError(f"{d}: class folder without videos (looked for "
                                  f"{', '.join(VIDEO_EXTENSIONS)}, in its subfolders too)")
        records += [VideoRecord(p, lookup[d.name], str(p)) for p in videos]
    if stray:
        log.warning("%s: %d video(s) outside any class folder left out (first: %s)", folder, len(stray), stray[0])
    return Annotations(tuple(records), names, folder)
