"""Domain types shared by every layer: sensor ids, event times, readings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NewType

SensorId = NewType("SensorId", str)
"""Three decimal digits, ``"001"`` to ``"999"``, as on the wire."""

EpochSeconds = NewType("EpochSeconds", int)
"""UTC seconds since 1970; the gateway keeps every time in this form."""

# Sensor status bits (PROTOCOL.md, inbound reading).
STATUS_FLOW_FAULT = 0x01
STATUS_PRESSURE_FAULT = 0x02
STATUS_LOW_BATTERY = 0x04
STATUS_POWER_FAILURE = 0x08
STATUS_COMM_ERROR = 0x10
STATUS_ENCLOSURE_OPEN = 0x20

# Detection flags (PROTOCOL.md, outbound frames).
FLAG_SYSTEM = 0x01
FLAG_VALUE = 0x02
FLAG_PREDICT = 0x04
FLAG_NIGHT = 0x08

QUANTITIES = ("flow", "pressure")


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor's measurement for one minute, as received.

    ``flow`` (m3/h) and ``pressure`` (kgf/cm2) are ``None`` when the RTU sent an
    empty field ("not measured").
    """

    sensor: SensorId
    time: EpochSeconds
    flow: float | None
    pressure: float | None
    status: int = 0

    def same_values(self, other: Reading) -> bool:
        """True when ``other`` carries the same measurement (NaN-safe)."""
        return (
            _same(self.flow, other.flow)
            and _same(self.pressure, other.pressure)
            and self.status == other.status
        )


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as committed to the store, with its arrival sequence number.

    ``arrival`` is the store's monotonically increasing ingest counter: the
    position of the reading in the arrival journal that every consumer
    (detector, night flow) tracks its offset in.
    """

    arrival: int
    reading: Reading


# A reading is built several times on its way (decoded, stored, told to two
# consumers): these build the two frozen types with the slot stores their fields
# are, past the generated __init__, which sets each field through
# object.__setattr__ at about three times the cost (1.1 vs 3.3 us for a Reading
# on the shared 2-core host). Only for values already checked by the caller.
_new = object.__new__
_set_sensor, _set_time, _set_flow, _set_pressure, _set_status = (
    Reading.__dict__[name].__set__ for name in ("sensor", "time", "flow", "pressure", "status"))
_set_arrival, _set_reading = (StoredReading.__dict__[name].__set__
                              for name in ("arrival", "reading"))


def new_reading(sensor: SensorId, time: EpochSeconds, flow: float | None,
                pressure: float | None, status: int) -> Reading:
    """``Reading(sensor, time, flow, pressure, status)``, faster (the hot path's)."""
    r = _new(Reading)
    _set_sensor(r, sensor)
    _set_time(r, time)
    _set_flow(r, flow)
    _set_pressure(r, pressure)
    _set_status(r, status)
    return r


def new_stored_reading(arrival: int, reading: Reading) -> StoredReading:
    """``StoredReading(arrival, reading)``, faster (the hot path's)."""
    s = _new(StoredReading)
    _set_arrival(s, arrival)
    _set_reading(s, reading)
    return s


@dataclass(frozen=True)
class EventTimes:
    """Where the readings put time, as the Detector's clock guard judged them.

    ``sensors`` maps each sensor the Detector has processed to its event time:
    the newest reading taken in (see :class:`core.detection.ClockGuard`: never
    one stamped ahead of the gateway clock; one jumping ahead of its sensor's
    timeline only once later readings confirm it). Retention, the trainer's
    schedule and window, the criteria build and every "latest" follow it,
    never the largest stamp stored. ``ahead`` is the newest stamp of a run of a
    sensor's readings that keep arriving ahead of the gateway clock for at least
    ``clock_ahead_minutes`` (so one stray stamp is no evidence): the gateway
    clock is behind them (a Pi booted with a stale clock). None: no such run.
    """

    sensors: dict[SensorId, EpochSeconds] = field(default_factory=dict)
    ahead: EpochSeconds | None = None

    def newest(self) -> EpochSeconds | None:
        """Where the readings put the site's time: the newest event time, or the
        stamps arriving ahead of the gateway clock if later; None before any."""
        times = [*self.sensors.values(), *([] if self.ahead is None else [self.ahead])]
        return max(times) if times else None


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def sensor_id(number: int) -> SensorId:
    """Format a sensor number as its wire id (``7`` -> ``"007"``)."""
    if not 1 <= number <= 999:
        raise ValueError(f"sensor number out of range 1..999: {number}")
    return SensorId(f"{number:03d}")
