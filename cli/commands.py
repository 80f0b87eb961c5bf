"""``status``, ``export``, ``forecast`` and ``train``: the operator's view of the store.

All of them open the store read-only, so they are safe while the service runs
(``train`` runs a training child and records its outcome with one short write,
which LMDB serialises with the service's own writers).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from core.types import SensorId
from storage.store import Store, StoreError, history_sensor_years

FLAG_NAMES = ((0x01, "SYSTEM"), (0x02, "VALUE"), (0x04, "PREDICT"), (0x08, "NIGHT"))
MB = 1024 * 1024


def run(command: str, config: Any, args: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        # The site's map limit, so that status tells how full the store is against it.
        store = Store(Path(config.storage.path), readonly=True,
                      map_size_mb=config.storage.map_size_mb,
                      map_max_mb=config.storage.map_max_mb)
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
    return 0


def local_iso(t: float, tz: ZoneInfo) -> str:
    """ISO 8601 local time with its UTC offset, e.g. 2026-11-28T14:05:00+09:00."""
    return dt.datetime.fromtimestamp(int(t), tz).isoformat()


def parse_time(text: str | None, tz: ZoneInfo) -> int | None:
    """An operator's ISO 8601 time; without an offset it is the site's local time."""
    if not text:
        return None
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return int(moment.timestamp())


def flag_names(flags: int) -> str:
    return "+".join(name for bit, name in FLAG_NAMES if flags & bit) or "ok"


def _sensors(store: Store, sensor: str | None) -> list[SensorId]:
    return [SensorId(sensor)] if sensor else store.sensors()


def write_status(store: Store, config: Any, out: TextIO) -> None:
    tz = config.site.tz
    detector = store.consumer_state("detector") or {}
    last_flags = detector.get("last_flags", {})
    counters = store.counters()
    room = history_sensor_years(store.map_max_mb, config.upstream.outbox_max)
    print(f"site {config.site.name} ({config.site.timezone}); store {config.storage.path} "
          f"{store.used_pct():.1f}% used of {store.map_max_mb} MB (room for about "
          f"{room:.0f} sensor-years of readings)", file=out)
    print(disk_line(Path(config.storage.path), store.reserve_left()), file=out)
    print(f"arrivals {store.journal_head()}; detector at {store.offset('detector')}, "
          f"night flow at {store.offset('night_flow')}; outbox sent through "
          f"{store.offset('transmitter')}, {store.outbox_depth()} kept", file=out)
    print("sensors:", file=out)
    for sensor in store.sensors():
        last = store.latest_reading(sensor)
        count = store.count_readings(sensor)
        flags = last_flags.get(sensor)
        active = (f"flow {flag_names(flags[1])}, pressure {flag_names(flags[2])}"
                  if flags else "not yet evaluated")
        criteria = store.doc("criteria", f"{sensor}/current")
        crit = (f"criteria v{criteria['version']} from {criteria['source']}" if criteria
                else "no criteria (no history yet): SYSTEM detection only")
        reading = (f"{local_iso(last.time, tz)} flow={_v(last.flow)} pressure={_v(last.pressure)} "
                   f"status={last.status:02X}" if last else "none")
        print(f"  {sensor}: {count} readings; last {reading}", file=out)
        print(f"       flags: {active}; {crit}", file=out)
        print(f"       {_model_line(store, sensor, tz)}", file=out)
    rejects = {k.removeprefix("reject."): v for k, v in counters.items() if k.startswith("reject.")}
    print("rejects: " + (", ".join(f"{k}={v}" for k, v in sorted(rejects.items())) or "none"),
          file=out)
    print(f"duplicates: {counters.get('duplicates', 0)} (differing: {counters.get('conflicts', 0)}); "
          f"{_outbox_drops(counters, config.upstream.ack)}", file=out)
    restarts = {k.removeprefix("restart."): v for k, v in counters.items() if k.startswith("restart.")}
    print("actor restarts: " + (", ".join(f"{k}={v}" for k, v in sorted(restarts.items())) or "none"),
          file=out)


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


def _outbox_drops(counters: dict[str, int], ack: bool) -> str:
    """What the outbox bound removed: a loss with ACK (unacknowledged) or when unsent."""
    dropped = counters.get("outbox_dropped", 0)
    unsent = counters.get("outbox_dropped_unsent", 0)
    if ack:
        return f"outbox dropped: {dropped} unacknowledged ({unsent} of them never sent)"
    return (f"outbox dropped: {unsent} never sent; {dropped - unsent} sent frames trimmed "
            f"from the audit trail")


def _model_line(store: Store, sensor: SensorId, tz: ZoneInfo) -> str:
    model = store.doc("model", sensor)
    training = store.doc("training", sensor)
    parts = []
    if model:
        parts.append(
            f"model {model['version']}: trained {local_iso(model.get('trained_at', 0), tz)}, "
            f"data {local_iso(model.get('data_since', 0), tz)}..{local_iso(model.get('data_until', 0), tz)}, "
            f"MAE model {json.dumps(model.get('mae_model'))} vs naive {json.dumps(model.get('mae_naive'))}, "
            f"residual band {json.dumps(model.get('residual_band'))}")
    else:
        parts.append("model: none (seasonal-naive forecast)")
    if training and training.get("outcome") != "accepted":
        retry = training.get("retry_after")
        parts.append(f"last training {training['outcome']} at {local_iso(training['at'], tz)}: "
                     f"{training['detail']}" + (f"; retry after {local_iso(retry, tz)}" if retry else ""))
    return "; ".join(parts)


def _v(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def export(store: Store, config: Any, args: Any, out: TextIO) -> int:
    tz = config.site.tz
    since, until = parse_time(args.since, tz), parse_time(args.until, tz)
    sensors = _sensors(store, args.sensor)
    if args.what == "readings":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["sensor", "time", "flow", "pressure", "status"])
        for sensor in sensors:
            for r in store.readings(sensor, since, until):
                w.writerow([r.sensor, local_iso(r.time, tz), _v(r.flow), _v(r.pressure), f"{r.status:02X}"])
    elif args.what == "criteria":
        versions = {s: [doc for key, doc in store.docs("criteria", prefix=f"{s}/") if not key.endswith("current")]
                    for s in sensors}
        json.dump({s: v for s, v in versions.items() if v}, out, indent=2, default=str)
        out.write("\n")
    elif args.what == "night":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["sensor", "night", "block_start", "readings", "mean", "complete"])
        for sensor in sensors:
            for b in store.night_blocks(sensor, since, until):
                w.writerow([sensor, b.get("night"), local_iso(b["start"], tz), b.get("readings"),
                            _v(b.get("mean")), b.get("complete")])
    elif args.what == "detections":
        for sensor in sensors:
            for d in store.detections(sensor, since, until):
                out.write(json.dumps({"sensor": sensor, **d, "time": local_iso(d["time"], tz)}) + "\n")
    return 0


def write_forecast(store: Store, config: Any, sensor: str | None, out: TextIO) -> None:
    from core.forecast import Forecast

    tz = config.site.tz
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["sensor", "time", "flow", "pressure"])
    for s in _sensors(store, sensor):
        doc = store.doc("forecast", s)
        if not doc:
            continue
        fc = Forecast.from_record(doc)
        for hour, (flow, pressure) in enumerate(zip(fc.flow, fc.pressure)):
            w.writerow([s, local_iso(fc.issued + hour * 3600, tz), f"{flow:.3f}", f"{pressure:.3f}"])


def train(store: Store, config: Any, sensor: str | None, out: TextIO) -> int:
    from actors.trainer import commit_training, run_training

    sensors = _sensors(store, sensor)
    store.close()
    code = 0
    with Store(Path(config.storage.path)) as writer:
        for s in sensors:
            outcome, detail, result = run_training(config, s)
            commit_training(writer, s, outcome, detail, result)
            print(f"{s}: {outcome} ({detail})", file=out)
            code = code or (0 if outcome in ("accepted", "rejected") else 1)
    return code
