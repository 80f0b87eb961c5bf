"""Messages between actors: small immutable types in a msgpack envelope.

An envelope is the msgpack array ``[type, version, payload]``. Every message is
encoded at the boundary so that it can cross to the trainer process, be logged
and be replayed in tests. Decoding is strict and bounded: anything malformed
raises :class:`MessageError`, which the receiving actor logs and drops.

It also holds :func:`fast_init` and :func:`fast_constructor`, which build the
frozen dataclasses that travel with every reading (here, in the codec, the
detection and the store) without the generated ``__init__``'s overhead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgpack

from core.types import Reading, StoredReading

ENVELOPE_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


def _fast_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of ``cls`` if its instances can be built by slot stores alone."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__, which this would skip")
    fields = list(dataclasses.fields(cls))
    for f in fields:
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain fields are supported")
    return fields


def _generate(cls: type, header: str, target: str, fields: list[dataclasses.Field[Any]],
              namespace: dict[str, Any], footer: str = "") -> Any:
    lines = [header]
    for f in fields:
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        lines.append(f"    _set_{f.name}({target}, {f.name})")
    if footer:
        lines.append(footer)
    exec("\n".join(lines), namespace)  # generated once per class, from its field names only
    return namespace


def fast_init(cls: type[T]) -> type[T]:
    """Class decorator: give the frozen slots dataclass ``cls`` a faster ``__init__``.

    A frozen dataclass's generated ``__init__`` sets each field through
    ``object.__setattr__``, which costs about three times as much as storing
    through the slot descriptors, as this one does. The signature (names,
    order, defaults) and the object built are the same; apply it above
    ``@dataclass``. For the readings' way through the service, where such
    objects are built several times per reading.
    """
    fields = _fast_fields(cls)
    namespace: dict[str, Any] = {}
    params = []
    for f in fields:
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    header = f"def __init__(self, {', '.join(params)}) -> None:"
    init = _generate(cls, header, "self", fields, namespace)["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[misc]
    return cls


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A positional constructor (every field, no defaults) for a frozen slots dataclass.

    For the shared types of :mod:`core.types`, which this module cannot give a
    faster ``__init__`` (see :func:`fast_init`): the result is the object
    ``cls(...)`` would build, at about a third of the cost.
    """
    fields = _fast_fields(cls)
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    header = f"def build({', '.join(f.name for f in fields)}):\n    o = _new(_cls)"
    footer = "    return o"
    build: Callable[..., T] = _generate(cls, header, "o", fields, namespace, footer)["build"]
    build.__name__ = build.__qualname__ = f"build_{cls.__name__}"
    return build


_new_reading = fast_constructor(Reading)
_new_stored = fast_constructor(StoredReading)


class MessageError(ValueError):
    """A message that cannot be decoded into a known, well-formed type."""


@dataclass(frozen=True, slots=True)
class ReadingsCommitted:
    """Readings newly committed to the store, in arrival order.

    Each row is ``[arrival, sensor, time, flow, pressure, status]``.
    """

    TYPE: ClassVar[str] = "readings"
    rows: list[list[Any]]

    @classmethod
    def of(cls, stored: list[StoredReading]) -> ReadingsCommitted:
        """Build the message from the store's ingest result."""
        return cls(
            [
                [s.arrival, (r := s.reading).sensor, r.time, r.flow, r.pressure, r.status]
                for s in stored
            ]
        )

    def stored(self) -> list[StoredReading]:
        """The rows as domain objects."""
        # Hot path (every consumer, every reading): the NewTypes SensorId and
        # EpochSeconds are identities at run time and are not called.
        new_stored, new_reading = _new_stored, _new_reading
        return [
            new_stored(int(a), new_reading(s, int(t), f, p, int(st)))
            for a, s, t, f, p, st in self.rows
        ]


@dataclass(frozen=True, slots=True)
class OutboxAppended:
    """Frames up to ``seq`` are committed to the outbox and can be sent."""

    TYPE: ClassVar[str] = "outbox"
    seq: int


@dataclass(frozen=True, slots=True)
class NightClosed:
    """NightFlow closed a night for ``sensor`` and stored its verdict."""

    TYPE: ClassVar[str] = "night"
    sensor: str
    night: str


@dataclass(frozen=True, slots=True)
class HourClosed:
    """Event time of ``sensor`` crossed into the hour starting at ``hour``."""

    TYPE: ClassVar[str] = "hour"
    sensor: str
    hour: int


@dataclass(frozen=True, slots=True)
class ForecastIssued:
    """A new forecast for ``sensor`` is in the store."""

    TYPE: ClassVar[str] = "forecast"
    sensor: str
    issued: int


@dataclass(frozen=True, slots=True)
class ModelChanged:
    """A new model for ``sensor`` was accepted and swapped in."""

    TYPE: ClassVar[str] = "model"
    sensor: str
    version: str


