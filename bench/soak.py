"""Soak: the service on the built-in simulator for a simulated 120 days, faults on.

120 days (``--days``; at least 60 asked) take in the first criteria build from
the store (day 28) and the first scheduled rebuild, three months later.


Workload: ``python supervisor.py`` reading ``sim://?sensors=3&speed=0&faults=all``
(every simulator fault: dropouts, stuck values, spikes, status bits, missing
values, a leak, garbled lines, duplicates, RTU clock jumps) from local midnight
``--days`` days ago, as fast as the gateway reads, until it has caught up with the
present; frames go to a TCP peer. Process faults on top: an actor crash through
the test hook every ``--crash-every`` seconds (round robin over every actor but
the reader, within the restart intensity) and one ``kill -9`` of the whole
service early on, followed by a restart (the simulator then replays from its
start: everything before the kill comes again as duplicates).

Measured: valid readings the simulator produced for the period (and the rejects
it should cause), readings stored and lost, frames and ``$ALR`` out, restarts,
rejects counted, RSS and open file descriptors of the service after warm-up
(``WARM_UP_DAYS`` simulated days in, after the kill and the first criteria build
from the store) and at the end, at rest after a housekeeping round. RSS may
include LMDB's mapped pages (page cache, dropped from the process every
``TRIM_EVERY_S`` by the Housekeeper; measured mid-replay they are many), so
their share is reported at both points, with the growth without them; the heap
(``RssAnon``) is reported at every tenth of the period: a leak grows it
steadily, a high-water mark levels off. Bytes written to disk (``/proc/<pid>/io``
``write_bytes``, what wears an SD card) per simulated day of the replay after
warm-up, and per real day from ``--realtime-s`` of real time after catch-up.
Prints the figures and, last, a JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import frames  # noqa: E402
from core.simulator import Simulator, SimulatorSettings  # noqa: E402
from actors.housekeeper import TRIM_EVERY_S  # noqa: E402
from tests.faults.helpers import Site, mapped_store_mb, open_fds, rss_mb, write_bytes  # noqa: E402
from tests.harness import ROOT, TZ  # noqa: E402

MB = 1024 * 1024
CRASHABLE = ("detector", "night_flow", "predictor", "transmitter", "trainer", "housekeeper")
KILL_AT = 0.1  # share of the period in event time when the service is killed
# RSS and fds are taken as "start" this many simulated days in: after the first
# criteria build from the store (criteria.min_days = 28), whose arrays set the
# heap's high-water mark, as every later rebuild does again.
WARM_UP_DAYS = 35


def expected(url: str, start: int, end: int) -> tuple[set[tuple[str, int]], int, Counter]:
    """What the simulator sends for [start, end): unique readings, valid lines, rejects."""
    sim = Simulator(SimulatorSettings.from_url(url))
    unique: set[tuple[str, int]] = set()
    valid = 0
    rejects: Counter = Counter()
    for line in sim.lines_for_minutes(start, (end - start) // 60):
        decoded = frames.decode_reading(line.rstrip(b"\r\n"), TZ)
        if isinstance(decoded, frames.Reject):
            rejects[str(decoded.reason)] += 1
        elif decoded is not None:
            valid += 1
            if decoded.time < end:
                unique.add((decoded.sensor, decoded.time))
    return unique, valid, rejects


def progress(site: Site, start: int, end: int) -> tuple[float, bool]:
    """(share of the period in event time for the slowest sensor, everything stored
    processed and sent); event time, so the simulator's stamps far ahead count not."""
    with site.open_store() as store, store.read() as view:
        event_times = view.event_times().sensors
        newest = min((event_times.get(s, start) for s in view.sensors()), default=start)
        idle = (view.offset("detector") == view.journal_head()
                and view.offset("transmitter") == view.peek_sequence())
        return (newest - start) / (end - start), idle


