"""The event store's transcoder: the library's stored JSON, written and read with msgspec.

``JSONTranscoder`` (stdlib ``json``) calls a Python hook for every timestamp, id and
serial block on the way in and every JSON object on the way out: about a sixth of a
settlement's CPU. ``MsgspecTranscoder`` keeps its stored format exactly (compact
separators, UTF-8 text, ``{"_type_": name, "_data_": ...}`` for registered types, the
same field order), so events stored by either are read by both, and the chain and the
authenticators, which hash stored bytes and never re-encode, are unaffected.

Encoding first turns the state into plain JSON values in one Python walk that does what
the stdlib encoder does (str, int, float, list/tuple and dict subclasses as their base
values; registered types by exact type), then lets msgspec write it. msgspec has native
forms of its own for ids, timestamps and dataclasses, which is why they are replaced
before it sees them. Whatever msgspec would write differently is written by the stdlib
encoder instead (the ``JSONTranscoder`` this class extends): NaN and infinities, dict
keys that are not ``str``, unknown types (whose error is then the library's). Floats
aside (msgspec spells ``1e+16`` as ``1e16``: the same number), the bytes are the same.

Decoding parses with msgspec (integers of any size exact, like ``json``; orjson would
read one beyond 64 bits as a float) and then replaces ``{"_type_", "_data_"}`` objects
innermost first, as the stdlib ``object_hook`` does. What msgspec refuses and ``json``
reads (NaN, lone surrogate escapes, 1e400) goes to the stdlib decoder: same values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import msgspec
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Transcoding,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_NATIVE_BASES: tuple[type, ...] = (str, int, float, list, tuple, dict)
"""What the stdlib encoder writes as JSON itself, subclasses included, without ever
consulting a transcoding."""


class _NotPlain(Exception):
    """A value the msgspec path does not write or read exactly as the stdlib would."""


def loads(data: bytes) -> Any:
    """Stored JSON -> plain values, as ``json.loads`` gives them (no custom types)."""
    try:
        return _decode(data)
    except msgspec.DecodeError:  # what json.loads makes of it (NaN, ...) or its error
        return json.loads(data.decode("utf8"))


class MsgspecTranscoder(JSONTranscoder):
    """``JSONTranscoder``'s stored format, encoded and decoded with msgspec."""

    def __init__(self) -> None:
        super().__init__()
        self._encoders: dict[type, Callable[[Any], Any]] = {}
        self._object, self._array = _decoders({})

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        self._encoders = {
            kind: _encoder(registered, self._plain)
            for kind, registered in self.types.items()
            if not issubclass(kind, _NATIVE_BASES) and kind is not type(None)
        }
        self._object, self._array = _decoders(
            {name: registered.decode for name, registered in self.names.items()}
        )

    def encode(self, obj: Any) -> bytes:
        """The bytes of ``JSONTranscoder.encode`` (a float's exponent may be spelt
        differently: the same number)."""
        try:
            return _encode(self._plain(obj))
        except (_NotPlain, msgspec.EncodeError, UnicodeEncodeError, RecursionError):
            return super().encode(obj)  # the same bytes, or the library's error

    def decode(self, data: bytes) -> Any:
        """The object ``JSONTranscoder.decode`` gives for the same bytes."""
        try:
            parsed = _decode(data)
        except msgspec.DecodeError:
            return super().decode(data)  # the same object, or the library's error
        try:
            if type(parsed) is dict:
                return self._object(parsed)
            if type(parsed) is list:
                return self._array(parsed)
        except (_NotPlain, RecursionError):
            return super().decode(data)
        return parsed

    def _plain(self, obj: Any) -> Any:
        """``obj`` as the plain values the stdlib encoder would write for it."""
        kind = type(obj)
        if kind is str or kind is int or kind is bool or obj is None:
            return obj
        if kind is dict:
            return self._plain_dict(obj)
        if kind is list or kind is tuple:
            return self._plain_list(obj)
        return self._plain_other(obj)

    def _plain_dict(self, obj: dict[Any, Any]) -> dict[Any, Any]:
        encoders = self._encoders
        plain: dict[Any, Any] = {}
        for key, value in obj.items():
            if type(key) is not str:
                raise _NotPlain  # the stdlib encoder's own reading of keys
            kind = type(value)
            if kind is str or kind is int or kind is bool or value is None:
                plain[key] = value
            elif kind is dict:
                plain[key] = self._plain_dict(value)
            elif kind is list or kind is tuple:
                plain[key] = self._plain_list(value)
            elif (encoder := encoders.get(kind)) is not None:
                plain[key] = encoder(value)
            else:
                plain[key] = self._plain_other(value)
        return plain

    def _plain_list(self, obj: list[Any] | tuple[Any, ...]) -> list[Any]:
        encoders = self._encoders
        plain: list[Any] = []
        append = plain.append
        for value in obj:
            kind = type(value)
            if kind is str or kind is int or kind is bool or value is None:
                append(value)
            elif kind is dict:
                append(self._plain_dict(value))
            elif kind is list or kind is tuple:
                append(self._plain_list(value))
            elif (encoder := encoders.get(kind)) is not None:
                append(encoder(value))
            else:
                append(self._plain_other(value))
        return plain

    def _plain_other(self, obj: Any) -> Any:
        """A registered type, a float, or a subclass of a JSON type, as the stdlib
        encoder writes it (a subclass as its base value, never by a transcoding);
        anything else is left to the stdlib encoder."""
        encoder = self._encoders.get(type(obj))
        if encoder is not None:
            return encoder(obj)
        if type(obj) is float:
            if math.isfinite(obj):
                return obj
            raise _NotPlain  # stdlib writes NaN / Infinity, msgspec null
        if isinstance(obj, str):  # e.g. a StrEnum member: its type is remembered
            self._encoders[type(obj)] = str.__str__
            return str.__str__(obj)
        if isinstance(obj, int):
            self._encoders[type(obj)] = int.__int__
            return int.__int__(obj)
        if isinstance(obj, float):
            return self._plain(float.__float__(obj))
        if isinstance(obj, (list, tuple)):
            return self._plain_list(obj)
        if isinstance(obj, dict):
            return self._plain_dict(obj)
        raise _NotPlain  # unregistered: the library's error, from its encoder


