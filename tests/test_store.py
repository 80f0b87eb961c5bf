"""storage.store against a real LMDB in temporary directories (and child processes)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import storage.store as store_module
from core.frames import AlertFrame, HealthFrame
from core.types import EpochSeconds, EventTimes, Reading, SensorId, StoredReading
from storage.store import (
    OUTBOX_SENDER,
    OutboxEntry,
    RejectRecord,
    Store,
    StoreError,
    StoreFullError,
    WriteBatch,
    history_sensor_years,
    map_limit_mb,
)

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400
S1, S2, S3 = SensorId("001"), SensorId("002"), SensorId("003")


def reading(sensor: str, t: int, flow: float | None = 1.0, pressure: float | None = 2.0,
            status: int = 0) -> Reading:
    return Reading(SensorId(sensor), EpochSeconds(t), flow, pressure, status)


def minutes(sensor: str, start: int, count: int, step: int = 60) -> list[Reading]:
    return [reading(sensor, start + i * step, float(i), 3.0 + i % 7, i % 4) for i in range(count)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db", sync=False) as s:
        yield s


# Child processes open the store themselves (py-lmdb must never cross a fork).
CHILD_PRELUDE = """
import sys
from core.types import Reading
from storage.store import Store, StoreFullError
def minutes(sensor, start, count):
    return [Reading(sensor, start + i * 60, float(i), 3.0 + i % 7, i % 4) for i in range(count)]
