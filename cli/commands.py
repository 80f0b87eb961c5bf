"""``status``, ``export``, ``forecast``, ``train`` and ``repaired``: the operator's view
of the store.

All of them open the store read-only, so they are safe while the service runs
and never take its lock (``train`` runs a training child, which reads the store
read-only, and records its outcome with one short write, which LMDB serialises
with the service's own writers; the running service's Predictor reads the
current model at each forecast, so it takes a new one at its next hour).
``repaired`` writes one repair record the same way; the NightFlow actor applies
it (see :mod:`core.replay`).
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from cli import arguments
from cli.store_repair import damaged_advice
from core.frames import UPSTREAM_REJECT
from core.localtime import local_datetime
from core.types import SensorId
from storage import documents
from storage.lock import holder
from storage.store import (
    OUTBOX_PUBLISHER,
    ReadView,
    Store,
    StoreDamagedError,
    StoreError,
    history_sensor_years,
)

FLAG_NAMES = ((0x01, "SYSTEM"), (0x02, "VALUE"), (0x04, "PREDICT"), (0x08, "NIGHT"))
MB = 1024 * 1024


def run(command: str, config: Any, args: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        return _run(command, config, args, out)
    except StoreDamagedError as exc:
        print(damaged_advice(exc, config.source), file=sys.stderr)
        return 1


def _run(command: str, config: Any, args: Any, out: TextIO) -> int:
    try:
        # The site's map limit, so that status tells how full the store is against it.
        store = Store(Path(config.storage.path), readonly=True,
                      map_size_mb=config.storage.map_size_mb,
                      map_max_mb=config.storage.map_max_mb)
    except StoreDamagedError:
        raise
    except StoreError as exc:
        print(f"cannot open the store at {config.storage.path}: {exc}", file=sys.stderr)
        return 1
    with store:
        if command == "status":
            write_status(store, config, out)
        elif command == "export":
            return export(store, config, args, out)
        elif command == "forecast":
            write_forecast(store, config, args.sensor, out)
        elif command == "train":
            return train(store, config, args.sensor, out)
        elif command == "repaired":
            return repaired(store, config, args.sensor, out)
    return 0


def local_iso(t: float, tz: ZoneInfo) -> str:
    """ISO 8601 local time with its UTC offset, e.g. 2026-11-28T14:05:00+09:00."""
    return local_datetime(int(t), tz).isoformat()


def detection_line(detection: dict[str, Any], tz: ZoneInfo,
                   verdicts: list[dict[str, Any]] | None = None) -> str:
    """Why a flag fired, as one JSON line: ``export detections`` writes it, the web
    page shows it on hover (one text for both, so the two never disagree). With the
    sensor's :func:`night_verdicts`, a NIGHT flag carries the evidence that raised it."""
    record = {"sensor": detection["sensor"], **detection,
              "time": local_iso(detection["time"], tz)}
    if verdicts is not None and any(c.get("method") == "NIGHT"
                                    for c in detection.get("causes", ())):
        record["night"] = _verdict_at(verdicts, detection["time"])
    return json.dumps(record)


def flag_names(flags: int) -> str:
    return "+".join(name for bit, name in FLAG_NAMES if flags & bit) or "ok"


def _sensors(store: Store, sensor: SensorId | None) -> list[SensorId]:
    """The sensor asked for (one the store knows: else UsageError), or every stored one."""
    with store.read() as view:
        stored = view.sensors()
    if sensor is None:
        return stored
    arguments.check_sensor(sensor, stored)
    return [sensor]


def write_status(store: Store, config: Any, out: TextIO) -> None:
    """The service's state from one snapshot of the store (one read transaction)."""
    with store.read() as view:
        _write_status(store, view, config, out)


