"""Assembly of the 10-minute server report ($SRV) from per-minute results.

Blocks follow the readings' event time in the site's local time: minutes
``hh:m0`` to ``hh:m9``. A block is finished when a reading of the same sensor
falls into a later block, or when the sensor has been silent past the block's
end for the silence grace period. A minute without a reading goes out empty and
SYSTEM-flagged. The ``:00`` line carries the forecast for its minute; a quantity
without forecast there (no basis yet: a site's first week) is None, an empty
field on the wire (PROTOCOL.md: an empty numeric field is a missing value; 0
would read as a forecast of no flow). The other lines carry 0. State is plain
data so the Detector persists it with its offset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from core.frames import ServerReportLine
from core.localtime import local_datetime
from core.types import FLAG_SYSTEM, EpochSeconds, SensorId

BLOCK_S = 600
# A sensor gap longer than this many blocks is reported as empty blocks only up
# to the cap: a reading stamped far in the future must not flood the link.
MAX_EMPTY_BLOCKS = 6

Expected = Callable[[SensorId, EpochSeconds], tuple[float | None, float | None]]

_MISSING = object()


# Per zone: UTC hour -> the zone's UTC offset (s) when it is the same for the whole
# hour, else None. Every reading asks for its block; the offset changes twice a
# year at most, so zoneinfo is asked once per hour instead of once per reading.
_OFFSET_CACHE_LIMIT = 4096
_hour_offsets: dict[ZoneInfo, dict[int, int | None]] = {}


def _utc_offset(t: int, tz: ZoneInfo) -> int:
    offset = local_datetime(t, tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def block_start(t: int, tz: ZoneInfo) -> EpochSeconds:
    """Start of the local 10-minute block containing ``t`` (UTC epoch seconds)."""
    offsets = _hour_offsets.get(tz)
    if offsets is None:
        offsets = _hour_offsets.setdefault(tz, {})
    hour = t // 3600
    shift = offsets.get(hour, _MISSING)
    if shift is _MISSING:
        first = _utc_offset(hour * 3600, tz)
        shift = first if _utc_offset(hour * 3600 + 3599, tz) == first else None
        if len(offsets) >= _OFFSET_CACHE_LIMIT:
            offsets.clear()
        offsets[hour] = shift
    if shift is None:  # the offset changes inside this hour
        shift = _utc_offset(t, tz)
    return t - ((t + shift) % BLOCK_S)  # type: ignore[return-value]  # no NewType call: hot path


class ServerReportBuilder:
    """Collects each sensor's minutes and emits finished 10-minute blocks."""

    def __init__(self, tz: ZoneInfo, state: dict[str, Any] | None = None) -> None:
        self._tz = tz
        # sensor -> {"start": block start, "minutes": {minute index: [flow, pressure, ff, pf]}}
        self._open: dict[str, dict[str, Any]] = {}
        if state:
            for sensor, block in state.get("open", {}).items():
                self._open[sensor] = {
                    "start": int(block["start"]),
                    "minutes": {int(k): list(v) for k, v in block["minutes"].items()},
                }
        self.skipped_blocks = int(state.get("skipped", 0)) if state else 0

    def state(self) -> dict[str, Any]:
        return {
            "open": {
                s: {"start": b["start"], "minutes": {str(k): v for k, v in b["minutes"].items()}}
                for s, b in self._open.items()
            },
            "skipped": self.skipped_blocks,
        }

    def add(
        self, sensor: SensorId, time: EpochSeconds, flow: float | None, pressure: float | None,
        flow_flags: int, pressure_flags: int, expected: Expected,
    ) -> list[list[ServerReportLine]]:
        """Record one processed reading; return the blocks it finished.

        A late reading for an already finished block is not reported again.
        """
        start = block_start(time, self._tz)
        block = self._open.get(sensor)
        finished: list[list[ServerReportLine]] = []
        if block is None:
            block = self._open[sensor] = {"start": start, "minutes": {}}
        elif start < block["start"]:
            return finished
        elif start > block["start"]:
            finished = self._finish_through(sensor, start, expected)
            block = self._open[sensor] = {"start": start, "minutes": {}}
        index = (time - start) // 60
        block["minutes"].setdefault(index, [flow, pressure, flow_flags, pressure_flags])
        return finished

    def close_silent(
        self, now: EpochSeconds, grace_s: int, expected: Expected
    ) -> list[list[ServerReportLine]]:
        """Finish blocks of sensors silent for ``grace_s`` past their block's end."""
        finished: list[list[ServerReportLine]] = []
        for sensor in list(self._open):
            block = self._open[sensor]
            if now >= block["start"] + BLOCK_S + grace_s:
                upto = block_start(now - grace_s, self._tz)
                finished += self._finish_through(SensorId(sensor), upto, expected)
                self._open[sensor] = {"start": upto, "minutes": {}}
        return finished

    def _finish_through(
        self, sensor: SensorId, next_start: int, expected: Expected
    ) -> list[list[ServerReportLine]]:
        block = self._open[sensor]
        blocks = [self._lines(sensor, block["start"], block["minutes"], expected)]
        empty_start = block["start"] + BLOCK_S
        gap = (next_start - empty_start) // BLOCK_S
        if gap > MAX_EMPTY_BLOCKS:
            self.skipped_blocks += gap - MAX_EMPTY_BLOCKS
            empty_start = next_start - MAX_EMPTY_BLOCKS * BLOCK_S
        for start in range(empty_start, next_start, BLOCK_S):
            blocks.append(self._lines(sensor, start, {}, expected))
        return blocks

    def _lines(
        self, sensor: SensorId, start: int, minutes: dict[int, list[Any]], expected: Expected
    ) -> list[ServerReportLine]:
        lines = []
        for index in range(BLOCK_S // 60):
            t = start + index * 60
            pred_flow: float | None = 0.0
            pred_pressure: float | None = 0.0
            if index == 0:
                ef, ep = expected(sensor, t)  # type: ignore[arg-type]
                pred_flow = None if ef is None else round(ef, 3)
                pred_pressure = None if ep is None else round(ep, 3)
            row = minutes.get(index)
            if row is None:
                lines.append(ServerReportLine(sensor, t, None, None, FLAG_SYSTEM, FLAG_SYSTEM,
                                        pred_flow, pred_pressure))
            else:
                lines.append(ServerReportLine(sensor, t, row[0], row[1], int(row[2]), int(row[3]),
                                        pred_flow, pred_pressure))
        return lines
