"""Cleans up after a LocalCluster whose driver died without closing it (SIGKILL, os._exit, crash).

Why: `LocalCluster.close()` runs on errors and on SIGTERM/Ctrl-C, but a driver killed outright
runs no Python code. This tiny process is started with the cluster and blocks reading a pipe from
the driver. A clean `close()` writes "done" first and the janitor exits quietly; if the pipe
closes without it (the driver is gone), the janitor kills every process carrying the cluster's
marker and removes the emulation file and the temporary directory.

Cost: one idle Python process (~10 MB) per cluster; nothing while the driver lives.

Usage (internal): ``python -m gismo.testing.janitor <marker> <path>...`` with stdin a pipe.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time


def clean(marker: str, paths: list[str]) -> None:
    """Kill the marker's processes (twice, a moment apart, for late children) and remove paths."""
    from gismo.testing.cluster import leftover_processes

    for _ in range(2):
        for pid in leftover_processes(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def main(argv: list[str]) -> int:
    marker, paths = argv[0], argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal Ctrl-C must not stop the cleanup
    try:
        said = sys.stdin.read()
    except OSError:
        said = ""
    if said.strip() != "done":
        clean(marker, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
