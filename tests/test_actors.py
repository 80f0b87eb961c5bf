"""Actor-level tests: real actors, a real store, synthetic msgpack messages in.

Each test starts the actor under test with real collaborators, stands a
recording actor in for its peers, tells it messages and asserts what it stored
and what it told.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import pytest

from actors.detector import Detector
from actors.night_flow import NightFlow
from actors.predictor import Predictor, fcd_frames
from actors.serial_reader import SerialReader
from actors.trainer import Trainer
from actors.transmitter import Transmitter
from core import frames, messages
from core.forecast import HORIZON_HOURS, Forecast
from core.types import FLAG_NIGHT, FLAG_SYSTEM, EpochSeconds, EventTimes, Reading, SensorId
from tests.conftest import make_config
from tests.faults.helpers import parse_frames
from tests.harness import TZ, PeerServer, StalledPeer, read, run_cli, wait_for, write_config

T0 = int(datetime(2026, 1, 5, 10, 0, tzinfo=TZ).timestamp())
S1 = SensorId("001")
FAR_AHEAD = 4_070_908_800  # 2099-01-01: a valid frame stamped far ahead


def reading(minute: int, flow: float | None = 10.0, pressure: float | None = 4.0,
            status: int = 0, sensor: str = "001", base: int = T0) -> Reading:
    return Reading(SensorId(sensor), EpochSeconds(base + minute * 60), flow, pressure, status)


def commit(store, readings):
    return messages.ReadingsCommitted.of(store.ingest(readings).stored)


def alerts(store):
    with store.read() as view:
        return [e for e in view.outbox(limit=10_000) if isinstance(e.frame, frames.AlertFrame)]


def test_detector_flags_each_reading_once_and_tells_the_transmitter(harness, store):
    transmitter = harness.record("transmitter", "predictor")
    detector = harness.start(Detector)
    harness.tell(detector, commit(store, [reading(0), reading(1, flow=None), reading(2, status=0x02)]))
    told = transmitter.wait_for(lambda r: any(isinstance(m, messages.OutboxAppended) for m in r))
    flags = [(e.frame.flow_flags, e.frame.pressure_flags) for e in alerts(store)]
    assert flags == [(0, 0), (FLAG_SYSTEM, 0), (0, FLAG_SYSTEM)]
    assert max(m.seq for m in told if isinstance(m, messages.OutboxAppended)) == 3
    with store.read() as view:
        assert view.offset("detector") == 3
        assert view.detections(S1)[0]["time"] == T0 + 60


def test_detector_restarted_resumes_from_its_offset(harness, store):
    harness.record("transmitter", "predictor")
    detector = harness.start(Detector)
    harness.tell(detector, commit(store, [reading(m) for m in range(5)]))
    wait_for(lambda: read(store, lambda v: v.offset("detector") == 5))
    detector.stop()
    # Committed while the detector was down, never told to anyone:
    store.ingest([reading(m) for m in range(5, 8)])
    detector = harness.start(Detector)
    wait_for(lambda: read(store, lambda v: v.offset("detector") == 8))
    # The same batch told again (a late duplicate message) changes nothing.
    with store.read() as view:
        harness.tell(detector, messages.ReadingsCommitted.of(view.journal(0, 100)))
    harness.ask(detector, messages.Ping())
    assert [e.frame.time for e in alerts(store)] == [T0 + m * 60 for m in range(8)]


def test_detector_fills_a_gap_from_the_store(harness, store):
    harness.record("transmitter", "predictor")
    detector = harness.start(Detector)
    store.ingest([reading(m) for m in range(3)])  # committed, message lost
    harness.tell(detector, commit(store, [reading(3)]))
    wait_for(lambda: read(store, lambda v: v.offset("detector") == 4))
    assert len(alerts(store)) == 4


def test_detector_carries_a_night_verdict_only_from_the_night_end(harness, store):
    harness.record("transmitter", "predictor")
    detector = harness.start(Detector)
    ends = T0 + 5 * 60
    store.transact(lambda b: b.put_doc("night", "001/2026-01-04", {
        "mnf": 9.0, "ends": ends, "leak": True,
        "cause": {"method": "NIGHT", "quantity": "flow", "reason": "mnf", "observed": 9.0,
                  "threshold": 5.0}}))
    harness.tell(detector, messages.NightClosed(S1, "2026-01-04"))
    # NightFlow ran ahead: readings from before the night's end come after the verdict.
    harness.tell(detector, commit(store, [reading(m) for m in range(8)]))
    wait_for(lambda: len(alerts(store)) == 8)
    night = [bool(e.frame.flow_flags & FLAG_NIGHT) for e in alerts(store)]
    assert night == [False] * 5 + [True] * 3
    assert all(e.frame.pressure_flags == 0 for e in alerts(store))
    # A restarted detector neither loses nor re-applies it.
    detector.stop()
    detector = harness.start(Detector)
    harness.tell(detector, commit(store, [reading(8)]))
    wait_for(lambda: len(alerts(store)) == 9)
    assert alerts(store)[-1].frame.flow_flags & FLAG_NIGHT


def test_transmitter_sends_outbox_in_order_and_records_its_offset(harness, store, tmp_path):
    upstream = PeerServer()
    try:
        harness.context.config = make_config(tmp_path, upstream={"port": upstream.url})
        transmitter = harness.start(Transmitter)
        seqs = store.transact(lambda b: [
            b.append_outbox(frames.AlertFrame(S1, T0 + i * 60, 1.5, None, 0, 1)) for i in range(3)])
        harness.tell(transmitter, messages.OutboxAppended(seqs[-1]))
        lines = wait_for(lambda: len(upstream.lines()) == 3 and upstream.lines())
        decoded = [frames.decode(line, TZ) for line in lines]
        assert [f.seq for f in decoded] == seqs
        assert decoded[0] == frames.AlertFrame(S1, T0, 1.5, None, 0, 1, seq=seqs[0])
        wait_for(lambda: read(store, lambda v: v.offset("transmitter") == seqs[-1]))
    finally:
        upstream.close()


def test_transmitter_answers_while_the_upstream_stalls_and_sends_once_it_drains(
        harness, store, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="actors.transmitter")
    upstream = StalledPeer()
    try:
        harness.context.config = make_config(tmp_path, upstream={
            "port": upstream.url, "write_timeout_s": 0.5})
        transmitter = harness.start(Transmitter)
        seqs = store.transact(lambda b: [
            b.append_outbox(frames.AlertFrame(S1, T0 + i * 60, 1.5, 4.0, 0, 0))
            for i in range(3000)])  # some 180 KB
        for seq in seqs[::10]:  # as the Detector tells, one message per few frames
            harness.tell(transmitter, messages.OutboxAppended(seq))
        wait_for(lambda: "stalled" in caplog.text, timeout=10, what="the stall noticed")
        for _ in range(3):
            started = time.monotonic()
            assert harness.ask(transmitter, messages.Ping()) == "pong"
            assert time.monotonic() - started < 3.0, "a write to a stalled peer holds the actor"
        with store.read() as view:
            assert view.offset("transmitter") < seqs[-1]
        upstream.drain()

        def ticked_through() -> bool:  # the supervisor's ticks retry a stalled upstream
            harness.tell(transmitter, messages.Tick(time.time()))
            with store.read() as view:
                return view.offset("transmitter") == seqs[-1]

        wait_for(ticked_through, timeout=60, interval=0.25,
                 what="every frame sent once the peer reads")
        wait_for(lambda: {f.seq for f in parse_frames(bytes(upstream.received))} == set(seqs),
                 timeout=10, what="every frame received")
        assert "takes frames again" in caplog.text
    finally:
        upstream.close()


def test_transmitter_ignores_an_ack_of_a_frame_not_sent_yet(harness, store, tmp_path):
    upstream = PeerServer()
    try:
        harness.context.config = make_config(tmp_path, upstream={"port": upstream.url,
                                                                 "ack": True})
        transmitter = harness.start(Transmitter)
        upstream.wait_connected()
        seq = store.transact(
            lambda b: b.append_outbox(frames.AlertFrame(S1, T0, 1.5, None, 0, 0)))
        harness.tell(transmitter, messages.AckReceived(seq))  # before it went out
        harness.tell(transmitter, messages.Tick(time.time()))  # sends it, records the count
        wait_for(lambda: upstream.lines(), what="the frame sent")
        harness.ask(transmitter, messages.Ping())
        with store.read() as view:
            assert [e.seq for e in view.outbox()] == [seq], "an ACK removed a frame never sent"
            assert view.counters()["upstream_reject.ack_unsent"] == 1
        harness.tell(transmitter, messages.AckReceived(seq))  # now it counts
        wait_for(lambda: read(store, lambda v: v.outbox() == []), what="the frame acknowledged")
    finally:
        upstream.close()


def test_serial_reader_commits_before_telling(harness, store, tmp_path):
    rtu = PeerServer()
    try:
        harness.context.config = make_config(tmp_path, serial={"port": rtu.url})
        consumer = harness.record("detector", "night_flow")
        harness.start(SerialReader)
        rtu.send(frames.encode(reading(0), TZ) + b"garbage\r\n" + frames.encode(reading(1), TZ))
        told = consumer.wait_for(lambda r: sum(len(m.rows) for m in r
                                               if isinstance(m, messages.ReadingsCommitted)) >= 4)
        # Every reading told had already been committed.
        for message in told:
            for stored in message.stored():
                with store.read() as view:
                    assert stored.reading in view.readings(stored.reading.sensor)
        with store.read() as view:
            assert view.journal_head() == 2
            assert view.counters()["reject.no_start"] == 1
    finally:
        rtu.close()


def test_night_flow_stores_blocks_and_tells_the_detector(harness, store):
    detector = harness.record("detector")
    night_flow = harness.start(NightFlow)
    start = int(datetime(2026, 1, 5, 22, 0, tzinfo=TZ).timestamp())
    night = [reading(m, flow=3.0 + (m % 7) * 0.01, base=start) for m in range(0, 7 * 60 + 1)]
    harness.tell(night_flow, commit(store, night))
    told = detector.wait_for(lambda r: any(isinstance(m, messages.NightClosed) for m in r))
    assert told[-1] == messages.NightClosed(S1, "2026-01-05")
    with store.read() as view:
        blocks = view.night_blocks(S1)
    assert len(blocks) == 42 and all(b["complete"] for b in blocks)
    with store.read() as view:
        assert view.doc("night", "001/2026-01-05")["mnf"] == pytest.approx(3.03, abs=0.01)
        assert view.offset("night_flow") == len(night)


def test_night_flow_lets_no_reading_stamped_ahead_of_the_gateway_clock_close_a_night(
        harness, store):
    detector = harness.record("detector")
    start = int(datetime(2026, 1, 5, 22, 0, tzinfo=TZ).timestamp())
    clock = {"now": start + 3600}
    harness.context = dataclasses.replace(harness.context, clock=lambda: clock["now"])
    night_flow = harness.start(NightFlow)
    first = [reading(m, flow=3.0, base=start) for m in range(60)]
    ahead = reading(60, flow=9.0, base=start + 8 * 3600 + 17)  # an RTU clock 8 h ahead
    harness.tell(night_flow, commit(store, first + [ahead]))
    wait_for(lambda: read(store, lambda v: v.offset("night_flow") == 61))
    with store.read() as view:
        assert view.docs("night", prefix="001/") == [], "a future stamp closed the night"
    clock["now"] = start + 8 * 3600  # the night goes on in real time and ends
    rest = [reading(m, flow=3.0, base=start) for m in range(60, 7 * 60 + 1)]
    harness.tell(night_flow, commit(store, rest))
    detector.wait_for(lambda r: any(isinstance(m, messages.NightClosed) for m in r))
    with store.read() as view:
        assert view.doc("night", "001/2026-01-05")["complete_blocks"] == 42
        assert all(b["mean"] == 3.0 for b in view.night_blocks(S1))


def test_predictor_issues_a_naive_forecast_and_seven_fcd_lines(harness, store):
    recorder = harness.record("detector", "transmitter")
    week = [reading(m, flow=10.0 + (m // 60) % 24, pressure=4.0) for m in range(0, 8 * 24 * 60, 10)]
    store.ingest(week)
    predictor = harness.start(Predictor)
    issued = T0 + 8 * 24 * 3600
    harness.tell(predictor, messages.HourClosed(S1, issued))
    recorder.wait_for(lambda r: messages.ForecastIssued(S1, issued) in r)
    with store.read() as view:
        fcd = [e.frame for e in view.outbox(limit=100)
               if isinstance(e.frame, frames.DailyForecastLine)]
        assert view.doc("forecast", S1)["source"] == "naive"
        # Its state is saved alone: the Predictor reads no journal, so it has no offset.
        assert view.consumer_state("predictor") == {"issued": {S1: issued}}
        assert view._meta_get("o:predictor") is None
    assert len(fcd) >= 7 and all(f.issued == issued for f in fcd[-7:])


def test_predictor_warns_of_a_short_forecast_and_not_of_a_complete_one(harness, store, caplog):
    recorder = harness.record("detector", "transmitter")
    store.ingest([reading(m, flow=10.0 + (m // 60) % 24) for m in range(0, 9 * 24 * 60, 10)])
    predictor = harness.start(Predictor)
    caplog.set_level(logging.INFO, logger="actors.predictor")
    for day in (2, 8):  # short (two days of history), then complete
        issued = T0 + day * 24 * 3600
        harness.tell(predictor, messages.HourClosed(S1, issued))
        recorder.wait_for(lambda r, i=issued: messages.ForecastIssued(S1, i) in r)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and " of 7 days" in warned[0] and "7 of 7" not in warned[0], warned
    assert any("forecast for every day again" in r.getMessage() for r in caplog.records)


def set_event_time(store, t: int) -> None:
    """What the Detector records once it has taken the readings up to ``t`` in."""
    store.transact(lambda b: b.set_event_times(EventTimes({S1: EpochSeconds(t)})))


def test_predictor_restarted_forecasts_the_hour_of_event_time_not_a_stamp_far_ahead(
        harness, store):
    recorder = harness.record("detector", "transmitter")
    week = [reading(m, flow=10.0 + (m // 60) % 24) for m in range(0, 8 * 24 * 60, 10)]
    store.ingest(week + [reading(0, base=FAR_AHEAD)])
    set_event_time(store, week[-1].time)
    harness.start(Predictor)  # hours closed while it was down: the latest is forecast
    told = recorder.wait_for(lambda r: any(isinstance(m, messages.ForecastIssued) for m in r))
    hour = week[-1].time - week[-1].time % 3600
    assert [m for m in told if isinstance(m, messages.ForecastIssued)] == [
        messages.ForecastIssued(S1, hour)]


def test_trainer_schedule_follows_event_time_not_a_stamp_far_ahead(harness, store, tmp_path):
    harness.context.config = make_config(tmp_path, train={"min_days": 7, "schedule_days": 30})
    trainer = Trainer(harness.context)  # not started: its schedule alone
    days = [reading(m) for m in range(0, 10 * 1440, 10)]
    store.ingest(days + [reading(0, base=FAR_AHEAD)])
    now = time.time()
    assert not trainer._due(S1, now), "not processed yet: no event time"
    set_event_time(store, T0 + 3 * 86400)
    assert not trainer._due(S1, now), "three days in event time are not train.min_days"
    set_event_time(store, days[-1].time)
    assert trainer._due(S1, now), "ten days are"
    store.transact(lambda b: b.put_doc("model", S1, {"version": "v", "data_until": days[-1].time}))
    assert not trainer._due(S1, now), "a model of data up to event time is not due again"


def test_fcd_lines_leave_out_days_whose_mean_the_line_cannot_carry():
    # Seven UTC days from midnight: day 1's flow is absurd (a forecast of absurd
    # readings), day 2's pressure unknown; $FCD has no flag to say so.
    flow, pressure = np.full(HORIZON_HOURS, 12.0), np.full(HORIZON_HOURS, 4.0)
    flow[24:48] = float("7" * 120)
    pressure[48:72] = np.nan
    issued = EpochSeconds(int(datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()))
    fc = Forecast(S1, issued, flow, pressure, "naive")
    lines = fcd_frames(fc, ZoneInfo("UTC"))
    assert [f.day.isoformat() for f in lines] == ["2026-01-05", "2026-01-08", "2026-01-09",
                                                  "2026-01-10", "2026-01-11"]
    for seq, f in enumerate(lines, 1):
        assert len(frames.encode(f, TZ, seq)) <= frames.MAX_LINE


@pytest.mark.parametrize("cls", [Detector, NightFlow, Predictor, Transmitter, Trainer, SerialReader])
def test_malformed_messages_are_dropped_and_the_actor_lives(harness, cls, caplog):
    harness.record("transmitter", "predictor", "detector", "night_flow")
    ref = harness.start(cls)
    for raw in (b"\xc1\xc1", msgpack.packb(["readings", 1, {"rows": "x"}]), "text", 42):
        ref.tell(raw)
    assert harness.ask(ref, messages.Ping()) == "pong"
    assert ref.is_alive()
    assert "dropped malformed message" in caplog.text


def test_injected_crash_reports_and_stops_the_actor(harness, store):
    harness.record("transmitter", "predictor")
    ref = harness.start(Detector)
    harness.tell(ref, messages.Crash("test"))
    wait_for(lambda: not ref.is_alive())
    wait_for(lambda: harness.crashes)
    assert harness.crashes[0][0] == "detector"
    assert str(harness.crashes[0][1]) == "test"


def test_transmitter_waits_between_reopening_attempts_as_configured(harness, tmp_path):
    # A port bound and never listened on refuses every connection, and nobody else
    # can take it meanwhile (a closed server's port could be reused by another test).
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        url = f"socket://127.0.0.1:{refusing.getsockname()[1]}"
        harness.context.config = make_config(tmp_path, upstream={
            "port": url, "reconnect_initial_s": 0.25, "reconnect_max_s": 1.0})
        transmitter = Transmitter(harness.context)  # not started: its reopening alone
        waits = []
        for _ in range(5):
            transmitter._next_open = 0.0
            transmitter._open()
            assert transmitter.port is None
            waits.append(transmitter._backoff)
    assert waits == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_first_store_criteria_come_when_the_store_holds_min_days(harness, store, tmp_path):
    # T0 is 01:00 UTC: a check once per UTC day would wait for the next midnight.
    harness.context.config = make_config(tmp_path, criteria={"min_days": 7})
    harness.record("transmitter", "predictor")
    detector = harness.start(Detector)
    seven_days = 7 * 1440

    def flows(first: int, last: int) -> list[Reading]:
        return [reading(m, flow=10.0 + 5.0 * np.sin(m / 1440 * 2 * np.pi))
                for m in range(first, last, 5)]

    harness.tell(detector, commit(store, flows(0, seven_days)))
    harness.ask(detector, messages.Ping())
    with store.read() as view:
        assert view.doc("criteria", "001/current") is None, "built before min_days"
    harness.tell(detector, commit(store, flows(seven_days, seven_days + 60)))
    harness.ask(detector, messages.Ping())
    with store.read() as view:
        built = view.doc("criteria", "001/current")
    assert built is not None, "no criteria at min_days"
    assert built["source"] == "store" and built["days"] == pytest.approx(7.0, abs=1 / 24)


def test_repaired_is_recorded_beside_the_store_and_night_flow_applies_it(harness, store,
                                                                         tmp_path):
    harness.record("detector")
    store.ingest([reading(0)])
    site = write_config(tmp_path / "site.toml", serial_port="loop://", upstream_port="-",
                        store=tmp_path / "store.lmdb")
    before = time.time()
    result = run_cli(site, "repaired", "--sensor", "001")
    assert result.returncode == 0 and "001: repair recorded" in result.stdout, result.stderr
    with store.read() as view:
        [(key, record)] = view.docs("repair")
    assert record["sensor"] == "001" and record["applied"] is None
    assert before <= record["wall_time"] <= time.time()
    assert record["event_time"] is None  # no Detector has taken a reading in yet
    assert "not applied yet" in run_cli(site, "status").stdout
    harness.start(NightFlow)  # catches up with the journal: reading 0 comes after the repair
    wait_for(lambda: read(store, lambda v: v.doc("repair", key)["applied"] == T0))
    assert "repaired marked" in (status := run_cli(site, "status").stdout)
    assert ", applied" in status, status


def test_repaired_needs_a_known_sensor(tmp_path, store):
    store.ingest([reading(0)])
    site = write_config(tmp_path / "site.toml", serial_port="loop://", upstream_port="-",
                        store=tmp_path / "store.lmdb")
    unknown = run_cli(site, "repaired", "--sensor", "009")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "009" in unknown.stderr
    assert run_cli(site, "repaired").returncode == 2  # --sensor is required
    with store.read() as view:
        assert view.docs("repair") == []
