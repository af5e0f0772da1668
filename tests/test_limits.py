"""The resource policy: each cap refuses in one line naming the value, the cap and its setting,
and the setting raises it (or is itself refused when it is not a positive integer)."""

from __future__ import annotations

import pytest

from fluxvit import limits
from fluxvit.errors import ConfigError, VideoError


def test_a_cap_refuses_above_its_default_and_names_its_setting():
    cap = limits.VIEWS.default
    limits.VIEWS.check(cap, "--views")  # the cap itself is allowed
    with pytest.raises(ConfigError) as caught:
        limits.VIEWS.check(cap + 1, "--views 65x1")
    assert str(caught.value) == (f"--views 65x1: {cap + 1} views per video is more than the cap of {cap} "
                                 "(raise it with FLUXVIT_MAX_VIEWS)")


def test_the_setting_raises_or_lowers_the_cap(monkeypatch):
    monkeypatch.setenv("FLUXVIT_MAX_FRAME_PIXELS", str(2 * limits.FRAME_PIXELS.default))
    limits.FRAME_PIXELS.check(limits.FRAME_PIXELS.default + 1, "a.mp4", VideoError)
    monkeypatch.setenv("FLUXVIT_MAX_FRAME_PIXELS", "1e3")  # what people type
    with pytest.raises(VideoError, match=r"a.mp4: 1001 pixels per frame is more than the cap of 1000"):
        limits.FRAME_PIXELS.check(1001, "a.mp4", VideoError)


@pytest.mark.parametrize("text", ["0", "-5", "abc", "nan", "inf", "1.5e-3", "1e400", "-inf", "Infinity"])
def test_a_bad_setting_is_one_line(monkeypatch, text):
    monkeypatch.setenv("FLUXVIT_MAX_WORKERS", text)
    with pytest.raises(ConfigError, match=rf"^FLUXVIT_MAX_WORKERS={text!r}: must be a positive integer$"):
        limits.WORKERS.check(1, "--workers")


def test_non_finite_amounts_are_refused():
    for amount in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="is more than the cap"):
            limits.GRID_TOKENS.check(amount, "grid")


def test_every_cap_is_listed_once_with_its_setting():
    names = [lim.name for lim in limits.ALL]
    assert len(set(names)) == len(names)
    listing = limits.describe().splitlines()
    assert len(listing) == len(names) and all(line.startswith("FLUXVIT_MAX_") for line in listing)
