"""``MsgspecTranscoder`` against the library's ``JSONTranscoder``: the same stored JSON.

Events and snapshots stored by the previous code (the library's transcoder) must decode
unchanged, and what the new transcoder writes must decode with the old one: here on
states stored by the previous code, on generated states of every kind the encoder
meets, and on the odd JSON msgspec reads or writes otherwise than ``json``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, timedelta, timezone
from enum import Enum, IntEnum, StrEnum
from typing import Any, NamedTuple
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoder,
    TranscodingNotRegisteredError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.application.registry import Registry
from registry.bootstrap import build_registry
from registry.domain.accounts import Account
from registry.domain.units import SerialBlock, UnitClass, UnitType
from registry.persistence.transcoder import MsgspecTranscoder, loads
from registry.readmodels.events import StateDecoder
from registry.settings import Settings

ACCOUNT = UUID("6f0b6f36-5c1f-5b8e-9d7c-2b2f4a3c1d01")

PREVIOUS: dict[str, bytes] = {
    "registry.Transaction.Completed": b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:35.456510+00:00"},"originator_topic":"registry.Transaction","party":"exchange","client_id":"B1-612","kind":"SETTLEMENT","source":"PWR-B","destination":"PWR-A","blocks":[{"_type_":"block","_data_":["CEA/2025",1,3]},{"_type_":"block","_data_":["CEA/2025",9,9]}],"reason":"exchange trade","principal":"exchange/bench","fingerprint":"7d677a1cdd4a8d0812d2023198015be8b66bd01381774aeea583fac41b87bf97","details":{"quantity":4,"selector":{"unit_type":"CEA","vintage":null,"project":null}}}',  # noqa: E501
    "registry.Account.Credited": b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:33.815383+00:00"},"transaction_id":{"_type_":"uuid_hex","_data_":"8701b86c34375d4fb12121cd8b66cf91"},"blocks":[{"_type_":"block","_data_":["CEA/2025",100000001,200000000]}]}',  # noqa: E501
    "registry.Account.Opened": b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:33.754994+00:00"},"originator_topic":"registry.Account","account_id":"PWR-B","account_type":"COMPLIANCE","holder":{"name":"PWR-B","credit_code":"91110000100001234X","sector":"POWER","province":"Beijing"},"principal":"mee/bench"}',  # noqa: E501
    "registry.SerialCounter.BlockIssued": b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:33.774846+00:00"},"transaction_id":{"_type_":"uuid_hex","_data_":"e639918521b350878a5b708a5d441dbe"},"first":1,"last":1000000000}',  # noqa: E501
    "registry.Account.MovementsPosted": b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:34.138789+00:00"},"movements":[{"transaction_id":{"_type_":"uuid_hex","_data_":"1127f0be30a5599ebea88c6af6636072"},"debited":[{"_type_":"block","_data_":["CEA/2025",100000001,100000001]}]},{"transaction_id":{"_type_":"uuid_hex","_data_":"22194735daf752c88ae191e6a94b0c37"},"credited":[{"_type_":"block","_data_":["CEA/2025",1,2]}]},{"transaction_id":{"_type_":"uuid_hex","_data_":"ea6d6f51896556cf87001b84d8d5f133"},"debited":[{"_type_":"block","_data_":["CEA/2025",1,2]},{"_type_":"block","_data_":["CEA/2025",100000002,100000002]}]}]}',  # noqa: E501
    "eventsourcing.domain:Snapshot": b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:38.148322+00:00"},"topic":"registry.Account","state":{"_created_on":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:33.754994+00:00"},"_modified_on":{"_type_":"datetime_iso","_data_":"2026-12-07T01:11:38.133058+00:00"},"account_id":"PWR-B","type_name":"COMPLIANCE","holder":{"name":"PWR-B","credit_code":"91110000100001234X","sector":"POWER","province":"Beijing"},"state_name":"OPEN","available":[{"_type_":"block","_data_":["CEA/2025",100000187,200000000]}],"held":{},"state_requests":{}}}',  # noqa: E501
}
"""States stored by the previous code (the library's transcoder), copied from a
settlement run's PostgreSQL store: one of each kind a settlement writes."""


def transcoders() -> tuple[JSONTranscoder, MsgspecTranscoder]:
    """(the library's, ours), with the registry's transcodings."""
    bare: Any = object.__new__(Registry)  # register_transcodings reads no state
    old, new = JSONTranscoder(), MsgspecTranscoder()
    bare.register_transcodings(old)
    bare.register_transcodings(new)
    return old, new


OLD, NEW = transcoders()


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down (a list is not a tuple, 1 not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@pytest.mark.parametrize("topic", sorted(PREVIOUS))
def test_states_stored_by_the_previous_code_decode_unchanged(topic: str) -> None:
    stored = StoredEvent(ACCOUNT, 7, topic, PREVIOUS[topic])
    before = Mapper[UUID](transcoder=OLD).to_domain_event(stored)
    after = Mapper[UUID](transcoder=NEW).to_domain_event(stored)
    assert type(after) is type(before)
    assert same(vars(after), vars(before))
    if isinstance(after, Snapshot):
        account = after.mutate(None)
        assert isinstance(account, Account)
        assert account.available == [
            SerialBlock(UnitClass(UnitType.CEA, 2025), 100000187, 200000000)
        ]
    # and what the new code writes for it is what the previous code wrote, byte for byte
    assert Mapper[UUID](transcoder=NEW).to_stored_event(after).state == PREVIOUS[topic]


CEA = UnitClass(UnitType.CEA, 2025)
CCER = UnitClass(UnitType.CCER, 2024, "P-0001")


class Colour(StrEnum):
    RED = "red"


class Size(IntEnum):
    BIG = 3


class Kind(str, Enum):  # noqa: UP042 (a str mixin, as older enums are)
    A = "a-value"


class Pair(NamedTuple):
    left: int
    right: str


class Text(str):
    pass


class Number(int):
    pass


class Mapping(dict[str, Any]):
    pass


class Items(list[Any]):
    pass


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(),  # control characters, quotes, backslashes, non-ASCII
    st.uuids(),
    st.datetimes(timezones=st.sampled_from([UTC, None, timezone(timedelta(hours=8))])),
    st.decimals(allow_nan=False),
    st.builds(
        lambda cls, first, size: SerialBlock(cls, first, first + size),
        st.sampled_from([CEA, CCER]),
        st.integers(1, 10**12),
        st.integers(0, 10**6),
    ),
    st.sampled_from([Colour.RED, Size.BIG, Kind.A, Text("text"), Number(5)]),
    st.builds(Pair, st.integers(), st.text()),
)
states = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=8), children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=3).map(Mapping),
        st.lists(children, max_size=3).map(Items),
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=12), states, max_size=8))
def test_the_new_encoding_is_the_previous_bytes_and_decodes_with_either(state: Any) -> None:
    try:
        expected = OLD.encode(state)
    except UnicodeEncodeError:  # lone surrogates: refused by both
        with pytest.raises(UnicodeEncodeError):
            NEW.encode(state)
        return
    written = NEW.encode(state)
    assert written == expected
    assert same(NEW.decode(written), OLD.decode(written))


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=6), children, max_size=4),
        ),
        max_leaves=20,
    )
)
def test_floats_and_the_rest_decode_to_the_same_values_both_ways(value: Any) -> None:
    """Floats are the one thing written differently (an exponent's spelling, or NaN by
    the stdlib encoder): the values read back are the same, by either transcoder."""
    state = {"value": value}
    try:
        old_bytes = OLD.encode(state)
    except UnicodeEncodeError:
        return
    new_bytes = NEW.encode(state)
    for written in (old_bytes, new_bytes):
        assert same(NEW.decode(written), OLD.decode(written))
    assert same(OLD.decode(new_bytes), OLD.decode(old_bytes))


