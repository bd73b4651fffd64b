"""Object encoding inside the region, and zero-copy decoding into views over the mapping.

An object occupies one extent: ``[header 24 B][buffer table 16 B * n][meta][pad][buffer 0][pad]...``.
Every buffer starts 64-byte aligned (relative offsets; extents are themselves 64/4096 aligned).

Kinds:
- NDARRAY: a plain C-contiguous numpy array without Python objects. meta = dtype + shape; get returns
  a read-only ndarray over the mapping built in one step (fastest path; ~2 µs).
- BYTES: bytes, bytearray, contiguous memoryview. get returns a read-only ``memoryview`` over the
  mapping (zero copy; compare with ``==`` or call ``bytes()`` to copy).
- PICKLE: anything else, pickle protocol 5 with out-of-band buffers written straight into the region
  (numpy arrays nested in containers, pyarrow arrays/tables, ...); get unpickles with buffers that are
  read-only views over the mapping.

Cost of put: one pass over the pickle stream for PICKLE, plus exactly one memcpy of each buffer into
the region. Cost of get: no copy of any out-of-band buffer; only the pickle stream is parsed.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import CorruptRegion

MAGIC = b"GOBJ"
PICKLE, NDARRAY, BYTES = 1, 2, 3
_HDR = struct.Struct("<4sB3xIIQ")  # magic, kind, nbuf, meta_len, total
_BUF = struct.Struct("<QQ")  # offset (relative to the object), length
_DIM = struct.Struct("<Q")


def _a64(n: int) -> int:
    return (n + 63) & ~63


class Encoded:
    """An object ready to be written: header fields, meta bytes, raw buffers and their placement."""

    __slots__ = ("buffers", "kind", "meta", "places", "size")

    def __init__(
        self, kind: int, meta: bytes, buffers: list[memoryview], sizes: list[int] | None = None
    ) -> None:
        """``sizes`` instead of ``buffers``: plan the layout only (the caller writes the buffers in
        place later, see ``plan_array``); ``buffers`` is then empty."""
        self.kind = kind
        self.meta = meta
        self.buffers = buffers
        lengths = [b.nbytes for b in buffers] if sizes is None else sizes
        pos = _a64(_HDR.size + _BUF.size * len(lengths) + len(meta))
        places = []
        for n in lengths:
            places.append((pos, n))
            pos = _a64(pos + n)
        self.places = places
        self.size = pos if lengths else _HDR.size + len(meta)


@functools.lru_cache(maxsize=1024)
def _nd_meta(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes | None:
    """Array meta (ndim, shape, dtype string), or None for dtypes that must go through pickle."""
    if dtype.hasobject or dtype.fields is not None or len(shape) > 255:
        return None
    return bytes([len(shape)]) + b"".join(_DIM.pack(d) for d in shape) + dtype.str.encode()


def encode(obj: Any) -> Encoded:
    """Plan how ``obj`` is laid out; buffers are views of the caller's memory, not copies."""
    t = type(obj)
    if t is np.ndarray and obj.flags.c_contiguous:
        meta = _nd_meta(obj.dtype, obj.shape)
        if meta is not None:
            try:
                data = memoryview(obj).cast("B")  # fast; fails for 0-d and datetime arrays
            except (TypeError, ValueError):
                data = memoryview(obj.reshape(-1).view(np.uint8))
            return Encoded(NDARRAY, meta, [data])
    if t is bytes or t is bytearray:
        return Encoded(BYTES, b"", [memoryview(obj)])
    if t is memoryview and obj.contiguous:
        return Encoded(BYTES, b"", [obj.cast("B") if obj.format != "B" or obj.ndim != 1 else obj])
    pbs: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(obj, protocol=5, buffer_callback=pbs.append)
    bufs = []
    for pb in pbs:
        try:
            bufs.append(pb.raw())
        except BufferError:  # non-contiguous exporter: one copy is unavoidable
            bufs.append(memoryview(bytes(memoryview(pb))))
    return Encoded(PICKLE, meta, bufs)


def plan_array(shape: tuple[int, ...], dtype: np.dtype[Any]) -> Encoded:
    """The layout of an NDARRAY object of this shape and dtype, with no data yet (create in place).

    The header written by ``write_header`` is exactly what ``put`` of such an array writes, so
    ``get`` returns the same dtype/shape view. ValueError for dtypes that only pickle can carry.
    """
    meta = _nd_meta(dtype, shape)
    if meta is None:
        raise ValueError(f"an array of dtype {dtype} cannot be created in place (use put)")
    count = 1
    for d in shape:
        if d < 0:
            raise ValueError(f"negative dimension in shape {shape}")
        count *= d
    return Encoded(NDARRAY, meta, [], [count * dtype.itemsize])


