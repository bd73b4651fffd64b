"""Every record kind of the shared-memory format, written one way and read the other.

memory/layout.py is the one definition of the format. Here the daemon (an in-process Agent serving
a temporary slice from a thread) and a real Client write and read the same region, and each record
is checked through both views: the scalar codecs the client uses on its hot path and the numpy views
the daemon scans with. A drift between them (a field moved, a size changed) fails here.
"""

from __future__ import annotations

import ast
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gismo
from gismo import client as client_module
from gismo.config import Config
from gismo.daemon import Agent
from gismo.daemon.conn import Conn
from gismo.memory import layout
from gismo.memory.layout import Geometry
from gismo.testing.poolfile import create_pool_file

MiB = 1 << 20
REGION = 8 * MiB
AGENT_DIR = Path(gismo.__file__).parent
SLOT_NAMES = ("seq", "generation", "state", "flags", "offset", "length", "alloc")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Agent, gismo.Client]]:
    """Region 0 of a two-region slice file, served by an in-process Agent; a Client connected to it."""
    device = tmp_path / "slice"
    create_pool_file(str(device), "records", 2 * REGION)
    cfg = Config(
        device=str(device), pool="records", file_prefixes=(str(tmp_path),), slice_size=2 * REGION,
        region=0, region_size=REGION,
        socket=str(tmp_path / "agent.sock"), owner="records-test", grace_ms=1.0,
    )  # fmt: skip
    agent = Agent(cfg)
    agent.listen()
    thread = threading.Thread(target=agent.serve, name="agent", daemon=True)
    thread.start()
    client = gismo.connect(socket_path=cfg.socket, device=str(device))
    try:
        yield agent, client
    finally:
        client.close()
        agent.stop()
        thread.join(10)
        os.close(agent._lock_fd)
        agent.map.close()


def _slot_view(agent: Agent, slot: int) -> dict[str, int]:
    """The daemon's numpy view of one slot."""
    row = agent._slots()[slot]
    return {name: int(row[name]) for name in SLOT_NAMES}


def test_dtypes_and_structs_describe_the_same_bytes() -> None:
    assert layout.slot_dtype().itemsize == layout.SLOT_SIZE
    assert layout.pin_dtype().itemsize == layout.PIN_SIZE == layout.PIN.size
    assert (
        layout.counters_dtype().itemsize == layout.COUNTER_SIZE >= layout.COUNTERS.size + layout.HOLDER.size
    )
    buf = bytearray(layout.SLOT_SIZE)
    layout.write_slot(buf, 0, 0x1122334455, layout.SEALED, 7, 0xABCDE000, 4321, 8192)
    row = np.frombuffer(buf, layout.slot_dtype(), 1)[0]
    seq, gen, state, flags, off, length, taken = layout.read_slot_raw(buf, 0)
    assert tuple(int(row[name]) for name in SLOT_NAMES) == (seq, gen, state, flags, off, length, taken)
    assert (gen, state, flags, off, length, taken) == (0x1122334455, layout.SEALED, 7, 0xABCDE000, 4321, 8192)
    assert layout.read_generation(buf, 0) == gen and layout.read_state(buf, 0) == state
    assert layout.read_seq(buf, 0) == seq and seq % 2 == 0
    layout.write_seal(buf, 0, 99)
    assert layout.read_slot_raw(buf, 0)[5] == 99 and layout.read_state(buf, 0) == layout.SEALED


def test_pin_and_counter_records_round_trip() -> None:
    buf = bytearray(2 * layout.PIN_SIZE)
    assert layout.read_pin(buf, 0) is None  # region 0 is stored as 1: all-zero means empty
    layout.write_pin(buf, layout.PIN_SIZE, 0, 17, 1 << 40)
    assert layout.read_pin(buf, layout.PIN_SIZE) == (0, 17, 1 << 40)
    assert bytes(buf[layout.PIN_SIZE :]) == layout.pack_pin(0, 17, 1 << 40)
    row = np.frombuffer(buf, layout.pin_dtype(), 2)[1]
    assert (int(row["region"]), int(row["slot"]), int(row["generation"])) == (1, 17, 1 << 40)
    layout.clear_pin(buf, layout.PIN_SIZE)
    assert bytes(buf) == layout.EMPTY_PIN * 2
    counters = bytearray(layout.COUNTER_SIZE)
    layout.write_counters(counters, 0, 12, 3)
    assert layout.read_counters(counters, 0) == (12, 3)
    layout.write_holder(counters, 0, 4242, 987654321, (1 << 64) - 3)
    assert layout.read_holder(counters, 0) == (4242, 987654321, (1 << 64) - 3)
    assert layout.read_counters(counters, 0) == (12, 3)  # one writer per field: no overlap
    c = np.frombuffer(counters, layout.counters_dtype(), 1)[0]
    assert (int(c["gets"]), int(c["fallbacks"])) == (12, 3)
    assert (int(c["holder_pid"]), int(c["holder_start"])) == (4242, 987654321)
    assert int(c["holder_token"]) == (1 << 64) - 3


