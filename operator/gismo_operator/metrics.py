"""Prometheus metrics of the operator (prometheus-client, default registry, port ``METRICS_PORT``).

Exported names (a contract with dashboards and with the other operator modules, which import
these objects rather than defining their own):

- ``gismo_pool_capacity_bytes{pool}``, ``gismo_pool_allocated_bytes{pool}``,
  ``gismo_pool_free_bytes{pool}``, ``gismo_pool_slices{pool}``: gauges set on each status refresh.
- ``gismo_allocations_total{kind, result}``: counter; ``kind`` is ``slice`` or ``region``,
  ``result`` is ``ok``, ``full`` (no space: the pod or cluster runs without Gismo) or ``error``.
  Use :func:`count_allocation`.
- ``gismo_releases_total{kind}``: counter of slices/regions given back.
- ``gismo_webhook_duration_seconds{webhook, outcome}``: histogram of admission handler latency;
  ``outcome`` is ``allowed``, ``denied`` or ``error``. Use :func:`webhook_timer`.

Cost: label lookups are dict accesses; nothing here does I/O except :func:`start_server`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Literal

import kopf
import prometheus_client

POOL_CAPACITY = prometheus_client.Gauge("gismo_pool_capacity_bytes", "Pool capacity in bytes.", ["pool"])
POOL_ALLOCATED = prometheus_client.Gauge(
    "gismo_pool_allocated_bytes", "Bytes of the pool reserved by slices.", ["pool"]
)
POOL_FREE = prometheus_client.Gauge("gismo_pool_free_bytes", "Bytes of the pool not reserved.", ["pool"])
POOL_SLICES = prometheus_client.Gauge("gismo_pool_slices", "Slices reserved in the pool.", ["pool"])

ALLOCATIONS = prometheus_client.Counter(
    "gismo_allocations", "Slice and region allocation attempts by result.", ["kind", "result"]
)
RELEASES = prometheus_client.Counter("gismo_releases", "Slices and regions released.", ["kind"])

NOT_INJECTED = prometheus_client.Gauge(
    "gismo_pods_not_injected",
    "Live Ray pods of opted-in RayClusters running without the agent (never handled by the webhook).",
    ["namespace", "raycluster"],
)
NOT_INJECTED_REPORTED = prometheus_client.Counter(
    "gismo_pods_not_injected_reported",
    "Ray pods reported running without the agent (GismoNotInjected), once each.",
)

WEBHOOK_LATENCY = prometheus_client.Histogram(
    "gismo_webhook_duration_seconds",
    "Time spent in admission webhook handlers.",
    ["webhook", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

AllocationKind = Literal["slice", "region"]
AllocationResult = Literal["ok", "full", "error"]


def count_allocation(kind: AllocationKind, result: AllocationResult) -> None:
    """Count one allocation attempt of a slice or region."""
    ALLOCATIONS.labels(kind=kind, result=result).inc()


def count_release(kind: AllocationKind) -> None:
    """Count one slice or region given back."""
    RELEASES.labels(kind=kind).inc()


def set_pool(pool: str, *, capacity: int, allocated: int, free: int, slices: int) -> None:
    """Publish a pool's figures (called on every status refresh)."""
    POOL_CAPACITY.labels(pool=pool).set(capacity)
    POOL_ALLOCATED.labels(pool=pool).set(allocated)
    POOL_FREE.labels(pool=pool).set(free)
    POOL_SLICES.labels(pool=pool).set(slices)


def set_not_injected(namespace: str, raycluster: str, pods: int) -> None:
    """Publish how many live Ray pods of a cluster run without the agent."""
    NOT_INJECTED.labels(namespace=namespace, raycluster=raycluster).set(pods)


def count_not_injected() -> None:
    """Count one Ray pod reported as running without the agent."""
    NOT_INJECTED_REPORTED.inc()


def forget_pool(pool: str) -> None:
    """Drop a deleted pool's series so dashboards do not show it forever."""
    for gauge in (POOL_CAPACITY, POOL_ALLOCATED, POOL_FREE, POOL_SLICES):
        with contextlib.suppress(KeyError):
            gauge.remove(pool)


@contextlib.contextmanager
def webhook_timer(webhook: str) -> Iterator[None]:
    """Time an admission handler body. A :class:`kopf.AdmissionError` counts as ``denied``, any
    other exception as ``error``; the exception propagates unchanged.

    Usage::

        with metrics.webhook_timer("mutate-raypod"):
            ...
    """
    start = time.perf_counter()
    outcome = "allowed"
    try:
        yield
    except kopf.AdmissionError:
        outcome = "denied"
        raise
    except BaseException:
        outcome = "error"
        raise
    finally:
        WEBHOOK_LATENCY.labels(webhook=webhook, outcome=outcome).observe(time.perf_counter() - start)


def start_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``addr:port`` in a background thread (prometheus-client's own server)."""
    prometheus_client.start_http_server(port, addr=addr)
