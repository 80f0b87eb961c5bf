"""MQTT topics and JSON payloads of outbound frames (pure: no broker, no I/O).

The outbox keeps each frame's wire line; the MQTT uplink publishes that same
line, decoded by the protocol's own codec, as JSON under a topic per sensor and
frame type, so a consumer never parses serial frames and both uplinks carry
exactly the same frame (the same ``seq``, the same values)::

    <prefix>/<sensor>/alr   $ALR     <prefix>/<sensor>/srv   $SRV
    <prefix>/<sensor>/fcd   $FCD     <prefix>/health         $HLT
    <prefix>/status         "online" (retained) / "offline" (last will)

A payload holds ``type``, ``seq`` and ``line`` (the wire line without its
``\\r\\n``), then the frame's fields under their protocol names: times in local
ISO 8601 with the UTC offset, an empty (missing) value as ``null``, detection
flags as the lower-case method names that fired (``["system", "night"]``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from core import frames
from core.localtime import local_datetime
from core.types import FLAG_NIGHT, FLAG_PREDICT, FLAG_SYSTEM, FLAG_VALUE

__all__ = ["SAFE_SEGMENT", "Publication", "flag_names", "publication", "status_topic"]

# A topic segment that needs no escaping anywhere (no "/", "+", "#", blanks).
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")

_METHODS = ((FLAG_SYSTEM, "system"), (FLAG_VALUE, "value"), (FLAG_PREDICT, "predict"),
            (FLAG_NIGHT, "night"))


@dataclass(frozen=True, slots=True)
class Publication:
    """One frame as published: its topic and JSON payload (UTF-8)."""

    seq: int
    topic: str
    payload: bytes


def flag_names(flags: int) -> list[str]:
    """The methods of a flag byte, in protocol bit order: ``0x09 -> ["system", "night"]``.

    Bits no method owns (none today) are kept as ``"0x10"`` so nothing is hidden.
    """
    names = [name for bit, name in _METHODS if flags & bit]
    rest = flags & ~(FLAG_SYSTEM | FLAG_VALUE | FLAG_PREDICT | FLAG_NIGHT)
    names.extend(f"0x{bit:02x}" for bit in (1 << i for i in range(8)) if rest & bit)
    return names


def status_topic(prefix: str) -> str:
    """The retained online/offline topic of a gateway."""
    return f"{prefix}/status"


def _iso(t: int, tz: ZoneInfo) -> str:
    return local_datetime(t, tz).isoformat()


def _fields(frame: frames.Frame, tz: ZoneInfo) -> tuple[str, dict[str, Any]]:
    """``(topic suffix, named fields)`` of a decoded outbound frame."""
    if isinstance(frame, frames.AlertFrame | frames.ServerReportLine):
        fields: dict[str, Any] = {
            "sensor": frame.sensor, "time": _iso(frame.time, tz),
            "flow": frame.flow, "pressure": frame.pressure,
            "flow_flags": flag_names(frame.flow_flags),
            "pressure_flags": flag_names(frame.pressure_flags),
        }
        if isinstance(frame, frames.ServerReportLine):
            fields["pred_flow"] = frame.pred_flow
            fields["pred_pressure"] = frame.pred_pressure
            return f"{frame.sensor}/srv", fields
        return f"{frame.sensor}/alr", fields
    if isinstance(frame, frames.DailyForecastLine):
        return f"{frame.sensor}/fcd", {
            "sensor": frame.sensor, "issued": _iso(frame.issued, tz),
            "day": frame.day.isoformat(), "flow_mean": frame.flow_mean,
            "pressure_mean": frame.pressure_mean,
        }
    if isinstance(frame, frames.HealthFrame):
        return "health", {
            "time": _iso(frame.time, tz), "uptime_s": frame.uptime_s,
            "outbox_depth": frame.outbox_depth, "oldest_unsent_s": frame.oldest_unsent_s,
            "restarts": frame.restarts, "rejects": frame.rejects,
            "store_used_pct": frame.store_used_pct, "clock": frame.clock,
        }
    raise ValueError(f"not an outbound frame: {type(frame).__name__}")


_TYPES = {frames.AlertFrame: "alr", frames.ServerReportLine: "srv",
          frames.DailyForecastLine: "fcd", frames.HealthFrame: "hlt"}


def publication(prefix: str, line: bytes, tz: ZoneInfo) -> Publication:
    """The topic and payload of one outbound wire line (as kept in the outbox).

    Raises :class:`ValueError` for a line the protocol's decoder refuses: the
    outbox only holds lines the encoder made, so that is a programming error.
    """
    text = line.rstrip(b"\r\n")
    frame = frames.decode(text, tz)
    if isinstance(frame, frames.Reject):
        raise ValueError(f"outbox line does not decode ({frame.reason}): {text[:80]!r}")
    suffix, fields = _fields(frame, tz)
    seq = frame.seq  # type: ignore[union-attr]
    document = {"type": _TYPES[type(frame)], "seq": seq, "line": text.decode("ascii"), **fields}
    payload = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    return Publication(seq, f"{prefix}/{suffix}", payload)