def test_header_and_run_record_as_both_sides_read_them(served: tuple[Agent, gismo.Client]) -> None:
    agent, client = served
    # The daemon formatted the region; the client decoded its header from the shared mapping.
    assert client.geom == agent.geom
    assert Geometry.unpack_header(client.map.view, 0, 0, REGION) == agent.geom
    assert layout.read_run(client.map.view, 0) == (agent.epoch, os.getpid(), 0)


def test_a_slot_reserved_by_the_daemon_and_sealed_by_the_client_reads_the_same(
    served: tuple[Agent, gismo.Client],
) -> None:
    agent, client = served
    c = Conn(sock=None, cid=999)  # type: ignore[arg-type]  # no socket: the daemon's direct API
    slot, gen, off = agent.create(c, 100_000)
    pos = agent.geom.slot_pos(slot)
    # The daemon wrote it; the client's hot-path struct decodes the same fields as the daemon's view.
    seq, sgen, state, flags, soff, length, taken = client_module._SLOT.unpack_from(client.map.view, pos)
    view = _slot_view(agent, slot)
    assert (seq, sgen, state, flags, soff, length, taken) == tuple(view.values())
    assert (sgen, state, soff, length) == (gen, layout.RESERVED, off, 100_000) and seq % 2 == 0
    # The client path seals it (as Client._seal_slot does); the daemon accepts it by its own view.
    layout.write_seal(client.map.rw_view, pos, 99_999)
    view = _slot_view(agent, slot)
    assert (view["state"], view["length"], view["seq"] % 2) == (layout.SEALED, 99_999, 0)
    agent.seal(c, slot, gen)
    assert slot not in agent.reserved and agent.sealed == 1


def test_batch_reservations_written_with_numpy_decode_with_the_scalar_codec(
    served: tuple[Agent, gismo.Client],
) -> None:
    agent, client = served
    c = Conn(sock=None, cid=998)  # type: ignore[arg-type]
    made = agent.create_many(c, 1000, 16)
    assert len(made) == 16
    for slot, gen, off in made:
        s = layout.read_slot_stable(client.map.view, agent.geom.slot_pos(slot))
        assert s is not None and s.seq % 2 == 0
        assert (s.generation, s.state, s.offset, s.length) == (gen, layout.RESERVED, off, 1000)


def test_objects_pins_and_counters_through_a_real_client(served: tuple[Agent, gismo.Client]) -> None:
    agent, client = served
    data = np.arange(50_000, dtype=np.int64)
    ref = client.put(data)
    client.health()  # the seal notice leaves with this request
    view = _slot_view(agent, ref.slot)
    assert (view["generation"], view["state"], view["offset"], view["length"]) == (
        ref.generation, layout.SEALED, ref.offset, ref.size,
    )  # fmt: skip
    assert [ref.region, ref.slot, ref.generation, ref.offset, ref.size] in agent.list_objects()
    got = client.get(ref)
    assert np.array_equal(got, data)
    # The client's pin, written with its codec, is what the daemon's vectorised scan finds.
    assert (ref.slot, ref.generation) in agent.scan_pins()
    pins = np.frombuffer(agent.rw, layout.pin_dtype(), agent.geom.pins, agent.geom.pin_off)
    (used,) = np.nonzero(pins["region"])
    assert [layout.read_pin(client.map.view, agent.geom.pin_pos(int(e))) for e in used] == [
        (ref.region, ref.slot, ref.generation)
    ]
    # The client's lease counter record is what the daemon sums.
    assert agent.gets() == 1
    del got
    import gc

    gc.collect()
    assert (ref.slot, ref.generation) not in agent.scan_pins()


# Modules that may define struct formats: the shared-memory format, the object header inside an
# extent, the socket protocol's frames, the pool-file marker (outside every region), and kernel ABIs
# (the daemon's fcntl lock record, the SO_PEERCRED ucred), not ours.
FORMAT_OWNERS = {"memory/layout.py", "memory/serialize.py", "daemon/protocol.py", "poolfile.py"}
KERNEL_ABI = {"daemon/region.py": {"@hhqqi4x"}, "daemon/holders.py": {"3i"}}


def _struct_formats(path: Path) -> set[str]:
    """Format strings passed to struct.* calls in one module."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "struct"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
        ):  # fmt: skip
            out.add(node.args[0].value)
    return out


def test_no_module_but_layout_encodes_the_shared_memory_format() -> None:
    offenders: dict[str, Any] = {}
    for path in sorted(AGENT_DIR.rglob("*.py")):
        rel = path.relative_to(AGENT_DIR).as_posix()
        if rel in FORMAT_OWNERS:
            continue
        formats = _struct_formats(path) - KERNEL_ABI.get(rel, set())
        if formats:
            offenders[rel] = sorted(formats)
    assert offenders == {}, f"struct formats outside memory/layout.py: {offenders}"
    assert client_module._SLOT is layout.SLOT and client_module._SEQ is layout.SLOT_SEQ
