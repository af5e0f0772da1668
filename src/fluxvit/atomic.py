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

A write that fails for a reason of the file system (a full disk, a file-size limit, a read-only
folder) raises :class:`~fluxvit.errors.OutputError`, which names the *final* path (never the
temporary one) and says whether an earlier file there was kept.

:func:`locked` serialises read-modify-write updates of one file between processes (several
``fluxvit optimize`` runs storing their choices in one checkpoint).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from fluxvit.errors import FluxViTError, OutputError, reason

# errors of the file system being written, whoever raised them (torch.save and safetensors name
# no file): a body's other OSErrors (an input it reads) pass through untouched
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


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
    tmp = temp_path(path)
    if os.path.lexists(path) and not path.is_symlink() and not path.is_file():
        # a device, a FIFO or a folder is never replaced by a file (/dev/full would become a PNG)
        raise OutputError(f"{path}: not a regular file; refusing to replace it", "not a regular file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{path}: could not write (a folder on its path is a file); nothing was written",
                          "a folder on its path is a file") from None
    except OSError as e:
        raise _output_error(path, e) from None
    try:
        # the temporary name is ours: whatever stands there (a stale .part, a planted symbolic
        # link that would write through to another file) is removed and the file made afresh
        _remove(tmp)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))
    except OSError as e:
        raise _output_error(path, e) from None
    try:
        try:
            yield tmp
        except Exception as e:
            cause = _write_error(e, tmp)
            if cause is None:
                raise
            raise _output_error(path, cause) from None
        try:
            if durable:
                _fsync(tmp)
            os.replace(tmp, path)
            if durable:
                _fsync(path.parent)
        except OSError as e:
            raise _output_error(path, e) from None
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill (with :func:`atomic_write`,
    :func:`write_text`); on success it takes the place of ``path`` - new, or an empty folder
    (through a symbolic link: the folder it names) - and on any exception, Ctrl-C included, it is
    removed: a folder of outputs (a report) appears whole or not at all. Errors name ``path``."""
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)  # a killed run's
        tmp.mkdir()
    except OSError as e:
        raise _output_error(path, e) from None
    try:
        try:
            yield tmp
        except OutputError as e:  # a file inside: named where it was to be
            raise OutputError(str(e).replace(str(tmp), str(path)), e.cause) from None
        try:
            os.replace(tmp, path)  # over an empty folder too
            _fsync(path.parent)
        except OSError as e:
            raise _output_error(path, e) from None
    finally:
        _remove(tmp)


def _write_error(e: Exception, tmp: Path) -> OSError | None:
    """The OS error behind ``e`` if it is a failure to write ``tmp``: an OSError naming it or
    of a full or read-only file system, or a library's error wrapping one (safetensors reports
    ``I/O error: File too large (os error 27)``); None for anything else."""
    if isinstance(e, FluxViTError):
        return None
    if isinstance(e, OSError):
        named = {os.fspath(f) for f in (e.filename, e.filename2) if f is not None}
        return e if os.fspath(tmp) in named or e.errno in _WRITE_ERRNOS else None
    wrapped = re.search(r"\(os error (\d+)\)", str(e))
    if wrapped and int(wrapped.group(1)) in _WRITE_ERRNOS:
        code = int(wrapped.group(1))
        return OSError(code, os.strerror(code))
    return None


def _output_error(path: Path, e: OSError) -> OutputError:
    kept = "the earlier file is kept" if path.exists() else "nothing was written"
    return OutputError(f"{path}: could not write ({reason(e)}); {kept}", reason(e))


def _remove(tmp: Path) -> None:
    """Remove a temporary file (or folder a writer made there) without masking the real error."""
    with contextlib.suppress(OSError):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (through ``.NAME.lock`` beside it) for a read-modify-write
    update; other processes wait. Advisory (``flock``): every fluxvit writer of such a file takes it;
    where the platform has no ``flock`` it is a no-op."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _output_error(path, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# A file name that is not UTF-8 (its bytes decoded by Python as surrogates) is written back as
# those bytes, as the terminal shows it: a report or a prediction table names the very file.
TEXT_ERRORS = "surrogateescape"


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8; file names' undecodable bytes as they were: :data:`TEXT_ERRORS`)
    to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=TEXT_ERRORS)
    return path
