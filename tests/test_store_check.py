"""A damaged record met through the Store, and check_store / recover_store in process.

Real stores in temp dirs, damaged with raw LMDB writes: the Store names the
damage (one line, the store's path) and remembers it for the supervisor; the
check lists each problem; a recovery keeps what decodes and never gives a
sequence number twice, even when the counters themselves were lost.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import msgpack
import pytest

from core.frames import HealthFrame
from core.types import EpochSeconds, Reading, SensorId
from storage.check import check_store, recover_store
from storage.store import Store, StoreDamagedError, StoreError

S1 = SensorId("001")


def minutes(n: int, start: int = 1_800_000_000) -> list[Reading]:
    return [Reading(S1, EpochSeconds(start + 60 * i), 10.0 + i, 4.0, 0) for i in range(n)]


def health(n: int) -> HealthFrame:
    return HealthFrame(EpochSeconds(1_800_000_000), n, 0, 0, 0, 0, 1.0, True)


def filled(path: Path) -> Store:
    store = Store(path)
    store.ingest(minutes(50))
    store.transact(lambda b: [b.append_outbox(health(i)) for i in range(5)])
    store.transact(lambda b: b.set_offset("detector", 20, {"state": 1}))
    store.transact(lambda b: b.set_offset("transmitter", 3))
    return store


def raw_put(path: Path, db: bytes, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, value, db=env.open_db(db, txn=txn))
    finally:
        env.close()


def test_a_garbled_record_is_a_named_damage_the_store_remembers(tmp_path: Path) -> None:
    path = tmp_path / "store.lmdb"
    filled(path).close()
    raw_put(path, b"meta", b"s:detector", b"\xc1")  # 0xc1: never used by msgpack
    with Store(path) as store, Store(path, readonly=True) as other:
        assert store.damage is None
        with pytest.raises(StoreDamagedError) as damaged, store.read() as view:
            view.consumer_state("detector")
        assert str(damaged.value) == (f"store at {path} is damaged: a record cannot be decoded "
                                      "(FormatError)")
        assert other.damage is damaged.value, "one environment, one damage for the process"
        with store.read() as view:
            assert len(view.readings(S1)) == 50, "what is sound still reads"


def test_a_garbled_outbox_record_does_not_desync_the_batch_silently(tmp_path: Path) -> None:
    path = tmp_path / "store.lmdb"
    filled(path).close()
    raw_put(path, b"outbox", (3).to_bytes(8, "big"), msgpack.packb([1.0, 0]) + b"\x01")
    with Store(path) as store, pytest.raises(StoreDamagedError, match="outbox record"), \
            store.read() as view:
        view.outbox(0, 10)


def test_check_lists_each_damaged_record_and_a_counter_behind(tmp_path: Path) -> None:
    path = tmp_path / "store.lmdb"
    filled(path).close()
    assert check_store(path).sound
    raw_put(path, b"readings", (1).to_bytes(2, "big") + (1_800_000_060).to_bytes(8, "big"), b"x")
    raw_put(path, b"meta", b"q:outbox", msgpack.packb(2))
    report = check_store(path)
    assert report.lines() == [
        "readings: sensor 001 at 2027-01-15T08:01Z: the reading has 1 bytes, not 17",
        "meta: the outbox counter (2) is behind the last outbox record (#5): the next one "
        "cannot be stored",
    ]


def test_recovery_keeps_what_decodes_and_never_reuses_a_number(tmp_path: Path) -> None:
    path = tmp_path / "store.lmdb"
    filled(path).close()
    raw_put(path, b"readings", (1).to_bytes(2, "big") + (1_800_000_060).to_bytes(8, "big"), b"x")
    for counter in (b"q:arrival", b"q:outbox"):
        raw_put(path, b"meta", counter, b"\xc1")  # the counters themselves lost
    recovery = recover_store(path, map_max_mb=64, now=lambda: 1_800_000_000)
    assert recovery.damaged_copy == tmp_path / "store.lmdb.damaged-20270115T080000Z"
    assert recovery.report.databases["readings"].undecodable == 1
    assert recovery.report.databases["meta"].undecodable == 2
    with Store(path) as store:
        with store.read() as view:
            assert len(view.readings(S1)) == 49
            assert view.offset("detector") == 20 and view.consumer_state("detector") == {"state": 1}
            assert view.journal_head() == 50 and view.peek_sequence() == 5
        assert store.transact(lambda b: b.append_outbox(health(5))) == 6
        assert [s.arrival for s in store.ingest(minutes(2, start=1_900_000_000)).stored] == [51, 52]
    assert check_store(path).sound


def test_recovery_refuses_a_store_of_another_format_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.lmdb"
    filled(path).close()
    raw_put(path, b"meta", b"format", msgpack.packb(2))
    report = check_store(path)
    assert report.lines()[0] == ("the store has format 2, this version reads 1: use the gateway "
                                 "version that wrote it")
    with pytest.raises(StoreError, match="format 2"):
        recover_store(path, map_max_mb=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.lmdb"]
