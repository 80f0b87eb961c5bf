"""The outbox form of outbound frames and the line each goes out as.

Producers build the codec's frame types (:data:`core.frames.OutboundFrame`)
with ``seq`` 0; the outbox numbers each one as it enters. The store keeps a
frame as a msgpack map of its fields, ``seq`` left out (it is the record's
key) and the day of ``$FCD`` as ``YYYY-MM-DD``: ``{"type": "ALR", "sensor":
..., "time": ..., ...}``, in the frame type's field order. The mapping is
declared once per frame type (:data:`KINDS`, the dataclass's own fields);
:func:`outbox_form` and :func:`outbox_frame` are its two directions.

The line a frame goes out as is fixed once its sequence number is:
:func:`wire_encoder` makes it when the frame enters the outbox, so sending
(and every resend) writes stored bytes instead of rebuilding each frame.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from core import frames

__all__ = ["KINDS", "outbox_form", "outbox_frame", "wire_encoder"]

KINDS: dict[str, type[frames.OutboundFrame]] = {
    "ALR": frames.AlertFrame, "SRV": frames.ServerReportLine,
    "FCD": frames.DailyForecastLine, "HLT": frames.HealthFrame,
}
"""The ``type`` an outbox form names -> its frame type."""



# Frame type -> (the form's keys, the type's name, frame -> its field values but
# seq in one C call, the fields kept as ISO dates). Two frames per reading pass
# here: a dict from one zip is about half the cost of one built key by key.
_Layout = tuple[tuple[str, ...], str, Callable[[Any], tuple[Any, ...]], tuple[str, ...]]


def _layout(kind: str, cls: type) -> _Layout:
    fields = [f for f in dataclasses.fields(cls) if f.name != "seq"]
    names = tuple(f.name for f in fields)
    dates = tuple(f.name for f in fields if f.type in ("datetime.date", datetime.date))
    return ("type", *names), kind, attrgetter(*names), dates


_LAYOUTS = {cls: _layout(kind, cls) for kind, cls in KINDS.items()}


def outbox_form(frame: frames.OutboundFrame) -> dict[str, Any]:
    """The map the store keeps for ``frame`` (msgpack-able; ``seq`` is the record's key)."""
    keys, kind, values, dates = _LAYOUTS[type(frame)]
    form = dict(zip(keys, (kind, *values(frame)), strict=True))
    for name in dates:
        form[name] = form[name].isoformat()
    return form


def outbox_frame(seq: int, form: Mapping[str, Any]) -> frames.OutboundFrame:
    """The frame numbered ``seq`` that :func:`outbox_form` made ``form`` of.

    Raises :class:`ValueError` (an unknown type) or :class:`TypeError` (fields
    missing or extra) for a map no frame has this form.
    """
    cls = KINDS.get(form.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown outbox frame type {form.get('type')!r}")
    fields = {k: v for k, v in form.items() if k != "type"}
    for name in _LAYOUTS[cls][3]:
        if name in fields:
            fields[name] = datetime.date.fromisoformat(fields[name])
    return cls(**fields, seq=seq)


def wire_encoder(tz: ZoneInfo) -> Callable[[int, frames.OutboundFrame], bytes]:
    """``(seq, frame) -> line`` for :class:`storage.store.Store` (``outbox_wire``)."""

    def wire(seq: int, frame: frames.OutboundFrame) -> bytes:
        return frames.encode(frame, tz, seq)

    return wire
