"""Entry point: ``python -m gismo_operator`` / ``gismo-operator`` (``--dev`` for a local try-out).

Reads settings from the environment (``GISMO_OPERATOR_*``), sets up logging and metrics, imports
every handler module (:mod:`gismo_operator.registry`) and runs kopf cluster-wide, with the
liveness endpoint at ``:HEALTH_PORT/healthz`` and Prometheus metrics at ``:METRICS_PORT/metrics``.
Exit code 2 means bad settings (the message names the variable).
"""

from __future__ import annotations

import argparse
import gc
import logging
import secrets
import sys
from collections.abc import Sequence

import kopf

from gismo_operator import logs, metrics, registry
from gismo_operator.constants import COMPONENT
from gismo_operator.context import OperatorContext, install
from gismo_operator.settings import Settings, SettingsError, unknown_variables
from gismo_operator.webhook.server import StartupError

logger = logging.getLogger("gismo_operator")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMPONENT, description="The Gismo Kubernetes operator.")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="serve webhooks on 127.0.0.1 with a generated certificate and register the webhook "
        "configurations in the cluster (for a local API server); metrics/health on 127.0.0.1 too",
    )
    return parser.parse_args(argv)


#: Thresholds of the cyclic garbage collector (CPython's defaults: 700, 10, 10): a young
#: collection every 2000 net allocations, a middle one every 5 young ones, a full one every 500
#: middle ones (as often as the earlier 5000/10/100 in allocations).
GC_THRESHOLDS = (2000, 5, 500)


def tune_gc() -> None:
    """Shorter, rarer garbage-collector pauses: they were the admission latency tail.

    kopf wraps every admission's pod (and every watched object) in objects with reference cycles,
    so they are freed only by the cyclic collector, and objects still in flight when it runs are
    promoted to older generations. With CPython's defaults that ended in a full collection every
    few seconds under load, each scanning every object of the process (~100k, mostly kopf,
    aiohttp and pydantic from imports): tens of ms during which no admission is answered.

    - ``gc.freeze()`` after the imports moves those long-lived objects out of the collector's
      reach: a full collection scans only what the operator allocated since.
    - A larger young generation means fewer collections, so fewer in-flight objects are
      promoted (they die young instead); middle collections after 5 young ones rather than 10: a
      middle collection scans what every young one since promoted (requests in flight, sleeping
      tasks), and with 1,000 slices at 10 x 5000 that reached ~50k objects, 20-45 ms each,
      a pause every few seconds; at 5 x 2000 they take 3-7 ms.
    - Full collections every 100 middle ones instead of 10: measured under load they found almost
      nothing (tens of objects) yet cost 20-50 ms of CPU each (they touch every long-lived object,
      frozen ones' headers included), several times per benchmark run. Now one every few minutes
      at 200 admissions/s; what they collect late is little.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the operator until SIGINT/SIGTERM; return the process exit code."""
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"gismo-operator: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    for name in unknown_variables():
        logger.warning("ignoring unknown setting %s (not one of the GISMO_OPERATOR_* names)", name)

    addr = "127.0.0.1" if args.dev else "0.0.0.0"
    install(OperatorContext(settings=settings, dev=args.dev))
    try:
        loaded = registry.load_handlers()
    except registry.MissingHandlerModule as exc:
        logger.error("%s", exc)
        return 1
    logger.info("handler modules: %s", ", ".join(loaded))
    if settings.metrics_port:
        metrics.start_server(settings.metrics_port, addr=addr)
    tune_gc()
    liveness = f"http://{addr}:{settings.health_port}/healthz" if settings.health_port else None
    try:
        kopf.run(
            clusterwide=True,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            # kopf pauses every operator that shares the top priority, so equal priorities would
            # leave all replicas paused: each process draws its own, the highest one works.
            priority=secrets.randbelow(2**31 - 1) + 1 if settings.peering else 0,
            liveness_endpoint=liveness,
        )
    except StartupError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
