"""Housekeeper: the journal is trimmed to the slowest consumer, retention keeps a year."""

from __future__ import annotations

from datetime import datetime

from actors.detector import Detector
from actors.housekeeper import Housekeeper
from core import messages
from core.types import EpochSeconds, Reading, SensorId
from tests.conftest import Harness, make_config
from tests.harness import TZ, read, wait_for

T0 = int(datetime(2026, 1, 5, 0, 0, tzinfo=TZ).timestamp())
DAY = 86_400
FAR_AHEAD = 4_070_908_800  # 2099-01-01


def readings(sensor: str, start: int, count: int, step: int = 60) -> list[Reading]:
    return [Reading(SensorId(sensor), EpochSeconds(start + i * step), 10.0, 4.0, 0)
            for i in range(count)]


def test_the_journal_is_trimmed_up_to_the_slowest_consumer(tmp_path, store):
    harness = Harness(make_config(tmp_path), store)
    store.ingest(readings("001", T0, 50))
    store.transact(lambda b: b.set_offset("detector", 40))
    store.transact(lambda b: b.set_offset("night_flow", 25))
    housekeeper = harness.start(Housekeeper)
    harness.tell(housekeeper, messages.Tick(0.0))
    wait_for(lambda: read(store, lambda v: v.journal(0, 100)[0].arrival == 26), what="journal trimmed")
    with store.read() as view:
        assert [j.arrival for j in view.journal(0, 100)] == list(range(26, 51))
        assert view.journal_head() == 50, "trimming must not move the head"
        assert view.count_readings(SensorId("001")) == 50, "readings are not the journal's to trim"
    # A consumer that resumes from its offset still finds everything after it.
    with store.read() as view:
        assert [j.arrival for j in view.journal(25, 5)] == [26, 27, 28, 29, 30]


def process_all(harness: Harness, store) -> None:
    """The Detector takes the stored readings in, as the service does (its clock guard
    decides each sensor's event time); it is stopped once it has them all."""
    harness.record("transmitter", "predictor")
    detector = harness.start(Detector)
    wait_for(lambda: read(store, lambda v: v.offset("detector") == v.journal_head()), what="readings processed")
    detector.stop()


def test_retention_keeps_retention_days_before_each_sensors_event_time(tmp_path, store):
    config = make_config(tmp_path, storage={"retention_days": 1})
    harness = Harness(config, store)
    store.ingest(readings("001", T0, 3 * 1440))  # three days, a replay
    store.ingest(readings("002", T0 + 10 * DAY, 1440))  # one later day
    process_all(harness, store)
    housekeeper = harness.start(Housekeeper)
    harness.tell(housekeeper, messages.Tick(0.0))
    newest = T0 + (3 * 1440 - 1) * 60
    wait_for(lambda: read(store, lambda v: v.first_reading(SensorId("001")).time >= newest - DAY),
             what="retention applied")
    with store.read() as view:
        assert view.first_reading(SensorId("001")).time == newest - DAY
        assert view.count_readings(SensorId("002")) == 1440, "each sensor keeps its own year"
    assert harness.crashes == []


def test_one_reading_stamped_far_ahead_does_not_make_retention_delete_the_history(
        tmp_path, store):
    config = make_config(tmp_path, storage={"retention_days": 1})
    harness = Harness(config, store)
    history = readings("001", T0, 3 * 1440)
    newest = history[-1].time
    store.ingest(history)
    # One valid frame stamped in 2099, between the history and its next reading.
    store.ingest([Reading(SensorId("001"), EpochSeconds(FAR_AHEAD), 10.0, 4.0, 0)])
    store.ingest(readings("001", newest + 60, 1))
    process_all(harness, store)
    with store.read() as view:
        assert view.event_time(SensorId("001")) == newest + 60, "2099 moved the event time"
        (detection,) = view.detections(SensorId("001"), FAR_AHEAD, FAR_AHEAD + 1)
    assert {c["reason"] for c in detection["causes"]} == {"clock_ahead"}
    housekeeper = harness.start(Housekeeper)
    harness.tell(housekeeper, messages.Tick(0.0))
    wait_for(lambda: read(store, lambda v: v.first_reading(SensorId("001")).time > T0), what="retention applied")
    with store.read() as view:
        assert view.first_reading(SensorId("001")).time == newest + 60 - DAY
        assert view.count_readings(SensorId("001")) == 1440 + 2, "the history must stay"
        assert view.latest_reading(SensorId("001")).time == FAR_AHEAD, "and so must the 2099 reading"
    assert harness.crashes == []