"""


def run_child(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + code, *args], cwd=ROOT, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )


def start_child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + code, *args], cwd=ROOT, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


# -- ingest ---------------------------------------------------------------------------


def test_ingest_is_idempotent_first_write_wins(store: Store) -> None:
    first = store.ingest(minutes(S1, 0, 5))
    assert [s.arrival for s in first.stored] == [1, 2, 3, 4, 5]
    assert (first.duplicates, first.conflicts) == (0, 0)

    again = store.ingest([
        reading(S1, 60, 1.0, 4.0, 1),  # identical to what is stored
        reading(S1, 120, 99.0, 4.0, 0),  # same time, other values
        reading(S1, 300, 5.0),  # new
    ])
    assert [(s.arrival, s.reading.time) for s in again.stored] == [(6, 300)]
    assert (again.duplicates, again.conflicts) == (2, 1)
    with store.read() as view:
        assert view.readings(S1, 120, 121) == [reading(S1, 120, 2.0, 5.0, 2)]  # the first write
        assert [s.reading.time for s in view.journal(0)] == [0, 60, 120, 180, 240, 300]
        assert view.journal_head() == 6
        counters = view.counters()
    assert (counters["duplicates"], counters["conflicts"]) == (2, 1)


def test_duplicates_inside_one_batch_keep_the_first(store: Store) -> None:
    result = store.ingest([reading(S1, 60, 1.0), reading(S1, 60, 2.0), reading(S1, 60, 1.0)])
    assert len(result.stored) == 1
    assert (result.duplicates, result.conflicts) == (2, 1)
    with store.read() as view:
        assert view.latest_reading(S1) == reading(S1, 60, 1.0)


def test_missing_and_nan_equal_values_are_not_conflicts(store: Store) -> None:
    store.ingest([reading(S1, 60, None, None), reading(S1, 120, 0.0)])
    result = store.ingest([reading(S1, 60, None, None), reading(S1, 120, -0.0)])
    assert (result.duplicates, result.conflicts) == (2, 0)


readings_strategy = st.lists(
    st.builds(
        reading,
        st.sampled_from(["001", "002", "999"]),
        st.integers(0, 2**40),
        st.none() | st.floats(allow_nan=False),
        st.none() | st.floats(allow_nan=False),
        st.integers(0, 255),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(readings_strategy, max_size=3))
def test_ingest_round_trips_and_first_wins(batches: list[list[Reading]]) -> None:
    model: dict[tuple[str, int], Reading] = {}
    arrivals: list[StoredReading] = []
    with tempfile.TemporaryDirectory() as tmp, Store(tmp, sync=False, map_size_mb=1) as store:
        for batch in batches:
            result = store.ingest(batch)
            arrivals += result.stored
            expected_new = []
            for r in batch:
                if (r.sensor, r.time) not in model:
                    model[r.sensor, r.time] = r
                    expected_new.append(r)
            assert [s.reading for s in result.stored] == expected_new
        assert [s.arrival for s in arrivals] == list(range(1, len(model) + 1))
        with store.read() as view:
            assert view.journal(0, limit=10_000) == arrivals
        for sensor in ("001", "002", "999"):
            expected = sorted((r for r in model.values() if r.sensor == sensor),
                              key=lambda r: r.time)
            with store.read() as view:
                assert view.readings(SensorId(sensor)) == expected
        with store.read() as view:
            assert view.sensors() == sorted({r.sensor for r in model.values()})


def test_rejects_are_kept_bounded_and_counted(tmp_path: Path) -> None:
    with Store(tmp_path, rejects_max=3, sync=False) as store:
        rejects = [RejectRecord(1000.0 + i, "checksum" if i % 2 else "syntax", b"$X%d" % i)
                   for i in range(5)]
        result = store.ingest([reading(S1, 60)], rejects)
        assert len(result.stored) == 1  # readings and rejects in the same commit
        with store.read() as view:
            assert view.rejects() == rejects[2:]
            assert view.rejects(limit=1) == rejects[4:]
            assert view.counters() == {"reject.checksum": 2, "reject.syntax": 3}


# -- reads ----------------------------------------------------------------------------


def test_range_scans_are_per_sensor_and_half_open(store: Store) -> None:
    store.ingest(minutes(S2, 0, 10) + minutes(S1, 0, 10) + minutes(S3, 0, 10))
    with store.read() as view:
        assert view.sensors() == [S1, S2, S3]
        assert [r.time for r in view.readings(S2, 120, 300)] == [120, 180, 240]
        assert [r.time for r in view.readings(S2, 121, 301)] == [180, 240, 300]
        assert all(r.sensor == S2 for r in view.readings(S2))
        assert [r.time for r in view.readings(S2, since=480)] == [480, 540]
        assert [r.time for r in view.readings(S2, until=120)] == [0, 60]
        assert view.readings(S2, 300, 300) == []
        assert view.readings(SensorId("004")) == []
        assert view.count_readings(S2) == 10 and view.count_readings(S2, 60, 180) == 2
        assert view.first_reading(S3) == minutes(S3, 0, 1)[0]
        assert view.latest_reading(S1) == minutes(S1, 0, 10)[-1]
        assert view.latest_reading(SensorId("004")) is None
        assert view.first_reading(SensorId("004")) is None


def test_reading_arrays_have_nan_for_missing_values(store: Store) -> None:
    store.ingest([reading(S1, 60, 1.5, None, 0x10), reading(S1, 120, None, 2.5, 0),
                  reading(S1, 180, 3.5, 4.5, 1), reading(S2, 60, 9.0, 9.0)])
    with store.read() as view:
        arrays = view.reading_arrays(S1)
    assert arrays.time.dtype == np.int64 and arrays.status.dtype == np.uint8
    assert arrays.flow.dtype == np.float64 and arrays.pressure.dtype == np.float64
    assert arrays.time.tolist() == [60, 120, 180]
    np.testing.assert_array_equal(arrays.flow, [1.5, np.nan, 3.5])
    np.testing.assert_array_equal(arrays.pressure, [np.nan, 2.5, 4.5])
    assert arrays.status.tolist() == [0x10, 0, 1]
    with store.read() as view:
        assert view.reading_arrays(S1, 100, 180).time.tolist() == [120]
        empty = view.reading_arrays(SensorId("005"))
    assert len(empty) == 0 and empty.flow.dtype == np.float64
    with store.read() as view:
        assert view.readings(S1)[0] == reading(S1, 60, 1.5, None, 0x10)


@pytest.mark.slow
def test_a_year_of_readings_reads_back_whole_and_in_order(store: Store) -> None:
    # (How fast is bench/predict.py's business: speed is measured there, not asserted.)
    year = 525_600
    for start in range(0, year, 131_400):
        store.ingest([Reading(S1, EpochSeconds(i * 60), float(i), 2.0, 0)
                      for i in range(start, min(start + 131_400, year))])
    store.ingest(minutes(S2, 0, 10))
    with store.read() as view:
        arrays = view.reading_arrays(S1)
    assert len(arrays) == year and arrays.flow[-1] == year - 1
    assert bool(np.all(np.diff(arrays.time) == 60))


def test_journal_order_head_and_trim(store: Store) -> None:
    with store.read() as view:
        assert view.journal_head() == 0 and view.journal(0) == []
    store.ingest([reading(S2, 600), reading(S1, 60)])
    store.ingest([reading(S1, 0), reading(S1, 60)])
    with store.read() as view:
        journal = view.journal(0)
    assert [(s.arrival, s.reading.sensor, s.reading.time) for s in journal] == [
        (1, S2, 600), (2, S1, 60), (3, S1, 0)]
    with store.read() as view:
        assert view.journal(1, limit=1) == journal[1:2]
        assert view.journal(3) == []
    assert store.trim_journal(2) == 2
    with store.read() as view:
        assert view.journal(0) == journal[2:]
        assert view.journal_head() == 3  # trimming never moves the head back
    store.ingest([reading(S3, 60)])
    with store.read() as view:
        assert view.journal(0)[-1].arrival == 4


def test_detections_night_blocks_and_docs(store: Store) -> None:
    def write(b: WriteBatch) -> list[bool]:
        b.put_detection(S1, 120, {"causes": ["value"], "observed": 3.5})
        b.put_detection(S1, 60, {"causes": ["system"]})
        b.put_detection(S2, 60, {"causes": ["night"]})
        b.put_doc("criteria", f"{S1}/000002", {"version": 2})
        b.put_doc("criteria", f"{S1}/000001", {"version": 1})
        b.put_doc("criteria", f"{S2}/000001", {"version": 1})
        b.put_doc("forecast", S1, {"values": np.arange(3, dtype=np.float32), "n": np.int64(3)})
        return [b.put_night_block(S1, 600, {"mean": 1.0}),
                b.put_night_block(S1, 600, {"mean": 9.0})]

    assert store.transact(write) == [True, False]
    assert store.transact(lambda b: b.put_night_block(S1, 600, {"mean": 7.0})) is False
    with store.read() as view:
        assert view.night_blocks(S1) == [{"mean": 1.0, "sensor": S1, "start": 600}]
        assert [d["time"] for d in view.detections(S1)] == [60, 120]
        assert view.detections(S1, since=100) == [
            {"causes": ["value"], "observed": 3.5, "sensor": S1, "time": 120}]
        assert [key for key, _ in view.docs("criteria", f"{S1}/")] == [f"{S1}/000001", f"{S1}/000002"]
        assert len(view.docs("criteria")) == 3
        assert view.doc("criteria", f"{S2}/000001") == {"version": 1}
        assert view.doc("criteria", "nope") is None
        assert view.doc("forecast", S1) == {"values": [0.0, 1.0, 2.0], "n": 3}


def _night_docs_store(tmp: Path, nights: list[tuple[str, str, bool]]) -> Store:
    store = Store(tmp, sync=False)
    store.transact(lambda b: [b.put_doc("night", f"{sensor}/{night}", {"leak": leak})
                              for sensor, night, leak in nights])
    return store


_NIGHT_KEYS = st.lists(st.tuples(st.sampled_from(["001", "002", "0010"]),
                                 st.sampled_from([f"2026-01-{d:02d}" for d in range(1, 13)]),
                                 st.booleans()), max_size=30)


@settings(max_examples=60, deadline=None)
@given(_NIGHT_KEYS, st.sampled_from(["001/", "002/", "0010/", ""]),
       st.sampled_from(["", "001/2026-01-05", "002/2026-01-12", "0010/2026-01-01"]),
       st.booleans(), st.one_of(st.none(), st.integers(1, 5)), st.booleans())
def test_docs_after_newest_first_limit_where_equal_a_plain_filter(
        nights, prefix, after, newest_first, limit, clean_only):
    with tempfile.TemporaryDirectory() as tmp, \
            _night_docs_store(Path(tmp) / "db", nights) as store:
        where = (lambda rec: rec["leak"] is False) if clean_only else None
        with store.read() as view:
            everything = view.docs("night", prefix)
        expected = [(k, r) for k, r in everything
                    if k > after and (where is None or where(r))]
        if newest_first:
            expected.reverse()
        if limit is not None:
            expected = expected[:limit]
        with store.read() as view:
            assert view.docs("night", prefix, after=after, newest_first=newest_first,
                              limit=limit, where=where) == expected
        assert all(k.startswith(prefix) for k, _ in everything)
        with store.read() as view:
            assert view.docs("other") == []


# -- transactions, offsets, outbox ------------------------------------------------------


def _frame(n: int, seq: int = 0) -> HealthFrame:
    """An outbound frame told apart by ``n`` (``seq``: as the outbox numbers it)."""
    return HealthFrame(EpochSeconds(1_700_000_000), n, 0, 0, 0, 0, 1.0, True, seq=seq)


def test_offset_and_state_commit_with_the_work(store: Store) -> None:
    store.ingest(minutes(S1, 0, 3))

    def work(b: WriteBatch) -> int:
        b.put_detection(S1, 60, {"causes": ["value"]})
        seq = b.append_outbox(_frame(0))
        b.set_offset("detector", 3, {"persist": {S1: [1, 2]}})
        b.count("alerts")
        assert b.peek_sequence() == seq and b.offset("detector") == 3
        return seq

    assert store.transact(work) == 1
    with store.read() as view:
        assert view.offset("detector") == 3
        assert view.consumer_state("detector") == {"persist": {S1: [1, 2]}}

    def failing(b: WriteBatch) -> None:
        b.put_detection(S1, 120, {"causes": ["value"]})
        b.append_outbox(_frame(1))
        b.set_offset("detector", 9, {"persist": {}})
        b.count("alerts")
        raise RuntimeError("detector crashed mid-batch")

    with pytest.raises(RuntimeError):
        store.transact(failing)
    with store.read() as view:
        assert view.offset("detector") == 3
        assert view.consumer_state("detector") == {"persist": {S1: [1, 2]}}
        assert [d["time"] for d in view.detections(S1)] == [60]
        assert view.outbox_depth() == 1 and view.peek_sequence() == 1
        assert view.counters() == {"alerts": 1}
        assert view.offset("nobody") == 0 and view.consumer_state("nobody") is None

    store.transact(lambda b: b.set_offset("detector", 4))  # no state: the stored one stays
    with store.read() as view:
        assert view.consumer_state("detector") == {"persist": {S1: [1, 2]}}


def test_a_state_saved_alone_leaves_the_offset_where_it_is(store: Store) -> None:
    store.transact(lambda b: b.save_state("predictor", {"issued": {S1: 3600}}))
    with store.read() as view:
        assert view.offset("predictor") == 0
        assert view.consumer_state("predictor") == {"issued": {S1: 3600}}
    store.transact(lambda b: b.set_offset("detector", 7))
    store.transact(lambda b: b.save_state("detector", {"persist": {}}))
    with store.read() as view:
        assert view.offset("detector") == 7
        assert view.consumer_state("detector") == {"persist": {}}


def test_a_read_sees_one_snapshot_while_a_writer_commits(store: Store) -> None:
    store.ingest(minutes(S1, 0, 3))
    writer = threading.Thread(target=lambda: (
        store.ingest(minutes(S1, 180, 2)),
        store.transact(lambda b: b.set_offset("detector", 5))))
    with store.read() as view:
        assert view.count_readings(S1) == 3
        writer.start()
        writer.join(timeout=10)
        assert not writer.is_alive()
        # Committed meanwhile, and not seen: every read of the block is one snapshot.
        assert view.count_readings(S1) == 3 and view.journal_head() == 3
        assert view.offset("detector") == 0
    with store.read() as view:
        assert view.count_readings(S1) == 5 and view.offset("detector") == 5


def test_a_view_is_dead_once_its_block_ends(store: Store) -> None:
    store.ingest(minutes(S1, 0, 1))
    with store.read() as view:
        assert view.sensors() == [S1]
    with pytest.raises(StoreError, match="transaction already ended"):
        view.sensors()


def test_a_damaged_record_read_in_a_block_names_the_store(store: Store) -> None:
    store.transact(lambda b: b.put_records("docs", [(b"kind\x00key", b"\xc1")]))
    with pytest.raises(StoreError, match=f"store at {store.path} is damaged"), \
            store.read() as view:
        view.doc("kind", "key")
    assert store.damage is not None


def test_batch_is_unusable_after_its_transaction(store: Store) -> None:
    kept = store.transact(lambda b: b)
    with pytest.raises(StoreError, match="transaction already ended"):
        kept.put_doc("x", "y", 1)


def test_outbox_sequence_survives_reopen_and_is_never_reused(tmp_path: Path) -> None:
    with Store(tmp_path, sync=False, clock=lambda: 1000.0) as store:
        seqs = store.transact(lambda b: [b.append_outbox(_frame(i)) for i in range(3)])
        assert seqs == [1, 2, 3]
        with store.read() as view:
            assert view.outbox(after=1) == [OutboxEntry(2, _frame(1, seq=2), 1000.0, 0),
                                             OutboxEntry(3, _frame(2, seq=3), 1000.0, 0)]
        assert store.transact(lambda b: b.delete_outbox_through(3)) == 3
        with store.read() as view:
            assert view.outbox_depth() == 0 and view.outbox_oldest() is None
    with Store(tmp_path, sync=False) as store:
        with store.read() as view:
            assert view.peek_sequence() == 3
        assert store.transact(lambda b: b.append_outbox(_frame(3))) == 4


def test_outbox_attempts_and_single_delete(store: Store) -> None:
    store.transact(lambda b: [b.append_outbox(_frame(i)) for i in range(4)])
    store.transact(lambda b: (b.mark_outbox_attempt(2), b.mark_outbox_attempt(2),
                              b.mark_outbox_attempt(99)))
    with store.read() as view:
        assert [e.attempts for e in view.outbox()] == [0, 2, 0, 0]
    assert store.transact(lambda b: b.delete_outbox(2)) is True
    assert store.transact(lambda b: b.delete_outbox(2)) is False
    with store.read() as view:
        assert [e.seq for e in view.outbox()] == [1, 3, 4]
    assert store.transact(lambda b: b.delete_outbox_through(3)) == 2
    with store.read() as view:
        assert view.outbox_oldest() == view.outbox()[0] and view.outbox_oldest().seq == 4


def test_outbox_keeps_each_frames_line_beside_records_from_before_lines(tmp_path: Path) -> None:
    def wire(seq: int, frame: HealthFrame) -> bytes:
        return b"$N,%d,%d*00\r\n" % (seq, frame.uptime_s)

    with Store(tmp_path, sync=False, clock=lambda: 5.0) as store:  # an older store: no lines
        store.transact(lambda b: b.append_outbox(_frame(7)))
    with Store(tmp_path, sync=False, clock=lambda: 6.0, outbox_wire=wire) as store:
        store.transact(lambda b: [b.append_outbox(_frame(i)) for i in (8, 9)])
        store.transact(lambda b: b.mark_outbox_attempt(2))
        with store.read() as view:
            assert view.outbox() == [OutboxEntry(1, _frame(7, seq=1), 5.0, 0),
                                      OutboxEntry(2, _frame(8, seq=2), 6.0, 1, b"$N,2,8*00\r\n"),
                                      OutboxEntry(3, _frame(9, seq=3), 6.0, 0, b"$N,3,9*00\r\n")]
            assert view.outbox_oldest().wire is None
        assert store.transact(lambda b: b.outbox(after=2))[0].wire == b"$N,3,9*00\r\n"


def test_outbox_bound_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    with Store(tmp_path, outbox_max=3, sync=False) as store:
        store.transact(lambda b: [b.append_outbox(_frame(i)) for i in range(5)])
        store.transact(lambda b: b.append_outbox(_frame(5)))
        with store.read() as view:
            assert [e.seq for e in view.outbox()] == [4, 5, 6]
            assert view.outbox_depth() == 3
            assert view.counters()["outbox_dropped"] == 3
            assert view.counters()["outbox_dropped_unsent"] == 3  # nothing was sent
        store.transact(lambda b: b.set_offset(OUTBOX_SENDER, 5))
        store.transact(lambda b: [b.append_outbox(_frame(i)) for i in (6, 7, 8)])  # drops 4, 5, 6
        with store.read() as view:
            assert view.counters()["outbox_dropped"] == 6
            assert view.counters()["outbox_dropped_unsent"] == 4  # 6 only: 4 and 5 were sent


def test_readonly_store_refuses_writes(tmp_path: Path) -> None:
    with Store(tmp_path, sync=False) as writer, Store(tmp_path, readonly=True) as reader:
        writer.ingest([reading(S1, 60)])
        with pytest.raises(StoreError, match="read-only"):
            reader.transact(lambda b: b.put_doc("x", "y", 1))
        with pytest.raises(StoreError, match="read-only"):
            reader.ingest([reading(S1, 120)])


# -- memory ------------------------------------------------------------------------------------


def _rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc: Linux")
def test_released_pages_leave_the_process_memory_and_read_back_intact(tmp_path: Path) -> None:
    with Store(tmp_path / "s.lmdb") as store:
        readings = minutes("001", 1_767_225_600, 200_000)
        for i in range(0, len(readings), 20_000):
            store.ingest(readings[i:i + 20_000])
        with store.read() as view:
            assert len(view.reading_arrays(S1).time) == 200_000  # every page read: mapped
        before = _rss_file_kb()
        advised = store.release_mapped_pages()
        after = _rss_file_kb()
        assert advised >= 8 * 1024 * 1024, advised
        assert before - after >= 5 * 1024, (before, after)  # the store's pages, several MB
        with store.read() as view:
            assert view.readings(S1) == readings  # mapped again from the page cache


# -- map growth and full store --------------------------------------------------------------


def test_map_grows_from_a_tiny_map_without_losing_anything(tmp_path: Path) -> None:
    with Store(tmp_path, map_size_mb=1, map_max_mb=64, sync=False) as store:
        for start in range(0, 60_000, 6_000):
            store.ingest(minutes(S1, start * 60, 6_000))
        calls = 0

        def big(b: WriteBatch) -> str:
            nonlocal calls
            calls += 1
            for i in range(3_000):
                b.put_doc("blob", f"{i:05d}", b"x" * 1_000)
            return "done"

        assert store.transact(big) == "done"
        assert calls > 1  # aborted on MapFull and run again after growing
        assert store.map_size_mb() > 1
        with store.read() as view:
            assert view.count_readings(S1) == 60_000 and view.journal_head() == 60_000
            assert len(view.docs("blob")) == 3_000
    with Store(tmp_path, map_size_mb=1, sync=False) as store:
        with store.read() as view:
            assert view.count_readings(S1) == 60_000
        assert store.map_size_mb() > 1  # reopened with room for what is there


def test_store_full_error_when_the_map_reaches_its_maximum(tmp_path: Path) -> None:
    with Store(tmp_path, map_size_mb=1, map_max_mb=2, sync=False) as store:
        stored = 0
        with pytest.raises(StoreFullError, match="map_max_mb=2"):
            for start in range(0, 1_000_000, 2_000):
                stored += len(store.ingest(minutes(S1, start * 60, 2_000)).stored)
        assert stored > 0
        with store.read() as view:
            assert view.count_readings(S1) == stored == view.journal_head()
        assert 0 < store.used_pct() <= 100
        store.transact(lambda b: b.set_offset("detector", 1))  # small writes still fit
    with Store(tmp_path, map_size_mb=1, map_max_mb=2, sync=False) as store, \
            store.read() as view:
        assert view.count_readings(S1) == stored


def test_concurrent_readers_while_the_writer_grows_the_map(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    done = threading.Event()
    with Store(tmp_path, map_size_mb=1, sync=False) as store:
        def read() -> None:
            try:
                while not done.is_set():
                    with store.read() as view:
                        times = view.reading_arrays(S1).time
                    assert bool(np.all(np.diff(times) == 60))
                    with store.read() as view:
                        journal = view.journal(0, limit=500)
                    assert [s.arrival for s in journal] == list(range(1, len(journal) + 1))
                    with store.read() as view:
                        view.latest_reading(S1)
                    time.sleep(0.0005)  # leave the writer some of the GIL
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            for start in range(0, 20_000, 2_000):
                store.ingest(minutes(S1, start * 60, 2_000))
        finally:
            done.set()
            for t in readers:
                t.join()
        assert errors == []
        with store.read() as view:
            assert store.map_size_mb() > 1 and view.count_readings(S1) == 20_000


# -- retention ------------------------------------------------------------------------


def set_event_times(store: Store, times: dict[SensorId, int], ahead: int | None = None) -> None:
    store.transact(lambda b: b.set_event_times(EventTimes(
        {s: EpochSeconds(t) for s, t in times.items()}, ahead)))


def test_event_times_are_kept_whole_and_read_back(store: Store) -> None:
    with store.read() as view:
        assert view.event_times() == EventTimes() and view.event_time(S1) is None
    set_event_times(store, {S1: 600, S2: 120}, ahead=7200)
    with store.read() as view:
        assert view.event_times() == EventTimes({S1: 600, S2: 120}, 7200)
        assert view.event_time(S2) == 120 and view.event_time(S3) is None
        assert view.event_times().newest() == 7200
    set_event_times(store, {S1: 660})
    with store.read() as view:
        assert view.event_times() == EventTimes({S1: 660})
        assert view.event_times().newest() == 660 and EventTimes().newest() is None


def test_retention_follows_each_sensors_event_time(store: Store) -> None:
    t0 = 1_700_000_000
    far_ahead = 4_070_908_800  # 2099: stored, never taken into event time
    store.ingest([reading(S1, t0 + d * DAY) for d in range(10)] + [reading(S1, far_ahead)]
                 + [reading(S2, t0 + d * DAY) for d in range(3)]
                 + [reading(S3, t0 + d * DAY) for d in range(30)])

    def extras(b: WriteBatch) -> None:
        for d in range(10):
            b.put_detection(S1, t0 + d * DAY, {"d": d})
            b.put_night_block(S1, t0 + d * DAY, {"d": d})

    store.transact(extras)
    # S3 has no event time yet (the Detector has not processed it): untouched.
    set_event_times(store, {S1: t0 + 9 * DAY, S2: t0 + 2 * DAY})
    # S1's event time is day 9: keep days 4..9 (and the 2099 stamp); S2's is day 2: all stays.
    assert store.apply_retention(5) == 3 * 4
    with store.read() as view:
        assert [(r.time - t0) // DAY for r in view.readings(S1, until=far_ahead)] == [4, 5, 6, 7, 8, 9]
        assert view.latest_reading(S1).time == far_ahead
        assert view.count_readings(S2) == 3
        assert view.count_readings(S3) == 30
        assert [d["d"] for d in view.detections(S1)] == [4, 5, 6, 7, 8, 9]
        assert [b["d"] for b in view.night_blocks(S1)] == [4, 5, 6, 7, 8, 9]
    assert store.apply_retention(5) == 0
    with pytest.raises(ValueError):
        store.apply_retention(0)


def test_retention_deletes_in_bounded_transactions(store: Store) -> None:
    store.ingest(minutes(S1, 0, 25_000))
    newest = 24_999 * 60
    set_event_times(store, {S1: newest})
    assert store.apply_retention(1) == 24_999 - DAY // 60  # everything before newest - 1 day
    with store.read() as view:
        assert view.first_reading(S1).time == newest - DAY


# -- processes, crashes, read-only opens ---------------------------------------------------


def test_readonly_in_the_same_process_shares_the_writer(tmp_path: Path) -> None:
    with Store(tmp_path, sync=False) as writer:
        writer.ingest([reading(S1, 60)])
        reader = Store(tmp_path, readonly=True)
        writer.ingest([reading(S1, 120)])
        with reader.read() as view:
            assert [r.time for r in view.readings(S1)] == [60, 120]
        reader.close()
        writer.ingest([reading(S1, 180)])  # closing the reader left the writer working
        with writer.read() as view:
            assert view.count_readings(S1) == 3


def test_two_writers_in_one_process_share_the_environment(tmp_path: Path) -> None:
    first, second = Store(tmp_path, sync=False), Store(tmp_path, sync=False)
    first.ingest([reading(S1, 60)])
    assert second.ingest([reading(S1, 120)]).stored[0].arrival == 2
    first.close()
    with second.read() as view:
        assert view.count_readings(S1) == 2  # still open: the last close closes LMDB
    second.close()
    with Store(tmp_path, readonly=True) as reader, reader.read() as view:
        assert view.journal_head() == 2


def test_writer_opened_after_a_readonly_store_in_the_same_process(tmp_path: Path) -> None:
    Store(tmp_path, sync=False).close()
    with Store(tmp_path, readonly=True) as reader:
        with Store(tmp_path, sync=False) as writer:
            writer.ingest([reading(S1, 60)])
        with reader.read() as view:
            assert view.latest_reading(S1) == reading(S1, 60)


def test_readonly_open_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        Store(tmp_path / "absent", readonly=True)
    assert not (tmp_path / "absent").exists()


READ_COUNT = """
with Store(sys.argv[1], readonly=True) as s, s.read() as view:
    print(view.count_readings("001"), view.journal_head(), view.doc("k", "v"))
