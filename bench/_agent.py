"""Start-up of one agent subprocess for the benchmarks (bench/ is not a package: a script imports this
as ``_agent``, its own folder being first on ``sys.path``).

The agent gets this process's environment less every ``GISMO_`` variable, plus ``env``; it is ready
once it answers a HEALTH request on its socket.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from gismo import contract
from gismo.daemon import protocol

#: The agent's own command line (``python -m gismo.cli agent``); ``command`` replaces it (a profiler).
AGENT_COMMAND = ("-m", "gismo.cli", "agent")
START_TIMEOUT_S = 60.0


def start_agent(
    env: dict[str, str], log: str, *, nofile: int | None = None, command: Sequence[str] = AGENT_COMMAND
) -> subprocess.Popen[bytes]:
    """An agent subprocess logging to ``log``, answering on ``env[GISMO_SOCKET]``; with ``nofile``,
    its open-file limit (soft and hard) is that many."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(contract.ENV_PREFIX)} | env

    def cap() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "ab") as f:
        p = subprocess.Popen([sys.executable, *command], env=full, stdin=subprocess.DEVNULL, stdout=f,
                             stderr=f, preexec_fn=cap if nofile is not None else None)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"agent exited {p.returncode}; see {log}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(env[contract.ENV_SOCKET])
                s.sendall(protocol.frame(protocol.HEALTH))
                if s.recv(64):
                    return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit(f"agent did not start within {START_TIMEOUT_S:g} s; see {log}")
