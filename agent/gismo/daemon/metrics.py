"""Prometheus metrics and Kubernetes probes for the agent, on one small HTTP port.

``/metrics`` (Prometheus text), ``/healthz`` (the process is up), ``/readyz`` (the region is mapped
and the socket listens). A collector reads the agent's counters at scrape time, so the hot path
never touches a metric object. Runs in a daemon thread; it only reads agent state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .server import Agent


class AgentCollector(Collector):
    """Gauges and counters of one agent, labelled by region."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        s = self.agent.stats()
        labels = [str(s["region"])]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["region"])
            g.add_metric(labels, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["region"])
            c.add_metric(labels, value)
            return c

        yield gauge("gismo_bytes_used", "Data-area bytes held by objects (incl. deleted, still pinned)",
                    s["bytes_used"])  # fmt: skip
        yield gauge("gismo_bytes_reserved", "Data-area bytes handed to clients for puts in flight",
                    s["bytes_reserved"])  # fmt: skip
        yield gauge("gismo_bytes_free", "Data-area bytes free in this region", s["bytes_free"])
        yield gauge("gismo_largest_free_bytes", "Largest free extent", s["largest_free"])
        yield gauge("gismo_objects", "Sealed objects in this region", s["objects"])
        yield gauge("gismo_pending_deletes", "Deleted objects waiting for pins to drop", s["pending_deletes"])
        yield gauge("gismo_clients", "Connected client processes", s["clients"])
        yield gauge("gismo_ready", "1 when the agent serves requests", 1.0 if self.agent.ready else 0.0)
        info = GaugeMetricFamily(
            "gismo_coherence_info", "1, labelled with the cache-coherence strategy in use (hardware, "
            "flush:<instruction> or noncoherent-model)", labels=["region", "mode"],
        )  # fmt: skip
        info.add_metric([*labels, str(s["coherence"])], 1.0)
        yield info
        yield counter("gismo_puts", "Objects sealed", s["puts"])
        yield counter("gismo_gets", "Objects read by this pod's clients (any region)", s["gets"])
        yield counter("gismo_deletes", "Objects deleted", s["deletes"])
        yield counter("gismo_fallbacks", "Puts that fell back to Ray's object store", s["fallbacks"])


def serve_http(agent: Agent, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the metrics/probe server in a daemon thread; returns it (``shutdown()`` stops it)."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                body, code, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif path == "/healthz":
                body, code, ctype = b"ok\n", 200, "text/plain"
            elif path == "/readyz":
                ok = agent.ready
                body, code, ctype = (b"ready\n" if ok else b"not ready\n"), (200 if ok else 503), "text/plain"
            else:
                body, code, ctype = b"not found\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="gismo-metrics", daemon=True).start()
    return server