"""


def test_readonly_process_sees_what_the_open_writer_committed(tmp_path: Path) -> None:
    with Store(tmp_path) as writer:
        writer.ingest(minutes(S1, 0, 500))
        writer.transact(lambda b: b.put_doc("k", "v", 7))
        child = run_child(READ_COUNT, str(tmp_path))
        assert child.returncode == 0, child.stderr
        assert child.stdout.split() == ["500", "500", "7"]
        writer.ingest(minutes(S1, 500 * 60, 10))  # the writer is unaffected


def test_readonly_store_follows_a_map_grown_by_another_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="storage.store")
    with Store(tmp_path, map_size_mb=1) as writer:
        writer.ingest(minutes(S1, 0, 10))
    with Store(tmp_path, readonly=True) as reader:
        with reader.read() as view:
            assert view.count_readings(S1) == 10
        grow = """
with Store(sys.argv[1], map_size_mb=1, sync=False) as s:
    for start in range(10, 40_010, 4_000):
        s.ingest(minutes("001", start * 60, 4_000))
    print(s.map_size_mb())
"""
        child = run_child(grow, str(tmp_path))
        assert child.returncode == 0, child.stderr
        assert float(child.stdout) > 1
        with reader.read() as view:
            assert view.count_readings(S1) == 40_010
            assert len(view.reading_arrays(S1)) == 40_010
    assert "map size adopted from another process" in caplog.text


CRASHING_WRITER = """
with Store(sys.argv[1], map_size_mb=1) as s:
    for batch in range(10_000):
        result = s.ingest(minutes("001", batch * 50 * 60, 50))
        s.transact(lambda b: b.set_offset("writer", result.stored[-1].arrival, {"batch": batch}))
        print(batch, flush=True)
