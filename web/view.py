"""What the page and /metrics show, read from the store in read-only transactions.

Every figure is read at request time through the public :class:`Store` API
(each call its own short read transaction, which never waits for the writer),
so serving a page costs the real-time path nothing but a share of the CPU.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actors import ACTOR_CLASSES
from cli.commands import detection_line, flag_names, local_iso, night_verdicts
from core.config import Config
from core.types import SensorId
from storage import documents
from storage.store import OUTBOX_PUBLISHER, OUTBOX_SENDER, ReadView, Store
from web import series as S

DAY_S = 86_400
RANGES: dict[str, int] = {"24h": DAY_S, "7d": 7 * DAY_S, "90d": 90 * DAY_S}
FORECAST_DAYS = 7
NIGHT_TREND = 7  # nights in the overview's trend
MNF_MIN_SPAN_S = 30 * DAY_S  # the MNF chart shows at least a month of nights
MAX_MARKERS = 300  # flag markers per chart (evenly thinned beyond)
QUANTITIES = ("flow", "pressure")
ROLES = tuple(cls.role for cls in ACTOR_CLASSES)


class UnknownSensor(LookupError):
    """No reading of that sensor is stored."""


@dataclass(frozen=True, slots=True)
class Uplink:
    """One way frames leave the gateway, read from the outbox with its own cursor.

    ``cursor`` names the store offset of what it delivered; with ``acknowledged``
    a frame stays in the outbox until its acknowledgement, so everything kept
    there is undelivered.
    """

    name: str  # the `uplink` label
    cursor: str
    acknowledged: bool


def uplinks(config: Config) -> tuple[Uplink, ...]:
    """The site's uplinks: the serial upstream, and the MQTT uplink when it is on (its
    cursor moves over frames the broker acknowledged, in order)."""
    serial = Uplink("serial", OUTBOX_SENDER, config.upstream.ack)
    if not config.mqtt.enabled:
        return (serial,)
    return serial, Uplink("mqtt", OUTBOX_PUBLISHER, False)


@dataclass(frozen=True, slots=True)
class UplinkState:
    backlog: int  # frames not yet delivered
    oldest_unsent_s: float | None  # age of the oldest of them; None when none waits


def uplink_state(view: ReadView, uplink: Uplink, now: float) -> UplinkState:
    if uplink.acknowledged:
        backlog, oldest = view.outbox_depth(), view.outbox_oldest()
    else:
        sent = view.offset(uplink.cursor)
        backlog = max(0, view.peek_sequence() - sent)
        waiting = view.outbox(after=sent, limit=1) if backlog else []
        oldest = waiting[0] if waiting else None
    return UplinkState(backlog, None if oldest is None else max(0.0, now - oldest.created))


@dataclass(frozen=True, slots=True)
class Disk:
    free: int
    total: int


def disk_of(path: Path) -> Disk | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return Disk(usage.free, usage.total)


def counters_with_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)}


class SiteView:
    """Read-only queries behind the page; ``clock`` is the gateway's wall clock."""

    def __init__(self, store: Store, config: Config,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.tz = config.site.tz
        self.clock = clock

    # -- overview -------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """The site (uplinks, restarts, store, disk) and one row per sensor, from one
        snapshot of the store."""
        with self.store.read() as view:
            return self._overview(view)

    def _overview(self, view: ReadView) -> dict[str, Any]:
        store, now = self.store, self.clock()
        counters = view.counters()
        restarts = counters_with_prefix(counters, "restart.")
        disk = disk_of(store.path)
        detector = documents.actor_state(view, "detector") or {}
        last_flags = detector.get("last_flags", {})
        return {
            "site": self.config.site.name,
            "timezone": self.config.site.timezone,
            "now": local_iso(now, self.tz),
            "store_path": str(store.path),
            "store_used_pct": round(store.used_pct(), 1),
            "disk_free": disk.free if disk else None,
            "disk_total": disk.total if disk else None,
            "uplinks": [{"name": u.name, **_as_dict(uplink_state(view, u, now))}
                        for u in uplinks(self.config)],
            "restarts": {role: restarts.get(role, 0) for role in ROLES},
            "rejects": sum(counters_with_prefix(counters, "reject.").values()),
            "sensors": [self._row(view, sensor, now, last_flags.get(sensor))
                        for sensor in view.sensors()],
        }

    def _row(self, view: ReadView, sensor: SensorId, now: float,
             flags: list[int] | None) -> dict[str, Any]:
        last = view.latest_reading(sensor)
        age = None if last is None else now - last.time
        criteria = documents.current_criteria(view, sensor)
        model = documents.model(view, sensor)
        training = documents.training(view, sensor)
        nights = documents.night_verdicts(view, sensor, newest_first=True, limit=NIGHT_TREND)
        return {
            "sensor": sensor,
            "last_time": None if last is None else local_iso(last.time, self.tz),
            "age_s": age,
            "stale": age is None or age > self.config.system.silence_minutes * 60,
            "flow": None if last is None else last.flow,
            "pressure": None if last is None else last.pressure,
            "flags": None if not flags else {"flow": flag_names(flags[1]),
                                             "pressure": flag_names(flags[2])},
            "criteria": None if not criteria else {"version": criteria["version"],
                                                   "source": criteria["source"]},
            "model": None if not model else {
                "version": model.get("version"),
                "mae_model": model.get("mae_model"), "mae_naive": model.get("mae_naive")},
            "training": None if not training else {
                "outcome": training.get("outcome"), "detail": training.get("detail"),
                "at": local_iso(training.get("at", 0), self.tz)},
            "nights": [{"night": night, "leak": doc.get("leak"),
                        "mnf": doc.get("mnf"), "threshold": doc.get("threshold")}
                       for night, doc in reversed(nights)],
        }

    # -- one sensor's charts ------------------------------------------------------------

    def sensor_charts(self, sensor: str, range_name: str) -> dict[str, Any]:
        """Flow and pressure (readings, band, forecast, flag raises) and the nightly MNF.

        The range ends at the sensor's newest reading (a replayed history is
        shown where it is, not as an empty "now"); the forecast is drawn as far
        ahead as the range reaches back, at most its seven days.
        """
        span = RANGES[range_name]
        sensor_id = SensorId(sensor)
        with self.store.read() as view:
            last = view.latest_reading(sensor_id)
            if last is None:
                raise UnknownSensor(sensor)
            end = int(last.time)
            first = view.first_reading(sensor_id)
            since = max(end - span, int(first.time) if first else end)
            ahead = end + min(span, FORECAST_DAYS * DAY_S)
            arrays = view.reading_arrays(sensor_id, since, end + 1)
            versions = documents.criteria_versions(view, sensor_id)
            forecast = documents.forecast(view, sensor_id)
            detections = view.detections(sensor_id, since, end + 1)
            verdicts = night_verdicts(view, sensor_id)
            night = self._nights(view, sensor_id, end - max(span, MNF_MIN_SPAN_S))
        grid = S.hourly_grid(since, ahead)
        charts = {}
        for quantity in QUANTITIES:
            values = getattr(arrays, quantity)
            current = versions[-1].get(quantity) if versions else None
            default_band = current.get("residual_band") if current else None
            line = S.minmax_downsample(arrays.time, values)
            low, high = S.band_series(versions, quantity, grid, self.tz)
            fc, fc_low, fc_high = S.forecast_series(forecast, quantity, ahead, default_band)
            markers = self._markers(detections, quantity, values, verdicts)
            data = S.align({
                "value": line,
                "band_low": S.Series(grid, low), "band_high": S.Series(grid, high),
                "forecast": fc,
                "forecast_low": S.Series(fc.time, fc_low), "forecast_high": S.Series(fc.time, fc_high),
                "flags": S.Series(np.array([m["t"] for m in markers], dtype=np.int64),
                                  np.array([m["y"] for m in markers], dtype=np.float64)),
            })
            charts[quantity] = {"data": data, "markers": markers}
        return {
            "sensor": sensor, "range": range_name, "timezone": self.config.site.timezone,
            "since": since, "end": end, "until": ahead,
            "end_local": local_iso(end, self.tz),
            "forecast_issued": None if not forecast else local_iso(forecast["issued"], self.tz),
            "forecast_source": None if not forecast else forecast.get("source"),
            "readings": len(arrays), "charts": charts,
            "night": night,
        }

    def _markers(self, detections: list[dict[str, Any]], quantity: str, values: np.ndarray,
                 verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Where a flag went up, placed on the reading (or, with no value, the lowest one)."""
        finite = values[np.isfinite(values)]
        floor = float(finite.min()) if len(finite) else 0.0
        raises = S.thin(S.flag_raises(detections, quantity), MAX_MARKERS)
        return [{"t": int(record["time"]),
                 "y": record[quantity] if record.get(quantity) is not None else floor,
                 "methods": methods,
                 "text": detection_line(record, self.tz, verdicts)}
                for record, methods in raises]

    def _nights(self, view: ReadView, sensor: SensorId, since: int) -> dict[str, Any]:
        """Each judged night's MNF, the value expected (baseline) and the threshold."""
        since_day = local_iso(since, self.tz)[:10]
        nights = documents.night_verdicts(view, sensor, after=since_day)
        t = np.array([int(d.get("mnf_block_start") or d["ends"]) for _, d in nights],
                     dtype=np.int64)

        def column(name: str, only_leaks: bool = False) -> np.ndarray:
            return np.array([np.nan if d.get(name) is None or (only_leaks and not d.get("leak"))
                             else float(d[name]) for _, d in nights], dtype=np.float64)

        data = S.align({name: S.Series(t, column(name))
                        for name in ("mnf", "baseline", "threshold")}
                       | {"leak": S.Series(t, column("mnf", only_leaks=True))})
        return {"data": data, "nights": [night for night, _ in nights]}


def _as_dict(state: UplinkState) -> dict[str, Any]:
    return {"backlog": state.backlog, "oldest_unsent_s": state.oldest_unsent_s}
