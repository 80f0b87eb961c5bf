"""A damaged store: refused with one clear line, checked, recovered without losing what is good.

Each test fills a real store (readings of two sensors), damages its file the
way disks and people do (cut short, zero-filled, a meta page garbled, a page
of zeros, a record garbled with raw LMDB), then runs the real ``supervisor.py``:
the service exits 3 with one line naming the store, what is wrong and the
command to run (no SIGBUS, no crash-restart loop); ``check-store`` prints one
line per problem; ``recover-store`` keeps every record that can be read, puts
the damaged store aside, and the service runs again on the recovered one.
"""

from __future__ import annotations

import os
import struct
from datetime import datetime
from pathlib import Path

import lmdb
import pytest

from core.types import Reading
from storage.datafile import HEADER_SIZE, WORD
from storage.lock import lock_path
from storage.store import Store
from tests.faults.helpers import encode_all, minute_stream, reading_alerts, stored_everything
from tests.harness import TZ, run_cli, wait_for

SENSORS = ("001", "002")
BASE = int(datetime(2026, 3, 2, 0, 0, tzinfo=TZ).timestamp())
MINUTES = 1500
# Offset of last_pg in a meta page: magic, version, address, mapsize, two MDB_db.
_DB_SIZE = 8 + 5 * WORD
LAST_PAGE_AT = HEADER_SIZE + 8 + 2 * WORD + 2 * _DB_SIZE
P_LEAF = 0x02


def filled_store(path: Path) -> list[Reading]:
    """A store holding every reading in both meta pages' snapshots."""
    readings = minute_stream(SENSORS, BASE, MINUTES)
    with Store(path) as store:
        for i in range(0, len(readings), 500):
            store.ingest(readings[i:i + 500])
        for _ in range(2):  # two more commits: the older meta page holds everything too
            store.transact(lambda b: b.count("test.commit"))
    return readings


def keys(readings: list[Reading]) -> set[tuple[str, int]]:
    return {(r.sensor, r.time) for r in readings}


def page_size(store: Path) -> int:
    with Store(store, readonly=True) as s:
        return s._env().env.stat()["psize"]


def newest_meta(store: Path) -> int:
    with Store(store, readonly=True) as s:
        return s._env().env.info()["last_txnid"] % 2  # transaction n goes to meta page n % 2


def refused_with_one_line(site, *words: str) -> str:
    """Start the service on the damaged store: it must exit 3 with one clear line."""
    site.start(wait=False)
    wait_for(site.exited, timeout=60, what="the service to refuse the store")
    log = site.log()
    assert site.service.process.returncode == 3, log  # not -7 (SIGBUS) nor a restart loop
    lines = [line for line in log.splitlines() if "damaged" in line]
    assert len(lines) == 1 and lines[0].startswith("CRITICAL supervisor: "), log
    for word in (f"store at {site.store_path} is damaged", "check-store", *words):
        assert word in lines[0], lines[0]
    assert "Traceback" not in log and "restarting" not in log
    return lines[0]


def check(site) -> tuple[int, list[str]]:
    result = run_cli(site.config, "check-store")
    return result.returncode, result.stdout.splitlines()


