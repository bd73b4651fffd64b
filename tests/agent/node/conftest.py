"""Fixtures of the node component's tests: a short temporary folder for unix sockets, a fake kubelet
in it, and ``gismo node`` itself running in a thread against that folder."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakekubelet import FakeKubelet
from nodefix import base_config

from gismo.node.config import parse_config
from gismo.node.service import NodeService


@pytest.fixture
def node_dir() -> Iterator[Path]:
    """A short folder under /tmp (pytest's tmp_path can exceed the 107-byte unix socket path limit)."""
    path = Path(tempfile.mkdtemp(prefix="gn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def plugin_dir(node_dir: Path) -> Path:
    path = node_dir / "dp"
    path.mkdir()
    return path


@pytest.fixture
def kubelet(plugin_dir: Path) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(str(plugin_dir))
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def run_node(node_dir: Path, plugin_dir: Path) -> Iterator[Callable[[list[dict[str, Any]]], NodeService]]:
    """Start ``gismo node``'s service for ``pools`` in a thread; stopped (sockets closed) at teardown."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(pools: list[dict[str, Any]]) -> NodeService:
        service = NodeService(parse_config(base_config(node_dir, plugin_dir, pools)))
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        return service

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the node service did not stop"
