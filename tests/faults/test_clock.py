"""Clock faults: readings stamped far ahead or far back, and a gateway clock that jumps.

Through the real service, in real time (readings stamped up to the present): a
reading a day or ten years ahead of the gateway clock is stored and flagged
SYSTEM (``clock_ahead``) and moves no schedule; readings stamped two days or
decades back are stored and processed as late. Server reports and forecasts go
on, each block and hour once, none in the future. In a replay (readings a month
old, the gateway clock far ahead of them) a reading jumping hours ahead of its
sensor's timeline is flagged the same way and moves no event time either.

The service reads the gateway clock directly (``time.time()``), so its clock
cannot be faked from outside; what carries the wall clock to the actors is the
supervisor's ``Tick(now)``. The Transmitter is driven here with ticks whose
clock jumps back a day and forward a year (a Raspberry Pi without a real-time
clock, before and after NTP): resends neither stall nor flood, and the ``$HLT``
frame says the clock is not to be trusted.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from actors.transmitter import Transmitter
from cli.commands import local_iso
from core import frames, messages
from core.frames import AlertFrame
from core.types import FLAG_SYSTEM, EpochSeconds, EventTimes, Reading, SensorId
from tests.conftest import Harness, make_config
from tests.faults.helpers import encode_all, minute_stream, parse_frames, reading_alerts, received
from tests.harness import TZ, PeerServer, wait_for

YEAR_S = 365 * 86400
FAR_AHEAD = 4_070_908_800  # 2099-01-01


@pytest.mark.slow
def test_readings_stamped_far_ahead_or_back_move_no_schedule(make_site):
    site = make_site()
    now = int(time.time()) // 60 * 60
    start = now - 180 * 60 - (now % 3600)  # three whole hours and a bit before now
    normal = minute_stream(["001", "002"], start, (now - start) // 60)
    jumps = [
        Reading(SensorId("001"), EpochSeconds(now + 86400), 41.0, 4.0, 0),  # a day ahead
        Reading(SensorId("001"), EpochSeconds(now + 10 * YEAR_S), 42.0, 4.0, 0),  # ten years
        Reading(SensorId("002"), EpochSeconds(start - 2 * 86400), 51.0, 4.0, 0),  # two days back
        Reading(SensorId("002"), EpochSeconds(946_684_800), 52.0, 4.0, 0),  # the year 2000
    ]
    cut = len(normal) * 2 // 3  # the jumps arrive two hours into the stream
    site.start()
    site.send(b"".join(encode_all(normal[:cut] + jumps + normal[cut:])))
    wait_for(lambda: len(reading_alerts(site.frames())) >= len(normal) + len(jumps), timeout=30,
             what="every reading alerted")
    time.sleep(1.5)  # anything a jump might still set off
    received_frames = site.frames()
    alerts = {(a.sensor, a.time): a for a in reading_alerts(received_frames)}

    for ahead in jumps[:2]:
        alert = alerts[(ahead.sensor, ahead.time)]
        assert alert.flow_flags & FLAG_SYSTEM and alert.pressure_flags & FLAG_SYSTEM, alert
    for late in jumps[2:]:
        assert (late.sensor, late.time) in alerts, "a late reading must be processed"

    reports = Counter((f.sensor, f.time) for f in received_frames
                      if isinstance(f, frames.ServerReportLine))
    assert all(n == 1 for n in reports.values()), "a server report went out twice"
    assert max(t for _, t in reports) < now, "a server report for the future"
    jumped_at = normal[cut].time
    for sensor in ("001", "002"):
        after = [t for s, t in reports if s == sensor and t >= jumped_at]
        assert len(after) >= 30, f"server reports of {sensor} stalled after the jump"

    # Sensors three hours old have no whole day of forecast to send as $FCD (a
    # day needs every hour seen a week earlier): what was sent, and the forecast
    # stored last, show the hourly forecasts went on and none came from the future.
    forecasts = [f for f in received_frames if isinstance(f, frames.DailyForecastLine)]
    for sensor in ("001", "002"):
        issued = list(dict.fromkeys(f.issued for f in forecasts if f.sensor == sensor))
        assert issued == sorted(issued) and all(t <= now for t in issued)

    with site.open_store() as store:
        for sensor in ("001", "002"):
            with store.read() as view:
                issued = view.doc("forecast", sensor)["issued"]
            assert issued <= now, f"{sensor}: a forecast issued from the future"
            assert issued >= jumped_at, f"{sensor}: forecasts stalled after the jump"
        for reading in jumps:
            with store.read() as view:
                assert view.readings(reading.sensor, reading.time, reading.time + 1) == [reading]
        for ahead in jumps[:2]:
            with store.read() as view:
                (detection,) = view.detections(ahead.sensor, ahead.time, ahead.time + 1)
            assert {c["reason"] for c in detection["causes"]} == {"clock_ahead"}
        with store.read() as view:
            assert view.consumer_state("detector")["event_now"] <= now, "event time jumped ahead"
    log = site.log()
    assert "restarting" not in log and "Traceback" not in log
    assert site.stop() == 0


def test_a_reading_jumping_ahead_during_a_replay_stalls_no_server_report(make_site):
    site = make_site()
    base = int(time.time()) // 86400 * 86400 - 30 * 86400  # a month ago: a replay
    normal = minute_stream(["001"], base, 600)
    jump = Reading(SensorId("001"), EpochSeconds(base + 120 * 60 + 6 * 3600 + 17), 40.0, 4.0, 0)
    site.start()
    site.send(b"".join(encode_all(normal[:120] + [jump] + normal[120:])))
    wait_for(lambda: len(reading_alerts(site.frames())) >= len(normal) + 1, timeout=20,
             what="every reading alerted")
    time.sleep(1.0)
    received_frames = site.frames()
    reported = {f.time for f in received_frames
                if isinstance(f, frames.ServerReportLine) and f.flow is not None}
    closed = {r.time for r in normal[:590]}  # every finished block
    assert not closed - reported, f"{len(closed - reported)} readings never reported"
    assert jump.time not in reported, "the jumped reading moved into the server reports"
    alerts = {a.time: a for a in reading_alerts(received_frames)}
    assert alerts[jump.time].flow_flags & FLAG_SYSTEM and alerts[jump.time].pressure_flags \
        & FLAG_SYSTEM, "a clock jump is a SYSTEM (clock) fault"
    assert not any(alerts[r.time].flow_flags & FLAG_SYSTEM for r in normal)
    with site.open_store() as store:
        with store.read() as view:
            (detection,) = view.detections(jump.sensor, jump.time, jump.time + 1)
        assert {c["reason"] for c in detection["causes"]} == {"clock_ahead"}
        with store.read() as view:
            assert view.consumer_state("detector")["event_now"] == normal[-1].time
    assert site.stop() == 0


@pytest.mark.slow
def test_a_jumping_gateway_clock_neither_stalls_nor_floods_resends(tmp_path, store):
    upstream = PeerServer()
    config = make_config(tmp_path, upstream={"port": upstream.url, "ack": True,
                                             "ack_timeout_s": 1.0, "resend_per_s": 5.0},
                         supervisor={"health_interval_s": 1.0})
    harness = Harness(config, store)
    last = EpochSeconds(int(time.time()) - 60)
    store.ingest([Reading(SensorId("001"), last, 1.0, 2.0, 0)])
    # What the Detector records once it has taken the reading in.
    store.transact(lambda b: b.set_event_times(EventTimes({SensorId("001"): last})))
    seqs = [store.transact(lambda b, i=i: b.append_outbox(AlertFrame(
        SensorId("001"), EpochSeconds(int(time.time()) - 60 * i), 1.0, 2.0, 0, 0)))
        for i in range(3)]
    try:
        transmitter = harness.start(Transmitter)
        upstream.wait_connected()
        wait_for(lambda: len(parse_frames(bytes(upstream.received))) >= 3, what="first sends")

        def sends_during(seconds: float, clock_offset: float) -> Counter:
            before = len(received(upstream))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                harness.tell(transmitter, messages.Tick(time.time() + clock_offset))
                time.sleep(0.25)
            return Counter(f.seq for f in received(upstream)[before:])

        back = sends_during(3.5, -86400)  # the clock jumped back a day
        assert all(back[s] >= 2 for s in seqs), f"resends stalled: {back}"
        forward = sends_during(3.5, YEAR_S)  # and a year forward
        assert all(2 <= forward[s] <= 4 for s in seqs), f"resends must stay paced: {forward}"
        # The newest health frame by sequence: unacknowledged older ones are resent
        # after it, so the last one received may be a resend from before the jump.
        health = max((f for f in received(upstream) if isinstance(f, frames.HealthFrame)),
                     key=lambda f: f.seq, default=None)
        assert health is not None and not health.clock, \
            "a clock a year off the readings is not right"
        assert abs(health.time - (time.time() + YEAR_S)) < 60
    finally:
        upstream.close()


@pytest.mark.slow
def test_one_reading_stamped_in_2099_loses_no_history_and_fools_no_clock_check(make_site):
    # Retention keeps a day before event time; the $HLT frames come every second.
    site = make_site(sections={"storage": {"retention_days": 1},
                               "supervisor": {"health_interval_s": 1.0}})
    now = int(time.time()) // 60 * 60
    history = minute_stream(["001"], now - 120 * 60, 120)
    far_ahead = Reading(SensorId("001"), EpochSeconds(FAR_AHEAD), 41.0, 4.0, 0)  # valid frame
    # Late readings from three days back: what a right retention pass deletes.
    old = minute_stream(["001"], now - 3 * 86400, 10)
    site.start()
    site.send(b"".join(encode_all(history[:100] + [far_ahead] + history[100:] + old)))
    sent = len(history) + 1 + len(old)
    wait_for(lambda: len(reading_alerts(site.frames())) >= sent, timeout=30,
             what="every reading alerted")
    alert = next(a for a in reading_alerts(site.frames()) if a.time == FAR_AHEAD)
    assert alert.flow_flags & FLAG_SYSTEM and alert.pressure_flags & FLAG_SYSTEM, alert

    # The next retention pass: the Housekeeper's first tick after a restart.
    assert site.stop() == 0
    site.start()
    wait_for(lambda: "retention deleted" in site.log(), timeout=20, what="a retention pass")
    with site.open_store() as store:
        sensor = SensorId("001")
        with store.read() as view:
            assert view.event_time(sensor) == history[-1].time
            assert view.readings(sensor, now - 120 * 60, now) == history, "the history was deleted"
            assert view.readings(sensor, FAR_AHEAD, FAR_AHEAD + 1) == [far_ahead]
            assert view.count_readings(sensor, until=now - 120 * 60) == 0, "retention did not run"
    status = site.status()  # "last" is the latest in event time; the 2099 stamp is told apart
    assert f"last {local_iso(history[-1].time, TZ)} flow=" in status, status
    assert ("1 stored past its event time (stamped ahead, or not processed yet), "
            "newest 2099-01-01T09:00:00+09:00") in status, status

    # $HLT: the gateway clock agrees with the readings, whatever 2099 says.
    seq = alert.seq
    wait_for(lambda: [f for f in site.frames()
                      if isinstance(f, frames.HealthFrame) and f.seq > seq],
             timeout=10, what="a health frame after the 2099 reading")
    health = [f for f in site.frames() if isinstance(f, frames.HealthFrame) and f.seq > seq]
    assert all(f.clock for f in health), "one reading stamped in 2099 made the clock look wrong"
    assert "Traceback" not in site.log()
    assert site.stop() == 0