def write_header(enc: Encoded, dst: memoryview, off: int) -> None:
    """Write the header, buffer table and meta of ``enc`` at ``dst[off:]`` (not the buffers)."""
    table = b"".join(_BUF.pack(p, n) for p, n in enc.places)
    head = _HDR.pack(MAGIC, enc.kind, len(enc.places), len(enc.meta), enc.size) + table + enc.meta
    dst[off : off + len(head)] = head


def write(enc: Encoded, dst: memoryview, off: int) -> None:
    """Write an encoded object at ``dst[off:off+enc.size]`` (dst: the writer's own region, read-write)."""
    write_header(enc, dst, off)
    for (pos, n), b in zip(enc.places, enc.buffers, strict=True):
        if n:
            dst[off + pos : off + pos + n] = b


class _View:
    """Exports one read-only range of the mapping to numpy; its death releases the reader's pin.

    numpy keeps this object as the ``base`` of every array made from it, and arrays/memoryviews cut
    from those arrays keep it alive transitively, so the pin lasts exactly as long as any view.
    """

    __slots__ = ("__array_interface__", "_keep", "_release")

    def __init__(self, interface: dict[str, Any], keep: Any, release: Callable[[], None] | None) -> None:
        self.__array_interface__ = interface
        self._keep = keep
        self._release = release

    def __del__(self) -> None:
        r = self._release
        if r is not None:
            self._release = None
            with contextlib.suppress(Exception):  # never raise from a finaliser
                r()


def _u8(addr: int, n: int, keep: Any, release: Callable[[], None] | None) -> np.ndarray:
    iface = {"data": (addr, True), "shape": (n,), "typestr": "|u1", "version": 3}
    return np.asarray(_View(iface, keep, release))


@functools.lru_cache(maxsize=1024)
def _array_meta(meta: bytes, nbytes: int) -> tuple[tuple[str, Any], ...]:
    """Parse (and cache: a job reads the same few shapes over and over) an array's dtype and shape."""
    try:
        ndim = meta[0]
        shape = tuple(_DIM.unpack_from(meta, 1 + 8 * i)[0] for i in range(ndim))
        dt = np.dtype(meta[1 + 8 * ndim :].decode())
    except (IndexError, struct.error, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise CorruptRegion(f"array metadata is damaged: {exc}") from exc
    count = 1
    for d in shape:
        count *= d
    if count * dt.itemsize != nbytes:
        raise CorruptRegion("array shape disagrees with its buffer")
    items: list[tuple[str, Any]] = [("shape", shape), ("typestr", dt.str), ("version", 3)]
    if dt.str.startswith("|V") or dt.kind in "Mm":
        items.append(("descr", dt.descr))
    return tuple(items)


def decode(
    buf: Any, base_addr: int, pos: int, size: int, keep: Any, release: Callable[[], None] | None
) -> Any:
    """Rebuild the object stored at ``buf[pos:pos+size]`` as views over the mapping.

    ``buf`` is the slice mapping, ``base_addr`` its address, ``keep`` an object that keeps the mapping
    alive, ``release`` runs once when the last view is gone (it drops the reader's pin). Every offset
    read from the object is bounds-checked against ``size``: a damaged object raises CorruptRegion.
    """
    if size < _HDR.size:
        raise CorruptRegion("object extent smaller than its header")
    magic, kind, nbuf, meta_len, total = _HDR.unpack_from(buf, pos)
    if magic != MAGIC or total > size or kind not in (PICKLE, NDARRAY, BYTES):
        raise CorruptRegion("object header is damaged")
    tpos = _HDR.size
    mpos = tpos + _BUF.size * nbuf
    if mpos + meta_len > size:
        raise CorruptRegion("object metadata runs past the object")
    places = []
    for i in range(nbuf):
        bo, bn = _BUF.unpack_from(buf, pos + tpos + i * _BUF.size)
        if bo < mpos + meta_len or bo + bn > size:
            raise CorruptRegion("object buffer runs past the object")
        places.append((bo, bn))
    addr = base_addr + pos
    if kind == NDARRAY:
        if nbuf != 1:
            raise CorruptRegion("array object without exactly one buffer")
        bo, bn = places[0]
        iface = dict(_array_meta(bytes(buf[pos + mpos : pos + mpos + meta_len]), bn))
        iface["data"] = (addr + bo, True)
        return np.asarray(_View(iface, keep, release))
    if kind == BYTES:
        if nbuf != 1:
            raise CorruptRegion("bytes object without exactly one buffer")
        bo, bn = places[0]
        return memoryview(_u8(addr + bo, bn, keep, release))  # type: ignore[arg-type]
    whole = _u8(addr, size, keep, release)
    views = [memoryview(whole[bo : bo + bn]) for bo, bn in places]  # type: ignore[arg-type]
    meta_view = memoryview(whole[mpos : mpos + meta_len])  # type: ignore[arg-type]
    try:
        return pickle.loads(meta_view, buffers=views)
    except Exception as exc:
        raise CorruptRegion(f"object does not unpickle: {exc!r}") from exc