@dataclass(frozen=True, slots=True)
class CriteriaChanged:
    """New criteria for ``sensor`` are in the store."""

    TYPE: ClassVar[str] = "criteria"
    sensor: str
    version: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Wall-clock heartbeat from the supervisor; ``now`` is epoch seconds."""

    TYPE: ClassVar[str] = "tick"
    now: float


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe: the actor answers ``"pong"`` to an ask."""

    TYPE: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Crash:
    """Test hook: raise inside the handler (ignored unless test hooks are on)."""

    TYPE: ClassVar[str] = "crash"
    reason: str = "injected"
    hang_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Resume:
    """Catch up from the store: process what was committed after the offset."""

    TYPE: ClassVar[str] = "resume"


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The upstream acknowledged frame ``seq``."""

    TYPE: ClassVar[str] = "ack"
    seq: int


@dataclass(frozen=True, slots=True)
class TrainRequest:
    """Ask the trainer to train ``sensor`` (all sensors when empty)."""

    TYPE: ClassVar[str] = "train"
    sensor: str = ""
    reason: str = "demand"


@dataclass(frozen=True, slots=True)
class TrainingFinished:
    """The training process for ``sensor`` ended; ``result`` is its JSON report or empty."""

    TYPE: ClassVar[str] = "trained"
    sensor: str
    outcome: str  # "accepted", "rejected", "failed", "timeout", "killed"
    detail: str
    result: str = ""


@dataclass(frozen=True, slots=True)
class BrokerConnected:
    """The MQTT uplink's broker accepted the connection (``protocol``: "5" or "3.1.1")."""

    TYPE: ClassVar[str] = "broker_up"
    protocol: str
    connection: int  # counts the uplink's connections: PUBACKs of an older one are stale


@dataclass(frozen=True, slots=True)
class BrokerDelivered:
    """The broker acknowledged (PUBACK) the frames with these sequence numbers."""

    TYPE: ClassVar[str] = "broker_ack"
    seqs: list[int]
    connection: int


@dataclass(frozen=True, slots=True)
class BrokerDown:
    """The MQTT uplink lost, or could not get, its broker connection; ``reason`` says why."""

    TYPE: ClassVar[str] = "broker_down"
    reason: str


MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (
        ReadingsCommitted, OutboxAppended, NightClosed, HourClosed, ForecastIssued,
        ModelChanged, CriteriaChanged, Tick, Ping, Crash, Resume, AckReceived, TrainRequest,
        TrainingFinished, BrokerConnected, BrokerDelivered, BrokerDown,
    )
}

_FIELDS: dict[type, tuple[dataclasses.Field[Any], ...]] = {
    cls: dataclasses.fields(cls) for cls in MESSAGE_TYPES.values()
}


def encode(message: Any) -> bytes:
    """Encode a message dataclass into its envelope."""
    payload = {f.name: getattr(message, f.name) for f in _FIELDS[type(message)]}
    return msgpack.packb([message.TYPE, ENVELOPE_VERSION, payload], use_bin_type=True)


def decode(raw: Any) -> Any:
    """Decode an envelope into its message dataclass, or raise MessageError."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise MessageError(f"not an encoded envelope: {type(raw).__name__}")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(f"envelope of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        envelope = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, use_list=True,
        )  # unpackb bounds every container by the buffer's own length
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(f"undecodable envelope: {exc}") from exc
    if not (isinstance(envelope, list) and len(envelope) == 3):
        raise MessageError("envelope is not [type, version, payload]")
    kind, version, payload = envelope
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {kind!r}")
    if version != ENVELOPE_VERSION:
        raise MessageError(f"{kind}: unsupported version {version!r}")
    if not isinstance(payload, dict):
        raise MessageError(f"{kind}: payload is not a map")
    try:
        message = cls(**payload)
    except TypeError as exc:
        raise MessageError(f"{kind}: bad payload fields: {exc}") from exc
    _check_types(message)
    return message


_SCALARS = {int: (int,), float: (int, float), str: (str,)}


def _check_types(message: Any) -> None:
    for f in _FIELDS[type(message)]:
        value = getattr(message, f.name)
        expected = _SCALARS.get(_ANNOTATIONS.get(f.type))  # type: ignore[arg-type]
        if expected is not None and (isinstance(value, bool) or not isinstance(value, expected)):
            raise MessageError(f"{message.TYPE}.{f.name}: expected {f.type}, got {value!r}")
    if isinstance(message, ReadingsCommitted):
        _check_rows(message.rows)


_ANNOTATIONS = {"int": int, "float": float, "str": str}


def _check_rows(rows: Any) -> None:
    if not isinstance(rows, list):
        raise MessageError("readings.rows: expected a list")
    # Every reading passes here once per consumer: plain conditions, no generator.
    number = (int, float)
    for row in rows:
        if not (isinstance(row, list) and len(row) == 6):
            raise MessageError(f"readings.rows: bad row {row!r}")
        arrival, sensor, time, flow, pressure, status = row
        if not (
            isinstance(arrival, int) and isinstance(sensor, str) and isinstance(time, int)
            and isinstance(status, int)
            and (flow is None or isinstance(flow, number))
            and (pressure is None or isinstance(pressure, number))
        ):
            raise MessageError(f"readings.rows: bad row {row!r}")


__all__ = [
    "MESSAGE_TYPES", "MessageError", "encode", "decode",
    *(cls.__name__ for cls in MESSAGE_TYPES.values()),
]