def recover(site) -> list[str]:
    result = run_cli(site.config, "recover-store")
    assert result.returncode == 0, result.stdout + result.stderr
    aside = [p for p in site.store_path.parent.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and (aside[0] / "data.mdb").is_file(), "the damaged store is kept"
    assert f"the damaged store is kept at {aside[0]}" in result.stdout
    assert check(site)[0] == 0, "the recovered store is sound"
    return result.stdout.splitlines()


def runs_and_alerts(site, readings: list[Reading]) -> None:
    """The service runs on the store and alerts readings sent now."""
    site.start()
    site.send(b"".join(encode_all(readings)))
    wanted = keys(readings)
    wait_for(lambda: wanted <= {(a.sensor, a.time) for a in reading_alerts(site.frames())},
             timeout=60, what="the new readings' $ALR")
    assert site.stop() == 0


@pytest.mark.slow
def test_a_truncated_store_is_one_line_not_a_sigbus_and_recovers(make_site) -> None:
    site = make_site()
    readings = filled_store(site.store_path)
    data = site.store_path / "data.mdb"
    os.truncate(data, data.stat().st_size // 2)

    refused_with_one_line(site, "data.mdb is truncated")
    status = run_cli(site.config, "status")
    assert status.returncode == 1 and status.stderr.count("\n") == 1, status.stderr
    assert "data.mdb is truncated" in status.stderr
    code, lines = check(site)
    assert code == 1 and lines[0].startswith("data.mdb is truncated"), lines
    assert "DAMAGED" in lines[-1]

    report = recover(site)
    with site.open_store() as store:
        kept = keys(list(stored_everything(store).values()))
        assert kept < keys(readings) and kept, report  # the first half's pages are intact
    runs_and_alerts(site, minute_stream(SENSORS, BASE + MINUTES * 60, 5))


@pytest.mark.slow
def test_a_zero_filled_store_is_refused_and_recovers_to_an_empty_one(make_site) -> None:
    site = make_site()
    filled_store(site.store_path)
    data = site.store_path / "data.mdb"
    data.write_bytes(bytes(data.stat().st_size))

    refused_with_one_line(site, "meta page 0 is blank (zeros)")
    code, lines = check(site)
    assert code == 1 and "no meta page is sound: no database in data.mdb can be read" in lines
    report = recover(site)
    assert "readings: 0 records kept" in report
    runs_and_alerts(site, minute_stream(SENSORS, BASE, 5))


@pytest.mark.slow
@pytest.mark.parametrize("garble", ["magic", "last page"])
def test_a_garbled_meta_page_is_refused_and_the_other_keeps_every_reading(
        make_site, garble: str) -> None:
    site = make_site()
    readings = filled_store(site.store_path)
    slot, psize = newest_meta(site.store_path), page_size(site.store_path)
    with open(site.store_path / "data.mdb", "r+b") as f:
        if garble == "magic":
            f.seek(slot * psize + HEADER_SIZE)
            f.write(b"\xff" * 8)
        else:
            f.seek(slot * psize + LAST_PAGE_AT)
            f.write(struct.pack(f"={'Q' if WORD == 8 else 'I'}", 2**31 - 1))

    why = "is not an LMDB meta page" if garble == "magic" else "has an impossible last page"
    refused_with_one_line(site, f"meta page {slot} {why}")
    code, lines = check(site)
    assert code == 1 and lines[0].startswith(f"meta page {slot} {why}"), lines
    recover(site)
    with site.open_store() as store:
        assert keys(list(stored_everything(store).values())) == keys(readings)
        with store.read() as view:
            assert view.journal_head() == len(readings)
    runs_and_alerts(site, minute_stream(SENSORS, BASE + MINUTES * 60, 5))


def garble_records(store: Path, readings: list[Reading]) -> None:
    """With raw LMDB: one reading's value cut short, the Detector's state not msgpack."""
    env = lmdb.open(str(store), max_dbs=16)
    try:
        with env.begin(write=True) as txn:
            victim = readings[100]
            txn.put(struct.pack(">HQ", int(victim.sensor), victim.time), b"short",
                    db=env.open_db(b"readings", txn=txn))
            txn.put(b"s:detector", b"\x93\x01", db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()


@pytest.mark.slow
def test_a_garbled_record_stops_the_service_once_and_recover_keeps_the_rest(make_site) -> None:
    site = make_site()
    readings = filled_store(site.store_path)
    garble_records(site.store_path, readings)

    line = refused_with_one_line(site)
    # The first actor to meet either damage names it; the service stops on the first.
    assert "cannot be decoded" in line or "record is not 27 bytes long" in line, line
    code, lines = check(site)
    assert code == 1 and len(lines) == 3, lines
    assert lines[0] == "readings: sensor 001 at 2026-03-01T15:50Z: the reading has 5 bytes, not 17"
    assert lines[1].startswith("meta: 's:detector': a record cannot be decoded")

    report = recover(site)
    assert "readings: 2999 records kept, 1 dropped (1 undecodable, 0 in damaged pages)" in report
    with site.open_store() as store:
        assert keys(list(stored_everything(store).values())) == keys(readings) - keys(
            [readings[100]])
        with store.read() as view:
            assert view.journal_head() == len(readings)
    # New readings get arrival numbers after the old ones and go out.
    runs_and_alerts(site, minute_stream(SENSORS, BASE + MINUTES * 60, 5))
    with site.open_store() as store, store.read() as view:
        assert view.journal_head() == len(readings) + 10


def zero_a_readings_page(store: Path) -> int:
    """Zero a leaf page of the readings (10-byte keys, 17-byte values); its record count."""
    psize = page_size(store)
    data = store / "data.mdb"
    raw = data.read_bytes()
    leaves = []
    for pgno in range(2, len(raw) // psize):
        page = raw[pgno * psize:(pgno + 1) * psize]
        _, _, flags, lower, _ = struct.unpack_from(f"={'Q' if WORD == 8 else 'I'}HHHH", page)
        if flags == P_LEAF and lower > HEADER_SIZE:
            (first,) = struct.unpack_from("=H", page, HEADER_SIZE)
            lo, hi, _, ksize = struct.unpack_from("=HHHH", page, first)
            if ksize == 10 and lo | hi << 16 == 17:
                leaves.append((pgno, (lower - HEADER_SIZE) // 2))
    pgno, count = leaves[len(leaves) // 2]
    with open(data, "r+b") as f:
        f.seek(pgno * psize)
        f.write(bytes(psize))
    return count


@pytest.mark.slow
def test_a_page_of_zeros_is_found_and_only_its_readings_are_lost(make_site) -> None:
    site = make_site()
    readings = filled_store(site.store_path)
    lost = zero_a_readings_page(site.store_path)

    code, lines = check(site)
    assert code == 1, lines
    assert any(line.startswith("readings: page ") and "is blank (zeros)" in line
               for line in lines), lines
    assert f"readings: {lost} of {len(readings)} records cannot be read" in lines
    report = recover(site)
    assert (f"readings: {len(readings) - lost} records kept, {lost} dropped "
            f"(0 undecodable, {lost} in damaged pages)") in report
    with site.open_store() as store:
        assert len(stored_everything(store)) == len(readings) - lost
        with store.read() as view:
            assert len(view.journal(0, len(readings) + 1)) == len(readings), "journal intact"


@pytest.mark.slow
def test_check_store_exit_codes_and_no_repair_beside_the_service(make_site, tmp_path) -> None:
    site = make_site()
    nothing = run_cli(site.config, "check-store")
    assert nothing.returncode == 2 and "no store at" in nothing.stderr
    assert run_cli(site.config, "check-store", "--bogus").returncode == 2
    filled_store(site.store_path)
    code, lines = check(site)
    assert code == 0 and lines == [f"store at {site.store_path}: sound ({2 * MINUTES * 2 + 3} "
                                   "records)"], lines

    site.start()
    for command in ("check-store", "recover-store"):
        busy = run_cli(site.config, command)
        assert busy.returncode == 2, busy.stdout + busy.stderr
        assert busy.stderr == (f"{command}: the service (pid {site.pid}) is using the store at "
                               f"{site.store_path}; stop it first (systemctl stop wdn-gateway)\n")
    assert lock_path(site.store_path).read_text() == f"{site.pid} service\n"
    assert site.stop() == 0
    assert check(site)[0] == 0
