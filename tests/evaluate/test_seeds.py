"""Mean ± sd over seeds and the paired comparison of two methods on the same seeds and clips."""

from __future__ import annotations

import math

import pytest

from fluxvit.evaluate.seeds import format_mean_sd, mean_sd, paired


def test_mean_sd_is_the_sample_standard_deviation():
    mean, sd = mean_sd([70.0, 74.0, 66.0])
    assert mean == pytest.approx(70.0)
    assert sd == pytest.approx(4.0)  # sqrt((0 + 16 + 16) / 2)
    assert mean_sd([5.0]) == (5.0, 0.0)
    assert format_mean_sd([70.0, 74.0, 66.0]) == "70.0 ± 4.0"
    assert format_mean_sd([61.25]) == "61.2"  # one seed: no spread shown
    with pytest.raises(ValueError):
        mean_sd([])


def test_paired_difference_per_seed_and_pooled():
    # seed 0: 4 clips, A right on 3, B right on 1 (A only on clips 0 and 1): +50 points
    # seed 1: 2 clips, A right on 1, B right on 2 (B only on clip 1): -50 points
    a = [{"0": True, "1": True, "2": True, "3": False}, {"0": True, "1": False}]
    b = [{"0": False, "1": False, "2": True, "3": False}, {"0": True, "1": True}]
    d = paired(a, b)
    assert d.per_seed == pytest.approx((50.0, -50.0))
    assert d.seed_mean == pytest.approx(0.0) and d.worst_seed == pytest.approx(-50.0)
    assert d.seed_sd == pytest.approx(math.sqrt(2 * 50.0**2))
    # pooled over 6 pairs: differences +1 +1 0 0 0 -1 -> mean 1/6, sample var (25/6)/5 ... by hand:
    diffs = [1, 1, 0, 0, 0, -1]
    m = sum(diffs) / 6
    se = math.sqrt(sum((x - m) ** 2 for x in diffs) / 5 / 6)
    assert d.pairs == 6 and d.only_a == 2 and d.only_b == 1
    assert d.mean == pytest.approx(100 * m) and d.se == pytest.approx(100 * se)
    assert "+16.7" in str(d) and "2 vs 1" in str(d)


def test_paired_uses_only_clips_both_methods_scored():
    # clip "9" was unreadable for B (skipped): it does not count for either
    d = paired([{"1": True, "9": False}], [{"1": False}])
    assert d.pairs == 1 and d.per_seed == (100.0,)
    with pytest.raises(ValueError, match="share no clip"):
        paired([{"1": True}], [{"2": True}])
    with pytest.raises(ValueError, match="same"):
        paired([{"1": True}], [])


def test_identical_methods_differ_by_zero_with_zero_error():
    a = [{"0": True, "1": False}]
    d = paired(a, a)
    assert d.mean == 0.0 and d.se == 0.0 and d.only_a == d.only_b == 0
    ahead = paired([{"0": True, "1": True}], [{"0": False, "1": False}])
    assert ahead.se == 0.0 and ahead.mean == 100.0