@pytest.mark.parametrize(
    "state",
    [
        {"n": float("nan"), "i": float("inf"), "j": -float("inf")},
        {"big": 2**64, "small": -(2**63) - 1, "huge": 10**40},
        {"keys": {1: "int", 2.5: "float", None: "none"}},
        {"keys": {True: "bool"}},
        {"nested": [{"x": {3: 4}}]},
        {"when": date(2025, 1, 1)},  # unregistered: the library's error
        {"set": {1, 2}},
    ],
)
def test_what_msgspec_writes_otherwise_is_written_by_the_stdlib_encoder(state: Any) -> None:
    try:
        expected = OLD.encode(state)
    except TypeError as error:
        with pytest.raises(type(error)) as raised:
            NEW.encode(state)
        assert str(raised.value) == str(error)
        return
    assert NEW.encode(state) == expected
    assert same(NEW.decode(expected), OLD.decode(expected))


@pytest.mark.parametrize(
    "stored",
    [
        b'{"n":NaN,"i":Infinity,"j":-Infinity}',
        b'{"big":123456789012345678901234567890,"neg":-98765432109876543210}',
        b'{"overflow":1e400}',
        b'{"lone":"\\ud800"}',
        b'{"dup":1,"dup":2}',
        b'{"a":{"_type_":"uuid_hex","_data_":"8701b86c34375d4fb12121cd8b66cf91","x":1}}',
        b'{"a":{"_type_":"block"}}',
        b'{"a":{"_data_":1,"_other_":2}}',
        b'{"a":[[{"_type_":"datetime_iso","_data_":"2025-01-01T00:00:00+00:00"}]]}',
        b'{"a":{"_type_":"decimal_str","_data_":"1.10"}}',
        b'[{"_type_":"uuid_hex","_data_":"8701b86c34375d4fb12121cd8b66cf91"}]',
        b'{"_type_":"block","_data_":["CEA/2025",1,2]}',
        b' { "spaced" : [ 1 , 2 ] } ',
        b'"text"',
        b"12",
    ],
)
def test_odd_stored_json_decodes_as_the_library_decodes_it(stored: bytes) -> None:
    assert same(NEW.decode(stored), OLD.decode(stored))
    assert same(loads(stored), json.loads(stored))


