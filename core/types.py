"""Domain types shared by every layer: sensor ids, event times, readings."""

from __future__ import annotations

import math
from dataclasses import dataclass
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


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def sensor_id(number: int) -> SensorId:
    """Format a sensor number as its wire id (``7`` -> ``"007"``)."""
    if not 1 <= number <= 999:
        raise ValueError(f"sensor number out of range 1..999: {number}")
    return SensorId(f"{number:03d}")
