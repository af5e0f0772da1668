"""The Flux batch sampler: grids within limits, same grid on every rank, disjoint ranks, resumption."""

from __future__ import annotations

import itertools

import pytest

from fluxvit.data.flux_sampler import FluxBatchSampler
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import FluxGrid, Grid

FLUX = FluxGrid(frames=(6, 24, 2), sizes=(112, 336, 28), min_tokens=2048, max_tokens=6144)


def batches(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_grids_respect_the_limits_and_vary():
    s = FluxBatchSampler(1000, 4, FLUX, seed=3, budget=2048)
    drawn = [b[0].grid for b in s]
    assert len(drawn) == 250
    for g in drawn:
        tokens = g.frames * (g.height // 14) ** 2
        assert 2048 <= tokens <= 6144 and 6 <= g.frames <= 24 and 112 <= g.height <= 336 and g.budget == 2048
    assert len(set(drawn)) > 20  # many of the admissible grids are used
    assert all(len({k.grid for k in b}) == 1 for b in batches(s, 10))  # one grid per batch


def test_ranks_share_grids_and_read_disjoint_samples():
    world = 3
    ranks = [FluxBatchSampler(100, 4, FLUX, seed=7, rank=r, world_size=world) for r in range(world)]
    per_rank = [list(r) for r in ranks]
    assert all(len(p) == 100 // 12 for p in per_rank)
    for step in range(len(per_rank[0])):
        assert len({p[step][0].grid for p in per_rank}) == 1
    seen = [k.index for p in per_rank for b in p for k in b]
    assert len(seen) == len(set(seen)) == 8 * 12
    seeds = [k.seed for p in per_rank for b in p for k in b]
    assert len(set(seeds)) == len(seeds)  # every clip its own augmentation stream


def test_deterministic_and_epochs_differ():
    a = batches(FluxBatchSampler(64, 4, FLUX, seed=1), 16)
    b = batches(FluxBatchSampler(64, 4, FLUX, seed=1), 16)
    assert a == b
    s = FluxBatchSampler(64, 4, FLUX, seed=1)
    first, second = list(s), list(s)  # a full pass moves to the next epoch
    assert first == a and second != first and s.epoch == 2
    assert sorted(k.index for b in second for k in b) == list(range(64))
    assert batches(FluxBatchSampler(64, 4, FLUX, seed=2), 16) != a


def test_resumed_sampler_continues_the_same_sequence():
    ref = FluxBatchSampler(60, 4, FLUX, seed=5)
    full = list(ref) + list(ref)  # two epochs, 15 steps each
    s = FluxBatchSampler(60, 4, FLUX, seed=5)
    it = iter(s)
    head = [next(it) for _ in range(7)]
    state = s.state_dict()
    assert state == {"epoch": 0, "step": 7, "seed": 5}
    resumed = FluxBatchSampler(60, 4, FLUX, seed=5)
    resumed.load_state_dict(state)
    rest = list(resumed)  # the rest of epoch 0
    tail = list(resumed)  # all of epoch 1
    assert head + rest + tail == full
    # a DataLoader runs ahead: the position the loop consumed can be saved explicitly
    again = FluxBatchSampler(60, 4, FLUX, seed=5)
    again.load_state_dict(s.state_dict(epoch=0, step=3))
    assert next(iter(again)) == full[3]
    with pytest.raises(ConfigError, match="seed"):
        again.load_state_dict({"epoch": 0, "step": 0, "seed": 6})


def test_fixed_grid_and_bad_settings():
    s = FluxBatchSampler(20, 5, Grid(8, 224), budget=1024)
    assert {k.grid for b in s for k in b} == {Grid(8, 224, budget=1024)}
    with pytest.raises(ConfigError, match="larger than"):
        FluxBatchSampler(20, 5, Grid(8, 112), budget=1024)
    with pytest.raises(ConfigError, match="cannot fill"):
        FluxBatchSampler(7, 4, FLUX, world_size=2)
    with pytest.raises(ConfigError):
        FluxBatchSampler(20, 4, FLUX, rank=2, world_size=2)
