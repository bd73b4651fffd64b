"""The operator under cProfile: SIGUSR1 writes the profile to $PROF_OUT, then exits (webhook.py --profile)."""

from __future__ import annotations

import cProfile
import os
import signal
from typing import Any

profiler = cProfile.Profile()


def dump(*_: Any) -> None:
    profiler.disable()
    profiler.dump_stats(os.environ["PROF_OUT"])
    os._exit(0)


signal.signal(signal.SIGUSR1, dump)
profiler.enable()

from gismo_operator.__main__ import main  # noqa: E402

main([])
