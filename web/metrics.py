"""``/metrics``: a Prometheus collector that reads the store when scraped.

Nothing is counted on the real-time path: every figure comes from the store at
scrape time. Counting every stored reading and detection on each scrape would
cost a scan of a year, so the collector keeps, per sensor, how far it has
counted (a time watermark) and reads only what was stored after it; the first
scrape after a start counts everything once. A reading or detection stored
late (stamped before the watermark) is therefore not counted by this process;
both counters restart with the service, as Prometheus counters may.

Every metric is listed in :data:`METRICS` (the README's table is generated
from it), with the ``wdn_`` prefix and the labels ``sensor``, ``quantity``
(``flow``, ``pressure``), ``method`` (``system``, ``value``, ``predict``,
``night``), ``uplink`` (``serial``, ``mqtt`` when it is on) and ``actor``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from actors.supervision import Liveness
from core.config import Config
from core.types import SensorId
from storage import documents
from storage.store import ReadView, Store
from web.series import METHOD_BITS
from web.view import QUANTITIES, ROLES, counters_with_prefix, disk_of, uplink_state, uplinks

DETECTION_CHUNK_S = 7 * 86_400  # detections read per transaction on a first, full count

# name -> (type, labels, help). Counters are exposed with the `_total` suffix.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "wdn_readings": ("counter", ("sensor",), "readings stored (counted from the service's start; "
                                             "the first scrape counts every stored one)"),
    "wdn_rejects": ("counter", ("reason",),
                    "input lines refused, by reason (a refused line names no trusted sensor)"),
    "wdn_duplicates": ("counter", (), "readings received again for a stored (sensor, time)"),
    "wdn_last_reading_timestamp_seconds": ("gauge", ("sensor",),
                                           "time stamp of the sensor's newest reading"),
    "wdn_last_reading_age_seconds": ("gauge", ("sensor",),
                                     "gateway clock minus the newest reading's time stamp"),
    "wdn_flags": ("counter", ("sensor", "quantity", "method"),
                  "readings flagged by a detection method (a flag held 10 minutes counts 10)"),
    "wdn_flag_active": ("gauge", ("sensor", "quantity", "method"),
                        "1 while the newest evaluated reading carries the method's flag"),
    "wdn_criteria_version": ("gauge", ("sensor",), "version of the criteria in force"),
    "wdn_night_mnf": ("gauge", ("sensor",), "minimum night flow of the latest judged night, m3/h"),
    "wdn_night_threshold": ("gauge", ("sensor",), "MNF above which that night is a leak sign"),
    "wdn_night_leak": ("gauge", ("sensor",), "1 when the latest judged night was a leak sign"),
    "wdn_model_mae": ("gauge", ("sensor", "quantity", "forecast"),
                      "held-out mean absolute error of the current model (forecast=model) and "
                      "of seasonal-naive on the same weeks (forecast=naive)"),
    "wdn_training_last_timestamp_seconds": ("gauge", ("sensor",), "when the last training ended"),
    "wdn_training_last_duration_seconds": ("gauge", ("sensor",), "how long the last training ran"),
    "wdn_training_last_outcome": ("gauge", ("sensor", "outcome"),
                                  "1 for the last training's outcome (accepted, rejected, "
                                  "failed, timeout, killed)"),
    "wdn_outbox_backlog_frames": ("gauge", ("uplink",), "frames not yet delivered on the uplink"),
    "wdn_outbox_oldest_unsent_age_seconds": ("gauge", ("uplink",),
                                             "age of the oldest undelivered frame (0: none)"),
    "wdn_outbox_dropped": ("counter", (), "frames the bounded outbox dropped (upstream.outbox_max)"),
    "wdn_actor_restarts": ("counter", ("actor",), "restarts of the actor after a crash"),
    "wdn_actors_answering": ("gauge", (), "1 when every actor answered the last ping round"),
    "wdn_actors_ping_age_seconds": ("gauge", (), "age of the last ping round"),
    "wdn_store_used_ratio": ("gauge", (), "store pages in use over storage.map_max_mb"),
    "wdn_store_file_bytes": ("gauge", (), "size of the store's data file"),
    "wdn_disk_free_bytes": ("gauge", (), "free space on the store's file system"),
    "wdn_disk_total_bytes": ("gauge", (), "size of the store's file system"),
}


@dataclass
class _Tally:
    """How far one sensor's readings and detections have been counted."""

    readings: int = 0
    readings_through: int = -1  # time stamp of the newest counted reading
    detections_through: int = -1
    flags: dict[tuple[str, str], int] = field(default_factory=dict)  # (quantity, method) -> n


