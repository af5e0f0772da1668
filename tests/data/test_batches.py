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


def test_a_grid_per_rank_batch_mixes_grids_in_a_step_and_each_rank_resumes_its_own_stream():
    """``grid_per="rank_batch"`` (the release: a grid per local batch, seeded by seed + rank):
    in one step the ranks use different grids, each rank's stream is a pure function of (seed,
    step, rank) - a plan made afresh at step 30, as a resumed run makes it, continues it exactly -
    and the samples are the step mode's (only the grids differ)."""
    import pytest

    from fluxvit.errors import ConfigError

    world = 4
    ranks = [BatchPlan(96, 4, FLUX.grids, seed=7, rank=r, world=world, grid_per="rank_batch") for r in range(world)]
    mixed = [len({p.grid(m) for p in ranks}) for m in range(50)]
    assert sum(n > 1 for n in mixed) >= 45  # almost every step mixes grids (2048..6144 tokens: many admissible)
    for r, plan in enumerate(ranks):
        stream = [plan.grid(m) for m in range(60)]
        resumed = BatchPlan(96, 4, FLUX.grids, seed=7, rank=r, world=world, grid_per="rank_batch")
        assert [resumed.grid(m) for m in range(30, 60)] == stream[30:]
        step_mode = BatchPlan(96, 4, FLUX.grids, seed=7, rank=r, world=world)
        assert [plan.indices(m) for m in range(10)] == [step_mode.indices(m) for m in range(10)]
    # the plan's state names the mode and the world: a resume under another one is refused by the trainer
    assert ranks[0].state_dict() != BatchPlan(96, 4, FLUX.grids, seed=7, rank=0, world=world).state_dict()
    assert ranks[0].state_dict() != BatchPlan(96, 8, FLUX.grids, seed=7, rank=0, world=2,
                                              grid_per="rank_batch").state_dict()
    assert BatchPlan(96, 4, FLUX.grids, seed=7).state_dict() == {  # the default's state is what it always was
        "seed": 7, "num_samples": 96, "global_batch": 4, "grids": [str(g) for g in FLUX.grids]}
    with pytest.raises(ConfigError, match="flux.grid_per 'epoch' is not one of step, rank_batch"):
        BatchPlan(96, 4, FLUX.grids, grid_per="epoch")
