"""The one way this project writes a file: to a temporary name beside it, then renamed.

A reader (or a crash, or a full disk) never sees a half-written report, plot, config, cache,
feature file or checkpoint under its final name; on failure the temporary file is removed and
whatever stood at the final name before is left as it was.

    with atomic_write(path) as tmp:       # tmp: a Path in the same folder, same suffix
        fig.savefig(tmp)                  # any writer that takes a path
    write_text(path, text)                # the common case

The temporary name is the final one hidden and marked (``.report.md.part``): a later write of
the same file replaces a temporary one a killed process left behind. Writers that would choose a
format from the name are told it instead (matplotlib, FFmpeg). Its content is flushed to disk (fsync) before the
rename, and the folder after it, so a power cut leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The temporary name :func:`atomic_write` writes ``path`` under."""
    return path.with_name(f".{path.name}.part")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically (the parent
    folder is created if needed). On any exception the temporary file is removed and the
    exception propagates. ``durable=False`` skips the fsyncs (still atomic, not power-cut safe:
    for files that are cheap to make again, such as the synthetic benchmark's clips)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
