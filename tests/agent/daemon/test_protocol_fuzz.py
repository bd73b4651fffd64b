"""Property test: random and malformed socket traffic never stops the agent serving correct answers."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storefix import Pool, Replies, stats_of

import gismo
from gismo.daemon import protocol
from gismo.daemon.protocol import FrameReader
from gismo.testing import wait_until

OPS = [*range(16), 0x7F, 0xFF]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Pool, gismo.Client, gismo.Ref]]:
    p = Pool(regions=2)
    try:
        p.agent(0)
        c = gismo.connect(p.agents[0].socket)
        ref = c.put(np.arange(100_000))
        yield p, c, ref
        c.close()
    finally:
        p.close()


BODY = {
    protocol.CREATE: 8,
    protocol.SEAL: 12,
    protocol.ABORT: 12,
    protocol.DELETE: 16,
    protocol.CREATE_MANY: 12,
}


def _plausible(t: tuple[int, int, int, int]) -> bytes:
    """A real op with a body of the right size and random field values."""
    op, a, b, c = t
    return protocol.frame(op, struct.pack("<QII", a, b, c)[: BODY[op]].ljust(BODY[op], b"\0"))


frames = st.lists(
    st.one_of(
        # Well-formed length, random op and body (wrong sizes, random values, unknown ops).
        st.tuples(st.sampled_from(OPS), st.binary(max_size=64)).map(lambda t: protocol.frame(t[0], t[1])),
        st.tuples(
            st.sampled_from(sorted(BODY)), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
        ).map(_plausible),
    ),
    min_size=1,
    max_size=8,
)  # fmt: skip


def _expects_reply(frame: bytes) -> bool:
    return not frame[4] & protocol.NOREPLY


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=frames, split=st.integers(1, 7), junk=st.one_of(st.none(), st.binary(min_size=1, max_size=16)))
def test_fuzzed_frames_get_replies_and_agent_keeps_serving(
    served: tuple[Pool, gismo.Client, gismo.Ref], frames: list[bytes], split: int, junk: bytes | None
) -> None:
    pool, client, ref = served
    sock_path = pool.agents[0].socket
    data = b"".join(frames)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        # Send in uneven pieces: the agent must reassemble frames across reads.
        step = max(1, len(data) // split)
        for i in range(0, len(data), step):
            s.sendall(data[i : i + step])
        replies = Replies(s)
        for f in frames:
            if _expects_reply(f):
                status, _body = replies.next()
                assert 0 <= status <= 7
        # The same connection still answers a real request after all that.
        s.sendall(protocol.frame(protocol.HEALTH))
        status, body = replies.next()
        assert status == 0 and b'"ok":true' in body
        if junk is not None:
            # An impossible length prefix: one error reply, then this connection (only) is closed.
            s.sendall(struct.pack("<I", protocol.MAX_FRAME + 1) + junk)
            status, _ = replies.next()
            assert status == gismo.errors.ProtocolError.code
            assert s.recv(16) == b""
    # Other clients are served correctly throughout. Wait until the agent has seen the fuzzer hang up
    # (2 clients = ours + this stats probe): its reservations are released then, so a fuzzed CREATE of
    # the whole region cannot make the put below fail.
    wait_until(lambda: stats_of(sock_path)["clients"] == 2, "fuzz connection to be closed")
    assert np.array_equal(client.get(ref), np.arange(100_000))
    r2 = client.put(b"still serving")
    assert client.get(r2) == b"still serving"
    client.delete(r2)
    st_ = client.stats()
    # Fuzzed reservations died with their sockets: only our client's small-object stash remains.
    assert st_["objects"] == 1 and st_["reserved"] == sum(len(v) for v in client._stash.values())
    assert st_["bytes_used"] + st_["bytes_reserved"] + st_["bytes_free"] == st_["data_size"]


def test_frame_reader_reassembles_and_rejects() -> None:
    r = FrameReader()
    f = protocol.frame(protocol.HEALTH) + protocol.frame(protocol.CREATE, b"\1" * 8)
    out = []
    for i in range(len(f)):
        out += r.feed(f[i : i + 1])
    assert out == [bytes([protocol.HEALTH]), bytes([protocol.CREATE]) + b"\1" * 8]
    with pytest.raises(gismo.errors.ProtocolError):
        FrameReader().feed(b"\0\0\0\0")
    with pytest.raises(gismo.errors.ProtocolError):
        FrameReader().feed(struct.pack("<I", protocol.MAX_FRAME + 1))


def test_error_reply_then_valid_request_on_same_connection(
    served: tuple[Pool, gismo.Client, gismo.Ref],
) -> None:
    pool, _c, _ref = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(pool.agents[0].socket)
        s.sendall(protocol.frame(protocol.CREATE, b"short") + protocol.frame(protocol.DELETE, bytes(16)))
        replies = Replies(s)
        assert replies.next()[0] == gismo.errors.ProtocolError.code
        assert replies.next()[0] in (gismo.StaleRef.code, gismo.ObjectNotFound.code)
        s.sendall(protocol.frame(protocol.STATS))
        assert replies.next()[0] == 0
