"""The budget scheduler on a replayed clock: which point each request gets, and who is refused."""

from __future__ import annotations

import pytest

from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid
from fluxvit.serve.scheduler import TAIL_START, BudgetScheduler, OperatingPoint, Overloaded, preference_order


class Clock:
    def __init__(self) -> None:
        self.ms = 0.0

    def __call__(self) -> float:
        return self.ms


def point(frames: int, tokens: int, cost: float, top1: float | None = None) -> OperatingPoint:
    return OperatingPoint(Grid(frames, 112, 112, tokens), decode_ms=cost * 0.6, forward_ms=cost * 0.4, accuracy=top1)


SMALL, MID, FULL = point(2, 64, 10.0, 70.0), point(4, 128, 20.0, 75.0), point(8, 512, 40.0, 80.0)


def scheduler(mode: str = "adaptive", target: float = 100.0, cap: int = 64, points=(SMALL, MID, FULL)):
    """A scheduler on a replayed clock, its tail factor at 1 (the predictions as computed; it
    starts at TAIL_START, cautious, and learns: test_the_tail_factor_...)."""
    clock = Clock()
    s = BudgetScheduler(list(points), target, mode, cap, clock=clock)
    assert s.tail == TAIL_START
    s.tail = 1.0
    return s, clock


def test_frontier_drops_points_that_cost_more_for_no_more_accuracy():
    dear_and_worse = point(16, 256, 60.0, 74.0)  # costs more than MID, less accurate
    same_cost_worse = point(4, 96, 20.0, 72.0)
    order = preference_order([FULL, dear_and_worse, SMALL, same_cost_worse, MID])
    assert order == [SMALL, MID, FULL]
    # without accuracies, the budget ranks them
    plain = [point(8, b, b / 10) for b in (512, 64, 256)]
    assert [p.tokens for p in preference_order(plain)] == [64, 256, 512]


def test_an_idle_server_spends_the_best_point_and_a_burst_is_cut_until_every_request_fits():
    s, clock = scheduler()
    first = s.admit()
    assert s.start(first) == FULL  # alone: 40 ms fits 100
    s.finish(first)
    # a burst of 4 at t=0: at FULL they would end at 40, 80, 120, 160 ms; at MID at 20..80: all fit
    burst = [s.admit() for _ in range(4)]
    assert s.waiting() == 4
    assert s.start(burst[0]) == MID
    # 15 ms later, the next starts behind 5 ms of MID's work left, with 2 still waiting behind it:
    # waited 15 + 5 + 3 * 20 = 80 at MID fits; at FULL 15 + 5 + 3 * 40 = 140 does not
    clock.ms = 15.0
    assert s.start(burst[1]) == MID
    # with 4 more admitted at t=15 (6 waiting), MID no longer fits: 15 + 5 + 20 + 6 * 20 > 100
    more = [s.admit() for _ in range(4)]
    assert s.waiting() == 6
    clock.ms = 20.0
    assert s.start(burst[2]) == SMALL
    assert s.in_flight() == 8 and s.waiting() == 5
    for t in burst + more:
        s.finish(t)
    assert s.in_flight() == 0


def test_requests_that_cannot_make_the_target_even_at_the_cheapest_point_are_refused():
    s, clock = scheduler(target=50.0)
    admitted = []
    with pytest.raises(Overloaded) as info:
        for _ in range(10):  # 10 ms each at the cheapest: the 5th would end at 50, the 6th at 60
            admitted.append(s.admit())
    assert len(admitted) == 5
    assert "60 ms even at the cheapest budget (64 tokens" in str(info.value)
    assert info.value.retry_after_s == 1
    # finishing one makes room again
    s.finish(admitted.pop(0))
    admitted.append(s.admit())
    assert s.in_flight() == 5


def test_a_fixed_server_always_runs_the_best_point_and_refuses_only_over_its_cap():
    s, _ = scheduler("fixed", target=10.0, cap=3)
    tickets = [s.admit() for _ in range(3)]
    assert [s.start(t) for t in tickets] == [FULL] * 3
    with pytest.raises(Overloaded, match="3 requests in flight, the cap"):
        s.admit()


def test_a_requested_budget_is_kept_and_counted_in_the_others_prediction():
    s, _ = scheduler()
    assert s.point_for(128) == MID
    with pytest.raises(ConfigError, match="budget 100 is not served here; choose one of 64, 128, 512"):
        s.point_for(100)
    asked = s.admit(FULL)
    others = [s.admit() for _ in range(2)]
    assert s.start(asked) == FULL
    # behind 40 ms of FULL: two at MID end at 60 and 80 ms (fit), at FULL at 80 and 120 (do not)
    assert s.start(others[0]) == MID


def test_a_cancelled_request_leaves_the_queue_at_once_or_when_its_decoding_ends():
    s, _ = scheduler()
    waiting, started = s.admit(), s.admit()
    s.start(started)
    assert s.cancel(waiting) is True and s.in_flight() == 1
    assert s.cancel(started) is False and s.in_flight() == 1
    s.finish(started)
    assert s.in_flight() == 0


