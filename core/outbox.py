"""The outbox form of outbound frames and its wire line.

Producers queue frames as plain dicts (msgpack-friendly, readable in the store
and in tests). The line a frame goes out as is fixed once its sequence number
is: :func:`wire_encoder` makes it when the frame enters the outbox, so sending
(and every resend) writes stored bytes instead of rebuilding each frame.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from core import frames
from core.types import EpochSeconds, SensorId


def frame_object(seq: int, f: dict[str, Any]) -> frames.Frame:
    """The codec's frame object for outbox form ``f`` numbered ``seq``."""
    kind = f["type"]
    if kind == "ALR":
        return frames.AlertFrame(seq, SensorId(f["sensor"]), EpochSeconds(f["time"]),
                                 f["flow"], f["pressure"], f["flow_flags"], f["pressure_flags"])
    if kind == "SRV":
        return frames.ServerReportLine(
            seq, SensorId(f["sensor"]), EpochSeconds(f["time"]), f["flow"], f["pressure"],
            f["flow_flags"], f["pressure_flags"], f["pred_flow"], f["pred_pressure"])
    if kind == "FCD":
        return frames.DailyForecastLine(
            seq, SensorId(f["sensor"]), EpochSeconds(f["issued"]),
            datetime.date.fromisoformat(f["day"]), f["flow_mean"], f["pressure_mean"])
    if kind == "HLT":
        return frames.HealthFrame(
            seq, EpochSeconds(f["time"]), f["uptime_s"], f["outbox_depth"],
            f["oldest_unsent_s"], f["restarts"], f["rejects"], f["store_used_pct"], f["clock"])
    raise ValueError(f"unknown outbox frame type {kind!r}")


def wire_encoder(tz: ZoneInfo) -> Callable[[int, dict[str, Any]], bytes]:
    """``(seq, frame) -> line`` for :class:`storage.store.Store` (``outbox_wire``)."""

    def wire(seq: int, frame: dict[str, Any]) -> bytes:
        return frames.encode(frame_object(seq, frame), tz)

    return wire
