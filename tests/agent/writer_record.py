"""Reading back store_writer.py's side file, and the checks every crash test makes with it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

Key = tuple[int, ...]


def start_writer(sock: str, side: str, count: int = 100_000, **env: str) -> subprocess.Popen[str]:
    """store_writer.py against ``sock``, recording into ``side``; ``env`` adds variables (a crash point)."""
    full = {k: v for k, v in os.environ.items() if k != "GISMO_TEST_CRASH_AT"}
    full.update(env)
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "store_writer.py"), sock, str(count), side],
        env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@dataclasses.dataclass
class Record:
    """What the writer said it did: refs it was given (with seed and size), deletes, the last intent."""

    put: dict[Key, tuple[int, int]] = dataclasses.field(default_factory=dict)
    deleting: set[Key] = dataclasses.field(default_factory=set)
    deleted: set[Key] = dataclasses.field(default_factory=set)
    last_putting: tuple[int, int] | None = None  # (seed, size) of the last put that started
    open_put: bool = False  # that put never returned
    open_delete: Key | None = None  # a delete that started and never returned
    agent_gone: bool = False

    @classmethod
    def read(cls, path: str) -> Record:
        rec = cls()
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:  # the writer has not started yet
            return rec
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # being written right now (read while the writer runs)
            msg = json.loads(line)
            kind = msg[0]
            if kind == "putting":
                rec.last_putting, rec.open_put = (msg[1], msg[2]), True
            elif kind == "put":
                rec.put[tuple(msg[1])] = (msg[2], msg[3])
                rec.open_put = False
            elif kind == "deleting":
                rec.deleting.add(tuple(msg[1]))
                rec.open_delete = tuple(msg[1])
            elif kind == "deleted":
                rec.deleted.add(tuple(msg[1]))
                rec.open_delete = None
            else:
                assert kind == "agent-gone", msg
                rec.agent_gone = True
        return rec

    @property
    def live(self) -> list[list[Any]]:
        """``[ref, seed, size]`` of every object put and never (even partly) deleted."""
        return [[list(r), s, n] for r, (s, n) in self.put.items() if r not in self.deleting]

    @property
    def live_refs(self) -> set[Key]:
        return {r for r in self.put if r not in self.deleting}
