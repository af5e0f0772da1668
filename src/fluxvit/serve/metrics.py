"""The service's Prometheus metrics (``GET /metrics``), in a registry of its own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fluxvit.serve.scheduler import BudgetScheduler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0, 8.0)  # of the target: its buckets


class Metrics:
    """Requests by status code, errors by kind, request latency, budgets and batch sizes served,
    and the scheduler's queue depth, requests in flight and calibration."""

    def __init__(self, scheduler: BudgetScheduler) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        target_s = scheduler.target_ms / 1e3
        self.requests = Counter("fluxvit_requests", "classify requests answered, by HTTP status code", ["code"],
                                registry=r)
        self.errors = Counter("fluxvit_errors", "classify requests that failed, by kind", ["kind"], registry=r)
        self.latency = Histogram("fluxvit_request_latency_seconds", "classify requests' time in the server",
                                 buckets=[round(target_s * f, 6) for f in LATENCY_FRACTIONS], registry=r)
        self.budget = Histogram("fluxvit_budget_tokens", "token budget each classified request ran at",
                                buckets=scheduler.budgets, registry=r)
        self.batch = Histogram("fluxvit_batch_size", "requests per forward", buckets=[1, 2, 4, 8, 16, 32, 64],
                               registry=r)
        Gauge("fluxvit_queue_depth", "admitted requests waiting to be decoded", registry=r).set_function(
            scheduler.waiting)
        Gauge("fluxvit_in_flight", "admitted requests not yet answered", registry=r).set_function(
            scheduler.in_flight)
        Gauge("fluxvit_latency_calibration", "measured over predicted cost of recent requests",
              registry=r).set_function(lambda: scheduler.calibration)
        Gauge("fluxvit_latency_tail", "95th percentile of measured over predicted latency", registry=r).set_function(
            lambda: scheduler.tail)
        Gauge("fluxvit_latency_target_seconds", "the latency target", registry=r).set(target_s)

    def text(self) -> bytes:
        return generate_latest(self.registry)
