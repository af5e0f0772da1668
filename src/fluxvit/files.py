"""Checks on every file a user names, before it is opened.

A FIFO, ``/dev/zero`` or a directory given where a file is expected would otherwise hang the
command or fill memory; a path longer than the system allows, a symbolic-link loop or a NUL byte
would raise past the caller's error handling. :func:`regular_file` turns each into one line
(raised as the caller's error class, so eval can count a broken video where a config error stops
the command); :func:`read_text` also bounds what is read by the file's size
(:data:`fluxvit.limits.TEXT_FILE_BYTES`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from fluxvit import limits
from fluxvit.errors import ConfigError, FluxViTError


def _stat(path: Path, what: str, error: type[FluxViTError]) -> os.stat_result:
    try:
        return path.stat()
    except ValueError:  # a NUL byte: no such path can exist
        raise error(f"{str(path)!r}: not a valid path (it holds a NUL byte)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{path}: symbolic link loop") from None
        if exc.errno == errno.ENAMETOOLONG:
            text = str(path)
            shown = text if len(text) <= 400 else f"{text[:200]}...{text[-60:]}"  # still one readable line
            raise error(f"{shown}: path too long for this system ({len(text)} characters)") from None
        try:
            dangling = path.is_symlink()
        except OSError:
            dangling = False
        if dangling:
            raise error(f"{path}: dangling symbolic link to {os.readlink(path)}") from None
        if exc.errno == errno.ENOENT:
            raise error(f"{path}: no such {what}") from None
        raise error(f"{path}: cannot access ({exc.strerror or exc})") from None


def regular_file(path: str | os.PathLike, what: str = "file", error: type[FluxViTError] = ConfigError,
                 allow_empty: bool = False) -> Path:
    """``path`` as a Path if it is a regular file (non-empty unless ``allow_empty``); else
    ``error`` naming the path and the problem. Symbolic links are followed."""
    path = Path(path)
    st = _stat(path, what, error)
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory (expected: {what})")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file")
    if st.st_size == 0 and not allow_empty:
        raise error(f"{path}: empty file (0 bytes)")
    return path


def directory(path: str | os.PathLike, what: str = "folder", error: type[FluxViTError] = ConfigError) -> Path:
    """``path`` as a Path if it is a directory; else ``error`` naming the path and the problem."""
    path = Path(path)
    st = _stat(path, what, error)
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: not a directory (expected: {what})")
    return path


def file_or_directory(path: str | os.PathLike, what: str, error: type[FluxViTError] = ConfigError) -> Path:
    """``path`` if it is a directory or a non-empty regular file (a checkpoint may be either)."""
    path = Path(path)
    st = _stat(path, what, error)
    if stat.S_ISDIR(st.st_mode):
        return path
    return regular_file(path, what, error)


def new_or_empty_directory(path: str | os.PathLike, what: str = "output folder",
                           error: type[FluxViTError] = ConfigError, advice: str = "") -> Path:
    """``path`` if it is an empty folder, or does not exist yet and can be made (its nearest
    existing parent is a folder this process may write in: said before the work, not after
    it); else ``error`` naming the path and, for a folder in use, its first entry (and
    ``advice``, such as the option that allows it). Outputs go to new or empty folders, never
    over a finished one."""
    if not str(path).strip():
        raise error(f"the {what}'s name is empty")
    path = Path(path)
    try:
        exists = os.path.lexists(path)
    except ValueError:
        raise error(f"{str(path)!r}: not a valid path (it holds a NUL byte)") from None
    if not exists:
        check_can_be_made(path, error=error)
        return path
    directory(path, f"{what} (new or empty)", error)
    try:
        with os.scandir(path) as entries:  # the first entry is enough (a folder may hold millions)
            first = next(entries, None)
    except OSError as e:
        raise error(f"{path}: cannot list the {what} ({e.strerror or e})") from None
    if first is not None:
        raise error(f"{path}: not empty (it holds {first.name}); the {what} must be new or empty{advice}")
    return path


def read_text(path: str | os.PathLike, what: str = "file", error: type[FluxViTError] = ConfigError,
              limit: limits.Limit = limits.TEXT_FILE_BYTES, allow_empty: bool = True) -> str:
    """The text of the regular file ``path`` (UTF-8, a byte-order mark dropped), refused above
    ``limit`` bytes; undecodable bytes are ``error`` naming the file."""
    path = regular_file(path, what, error, allow_empty=allow_empty)
    limit.check(path.stat().st_size, str(path), error)
    try:
        with open(path, "rb") as f:
            data = f.read(limit.value() + 1)  # the size may grow between stat and read
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    limit.check(len(data), str(path), error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read {what} (not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start})") from None


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies below it, symbolic links resolved (False for a path
    that cannot be resolved)."""
    try:
        p, f = Path(path).resolve(), Path(folder).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return p == f or f in p.parents


def refuse_overwriting_input(out: str | os.PathLike, inputs, flag: str) -> None:
    """:class:`ConfigError` if the output ``out`` is the same file as any of ``inputs`` (after
    resolving links): no command ever writes over what it reads."""
    try:
        target = Path(out).resolve()
    except (OSError, RuntimeError):
        return
    for p in inputs:
        try:
            same = Path(p).resolve() == target or (target.exists() and os.path.samefile(p, target))
        except (OSError, ValueError, RuntimeError):
            continue
        if same:
            raise ConfigError(f"{flag} {out}: is an input of this command ({p}); choose another name")


def check_can_be_made(path: str | os.PathLike, flag: str = "", error: type[FluxViTError] = ConfigError) -> None:
    """``error`` unless the new ``path`` can be made: its nearest existing parent is a folder
    this process may write in (a parent that is a file, or ``/dev/null``, or a read-only folder
    is said before the work, not when its result is written)."""
    path = Path(path)
    try:
        above = next(p for p in path.absolute().parents if os.path.lexists(p))
    except (ValueError, OSError):  # a NUL byte, an unreadable parent
        raise error(f"{flag + ' ' if flag else ''}{path}: not a valid output path") from None
    if not os.path.isdir(above) or not os.access(above, os.W_OK | os.X_OK):
        raise error(f"{flag + ' ' if flag else ''}{path}: cannot be made ({above} is not a folder this process may "
                    "write in)")


def refuse_existing_output(out: str | os.PathLike, flag: str) -> None:
    """:class:`ConfigError` if the output ``out`` already exists (a file, a link, a device, a
    folder): a result, a feature file or a converted checkpoint is written once, never over
    another one; or if it cannot be made (:func:`check_can_be_made`)."""
    if os.path.lexists(out):
        raise ConfigError(f"{flag} {out}: exists; choose a new name (results are never overwritten)")
    check_can_be_made(out, flag)


def aside_name(path: str | os.PathLike) -> Path:
    """The first free ``<path>.old-N`` (N = 1, 2, ...) beside ``path``: where an earlier run is
    moved before a new one takes its folder, so that nothing finished is overwritten."""
    base = Path(path).resolve()
    n = 1
    while base.with_name(f"{base.name}.old-{n}").exists():
        n += 1
    return base.with_name(f"{base.name}.old-{n}")
