"""Messages between actors: small immutable types in a msgpack envelope.

An envelope is the msgpack array ``[type, version, payload]``. Every message is
encoded at the boundary so that it can cross to the trainer process, be logged
and be replayed in tests. Decoding is strict and bounded: anything malformed
raises :class:`MessageError`, which the receiving actor logs and drops.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from core.types import StoredReading, new_reading, new_stored_reading

ENVELOPE_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

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
        new_stored, new = new_stored_reading, new_reading
        return [
            new_stored(int(a), new(s, int(t), f, p, int(st)))  # type: ignore[arg-type]
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
