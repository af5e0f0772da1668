import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxvit.errors import ConfigError
from fluxvit.flux.selectors import SELECTORS, equal_shares, get_selector, group_dynamic_select, num_groups

# every selector keeps exactly N, but the one that reproduces the release's per-group rounding
EXACT_SELECTORS = sorted(set(SELECTORS) - {"group_dynamic_release"})


def _embeddings(b, t, l, c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, l, c, generator=g)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(EXACT_SELECTORS),
    t=st.integers(1, 13),
    l=st.integers(1, 20),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_every_selector_keeps_exactly_n_sorted_distinct(name, t, l, frac, seed):
    n = max(1, round(frac * t * l))
    x = _embeddings(2, t, l, seed=seed)
    kept = get_selector(name)(x, n, generator=torch.Generator().manual_seed(seed))
    assert kept.shape == (2, n) and kept.dtype == torch.long
    assert (kept[:, 1:] > kept[:, :-1]).all()  # strictly increasing => distinct and ordered
    assert kept.min() >= 0 and kept.max() < t * l
    again = get_selector(name)(x, n, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(kept, again)


def test_group_rule_matches_release_where_it_runs():
    assert [num_groups(t) for t in (2, 6, 8, 10, 12, 16, 24)] == [1, 2, 4, 2, 4, 4, 4]
    assert [num_groups(t) for t in (1, 3, 4, 5)] == [1, 1, 2, 1]


def test_equal_shares_give_remainder_to_earliest_groups():
    assert equal_shares(10, 4).tolist() == [3, 3, 2, 2]
    assert equal_shares(8, 4).tolist() == [2, 2, 2, 2]


def test_group_dynamic_keeps_the_moving_patches_with_equal_share_per_group():
    t, l = 8, 16
    x = torch.zeros(1, t, l, 4)
    moving = [3, 9]  # patches that change every frame
    for f in range(t):
        x[0, f, moving] = float(f % 2) * 5.0 + torch.arange(4.0)
        x[0, f, 12] = f * 0.01  # barely changing
    kept = group_dynamic_select(x, 8)  # 4 groups of 2 frames, 2 tokens each
    frames, patches = kept[0] // l, kept[0] % l
    assert sorted(set(patches.tolist())) == moving
    assert torch.bincount(frames // 2, minlength=4).tolist() == [2, 2, 2, 2]


def test_group_dynamic_first_frame_reuses_first_pair_score():
    # Group of 2 frames: both frames get the same score map, so with budget 2 x (one patch)
    # the same patch position is kept in both frames.
    x = torch.zeros(1, 2, 4, 3)
    x[0, 1, 2] = 1.0
    kept = group_dynamic_select(x, 2)
    assert kept.tolist() == [[2, 6]]


def test_selector_errors_are_clear():
    x = _embeddings(1, 2, 4)
    with pytest.raises(ConfigError, match="outside 1..8"):
        group_dynamic_select(x, 9)
    with pytest.raises(ConfigError, match="unknown token selector"):
        get_selector("best")