"""


def test_reopen_after_the_writer_is_killed_mid_stream(tmp_path: Path) -> None:
    child = start_child(CRASHING_WRITER, str(tmp_path))
    assert child.stdout is not None
    acknowledged = -1
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= 60:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    with Store(tmp_path) as store:
        # everything reported as committed is there, and nothing is half there
        with store.read() as view:
            count = view.count_readings(S1)
        assert count >= (acknowledged + 1) * 50 and count % 50 == 0
        with store.read() as view:
            assert view.journal_head() == count
            assert [s.arrival for s in view.journal(0, limit=count)] == list(range(1, count + 1))
            assert view.consumer_state("writer")["batch"] >= acknowledged
            assert view.offset("writer") in (count, count - 50)
        assert store.ingest([reading(S2, 60)]).stored[0].arrival == count + 1


HANGING_WRITER = """
import time
with Store(sys.argv[1]) as s:
    def work(b):
        b.put_doc("k", "lost", 1)
        print("inside", flush=True)
        time.sleep(60)
    s.transact(work)
"""


def test_a_writer_killed_inside_its_transaction_leaves_no_lock(tmp_path: Path) -> None:
    Store(tmp_path).close()
    child = start_child(HANGING_WRITER, str(tmp_path))
    assert child.stdout is not None and child.stdout.readline() == "inside\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    done = threading.Event()

    def write() -> None:  # in a thread so that a stuck lock fails the test, not the run
        with Store(tmp_path) as store:
            store.transact(lambda b: b.put_doc("k", "kept", 2))
            with store.read() as view:
                assert view.docs("k") == [("kept", 2)]
        done.set()

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done.is_set()


DISK_FULL = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
with Store(sys.argv[1]) as s:
    s.ingest(minutes("001", 0, 100))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))  # the disk "fills up"
    try:
        for batch in range(1, 1000):
            s.ingest(minutes("001", batch * 1000 * 60, 1000))
        print("never full")
    except StoreFullError as exc:
        print("full:", exc, file=sys.stderr)
    with s.read() as view:
        print(view.count_readings("001"), view.journal_head())
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space freed again
    s.ingest(minutes("002", 0, 10))
"""