def frame_counts(site: Site) -> tuple[set[tuple[str, int]], int, int, int]:
    """What the upstream got: (readings alerted, silence $ALR, distinct frames, highest seq).

    An ``$ALR`` with both values empty is a silence alert unless a stored reading
    had both missing; the caller tells them apart with the store.
    """
    with site.upstream._lock:
        data = bytes(site.upstream.received)
    alerted: set[tuple[str, int]] = set()
    empty: set[tuple[str, int]] = set()
    seqs: set[int] = set()
    for line in data.split(b"\r\n"):
        fields = line.split(b",")
        if len(fields) < 3 or not fields[1].isdigit():
            continue
        seqs.add(int(fields[1]))
        if line.startswith(b"$ALR,"):
            frame = frames.decode(line, TZ)
            if isinstance(frame, frames.AlertFrame):
                key = (frame.sensor, frame.time)
                (empty if frame.flow is None and frame.pressure is None else alerted).add(key)
    return alerted, empty, len(seqs), max(seqs, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--sensors", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--crash-every", type=float, default=15.0,
                        help="seconds between injected actor crashes (0: none)")
    parser.add_argument("--no-kill", action="store_true", help="no kill -9 of the service")
    parser.add_argument("--crash", nargs="+", choices=CRASHABLE, default=list(CRASHABLE),
                        help="the actors crashed in turn (default: all but the reader)")
    parser.add_argument("--workdir", type=Path, help="keep the store and log here")
    parser.add_argument("--realtime-s", type=float, default=300.0,
                        help="seconds the disk writes are measured in real time, after catch-up")
    args = parser.parse_args()

    today = dt.datetime.now(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - dt.timedelta(days=args.days)
    start, end = int(first_day.timestamp()), int(today.timestamp())
    url = (f"sim://?sensors={args.sensors}&speed=0&seed={args.seed}&faults=all"
           f"&start={first_day:%Y%m%d}&tz=Asia/Seoul")
    unique, valid_lines, rejects_sent = expected(url, start, end)
    warm_up = min(WARM_UP_DAYS / args.days, 0.5)

    with tempfile.TemporaryDirectory() as tmp_dir:
        workdir = args.workdir or Path(tmp_dir)
        workdir.mkdir(parents=True, exist_ok=True)
        site = Site(workdir, sections={
            "serial": {"port": url},
            "criteria": {"initial_data": str(ROOT / "conf" / "initial_data.csv")},
            "train": {"min_days": 3650},  # training has its own benchmark (bench/train.py)
        })
        site.start()
        began = time.monotonic()
        restarts = 0
        kill_at = None if args.no_kill else KILL_AT
        crashes, next_crash = 0, time.monotonic() + args.crash_every
        rss_start = fds_start = anon_start = store_pages_start = None
        io_start = share_start = None
        anon_by_tenth: dict[int, float] = {}  # heap at each tenth of the period: growth or plateau
        try:
            while True:
                share, idle = progress(site, start, end)
                if kill_at is not None and share >= kill_at:
                    site.kill()
                    site.start()
                    restarts += 1
                    kill_at = None
                    continue
                if rss_start is None and kill_at is None and share >= warm_up:
                    rss_start, fds_start = rss_mb(site.pid), open_fds(site.pid)
                    anon_start = rss_mb(site.pid, "RssAnon")
                    store_pages_start = mapped_store_mb(site.pid)
                    io_start, share_start = write_bytes(site.pid), share
                if kill_at is None and int(share * 10) not in anon_by_tenth:
                    anon_by_tenth[int(share * 10)] = round(rss_mb(site.pid, "RssAnon"), 1)
                if args.crash_every and time.monotonic() >= next_crash and share < 1:
                    site.crash(args.crash[crashes % len(args.crash)], "soak")
                    crashes += 1
                    next_crash = time.monotonic() + args.crash_every
                if share >= 1 and idle:
                    break
                if site.exited():
                    raise RuntimeError(f"the service exited:\n{site.log()[-3000:]}")
                time.sleep(0.5)
            # The last frames out, and a housekeeping round (the store's pages
            # leave the process's memory): the service at rest, in real time.
            io_caught_up, share_end = write_bytes(site.pid), share
            time.sleep(TRIM_EVERY_S + 2.0)
            # Disk writes in real time: one reading per sensor per minute, each its
            # own commit (during the replay a commit takes hundreds).
            io_real = write_bytes(site.pid)
            time.sleep(args.realtime_s)
            io_real = write_bytes(site.pid) - io_real
            rss_end, fds_end = rss_mb(site.pid), open_fds(site.pid)
            anon_end = rss_mb(site.pid, "RssAnon")
            store_pages_end = mapped_store_mb(site.pid)
            elapsed = time.monotonic() - began
            with site.open_store() as store, store.read() as view:
                stored_in_period = sum(view.count_readings(s, start, end) for s in view.sensors())
                stored_keys = {(r.sensor, r.time)
                               for sensor in view.sensors() for r in view.readings(sensor)}
                counters = view.counters()
            # Now in real time, readings go on arriving: give the last ones stored
            # their $ALR before counting what went out.
            time.sleep(2.0)
            alerted, empty, frames_out, last_seq = frame_counts(site)
            alerted |= empty & stored_keys  # readings with both values missing
            silence = len(empty - stored_keys)
            unalerted = len(stored_keys - alerted)
            if args.workdir:
                (workdir / "upstream.bin").write_bytes(bytes(site.upstream.received))
        finally:
            code = site.stop(timeout=30) if not site.exited() else site.service.process.returncode
            site.close()

    restarts += sum(v for k, v in counters.items() if k.startswith("restart."))
    # The service's own memory: RSS less the store's page-cache pages it had mapped.
    own_start = (rss_start or 0) - (store_pages_start or 0)
    own_end = rss_end - store_pages_end
    # Without ACK the outbox is an audit trail: sent frames are trimmed from it.
    trimmed = counters.get("outbox_dropped", 0)
    rejects = sum(v for k, v in counters.items() if k.startswith("reject."))
    result = {
        "bench": "soak", "simulated_days": args.days, "sensors": args.sensors,
        "wall_s": round(elapsed, 1),
        "readings_in": valid_lines, "readings_unique": len(unique),
        "readings_stored": stored_in_period, "readings_stored_total": len(stored_keys),
        "readings_lost": len(unique) - stored_in_period,
        "duplicates": counters.get("duplicates", 0),
        "alr_out": len(alerted), "alr_silence_out": silence, "stored_without_alr": unalerted,
        "frames_out": frames_out, "frames_lost": last_seq - frames_out, "outbox_trimmed": trimmed,
        "restarts": restarts, "injected_crashes": crashes,
        "rejects": rejects, "rejects_sent_once": sum(rejects_sent.values()),
        "rss_start_mb": round(rss_start or 0, 1), "rss_end_mb": round(rss_end, 1),
        "rss_growth_pct": round(100 * (rss_end / (rss_start or rss_end) - 1), 1),
        "rss_store_pages_start_mb": round(store_pages_start or 0, 1),
        "rss_store_pages_end_mb": round(store_pages_end, 1),
        "rss_own_growth_pct": round(100 * (own_end / (own_start or own_end) - 1), 1),
        "rss_anon_start_mb": round(anon_start or 0, 1), "rss_anon_end_mb": round(anon_end, 1),
        "rss_anon_by_tenth_mb": [anon_by_tenth[k] for k in sorted(anon_by_tenth)],
        "fds_start": fds_start, "fds_end": fds_end, "exit": code,
        "disk_mb_per_simulated_day": round(
            (io_caught_up - (io_start or 0)) / MB
            / max((share_end - (share_start or 0)) * args.days, 1e-9), 2),
        "disk_mb_per_real_day": round(io_real / MB * 86_400 / args.realtime_s, 1),
    }
    print(f"{args.days} simulated days of {args.sensors} sensors with every simulator fault, "
          f"{crashes} injected actor crashes, {0 if args.no_kill else 1} kill -9, "
          f"in {elapsed:.0f} s")
    print(f"readings: {valid_lines} valid lines sent, {len(unique)} unique, "
          f"{stored_in_period} stored ({len(unique) - stored_in_period} lost); "
          f"$ALR out {len(alerted)} (+{silence} silence, {unalerted} stored readings without); "
          f"rejects {rejects}")
    print(f"RSS {result['rss_start_mb']} -> {result['rss_end_mb']} MB "
          f"({result['rss_growth_pct']:+.1f} %, budget +10 %), of which the store's mapped "
          f"pages {result['rss_store_pages_start_mb']} -> {result['rss_store_pages_end_mb']} MB "
          f"(without them {result['rss_own_growth_pct']:+.1f} %); heap "
          f"{result['rss_anon_start_mb']} -> {result['rss_anon_end_mb']} MB; "
          f"open fds {fds_start} -> {fds_end}")
    print(f"written to disk: {result['disk_mb_per_simulated_day']} MB per simulated day "
          f"(replay), {result['disk_mb_per_real_day']} MB per day in real time "
          f"(over {args.realtime_s:.0f} s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
