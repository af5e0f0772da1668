"""User-facing errors.

Every mistake a user can make (a missing video, a bad CSV line, a budget larger than the grid, a
checkpoint for another model) raises a subclass of :class:`FluxViTError` whose message is one
line naming the thing and the problem. The command line prints that line and exits non-zero;
library users catch the class they care about.
"""

from __future__ import annotations


class FluxViTError(Exception):
    """Base class of every error caused by user input (files, values, configs)."""


class ConfigError(FluxViTError, ValueError):
    """A value or configuration that cannot be used (bad budget, grid, key, type)."""


class CheckpointError(FluxViTError):
    """A checkpoint that cannot be read, is untrusted, or belongs to another model."""


class VideoError(FluxViTError):
    """A video that is missing, unreadable or has no decodable frames."""


class OutputError(FluxViTError, OSError):
    """An output that could not be written (a full disk, a read-only folder); names the final path.
    ``cause`` is the system's reason alone (``No space left on device``), for a caller that words
    its own message."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause or message


class AnnotationError(FluxViTError, ValueError):
    """An annotation (CSV) line or class list that does not parse."""


def reason(e: BaseException, limit: int = 160) -> str:
    """The cause of ``e`` in one short line, for a message that wraps it: an OS error's own
    text (``No space left on device``), else the first line of the message, else the type."""
    if isinstance(e, OutputError):
        return e.cause
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__