def test_disk_full_raises_store_full_and_keeps_the_store_intact(tmp_path: Path) -> None:
    child = run_child(DISK_FULL, str(tmp_path))
    assert child.returncode == 0, child.stderr
    assert "full: store at" in child.stderr and "the write was not kept" in child.stderr
    count, head = map(int, child.stdout.split())
    assert count == head and count >= 100 and (count - 100) % 1000 == 0
    with Store(tmp_path) as store, store.read() as view:
        assert view.count_readings(S1) == count
        assert view.count_readings(S2) == 10
        assert view.journal_head() == count + 10


def test_used_pct_and_closed_store(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size_mb=1, map_max_mb=4, sync=False)
    before = store.used_pct()
    store.ingest(minutes(S1, 0, 5_000))
    assert 0 < before < store.used_pct() < 100
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"), store.read() as view:
        view.latest_reading(S1)


# -- the outbox with two uplinks -------------------------------------------------


def _alert(i: int) -> AlertFrame:
    return AlertFrame(S1, EpochSeconds(1_700_000_000 + 60 * i), 1.0, 2.0, 0, 0)


def test_a_frame_leaves_the_outbox_only_when_both_uplinks_have_it(tmp_path) -> None:
    with Store(tmp_path / "s", outbox_publisher=True) as store:
        store.transact(lambda b: [b.append_outbox(_alert(i)) for i in range(1, 6)])
        # The serial upstream acknowledges 1..3; the broker has nothing yet: kept, marked.
        assert all(store.transact(lambda b, s=s: b.acknowledge_outbox(s)) for s in (1, 2, 3))
        with store.read() as view:
            kept = view.outbox(limit=10)
        assert [e.seq for e in kept] == [1, 2, 3, 4, 5]
        assert [e.acked for e in kept] == [True, True, True, False, False]
        # The broker acknowledges through 2: those two go, 3 waits for it, 4-5 for both.
        store.transact(lambda b: (b.set_offset("mqtt", 2), b.release_published_through(2)))
        with store.read() as view:
            assert [e.seq for e in view.outbox(limit=10)] == [3, 4, 5]
        # The broker has 4 too; then the serial ACK of 4 removes it at once.
        store.transact(lambda b: (b.set_offset("mqtt", 4), b.release_published_through(4, 2)))
        with store.read() as view:
            assert [e.seq for e in view.outbox(limit=10)] == [4, 5]
        store.transact(lambda b: b.acknowledge_outbox(4))
        with store.read() as view:
            assert [e.seq for e in view.outbox(limit=10)] == [5]
        # The last frame of the outbox, acknowledged, then published: gone too.
        store.transact(lambda b: b.acknowledge_outbox(5))
        store.transact(lambda b: (b.set_offset("mqtt", 5), b.release_published_through(5, 4)))
        with store.read() as view:
            assert view.outbox(limit=10) == []