def _write_status(store: Store, view: ReadView, config: Any, out: TextIO) -> None:
    tz = config.site.tz
    detector = documents.actor_state(view, "detector") or {}
    last_flags = detector.get("last_flags", {})
    night_states = (documents.actor_state(view, "night_flow") or {}).get("model", {})
    counters = view.counters()
    room = history_sensor_years(store.map_max_mb, config.upstream.outbox_max)
    print(f"site {config.site.name} ({config.site.timezone}); store {config.storage.path} "
          f"{store.used_pct():.1f}% used of {store.map_max_mb} MB (room for about "
          f"{room:.0f} sensor-years of readings)", file=out)
    print(disk_line(Path(config.storage.path), store.reserve_left()), file=out)
    print(f"arrivals {view.journal_head()}; detector at {view.offset('detector')}, "
          f"night flow at {view.offset('night_flow')}; outbox sent through "
          f"{view.offset('transmitter')}, {view.outbox_depth()} kept", file=out)
    print("sensors:", file=out)
    event_times = view.event_times().sensors
    for sensor in view.sensors():
        count = view.count_readings(sensor)
        flags = last_flags.get(sensor)
        active = (f"flow {flag_names(flags[1])}, pressure {flag_names(flags[2])}"
                  if flags else "none in event time yet")
        criteria = documents.current_criteria(view, sensor)
        crit = (f"criteria v{criteria['version']} from {criteria['source']}" if criteria
                else "no criteria (no history yet): SYSTEM detection only")
        last = _last_reading(view, sensor, event_times.get(sensor), tz)
        print(f"  {sensor}: {count} readings; last {last}", file=out)
        print(f"       flags: {active}; {crit}", file=out)
        repairs = documents.repairs(view, sensor, newest_first=True, limit=1)
        night = night_line(night_states.get(sensor), config.night,
                           repairs[0] if repairs else None, tz)
        print(f"       {night}", file=out)
        print(f"       {_model_line(view, sensor, tz)}", file=out)
    print("rejects: " + _counts(counters, "reject."), file=out)
    print("upstream rejects: " + _counts(counters, UPSTREAM_REJECT), file=out)
    print(f"duplicates: {counters.get('duplicates', 0)} (differing: {counters.get('conflicts', 0)}); "
          f"{_outbox_drops(counters, config.upstream.ack)}", file=out)
    if config.mqtt.enabled:
        print(mqtt_line(view, config), file=out)
    print("actor restarts: " + _counts(counters, "restart."), file=out)


def _counts(counters: dict[str, int], prefix: str) -> str:
    """``name=count, ...`` of the counters named ``<prefix><name>``, or ``none``."""
    named = {k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)}
    return ", ".join(f"{k}={v}" for k, v in sorted(named.items())) or "none"


def _last_reading(view: ReadView, sensor: SensorId, event_time: int | None, tz: ZoneInfo) -> str:
    """The reading at the sensor's event time, and how many are stored past it
    (stamped ahead, or not processed yet): never the newest stamp as "last"."""
    at = [] if event_time is None else view.readings(sensor, event_time, event_time + 1)
    text = (f"{local_iso(at[0].time, tz)} flow={_v(at[0].flow)} pressure={_v(at[0].pressure)} "
            f"status={at[0].status:02X}" if at else "none")
    beyond = view.count_readings(sensor, None if event_time is None else event_time + 1)
    newest = view.latest_reading(sensor) if beyond else None
    if newest is not None:
        text += (f"; {beyond} stored past its event time (stamped ahead, or not processed "
                 f"yet), newest {local_iso(newest.time, tz)}")
    return text


def night_line(state: dict[str, Any] | None, night: Any,
               repair: dict[str, Any] | None = None, tz: ZoneInfo | None = None) -> str:
    """Where the sensor's NIGHT method stands: learning, or its accumulated evidence;
    and its latest ``repaired`` record, if any."""
    from core.night_model import SensorNights

    nights = SensorNights.from_dict(state or {})
    clean = len(nights.nights)
    if clean < night.min_baseline_nights:
        line = (f"night: learning, no NIGHT verdicts until {night.min_baseline_nights} clean "
                f"nights ({clean} so far)")
    else:
        line = (f"night: expected MNF from {min(clean, night.baseline_nights)} clean nights; "
                f"evidence {nights.statistic:.2f} of {night.cusum_h:g}")
        if nights.alarm:
            line += (f"; NIGHT raised (clears after {night.clear_nights} nights without the "
                     "excess, or with the repaired command)")
    if repair is not None and tz is not None:
        line += (f"; repaired marked {local_iso(repair['wall_time'], tz)}"
                 + (f" (event time {local_iso(repair['event_time'], tz)})"
                    if repair.get("event_time") is not None else "")
                 + (", applied" if repair.get("applied") is not None else ", not applied yet"))
    return line


def repaired(store: Store, config: Any, sensor: SensorId, out: TextIO) -> int:
    """Record that ``sensor``'s leak was repaired, at its event time and the wall clock."""
    from core.replay import repair_record

    _sensors(store, sensor)
    with store.read() as view:
        event_time = view.event_time(sensor)
    record = repair_record(sensor, event_time, time.time())
    store.close()
    with Store(Path(config.storage.path)) as writer:
        writer.transact(lambda b: documents.put_repair(b, record))
    service = holder(config.storage.path)
    when = ("its next readings" if service is not None
            else "its next readings once the service runs")
    print(f"{sensor}: repair recorded; NIGHT clears and its evidence restarts with {when}",
          file=out)
    return 0


