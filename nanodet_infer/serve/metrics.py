"""Prometheus metrics of the service (one registry per app, served as text at ``/metrics``).

``nanodet_requests_total{route, model, status}``, ``nanodet_request_seconds{route}`` (end to end),
``nanodet_stage_seconds{model, stage}`` (queue, decode, preprocess, inference, postprocess),
``nanodet_batch_size{model}``, ``nanodet_queue_depth{model}`` and ``nanodet_rejections_total{model, reason}``
(``queue_full``, ``shutting_down``, ``timeout``, ``too_large``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's counters, histograms and gauges on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nanodet_requests", "HTTP requests answered", ["route", "model", "status"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "nanodet_request_seconds", "End-to-end request latency", ["route"], buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "nanodet_stage_seconds", "Per-stage latency of detection requests", ["model", "stage"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "nanodet_batch_size", "Images per inference batch", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.queue_depth = Gauge("nanodet_queue_depth", "Jobs waiting for a batch", ["model"], registry=self.registry)
        self.rejections = Counter(
            "nanodet_rejections", "Requests refused", ["model", "reason"], registry=self.registry
        )

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