@pytest.mark.parametrize(
    "stored",
    [
        b'{"a":{"_type_":"nobody","_data_":1}}',
        b'{"a":{"_type_":1,"_data_":2}}',
        b'{"a":{"_type_":{"_type_":"uuid_hex","_data_":"00"},"_data_":2}}',
        b'{"a":{"_type_":["x"],"_data_":2}}',
        b'{"a":',
        b"\xff",
    ],
)
def test_what_the_library_refuses_is_refused_alike(stored: bytes) -> None:
    with pytest.raises(Exception) as old:
        OLD.decode(stored)
    with pytest.raises(Exception) as new:
        NEW.decode(stored)
    assert type(new.value) is type(old.value)
    if isinstance(old.value, TranscodingNotRegisteredError):
        assert str(new.value) == str(old.value)


def test_a_circular_state_is_refused_as_the_library_refuses_it() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        OLD.encode({"loop": loop})
    with pytest.raises(ValueError, match="Circular reference"):
        NEW.encode({"loop": loop})


def test_a_custom_type_inside_a_custom_types_data_is_decoded_first() -> None:
    """As the stdlib ``object_hook``: innermost first, so a transcoding's decode sees
    its data's custom values already decoded."""
    seen: list[Any] = []

    class Wrapper:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    class WrapperTranscoding:
        type = Wrapper
        name = "wrapper"

        def encode(self, obj: Wrapper) -> Any:
            return {"inner": obj.inner}

        def decode(self, data: Any) -> Wrapper:
            seen.append(data["inner"])
            return Wrapper(data["inner"])

    old, new = transcoders()
    for transcoder in (old, new):
        transcoder.register(WrapperTranscoding())  # type: ignore[arg-type]
    block = SerialBlock(CEA, 1, 5)
    state = {"w": Wrapper(ACCOUNT), "ws": [Wrapper(Wrapper(block))]}
    assert new.encode(state) == old.encode(state)
    decoded = new.decode(old.encode(state))
    assert decoded["w"].inner == ACCOUNT and decoded["ws"][0].inner.inner == block
    assert seen[:2] == [ACCOUNT, block] and isinstance(seen[2], Wrapper)


def test_the_registry_stores_with_msgspec_unless_told_otherwise() -> None:
    registry = build_registry(Settings("memory:"))
    try:
        assert type(registry.mapper.transcoder) is MsgspecTranscoder
        assert StateDecoder(registry.mapper).fast
    finally:
        registry.close()
    env = {
        **Settings("memory:").eventsourcing_env(),
        "TRANSCODER_TOPIC": "eventsourcing.persistence:JSONTranscoder",
    }
    library = Registry(env=env)
    try:
        assert type(library.mapper.transcoder) is JSONTranscoder
        assert "block" in library.mapper.transcoder.names
        assert StateDecoder(library.mapper).fast
    finally:
        library.close()


class Unknown(MsgspecTranscoder):
    """A subclass: it may write another form, so the read models must not assume."""


class Elsewhere(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return NEW.encode(obj)

    def decode(self, data: bytes) -> Any:
        return NEW.decode(data)


def test_the_read_models_read_raw_only_what_they_know() -> None:
    bare: Any = object.__new__(Registry)
    for transcoder, fast in (
        (OLD, True),
        (NEW, True),
        (Unknown(), False),
        (Elsewhere(), False),
        (MsgspecTranscoder(), False),  # without our transcodings
    ):
        if isinstance(transcoder, Unknown):
            bare.register_transcodings(transcoder)
        assert StateDecoder(Mapper[UUID](transcoder=transcoder)).fast is fast, transcoder
