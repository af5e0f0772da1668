"""Annotation files: one clip a line, ``relative/path.mp4<sep>label``, the release's
Kinetics/SSv2 list format.

The separator is a tab, a comma or whitespace (the release's Kinetics/SSv2 lists use a space); the
label is the *last* field, so a tab- or comma-separated path may contain spaces. No header. Paths
are resolved against a data root (default: the CSV's folder). An optional ``classes.txt`` beside the
CSV names label ``i`` on its line ``i``; with it, a label may also be written as the class name, and
an id outside the list is an error. Every bad line raises :class:`~fluxvit.errors.AnnotationError`
naming ``file:line``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fluxvit.errors import AnnotationError
from fluxvit.files import read_text

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
# what counts as a video when a folder is searched (``fluxvit predict DIR``)
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
    """The clips of one annotation file, and the class names if known."""

    records: tuple[VideoRecord, ...]
    classes: tuple[str, ...] | None
    csv: Path

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


def read_classes(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names, one a line (line i names label i); blank lines are errors (they would shift ids)."""
    path = Path(path)
    lines = read_text(path, "class list", AnnotationError).splitlines()
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
    """``(path, label)`` text of one line; ValueError if it has no separator or an empty field."""
    text = line.strip()
    for sep in ("\t", ","):
        if sep in text:
            path, _, label = text.rpartition(sep)
            break
    else:
        parts = text.rsplit(None, 1)
        path, label = (parts[0], parts[1]) if len(parts) == 2 else ("", text)
    path, label = path.strip(), label.strip()
    if not path or not label:
        raise ValueError("expected 'relative/path.mp4<sep>label' with a space, comma or tab between")
    if "\0" in path:
        raise ValueError("the path holds a NUL byte")
    return path, label


def read_annotations(
    csv: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    classes: str | os.PathLike | tuple[str, ...] | None = None,
    skip_bad_lines: bool = False,
) -> Annotations:
    """Parse ``csv`` into :class:`Annotations`.

    ``data_root``: folder the paths are relative to (default: the CSV's folder). ``classes``: a class
    list, a classes.txt path, or None to use ``classes.txt`` beside the CSV when it exists.
    ``skip_bad_lines``: log and drop lines that do not parse instead of raising (the count and the
    first bad line are logged, never silent). Whether the videos exist is checked when they are read.
    """
    csv = Path(csv)
    root = Path(data_root) if data_root is not None else csv.parent
    if classes is None and (csv.parent / CLASSES_FILE).is_file():
        classes = csv.parent / CLASSES_FILE
    names = read_classes(classes) if isinstance(classes, (str, os.PathLike)) else classes
    lookup = {name: i for i, name in enumerate(names)} if names else {}
    lines = read_text(csv, "annotation file", AnnotationError).splitlines()  # a byte-order mark dropped
    records, bad = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{csv}:{n}"
        try:
            rel, label_text = parse_line(line)
            label = _label(label_text, lookup, names)
        except ValueError as exc:
            err = AnnotationError(f"{where}: {exc}: {line.strip()[:80]!r}")
            if not skip_bad_lines:
                raise err from exc
            bad.append(str(err))
            continue
        records.append(VideoRecord(root / rel, label, where))
    if bad:
        log.warning("%s: skipped %d bad annotation line(s); first: %s", csv, len(bad), bad[0])
    if not records:
        raise AnnotationError(f"{csv}: no clips listed")
    return Annotations(tuple(records), tuple(names) if names else None, csv)


def _label(text: str, lookup: dict[str, int], names: tuple[str, ...] | None) -> int:
    """A label id from its text: an integer, or a class name when a class list is known."""
    try:
        label = int(text)
    except ValueError:
        if text in lookup:
            return lookup[text]
        shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
        raise ValueError(f"label {shown} is not an integer" + (" nor a known class name" if names else "")) from None
    if label < 0 or (names is not None and label >= len(names)):
        bound = f" (classes.txt has {len(names)} classes)" if names is not None else ""
        raise ValueError(f"unknown label id {label}{bound}")
    return label