def test_without_the_mqtt_uplink_an_ack_removes_the_frame(tmp_path) -> None:
    with Store(tmp_path / "s") as store:
        store.transact(lambda b: [b.append_outbox(_alert(i)) for i in range(1, 3)])
        store.transact(lambda b: b.acknowledge_outbox(1))
        with store.read() as view:
            assert [e.seq for e in view.outbox(limit=10)] == [2]


def test_the_outbox_bound_counts_what_each_uplink_lost(tmp_path) -> None:
    with Store(tmp_path / "s", outbox_max=100, outbox_publisher=True) as store:
        store.transact(lambda b: (b.set_offset("transmitter", 60), b.set_offset("mqtt", 30)))
        store.transact(lambda b: [b.append_outbox(_alert(i)) for i in range(1, 151)])
        with store.read() as view:
            counters = view.counters()
        assert counters["outbox_dropped"] == 50
        assert counters.get("outbox_dropped_unsent", 0) == 0  # serial sent through 60
        assert counters["outbox_dropped_unpublished"] == 20  # the broker had 1..30


# -- 32-bit address space ------------------------------------------------------------


def test_a_32_bit_process_holds_the_map_to_1_gb() -> None:
    assert map_limit_mb(4096, pointer_bits=32) == 1024
    assert map_limit_mb(512, pointer_bits=32) == 512
    assert map_limit_mb(4096, pointer_bits=64) == 4096


def test_history_a_map_holds_beside_a_full_outbox() -> None:
    # 25 MB per sensor-year, 20 MB per 100,000 outbox frames (README "A full disk").
    assert history_sensor_years(1024, 100_000) == pytest.approx(40.16)
    assert history_sensor_years(1024, 1_000_000) == pytest.approx(32.96)
    assert history_sensor_years(10, 100_000) == 0.0


def test_a_32_bit_store_opens_with_a_map_that_fits(tmp_path: Path, monkeypatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # Only the pointer width is pretended; the armhf run of `make test-pi` proves the rest.
    monkeypatch.setattr(store_module, "POINTER_BITS", 32)
    with caplog.at_level(logging.WARNING, logger="storage.store"):
        store = Store(tmp_path, map_size_mb=2048, map_max_mb=4096, sync=False)
    with store:
        assert store.map_max_mb == 1024 and store.map_size_mb() == 1024
        store.ingest(minutes(S1, 0, 100))
        assert 0 < store.used_pct() < 1
    assert "cannot map 4096 MB: map_max_mb held to 1024 MB" in caplog.text
