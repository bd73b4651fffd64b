"""Command line: ``gismo agent`` runs the daemon, ``gismo stats`` / ``gismo health`` ask a running one,
``gismo deliver DEST`` copies the client into DEST (see gismo.deliver), ``gismo node`` runs the node
component (the kubelet device plugin; needs the ``node`` extra), ``gismo mark-pool-file PATH --pool P``
makes an existing famfs file the pool file of P (gismo.memory.poolfile.mark_fixed_file).

Flags override the ``GISMO_*`` environment (the chart sets env; flags are for humans and tests).
``gismo health`` exits 0 only when the agent serves its region; ``gismo health --answering`` exits 0
once the agent answers at all, degraded or not: the sidecar's startup probe, so a Gismo problem never
holds the Ray container back (an agent that cannot serve its region answers degraded, saying why).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .config import ConfigError, load
from .contract import BACKENDS, ENV_BACKEND, ENV_SOCKET, SOCKET_PATH
from .daemon.degraded import DEFAULT_RETRY_AFTER_S
from .errors import GismoError


def _geometry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="shm file or DAX device (GISMO_DEVICE)")
    p.add_argument("--backend", choices=BACKENDS, help=ENV_BACKEND)
    p.add_argument("--pool", help="GISMO_POOL")
    p.add_argument("--slice-offset", help="GISMO_SLICE_OFFSET (bytes or quantity)")
    p.add_argument("--slice-size", help="GISMO_SLICE_SIZE")
    p.add_argument("--region", type=int, help="GISMO_REGION (index in the slice)")
    p.add_argument("--region-size", help="GISMO_REGION_SIZE")
    p.add_argument("--region-offset", help="GISMO_REGION_OFFSET (absolute or slice-relative)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gismo", description="Gismo shared-memory object store")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent", help="run the agent daemon for this pod's region")
    _geometry_flags(a)
    a.add_argument("--socket", help=f"Unix socket path ({ENV_SOCKET}, default {SOCKET_PATH})")
    a.add_argument("--metrics-port", type=int, help="HTTP port for /metrics, /healthz, /readyz (0 = off)")
    a.add_argument("--slots", type=int, help="object slots in the region (default: one per 8 KiB)")
    a.add_argument("--pin-entries", type=int, help="pin table entries (default: as many as slots, ≥ 16384)")
    a.add_argument("--grace-ms", type=float, help="delay between delete and reclaim (default 5)")
    a.add_argument("--orphan-grace-s", type=float, help="quarantine of half-written slots after restart")
    a.add_argument(
        "--format-wait-s", type=float, help="wait for readers of a previous owner before formatting"
    )
    a.add_argument(
        "--owner", help="identity of the pod (GISMO_OWNER, default: hostname); a new owner reformats"
    )
    a.add_argument("--format", action="store_true", help="format the region even if it holds objects")
    a.add_argument(
        "--degraded-retry-s",
        type=float,
        default=DEFAULT_RETRY_AFTER_S,
        help="when the region cannot be served: answer degraded (clients fall back to Ray) this long, "
        "then exit 3 to be restarted (0: exit 2 at once)",
    )
    a.add_argument("--log-level", default="INFO")
    a.add_argument(
        "--deliver-to",
        metavar="DIR",
        help="first copy the gismo client into DIR (put DIR on the Ray container's PYTHONPATH)",
    )
    d = sub.add_parser(
        "deliver", help="copy the gismo client (sources and its abi3 extension) into DEST/gismo"
    )
    d.add_argument("dest", help="folder to put on PYTHONPATH")
    m = sub.add_parser(
        "mark-pool-file",
        help="make an existing fixed-size file (famfs) the pool file of POOL: write the Gismo marker into "
        "its last page (never creates, truncates or resizes it)",
    )
    m.add_argument("path", help="the file, of exactly capacity + 4096 bytes (famfs creat -s ...)")
    m.add_argument("--pool", required=True, help="the GismoPool's name")
    m.add_argument("--capacity", help="the pool's spec.capacity (e.g. 64Gi): checked against the size")
    n = sub.add_parser("node", help="run the node component: the kubelet device plugin for the pools")
    n.add_argument("--config", help="JSON config of the pools to serve (GISMO_NODE_CONFIG)")
    n.add_argument("--log-level", default="INFO")
    for name, text in (
        ("stats", "print the agent's counters as JSON"),
        ("health", "exit 0 if the agent serves its region (1 if it is degraded or absent)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--socket", help="agent socket (GISMO_SOCKET)")
        if name == "health":
            p.add_argument(
                "--answering",
                action="store_true",
                help="exit 0 once the agent answers at all, degraded or not (the sidecar's startup probe)",
            )
    return ap


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    skip = {"cmd", "format", "log_level", "deliver_to", "degraded_retry_s", "answering"}
    return {k: v for k, v in vars(ns).items() if k not in skip and v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``gismo``."""
    ns = _parser().parse_args(argv)
    if ns.cmd == "deliver":
        return _deliver(ns.dest)
    if ns.cmd == "mark-pool-file":
        return _mark_pool_file(ns.path, ns.pool, ns.capacity)
    if ns.cmd == "node":
        _logging(ns.log_level)
        return _node(ns.config)
    if ns.cmd == "agent":
        logging.basicConfig(
            level=getattr(logging, str(ns.log_level).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from .daemon import run
        from .daemon.server import serve_degraded

        socket_path = ns.socket or os.environ.get(ENV_SOCKET) or SOCKET_PATH
        # Delivery comes first, whatever happens to the agent after it: the Ray container imports
        # gismo from that folder (and falls back to Ray's store when the agent cannot serve). A failed
        # delivery must not keep Ray waiting either: answer degraded, saying why.
        if ns.deliver_to and _deliver(ns.deliver_to):
            return serve_degraded(
                socket_path, f"cannot deliver the client to {ns.deliver_to}", ns.degraded_retry_s
            )
        try:
            cfg = load(_overrides(ns))
        except ConfigError as exc:
            # A bad configuration must not keep Ray waiting: answer degraded, saying why.
            return serve_degraded(socket_path, f"gismo agent: {exc}", ns.degraded_retry_s)
        # run() validates: a configuration it refuses is served as a refusing agent (Ray still starts).
        return run(cfg, force_format=ns.format, degraded_retry_s=ns.degraded_retry_s)
    try:
        cfg = load(_overrides(ns))
        # stats/health only need the socket: use a bare protocol call, no mapping.
        out = _ask(cfg.socket, ns.cmd)
    except GismoError as exc:
        print(f"gismo {ns.cmd}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, sort_keys=True))
    if ns.cmd == "health" and not ns.answering and not out.get("ok"):
        return 1  # answering, but degraded: the reason is in the JSON above
    return 0


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _node(config_path: str | None) -> int:
    try:
        from .node.config import NodeConfigError, load_config
        from .node.service import NodeService
    except ImportError as exc:
        print(f"gismo node: {exc.name} is missing: install the node extra (pip install 'gismo[node]')",
              file=sys.stderr)  # fmt: skip
        return 2
    import signal
    import threading

    try:
        config = load_config(config_path)
    except NodeConfigError as exc:
        print(f"gismo node: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    NodeService(config).run(stop)
    return 0


def _deliver(dest: str) -> int:
    from .deliver import deliver

    try:
        target = deliver(dest)
    except OSError as exc:
        print(f"gismo deliver: cannot deliver the client to {dest}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"event": "delivered", "path": str(target)}), flush=True)
    return 0


def _mark_pool_file(path: str, pool: str, capacity: str | None) -> int:
    from .config import parse_size
    from .memory.poolfile import PoolFileError, mark_fixed_file

    try:
        size = None if capacity is None else parse_size(capacity)
        result = mark_fixed_file(path, pool, size)
    except (PoolFileError, ValueError) as exc:
        print(f"gismo mark-pool-file: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"event": f"pool-file-{result}", "path": path, "pool": pool}), flush=True)
    return 0


def _ask(path: str, cmd: str) -> Any:
    import socket

    from .daemon import protocol
    from .errors import AgentUnavailable, error_from_code

    op = protocol.STATS if cmd == "stats" else protocol.HEALTH
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(protocol.frame(op))
            rep = protocol.recv_frame(s)
    except OSError as exc:
        raise AgentUnavailable(f"no agent at {path}: {exc}") from exc
    if rep[0]:
        raise error_from_code(rep[0], rep[1:].decode(errors="replace"))
    return json.loads(rep[1:])


if __name__ == "__main__":
    sys.exit(main())
