"""Columns of rows as PostgreSQL binary arrays, packed by ``struct`` and ``array`` in C.

The projections pass the rows they upsert, update and delete as one array per column,
unnested on the server (``bulk.Writer``). psycopg dumps a Python list element by
element in Python (``ListBinaryDumper``: a type scan, then a dumper call, a length
pack and two appends per element): a projection catch-up spent a sixth of the worker's
time there. A column of integers or strings is packed here instead with a handful of
C calls for the whole column, into exactly the bytes PostgreSQL's ``array_recv``
reads (``src/backend/utils/adt/arrayfuncs.c``): a header (dimensions, a has-nulls
flag, the element type), the length and lower bound of the one dimension, then each
element as its length and its binary form (big-endian integers, UTF-8 text).

Anything else (a null, a type not listed here) is left to psycopg: ``packed`` then
returns the list unchanged.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from psycopg import adapters, pq
from psycopg.adapt import Dumper

_HEAD = struct.Struct(">iiiii")
"""Dimensions (1), has nulls (0), element type, length, lower bound (1)."""
_EMPTY = struct.Struct(">iii")
"""An empty array: no dimension, no nulls, the element type."""
_SWAP = sys.byteorder == "little"
if array("i").itemsize != 4 or array("q").itemsize != 8:  # C int and long long
    raise ImportError("pg_arrays needs 4-byte 'i' and 8-byte 'q' arrays")


class PackedArray(bytes):
    """A whole array's binary form; each subclass is one PostgreSQL array type."""

    element_oid = 0
    array_oid = 0


class _Int8Array(PackedArray):
    element_oid, array_oid = 20, 1016


class _Int4Array(PackedArray):
    element_oid, array_oid = 23, 1007


class _TextArray(PackedArray):
    element_oid, array_oid = 25, 1009


class _VarcharArray(PackedArray):
    element_oid, array_oid = 1043, 1015


def _integers(kind: type[PackedArray], code: str, size: int, values: Sequence[Any]) -> bytes:
    """Every element is ``size`` bytes long: lay the lengths and the big-endian
    values into their columns of the element grid with one slice each."""
    numbers = array(code, values)  # OverflowError if one does not fit, TypeError if no int
    if _SWAP:
        numbers.byteswap()
    raw = numbers.tobytes()
    n = len(values)
    stride = 4 + size
    grid = bytearray(n * stride)
    grid[3::stride] = bytes([size]) * n  # each length, 0 0 0 size
    for byte in range(size):
        grid[4 + byte :: stride] = raw[byte::size]
    return _HEAD.pack(1, 0, kind.element_oid, n, 1) + grid


def _strings(kind: type[PackedArray], values: Sequence[Any]) -> bytes:
    """Each element is its length then its UTF-8 bytes: one ``struct`` format for the
    whole column, built and filled by C loops."""
    encoded = list(map(str.encode, values))  # TypeError unless every value is a str
    lengths = list(map(len, encoded))
    layout = "".join(map("i%ds".__mod__, lengths))
    fields: list[Any] = [None] * (2 * len(values))
    fields[0::2] = lengths
    fields[1::2] = encoded
    return _HEAD.pack(1, 0, kind.element_oid, len(values), 1) + struct.pack(">" + layout, *fields)


_KINDS: dict[str, type[PackedArray]] = {
    "BIGINT": _Int8Array,
    "INTEGER": _Int4Array,
    "TEXT": _TextArray,
    "VARCHAR": _VarcharArray,
}


def packed(values: Sequence[Any], sql_type: str) -> Any:
    """``values`` as a ``PackedArray`` of ``sql_type`` (as SQLAlchemy compiles it for
    PostgreSQL, e.g. ``VARCHAR(64)``), or the list itself for psycopg to dump when the
    type is not one packed here or a value is null."""
    kind = _KINDS.get(sql_type.split("(", 1)[0])
    if kind is None or None in values:
        return list(values)
    if not values:
        return kind(_EMPTY.pack(0, 0, kind.element_oid))
    if kind is _Int8Array:
        return kind(_integers(kind, "q", 8, values))
    if kind is _Int4Array:
        return kind(_integers(kind, "i", 4, values))
    return kind(_strings(kind, values))


def _dumper(kind: type[PackedArray]) -> type[Dumper]:
    class PackedDumper(Dumper):
        format = pq.Format.BINARY
        oid = kind.array_oid

        def dump(self, obj: PackedArray) -> bytes:
            return obj  # already the bytes PostgreSQL reads

    return PackedDumper


for _kind in _KINDS.values():
    adapters.register_dumper(_kind, _dumper(_kind))
