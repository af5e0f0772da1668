"""The batch planner: one grid per step within the family, the same on every rank, disjoint
ranks, every sample once an epoch, and a plan that is a pure function of (seed, step)."""

from __future__ import annotations

from fluxvit.data.batches import BatchPlan, seeded
from fluxvit.flux.grid import FluxGrid

FLUX = FluxGrid(frames=(6, 24, 2), sizes=(112, 336, 28), min_tokens=2048, max_tokens=6144)


def test_grids_stay_in_the_family_and_vary():
    plan = BatchPlan(1000, 4, FLUX.grids, seed=3)
    drawn = [plan.grid(m) for m in range(250)]
    for g in drawn:
        assert 2048 <= g.num_patches(14) <= 6144 and 6 <= g.frames <= 24 and 112 <= g.height <= 336
    assert len(set(drawn)) > 20  # many of the admissible grids are used
    assert BatchPlan(1000, 4, FLUX.grids[:1]).grid(17) == FLUX.grids[0]  # one grid: fixed-grid training


def test_ranks_share_grids_and_read_disjoint_samples():
    world = 3
    ranks = [BatchPlan(96, 4, FLUX.grids, seed=7, rank=r, world=world) for r in range(world)]
    steps = 96 // 12  # one epoch
    for m in range(steps):
        assert len({p.grid(m) for p in ranks}) == 1
    seen = [i for p in ranks for m in range(steps) for i in p.indices(m)]
    assert sorted(seen) == list(range(96))  # each sample once per epoch, over all ranks
    # the same global batch on one rank of 12 clips
    single = BatchPlan(96, 12, FLUX.grids, seed=7)
    assert single.indices(2) == [i for p in ranks for i in p.indices(2)]
    assert single.clip_generator(2, 5).initial_seed() == ranks[1].clip_generator(2, 1).initial_seed()


def test_the_plan_is_a_pure_function_of_seed_and_step():
    a, b = BatchPlan(64, 4, FLUX.grids, seed=1), BatchPlan(64, 4, FLUX.grids, seed=1)
    assert [a.indices(m) for m in range(40)] == [b.indices(m) for m in range(40)]
    assert [a.grid(m) for m in range(40)] == [b.grid(m) for m in range(40)]
    assert a.indices(16) != a.indices(0) or a.indices(17) != a.indices(1)  # a new epoch, a new order
    c = BatchPlan(64, 4, FLUX.grids, seed=2)
    assert [c.indices(m) for m in range(16)] != [a.indices(m) for m in range(16)]
    assert a.state_dict() == b.state_dict() != c.state_dict()
    assert seeded(1, 2, 3).initial_seed() == seeded(1, 2, 3).initial_seed() != seeded(1, 2, 4).initial_seed()
