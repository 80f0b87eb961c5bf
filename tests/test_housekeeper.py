"""Housekeeper: the journal is trimmed to the slowest consumer, retention keeps a year."""

from __future__ import annotations

from datetime import datetime

from actors.housekeeper import Housekeeper
from core import messages
from core.types import EpochSeconds, Reading, SensorId
from tests.conftest import Harness, make_config
from tests.harness import TZ, wait_for

T0 = int(datetime(2026, 1, 5, 0, 0, tzinfo=TZ).timestamp())
DAY = 86_400


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
    wait_for(lambda: store.journal(0, 100)[0].arrival == 26, what="journal trimmed")
    assert [j.arrival for j in store.journal(0, 100)] == list(range(26, 51))
    assert store.journal_head() == 50, "trimming must not move the head"
    assert store.count_readings(SensorId("001")) == 50, "readings are not the journal's to trim"
    # A consumer that resumes from its offset still finds everything after it.
    assert [j.arrival for j in store.journal(25, 5)] == [26, 27, 28, 29, 30]


def test_retention_keeps_retention_days_before_each_sensors_newest_reading(tmp_path, store):
    config = make_config(tmp_path, storage={"retention_days": 2})
    harness = Harness(config, store)
    store.ingest(readings("001", T0, 5 * 24, step=3600))  # five days, hourly
    store.ingest(readings("002", T0 + 10 * DAY, 24, step=3600))  # one later day
    housekeeper = harness.start(Housekeeper)
    harness.tell(housekeeper, messages.Tick(0.0))
    newest = T0 + (5 * 24 - 1) * 3600
    wait_for(lambda: store.first_reading(SensorId("001")).time >= newest - 2 * DAY,
             what="retention applied")
    assert store.first_reading(SensorId("001")).time == newest - 2 * DAY
    assert store.count_readings(SensorId("002")) == 24, "each sensor keeps its own year"
    assert harness.crashes == []
