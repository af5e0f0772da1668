"""The budget scheduler: which grid and token budget each request gets, and which are turned away.

A request's cost is its end-to-end time at an *operating point* (a grid and its token budget):
decoding the grid's frames, preprocessing them and the forward, measured on this machine at start
(:func:`fluxvit.evaluate.latency.measure_end_to_end`). Points are ranked by what they are worth:
by Token Optimization's accuracy where the checkpoint stores it (only the frontier of accuracy
against cost is kept), else by their budget. Requests are served first come, first served. When
a request's decoding starts, the scheduler gives it the best point at which every request then
waiting (it, and those queued behind it) is predicted to finish within the latency target,
counting the work already started ahead of them; so an idle server spends the full budget and a
busy one cuts each request to fewer tokens (and a cheaper grid) until the queue drains. A request
that cannot finish in time even at the cheapest point is refused at the door
(:class:`Overloaded`, HTTP 503 with Retry-After) instead of waiting forever. ``mode="fixed"``
serves every request at the full budget (the most tokens) and sheds nothing but the in-flight
cap: a plain server, for comparison. A client that asks for a budget gets it, on the frontier or
not.

The prediction counts the work one request after the other; decoding and the model overlap in
the service and requests share forwards, so ``calibration`` follows the server's real pace: an
exponential average, over the requests that end, of the server time each took (on a busy server
the time since the previous one ended) over its predicted cost. A machine busier or slower than
at start-up, or faster with batching and overlap, is predicted as it is. What the costs miss
(the HTTP side, threads waiting for the interpreter, the spread of decoding times) is in ``tail``:
the 95th percentile of measured over predicted latency, tracked over the answers (up a step when
an answer took longer than ``tail`` times its prediction, down a twentieth of a step when not, so
that 5% of answers end above it), and every prediction is multiplied by it: the target bounds the
p95, not the mean. An idle server admits any request (its prediction may be wrong, and it learns
only from answers).

Nothing here decodes or runs a model: time comes from ``clock`` (milliseconds), so tests replay
arrivals exactly.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid

MODES = ("adaptive", "fixed")
CALIBRATION_WEIGHT = 0.2  # the weight of the newest request in the running measured/predicted ratio
CALIBRATION_RANGE = (0.25, 8.0)  # one odd request (a huge upload, a cold cache) moves it at most this far
TAIL_QUANTILE = 0.95  # the share of requests whose latency the target is meant to bound (p95)
TAIL_STEP = 0.2  # how fast the tail factor moves: up 19% on a request over its prediction, down 1% under
TAIL_RANGE = (0.5, 8.0)
TAIL_START = 1.5  # cautious until answers say otherwise (a first burst is predicted 1.5x dearer)


@dataclass(frozen=True)
class OperatingPoint:
    """A grid with its token budget, what one request there costs on this machine (ms: decoding
    and preprocessing; the forward at batch 1) and, where Token Optimization stored it, the top-1
    it measured there (the budget table's accuracy)."""

    grid: Grid
    decode_ms: float
    forward_ms: float
    accuracy: float | None = None

    @property
    def tokens(self) -> int:
        return int(self.grid.budget)

    @property
    def cost_ms(self) -> float:
        return self.decode_ms + self.forward_ms

    def to_dict(self) -> dict:
        return {"grid": self.grid.shape, "tokens": self.tokens,
                "decode_ms": round(self.decode_ms, 2), "forward_ms": round(self.forward_ms, 2),
                "total_ms": round(self.cost_ms, 2), "top1": self.accuracy}


def _accuracy(point: OperatingPoint) -> float:
    return -1.0 if point.accuracy is None else point.accuracy


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def preference_order(points: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """``points`` from the least to the most wanted. With every point's accuracy known (Token
    Optimization's), the frontier of accuracy against measured cost: a point that costs at least
    as much as another and is no more accurate is dropped, and more accuracy is more wanted.
    Otherwise the budget decides: more tokens are more wanted."""
    if not all(p.accuracy is not None for p in points):
        return sorted(points, key=lambda p: (p.tokens, -p.cost_ms))
    kept: list[OperatingPoint] = []
    for p in sorted(points, key=lambda p: (p.cost_ms, -p.accuracy)):
        if not kept or p.accuracy > kept[-1].accuracy:
            kept.append(p)
    return kept


class Overloaded(Exception):
    """A request the server cannot take now: ``retry_after_s`` is when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class Ticket:
    """One admitted request: when it arrived, the point it was asked for (None: the scheduler
    chooses), and once started the point it runs at and when it started."""

    id: int
    arrived_ms: float
    requested: OperatingPoint | None = None
    point: OperatingPoint | None = None
    started_ms: float | None = None
    predicted_ms: float | None = None  # its whole latency, predicted when it started (before the tail factor)
    cancelled: bool = False


class BudgetScheduler:
    """Admission and per-request budgets over ``points`` (any order), for ``target_ms``.

    Thread-safe: the HTTP handlers admit and cancel, the decoding workers start, the model thread
    finishes."""

    def __init__(self, points: Sequence[OperatingPoint], target_ms: float, mode: str = "adaptive",
                 max_in_flight: int = 64, clock: Callable[[], float] | None = None,
                 full: OperatingPoint | None = None) -> None:
        if not points:
            raise ConfigError("the scheduler needs at least one operating point (grid and budget)")
        if mode not in MODES:
            raise ConfigError(f"unknown budget mode {mode!r}; use {' or '.join(MODES)}")
        if not (isinstance(target_ms, (int, float)) and math.isfinite(target_ms) and target_ms > 0):
            raise ConfigError(f"latency target must be a positive number of ms, got {target_ms!r}")
        self.points = preference_order(points)  # what adaptive chooses among, the least wanted first
        self.all_points = sorted(points, key=lambda p: (p.tokens, p.cost_ms))  # what a client may ask for
        self.cheapest = min(self.all_points, key=lambda p: p.cost_ms)
        # a plain server's point: ``full`` (the service gives the grid predict samples at the largest
        # budget), else the most tokens and, of those, the most accurate grid
        if full is not None and full not in self.all_points:
            raise ConfigError(f"the full-budget point {full.grid} is not among the operating points")
        self.full = full or max(self.all_points, key=lambda p: (p.tokens, _accuracy(p), -p.cost_ms))
        self._asked = {}  # budget -> the point a client asking for it gets: the most accurate of its grids
        for p in sorted(self.all_points, key=_accuracy):
            self._asked[p.tokens] = p
        self.target_ms = float(target_ms)
        self.mode = mode
        self.max_in_flight = max_in_flight
        self.clock = clock or (lambda: 1e3 * time.monotonic())
        self.calibration = 1.0
        self.tail = TAIL_START  # the 95th percentile of measured over predicted latency (see finish)
        self._last_finish_ms: float | None = None  # when the last started request ended
        self._busy_since_last = False  # whether requests were in flight when it did
        self._tickets: dict[int, Ticket] = {}  # admitted, not finished, in arrival order
        self._ids = itertools.count()
        self._lock = threading.Lock()

    # -- what the service asks
    @property
    def best(self) -> OperatingPoint:
        """The point an idle adaptive server runs: the most accurate, else the largest budget."""
        return self.points[-1]

    @property
    def budgets(self) -> list[int]:
        return sorted({p.tokens for p in self.all_points})

    def point_for(self, budget: int) -> OperatingPoint:
        """The operating point of a budget a client asked for (the most accurate of its grids); a
        budget the server does not run is a :class:`ConfigError` listing those it does."""
        if budget in self._asked:
            return self._asked[budget]
        raise ConfigError(f"budget {budget} is not served here; choose one of "
                          f"{', '.join(map(str, self.budgets))} (or auto)")

    def in_flight(self) -> int:
        with self._lock:
            return len(self._tickets)

    def waiting(self) -> int:
        """Admitted requests whose decoding has not started: the queue depth."""
        with self._lock:
            return sum(t.started_ms is None for t in self._tickets.values())

    # -- the life of a request
    def admit(self, requested: OperatingPoint | None = None, arrived_ms: float | None = None) -> Ticket:
        """A ticket for a new request, or :class:`Overloaded` when the in-flight cap is reached or
        (adaptive, no budget asked for) even the smallest budget would finish it too late.
        ``arrived_ms`` (on ``clock``): when the request reached the server, if before now (its
        upload and form took time that counts against the target too)."""
        with self._lock:
            now = self.clock()
            arrived = now if arrived_ms is None else min(arrived_ms, now)
            if len(self._tickets) >= self.max_in_flight:
                raise Overloaded(f"{len(self._tickets)} requests in flight, the cap (--max-concurrent)",
                                 self._retry_after(self._work_ahead(now)))
            # an idle server takes any request: its prediction may be wrong, and it learns only from answers
            if self.mode == "adaptive" and requested is None and self._tickets:
                waiting = [t for t in self._tickets.values() if t.started_ms is None]
                cheapest = self.cheapest
                finish = self.tail * (now - arrived + self._finishes(self._work_ahead(now), waiting, cheapest)[-1]
                                      + cheapest.cost_ms * self.calibration)
                if finish > self.target_ms:
                    raise Overloaded(f"overloaded: this request would finish in {finish:.0f} ms even at the "
                                     f"cheapest budget ({cheapest.tokens} tokens at {cheapest.grid}), over the "
                                     f"{self.target_ms:g} ms target", self._retry_after(finish - self.target_ms))
            ticket = Ticket(next(self._ids), arrived, requested)
            self._tickets[ticket.id] = ticket
            return ticket

    def start(self, ticket: Ticket) -> OperatingPoint:
        """Decoding of ``ticket`` begins: the operating point it runs at (see the module docstring)."""
        with self._lock:
            now = self.clock()
            ahead = self._work_ahead(now)  # before this one counts as started
            ticket.started_ms = now
            if ticket.requested is not None:
                ticket.point = ticket.requested
            elif self.mode == "fixed":
                ticket.point = self.full
            else:
                ticket.point = self._choose(ticket, now, ahead)
            ticket.predicted_ms = now - ticket.arrived_ms + ahead + ticket.point.cost_ms * self.calibration
            return ticket.point

    def finish(self, ticket: Ticket, measured_ms: float | None = None) -> None:
        """``ticket`` is done (answered, failed or cancelled). What it cost calibrates the
        predictions: on a server busy since the previous request ended, the time between the two
        (decoding and forwards overlap, requests share forwards: this is the server's real pace);
        else ``measured_ms``, the work it took itself (its decoding, its share of the forward)."""
        with self._lock:
            self._tickets.pop(ticket.id, None)
            now = self.clock()
            if ticket.point is None or ticket.started_ms is None:
                return  # it never started: it cost nothing
            if self._busy_since_last and self._last_finish_ms is not None:
                spent = now - max(self._last_finish_ms, ticket.arrived_ms)
            else:
                spent = measured_ms
            if spent is not None and spent >= 0:
                mixed = (1 - CALIBRATION_WEIGHT) * self.calibration + CALIBRATION_WEIGHT * spent / ticket.point.cost_ms
                self.calibration = _clamp(mixed, CALIBRATION_RANGE)
            if measured_ms is not None and ticket.predicted_ms:  # answered: how far off was its prediction?
                over = (now - ticket.arrived_ms) / ticket.predicted_ms > self.tail
                step = TAIL_STEP * (TAIL_QUANTILE if over else TAIL_QUANTILE - 1)
                self.tail = _clamp(self.tail * (1 + step), TAIL_RANGE)
            self._last_finish_ms = now
            self._busy_since_last = bool(self._tickets)

    def cancel(self, ticket: Ticket) -> bool:
        """The client went away: a request still waiting leaves the queue now (True); one already
        decoding is dropped before its forward and leaves when that decoding ends (False)."""
        with self._lock:
            ticket.cancelled = True
            if ticket.started_ms is None:
                self._tickets.pop(ticket.id, None)
                return True
            return False

    # -- the prediction
    def _work_ahead(self, now: float) -> float:
        """ms of predicted work left in the requests already started."""
        left = 0.0
        for t in self._tickets.values():
            if t.started_ms is not None and t.point is not None:
                left += max(0.0, t.point.cost_ms * self.calibration - (now - t.started_ms))
        return left

    def _finishes(self, ahead: float, queue: list[Ticket], point: OperatingPoint) -> list[float]:
        """Predicted ms from now until each request of ``queue`` (waiting, in order) is done behind
        ``ahead`` ms of started work, when those without a budget of their own run at ``point``;
        the first entry is ``ahead``, the last the whole queue."""
        done, out = ahead, [ahead]
        for t in queue:
            done += (t.requested or point).cost_ms * self.calibration
            out.append(done)
        return out

    def _choose(self, ticket: Ticket, now: float, ahead: float) -> OperatingPoint:
        queue = [ticket] + [t for t in self._tickets.values() if t.started_ms is None]
        for point in reversed(self.points):  # the most wanted first
            finishes = self._finishes(ahead, queue, point)[1:]
            if all(self.tail * (now - t.arrived_ms + f) <= self.target_ms for t, f in zip(queue, finishes)):
                return point
        return self.cheapest

    def _retry_after(self, excess_ms: float) -> int:
        return max(1, math.ceil(max(excess_ms, self.cheapest.cost_ms) / 1e3))