def test_calibration_follows_measured_costs_within_its_range():
    s, _ = scheduler()
    for _ in range(3):
        t = s.admit()
        s.start(t)  # FULL: 40 ms predicted
        s.finish(t, measured_ms=80.0)
    assert s.calibration == pytest.approx(1 + (1 - 0.8**3), rel=1e-9)  # 1 -> 2 at weight 0.2 each time
    for _ in range(200):
        t = s.admit()
        s.start(t)
        s.finish(t, measured_ms=1e6)
    assert s.calibration == 8.0
    # now every point costs 8x: one request alone at FULL (320 ms) misses 100, at SMALL (80) fits
    s.tail = 1.0  # (those answers took no time on this clock: they pulled the tail factor down)
    t = s.admit()
    assert s.start(t) == SMALL


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "100"])
def test_the_target_must_be_a_positive_number(bad):
    with pytest.raises(ConfigError, match="latency target must be a positive number"):
        BudgetScheduler([SMALL], bad)
    with pytest.raises(ConfigError, match="unknown budget mode 'fast'"):
        BudgetScheduler([SMALL], 100.0, "fast")


def test_a_busy_server_calibrates_on_its_pace_and_an_idle_one_admits_anything():
    s, clock = scheduler("fixed")
    a, b = s.admit(), s.admit()
    s.start(a)
    s.start(b)
    clock.ms = 50.0
    s.finish(a, measured_ms=60.0)  # the server was idle before: its own work, 60 / 40 predicted
    assert s.calibration == pytest.approx(0.8 + 0.2 * 1.5)
    clock.ms = 60.0
    s.finish(b, measured_ms=60.0)  # busy since a ended: 10 ms of the server's time, not its 60
    assert s.calibration == pytest.approx(0.8 * 1.1 + 0.2 * 10 / 40)
    cancelled = s.admit()
    s.cancel(cancelled)
    s.finish(cancelled)  # never started: no sample
    assert s.calibration == pytest.approx(0.8 * 1.1 + 0.2 * 10 / 40)
    # the cheapest point (10 ms) misses a 5 ms target: an idle server still takes one request
    s, _ = scheduler(target=5.0)
    first = s.admit()
    with pytest.raises(Overloaded):
        s.admit()
    assert s.start(first) == SMALL


def test_the_tail_factor_settles_where_one_answer_in_twenty_is_later_than_predicted():
    import random

    s, clock = scheduler("fixed", target=1000.0)
    ratios = [0.5 + 0.01 * (i % 100) for i in range(4000)]  # observed / predicted: 0.5 to 1.49, evenly
    random.Random(0).shuffle(ratios)
    over = 0
    for i, r in enumerate(ratios):
        t = s.admit()
        s.start(t)  # FULL alone: predicted 40 ms
        over += i >= 2000 and r > s.tail
        clock.ms += 40.0 * r
        s.finish(t, measured_ms=40.0)
        clock.ms += 1000.0  # idle between requests
        s.calibration = 1.0  # (keep the prediction fixed: this test is about the tail)
    assert 0.03 < over / 2000 < 0.08  # once settled, ~5% of answers end later than tail x predicted
    assert 1.25 < s.tail < 1.6  # near the ratios' 95th percentile, 1.44 (it moves in ~10% steps)
    # the prediction it now makes for the next request: 40 ms x the tail, against the target
    s2, _ = scheduler(target=50.0)
    s2.tail = 1.44
    t = s2.admit()
    assert s2.start(t) == MID  # FULL: 40 x 1.44 = 58 > 50; MID: 20 x 1.44 = 29 fits


def test_time_spent_before_admission_counts_against_the_target():
    s, clock = scheduler(target=100.0)
    busy = s.admit()
    s.start(busy)  # 40 ms of FULL ahead
    clock.ms = 50.0
    with pytest.raises(Overloaded):  # the work ahead is done by now, but 95 ms spent + 10 at the cheapest is 105
        s.admit(arrived_ms=-45.0)
    t = s.admit(arrived_ms=40.0)
    assert t.arrived_ms == 40.0 and s.start(t) == FULL  # 10 ms spent + 40 at FULL fits


def test_a_fixed_server_spends_the_full_budget_even_where_fewer_tokens_were_more_accurate():
    worse_full = point(8, 1024, 80.0, 77.0)  # the most tokens, less accurate than FULL (as the demo's 512 vs 256)
    s, _ = scheduler("fixed", points=(SMALL, MID, FULL, worse_full))
    t = s.admit()
    assert s.start(t) == worse_full
    a, _ = scheduler("adaptive", target=1000.0, points=(SMALL, MID, FULL, worse_full))
    assert worse_full not in a.points and a.start(a.admit()) == FULL  # off the frontier: adaptive never picks it
    assert a.point_for(1024) == worse_full and a.budgets == [64, 128, 512, 1024]  # a client may still ask for it