def _encoder(transcoding: Transcoding, plain: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The encoder of one registered type: the transcoding's output made plain. The
    library's id and timestamp transcodings, whose output is text, are inlined."""
    name = transcoding.name
    kind = type(transcoding)
    if kind is UUIDAsHex:
        return lambda obj: {"_type_": name, "_data_": obj.hex}
    if kind is DatetimeAsISO:
        return lambda obj: {"_type_": name, "_data_": obj.isoformat()}
    encode = transcoding.encode

    def encoded(obj: Any) -> dict[str, Any]:
        data = encode(obj)
        kind = type(data)
        if kind is list or kind is tuple:  # e.g. a serial block's [class, first, last]
            for item in data:
                kind = type(item)
                if not (kind is str or kind is int or kind is bool or item is None):
                    data = plain(data)
                    break
        elif not (kind is str or kind is int or kind is bool or data is None):
            data = plain(data)
        return {"_type_": name, "_data_": data}

    return encoded


def _decoders(
    decoders: dict[str, Callable[[Any], Any]],
) -> tuple[Callable[[dict[str, Any]], Any], Callable[[list[Any]], list[Any]]]:
    """The walk that decodes a parsed object and a parsed array (in place), closed over
    the transcodings' decoders: what the stdlib ``object_hook`` does, bottom-up."""

    def decode_object(value: dict[str, Any]) -> Any:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            name = value["_type_"]
            data = value["_data_"]
            kind = type(data)
            if kind is dict:
                data = decode_object(data)
            elif kind is list:
                for item in data:  # most often plain: a serial block's [class, first, last]
                    kind = type(item)
                    if kind is dict or kind is list:
                        decode_array(data)
                        break
            if type(name) is not str:
                raise _NotPlain  # what the stdlib decoder makes of it (or its error)
            try:
                decoder = decoders[name]
            except KeyError:
                msg = (
                    f"Data serialized with name '{name}' is not "
                    "deserializable. Please register a "
                    "custom transcoding for this type."
                )
                raise TranscodingNotRegisteredError(msg) from None
            return decoder(data)
        for key, item in value.items():
            kind = type(item)
            if kind is dict:
                value[key] = decode_object(item)
            elif kind is list:
                decode_array(item)
        return value

    def decode_array(value: list[Any]) -> list[Any]:
        for index, item in enumerate(value):
            kind = type(item)
            if kind is dict:
                if len(item) == 2 and type(name := item.get("_type_")) is str:
                    # inline for what lists of custom values hold: plain text or a
                    # plain [class, first, last] as data, a known name
                    data = item.get("_data_", item)
                    kind = type(data)
                    decoder = decoders.get(name)
                    if decoder is not None and kind is not dict and data is not item:
                        if kind is list:
                            for part in data:
                                kind = type(part)
                                if kind is dict or kind is list:
                                    decode_array(data)
                                    break
                        value[index] = decoder(data)
                        continue
                value[index] = decode_object(item)
            elif kind is list:
                decode_array(item)
        return value

    return decode_object, decode_array
