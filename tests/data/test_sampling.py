"""Frame-index sampling: segment (TSN), evenly spaced views, dense windows."""

from __future__ import annotations

import pytest
import torch

from fluxvit.data.sampling import (
    DenseSampler,
    SegmentSampler,
    dense_indices,
    dense_views,
    segment_indices,
    segment_views,
)
from fluxvit.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n, t", [(300, 8), (300, 24), (97, 16), (16, 16), (5, 8), (1, 6)])
def test_segment_indices_one_per_segment(n, t):
    for seed in range(20):
        idx = segment_indices(n, t, gen(seed))
        assert idx.shape == (t,) and idx.dtype == torch.int64
        assert idx.min() >= 0 and idx.max() <= n - 1
        assert torch.all(idx[1:] >= idx[:-1])
        if n >= t:  # frame i lies in segment i, the real interval [i n / t, (i + 1) n / t)
            lo = torch.arange(t) * n // t
            hi = -(-(torch.arange(t) + 1) * n // t)  # ceil
            assert torch.all((idx >= lo) & (idx < hi))


def test_segment_indices_are_seeded_and_spread():
    a, b = segment_indices(300, 8, gen(1)), segment_indices(300, 8, gen(1))
    assert torch.equal(a, b)
    draws = torch.stack([segment_indices(300, 8, gen(s)) for s in range(200)])
    assert draws[:, 0].unique().numel() > 25  # uniform over the 37-38 frames of segment 0
    assert not torch.equal(draws[0], draws[1])


def test_segment_views_are_evenly_spaced():
    views = segment_views(300, 8, 4)
    assert views.shape == (4, 8)
    # segment length 37.5; view k at (k+1)/5 of each segment
    assert views[:, 0].tolist() == [7, 15, 22, 30]
    assert views[1, 1].item() == int(37.5 + 15.0)
    assert torch.equal(segment_views(300, 8, 1)[0], (torch.arange(8) * 37.5 + 18.75).long())
    short = segment_views(4, 8, 2)
    assert short.max() == 3 and torch.all(short[:, 1:] >= short[:, :-1])


def test_dense_sampling():
    idx = dense_indices(100, 8, 4, gen(3))
    assert torch.equal(idx - idx[0], torch.arange(8) * 4) and idx[-1] <= 99
    starts = {int(dense_indices(100, 8, 4, gen(s))[0]) for s in range(100)}
    assert min(starts) >= 0 and max(starts) <= 100 - 29 and len(starts) > 30
    assert dense_indices(10, 8, 4, gen(0)).tolist() == [0, 4, 8, 9, 9, 9, 9, 9]  # short: repeat last
    v = dense_views(100, 8, 4, 3)
    assert v[:, 0].tolist() == [0, 36, 71] and torch.equal(v[2], 71 + torch.arange(8) * 4)
    assert dense_views(100, 8, 4, 1)[0, 0] == 36


def test_sampler_classes_and_errors():
    assert torch.equal(SegmentSampler().sample(50, 6, gen(2)), segment_indices(50, 6, gen(2)))
    assert torch.equal(DenseSampler(2).views(50, 6, 2), dense_views(50, 6, 2, 2))
    with pytest.raises(ConfigError):
        segment_indices(0, 8, gen())
    with pytest.raises(ConfigError):
        segment_views(10, 8, 0)
    with pytest.raises(ConfigError):
        dense_indices(10, 8, 0, gen())