def disk_line(path: Path, reserve_left: int = 0) -> str:
    """Free space on the store's file system, and a clear word when it is full.

    A full disk stops the service from storing readings once the store's
    reserved space (``storage.reserve_mb``) is used up (it holds them and
    waits, then stops in order): the operator must see it here, not only in
    the service's log.
    """
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return f"disk: unknown ({exc})"
    line = f"disk: {usage.free / MB:.1f} MB free of {usage.total / MB:.1f} MB"
    if reserve_left:
        line += f", {reserve_left / MB:.1f} MB reserved for the store"
    if usage.free >= min(MB, usage.total // 20):
        return line
    if reserve_left >= MB:
        return line + (" -- DISK FULL: the store writes into its reserve; free space "
                       "before that runs out")
    return line + (" -- DISK FULL: new readings cannot be stored; free space "
                   "(or lower storage.retention_days)")


def mqtt_line(view: ReadView, config: Any) -> str:
    """The MQTT uplink: broker state, backlog, age of the oldest unpublished frame, losses."""
    tz = config.site.tz
    state = documents.uplink_state(view, OUTBOX_PUBLISHER) or {}
    delivered = view.offset(OUTBOX_PUBLISHER)
    backlog = max(0, view.peek_sequence() - delivered)
    oldest = view.outbox(after=delivered, limit=1)
    age = f"{max(0.0, time.time() - oldest[0].created):.0f} s" if oldest else "none"
    broker = (f"{state.get('state', 'unknown')} since {local_iso(state['since'], tz)}"
              if "since" in state else "not started yet")
    detail = f" ({state['detail']})" if state.get("detail") else ""
    lost = view.counters().get("outbox_dropped_unpublished", 0)
    return (f"mqtt {config.mqtt.url}: {broker}{detail}; published through {delivered}, "
            f"backlog {backlog} frame(s), oldest unpublished {age}; "
            f"dropped unpublished: {lost}")


def _outbox_drops(counters: dict[str, int], ack: bool) -> str:
    """What the outbox bound removed: a loss with ACK (unacknowledged) or when unsent."""
    dropped = counters.get("outbox_dropped", 0)
    unsent = counters.get("outbox_dropped_unsent", 0)
    if ack:
        return f"outbox dropped: {dropped} unacknowledged ({unsent} of them never sent)"
    return (f"outbox dropped: {unsent} never sent; {dropped - unsent} sent frames trimmed "
            f"from the audit trail")


def _model_line(view: ReadView, sensor: SensorId, tz: ZoneInfo) -> str:
    model = documents.model(view, sensor)
    training = documents.training(view, sensor)
    parts = []
    if model:
        parts.append(
            f"model {model['version']}: trained {local_iso(model.get('trained_at', 0), tz)}, "
            f"data {local_iso(model.get('data_since', 0), tz)}..{local_iso(model.get('data_until', 0), tz)}, "
            f"MAE model {json.dumps(model.get('mae_model'))} vs naive {json.dumps(model.get('mae_naive'))}, "
            f"residual band {json.dumps(model.get('residual_band'))}")
        choice = documents.forecast_choice(view, sensor)  # the Predictor's daily check
        if choice and choice.get("version") == model["version"]:
            parts.append(forecast_choice_text(choice, tz))
    else:
        parts.append("model: none (seasonal-naive forecast)")
    if training and training.get("outcome") != "accepted":
        retry = training.get("retry_after")
        parts.append(f"last training {training['outcome']} at {local_iso(training['at'], tz)}: "
                     f"{training['detail']}" + (f"; retry after {local_iso(retry, tz)}" if retry else ""))
    return "; ".join(parts)


def forecast_choice_text(doc: dict[str, Any], tz: ZoneInfo) -> str:
    """Where each quantity's forecast comes from after the daily check, and why:
    ``forecast: flow from seasonal-naive since ... (last 7 days MAE model 5.02 vs
    naive 3.16, 672 h), pressure from the model (...)``."""
    from core.forecast_check import CHECK_DAYS, MODEL, Choice

    choice = Choice.from_record(doc)
    parts = []
    for quantity, use in choice.use.items():
        source = "the model" if use == MODEL else "seasonal-naive"
        since = choice.since.get(quantity)
        text = f"{quantity} from {source}"
        if since is not None:
            text += f" since {local_iso(since, tz)}"
        score = choice.scores.get(quantity)
        if score is not None and score.hours:
            text += (f" (last {CHECK_DAYS} days MAE model {score.model_mae:.4g} vs naive "
                     f"{score.naive_mae:.4g}, {score.hours} h)")
        parts.append(text)
    return f"forecast: {', '.join(parts)}; checked {local_iso(choice.checked, tz)}"


def _v(x: float | None) -> str:
    """A stored value as written: short where that is exact, else every digit it has."""
    if x is None:
        return ""
    text = f"{x:g}"
    return text if float(text) == x else repr(x)


def export(store: Store, config: Any, args: Any, out: TextIO) -> int:
    tz = config.site.tz
    since, until = (None if moment is None else arguments.epoch_seconds(moment, tz)
                    for moment in (args.since, args.until))
    arguments.check_range(since, until)
    sensors = _sensors(store, args.sensor)
    with store.read() as view:
        _export(view, sensors, args.what, since, until, tz, out)
    return 0


def _export(view: ReadView, sensors: list[SensorId], what: str, since: int | None,
            until: int | None, tz: ZoneInfo, out: TextIO) -> None:
    if what == "readings":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["sensor", "time", "flow", "pressure", "status"])
        for sensor in sensors:
            for r in view.readings(sensor, since, until):
                w.writerow([r.sensor, local_iso(r.time, tz), _v(r.flow), _v(r.pressure), f"{r.status:02X}"])
    elif what == "criteria":
        versions = {s: documents.criteria_versions(view, s) for s in sensors}
        json.dump({s: v for s, v in versions.items() if v}, out, indent=2, default=str)
        out.write("\n")
    elif what == "night":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["sensor", "night", "block_start", "readings", "mean", "complete"])
        for sensor in sensors:
            for b in view.night_blocks(sensor, since, until):
                w.writerow([sensor, b.get("night"), local_iso(b["start"], tz), b.get("readings"),
                            _v(b.get("mean")), b.get("complete")])
    elif what == "detections":
        for sensor in sensors:
            verdicts = night_verdicts(view, sensor)
            for d in view.detections(sensor, since, until):
                out.write(detection_line(d, tz, verdicts) + "\n")


