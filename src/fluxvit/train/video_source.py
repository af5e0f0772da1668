"""Clip sources over annotation files (decoded by the data pipeline), for ``data.source: csv``."""

from __future__ import annotations

from fluxvit.errors import ConfigError


def csv_sources(train: str, val: str | None, root: str | None, flip: bool):
    """(train, val) clip sources from annotation files."""
    raise ConfigError("data.source 'csv' needs the video data pipeline (fluxvit.data.datasets), not installed yet")