class GatewayCollector(Collector):
    """Reads the store (read-only) on each scrape; safe from several server threads."""

    def __init__(self, store: Store, config: Config, *, clock: Callable[[], float] = time.time,
                 liveness: Callable[[], Liveness] | None = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.liveness = liveness
        self._tallies: dict[SensorId, _Tally] = {}
        self._lock = threading.Lock()

    def _family(self, name: str) -> CounterMetricFamily | GaugeMetricFamily:
        kind, labels, text = METRICS[name]
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        return cls(name, text, labels=labels)

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # two scrapes at once would count the same new readings twice
            families = {name: self._family(name) for name in METRICS}
            with self.store.read() as view:  # one snapshot of the store per scrape
                self._collect(view, families, self.clock())
        yield from families.values()

    def _collect(self, view: ReadView, m: dict[str, CounterMetricFamily | GaugeMetricFamily],
                 now: float) -> None:
        store = self.store
        counters = view.counters()
        for reason, n in sorted(counters_with_prefix(counters, "reject.").items()):
            m["wdn_rejects"].add_metric([reason], n)
        m["wdn_duplicates"].add_metric([], counters.get("duplicates", 0))
        m["wdn_outbox_dropped"].add_metric([], counters.get("outbox_dropped", 0))
        restarts = counters_with_prefix(counters, "restart.")
        for role in ROLES:
            m["wdn_actor_restarts"].add_metric([role], restarts.get(role, 0))
        for uplink in uplinks(self.config):
            state = uplink_state(view, uplink, now)
            m["wdn_outbox_backlog_frames"].add_metric([uplink.name], state.backlog)
            m["wdn_outbox_oldest_unsent_age_seconds"].add_metric(
                [uplink.name], state.oldest_unsent_s or 0.0)
        if self.liveness is not None:
            verdict = self.liveness()
            m["wdn_actors_answering"].add_metric([], 1.0 if verdict.answered else 0.0)
            age = verdict.age_s()
            if age is not None:
                m["wdn_actors_ping_age_seconds"].add_metric([], age)
        m["wdn_store_used_ratio"].add_metric([], store.used_pct() / 100.0)
        try:
            m["wdn_store_file_bytes"].add_metric([], (Path(store.path) / "data.mdb").stat().st_size)
        except OSError:
            pass
        disk = disk_of(store.path)
        if disk is not None:
            m["wdn_disk_free_bytes"].add_metric([], disk.free)
            m["wdn_disk_total_bytes"].add_metric([], disk.total)
        detector = documents.actor_state(view, "detector") or {}
        last_flags = detector.get("last_flags", {})
        for sensor in view.sensors():
            self._sensor(view, m, sensor, now, last_flags.get(sensor))

    def _sensor(self, view: ReadView, m: dict[str, CounterMetricFamily | GaugeMetricFamily],
                sensor: SensorId, now: float, flags: list[int] | None) -> None:
        last = view.latest_reading(sensor)
        tally = self._tallies.setdefault(sensor, _Tally())
        if last is not None:
            self._count(view, sensor, tally, int(last.time), None if not flags else int(flags[0]))
            m["wdn_last_reading_timestamp_seconds"].add_metric([sensor], last.time)
            m["wdn_last_reading_age_seconds"].add_metric([sensor], now - last.time)
        m["wdn_readings"].add_metric([sensor], tally.readings)
        for quantity in QUANTITIES:
            for method, bit in METHOD_BITS.items():
                label = [sensor, quantity, method.lower()]
                m["wdn_flags"].add_metric(label, tally.flags.get((quantity, method), 0))
                if flags:
                    active = flags[1 if quantity == "flow" else 2] & bit
                    m["wdn_flag_active"].add_metric(label, 1.0 if active else 0.0)
        criteria = documents.current_criteria(view, sensor)
        if criteria:
            m["wdn_criteria_version"].add_metric([sensor], criteria["version"])
        nights = documents.night_verdicts(view, sensor, newest_first=True, limit=1,
                                          where=lambda doc: doc.get("leak") is not None)
        if nights:
            night = nights[0][1]
            for name, value in (("wdn_night_mnf", night.get("mnf")),
                                ("wdn_night_threshold", night.get("threshold")),
                                ("wdn_night_leak", 1.0 if night.get("leak") else 0.0)):
                if value is not None:
                    m[name].add_metric([sensor], value)
        model = documents.model(view, sensor)
        if model:
            for forecast, key in (("model", "mae_model"), ("naive", "mae_naive")):
                for quantity, value in (model.get(key) or {}).items():
                    if value is not None:
                        m["wdn_model_mae"].add_metric([sensor, quantity, forecast], value)
        training = documents.training(view, sensor)
        if training:
            m["wdn_training_last_timestamp_seconds"].add_metric([sensor], training.get("at", 0))
            if training.get("duration_s") is not None:
                m["wdn_training_last_duration_seconds"].add_metric([sensor], training["duration_s"])
            m["wdn_training_last_outcome"].add_metric([sensor, str(training.get("outcome"))], 1.0)

    def _count(self, view: ReadView, sensor: SensorId, tally: _Tally, newest: int,
               judged: int | None) -> None:
        """Add the readings and flags stored since the last scrape (see the module doc).

        ``judged`` is the newest reading time the Detector had committed when the
        scrape began (read before the detections): its detections are all stored,
        later ones may not be yet and are left for the next scrape.
        """
        if newest > tally.readings_through:
            tally.readings += view.count_readings(sensor, tally.readings_through + 1, newest + 1)
            tally.readings_through = newest
        if judged is None or judged <= tally.detections_through:
            return
        since = tally.detections_through + 1
        if since == 0:  # the first count: from the oldest reading, not from 1970
            first = view.first_reading(sensor)
            since = 0 if first is None else int(first.time)
        while since <= judged:
            until = min(since + DETECTION_CHUNK_S, judged + 1)
            for record in view.detections(sensor, since, until):
                for quantity in QUANTITIES:
                    flags = int(record.get(f"{quantity}_flags", 0))
                    for method, bit in METHOD_BITS.items():
                        if flags & bit:
                            key = (quantity, method)
                            tally.flags[key] = tally.flags.get(key, 0) + 1
            since = until
        tally.detections_through = judged


def registry_for(collector: GatewayCollector) -> CollectorRegistry:
    """A registry holding only the gateway's collector (no process metrics of the client)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def describe_metrics() -> str:
    """The metrics as a Markdown table (for the README)."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, (kind, labels, text) in METRICS.items():
        shown = f"{name}_total" if kind == "counter" else name
        lines.append(f"| `{shown}` | {kind} | {', '.join(f'`{l}`' for l in labels) or '-'} "
                     f"| {text} |")
    return "\n".join(lines) + "\n"