def night_verdicts(view: ReadView, sensor: SensorId) -> list[dict[str, Any]]:
    """The sensor's stored night verdicts that raised or held NIGHT, by the time they apply."""
    found = [rec for _, rec in documents.night_verdicts(
        view, sensor, where=lambda rec: rec.get("leak") is True)]
    return sorted(found, key=lambda rec: rec["ends"])


_NIGHT_FIELDS = ("night", "outcome", "mnf", "expected", "z", "day_mean", "day_expected", "day_z",
                 "statistic", "threshold", "evidence")


def _verdict_at(verdicts: list[dict[str, Any]], t: int) -> dict[str, Any] | None:
    """Why NIGHT was carried at ``t``: the newest verdict in force then (from its night's end)."""
    i = bisect.bisect_right([rec["ends"] for rec in verdicts], t)
    if not i:
        return None
    return {k: verdicts[i - 1].get(k) for k in _NIGHT_FIELDS}


def write_forecast(store: Store, config: Any, sensor: SensorId | None, out: TextIO) -> None:
    """CSV of each sensor's current forecast, one row per hour: the expected mean
    and its P10/P90 band; an empty field where there is no value (a sensor without
    pressure, an hour without basis, a forecast without bands)."""
    from core.forecast import BAND_FIELDS, HORIZON_HOURS, Forecast

    tz = config.site.tz
    sensors = _sensors(store, sensor)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["sensor", "time", "flow", "pressure", *BAND_FIELDS])
    nothing = [math.nan] * HORIZON_HOURS
    with store.read() as view:
        docs = {s: documents.forecast(view, s) for s in sensors}
    for s, doc in docs.items():
        if not doc:
            continue
        fc = Forecast.from_record(doc)
        columns = [fc.flow, fc.pressure, *(nothing if getattr(fc, name) is None
                                           else getattr(fc, name) for name in BAND_FIELDS)]
        for hour, values in enumerate(zip(*columns)):
            w.writerow([s, local_iso(fc.issued + hour * 3600, tz),
                        *("" if math.isnan(v) else f"{v:.3f}" for v in values)])


def train(store: Store, config: Any, sensor: SensorId | None, out: TextIO) -> int:
    from actors.trainer import commit_training, run_training

    sensors = _sensors(store, sensor)
    store.close()
    service = holder(config.storage.path)
    if service is not None:
        print(f"{service} runs on this store: it uses a model accepted here from its next "
              "hourly forecast", file=out)
    code = 0
    with Store(Path(config.storage.path)) as writer:
        for s in sensors:
            started = time.monotonic()
            outcome, detail, result = run_training(config, s)
            commit_training(writer, s, outcome, detail, result, time.monotonic() - started)
            print(f"{s}: {outcome} ({detail})", file=out)
            code = code or (0 if outcome in ("accepted", "rejected") else 1)
    return code
