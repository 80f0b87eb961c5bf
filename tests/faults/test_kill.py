"""``kill -9`` of the whole service, twenty times in a row, while readings stream in.

The RTU re-sends, after each reconnection, everything after the newest reading
whose ``$ALR`` it has seen come out (so readings lost in a socket buffer at the
kill come again, and some arrive twice). After every kill the store opens and
is consistent and holds every reading that was alerted; at the end every reading
of the script is stored once, alerted once under one sequence number, detection
and night flow are at the journal's head, each 10-minute night block holds
exactly its readings and the sequence numbers run 1, 2, 3... without reuse.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import datetime, timedelta

import pytest

from core import frames
from tests.faults.helpers import (
    Streamer, assert_store_consistent, distinct_by_seq, encode_all, minute_stream,
    reading_alerts, stored_everything,
)
from tests.harness import TZ, wait_for

SENSORS = ("001", "002", "003")
BASE = int(datetime(2026, 1, 5, 21, 0, tzinfo=TZ).timestamp())
MINUTES = 5000
KILLS = 20


def night_block_starts(first: int, last: int) -> list[int]:
    """Starts of the 10-minute blocks of the 22:00-05:00 windows ending by ``last``."""
    starts = []
    day = datetime.fromtimestamp(first, TZ).replace(hour=22, minute=0) - timedelta(days=1)
    while int(day.timestamp()) < last:
        for k in range(42):  # 7 hours of 10-minute blocks
            start = int((day + timedelta(minutes=10 * k)).timestamp())
            if first <= start and start + 600 <= last:
                starts.append(start)
        day += timedelta(days=1)
    return starts


@pytest.mark.slow
def test_kill_9_twenty_times_while_readings_stream(make_site):
    site = make_site()
    readings = minute_stream(SENSORS, BASE, MINUTES)
    index_of = {(r.sensor, r.time): i for i, r in enumerate(readings)}

    def resume() -> int:
        alerted = [index_of[(a.sensor, a.time)] for a in reading_alerts(site.frames())]
        return max(alerted, default=-1) + 1

    streamer = Streamer(site.rtu, encode_all(readings), chunk=12, interval_s=0.02, resume=resume)
    streamer.start()
    rng = random.Random(20)
    try:
        for kill in range(KILLS):
            site.start()
            wait_for(lambda: site.rtu.conn is not None, timeout=10, what="the reader to connect")
            wait_for(lambda: site.upstream.conn is not None, timeout=10, what="the transmitter")
            time.sleep(rng.uniform(0.1, 0.9))
            assert not streamer.done(), f"the script ran out before kill {kill + 1}: make it longer"
            site.kill()
            wait_for(lambda: site.upstream.conn is None and site.rtu.conn is None, timeout=10,
                     what="both connections to close")
            alerted = {(a.sensor, a.time) for a in reading_alerts(site.frames())}
            with site.open_store() as store:  # opens cleanly after a kill
                assert_store_consistent(store)
                missing = alerted - set(stored_everything(store))
                assert not missing, f"kill {kill + 1}: alerted, not stored: {sorted(missing)[:5]}"
        streamer.chunk = 500  # the rest at full speed
        site.start()
        wait_for(streamer.done, timeout=120, what="the whole script sent")
        wait_for(lambda: len({(a.sensor, a.time) for a in reading_alerts(site.frames())})
                 == len(readings), timeout=60, what="an $ALR for every reading")
    finally:
        streamer.stop()
    code = site.stop()
    log = site.log()
    assert code == 0, log
    assert log.count("supervisor: started") == KILLS + 1
    assert "cannot open the store" not in log and "Traceback" not in log, log

    received = site.frames()
    by_seq = distinct_by_seq(received)  # a resent frame is the same frame
    assert sorted(by_seq) == list(range(1, len(by_seq) + 1)), "sequence numbers have gaps"
    first_seen = list(dict.fromkeys(f.seq for f in received))
    assert first_seen == sorted(first_seen), "a sequence number went backwards"

    alert_seqs: dict[tuple[str, int], set[int]] = defaultdict(set)
    for f in reading_alerts(by_seq.values()):
        alert_seqs[(f.sensor, f.time)].add(f.seq)
    assert set(alert_seqs) == set(index_of), "a reading without its $ALR"
    twice = {k: v for k, v in alert_seqs.items() if len(v) > 1}
    assert not twice, f"readings detected twice: {list(twice.items())[:5]}"

    report_seqs: dict[tuple[str, int], set[int]] = defaultdict(set)
    for f in by_seq.values():
        if isinstance(f, frames.ServerReportLine):
            report_seqs[(f.sensor, f.time)].add(f.seq)
    assert all(len(v) == 1 for v in report_seqs.values()), "a server report went out twice"
    last_block = BASE + (MINUTES // 10 - 1) * 600
    closed = {(r.sensor, r.time) for r in readings if r.time < last_block}
    assert closed <= set(report_seqs), "a finished 10-minute block was not reported"

    with site.open_store() as store:
        assert_store_consistent(store)
        stored = stored_everything(store)
        assert set(stored) == set(index_of), "a reading of the script was lost"
        assert all(stored[(r.sensor, r.time)] == r for r in readings)
        with store.read() as view:
            head = view.journal_head()
        assert head == len(readings), "a reading was given two arrival numbers"
        with store.read() as view:
            assert view.offset("detector") == view.offset("night_flow") == head
        expected_starts = night_block_starts(BASE, BASE + (MINUTES - 1) * 60)
        for sensor in SENSORS:
            with store.read() as view:
                blocks = view.night_blocks(sensor)
            assert [b["start"] for b in blocks] == expected_starts, sensor
            for block in blocks:
                start = block["start"]
                with store.read() as view:
                    flows = [r.flow for r in view.readings(sensor, start, start + 600)]
                assert block["readings"] == len(flows) == 10, block
                assert block["mean"] == pytest.approx(sum(flows) / len(flows)), block
            with store.read() as view:
                nights = view.docs("night", prefix=f"{sensor}/")
            assert [n for n, _ in nights] == [f"{sensor}/2026-01-0{d}" for d in (5, 6, 7, 8)]
