"""Storage limits: the LMDB map fills, and the disk itself fills.

The map starts at 1 MB and must grow under load without losing a reading. The
disk is a small tmpfs mounted for the test (root only; skipped otherwise). Filled
by another program, it does not stop a store with reserved space
(``storage.reserve_mb``). When the store itself needs more than the disk has,
the log and ``status`` say so clearly, the reader reads on and holds what it
read in memory, the actors the full store stopped are restarted with growing delays; when
space returns (the tmpfs is enlarged) everything is stored and alerted. If space
never returns the restart intensity stops the service in order, non-zero, and
the store is intact for the next start.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from actors.serial_reader import HOLD_MAX

from tests.faults.helpers import (
    assert_store_consistent, encode_all, minute_stream, reading_alerts, stored_everything,
)
from tests.harness import TZ, wait_for

BASE = int(datetime(2026, 6, 1, 0, 0, tzinfo=TZ).timestamp())
SENSORS = ("001", "002")


def alerted(site) -> int:
    return len({(a.sensor, a.time) for a in reading_alerts(site.frames())})


@pytest.mark.slow
def test_the_map_grows_under_load_and_nothing_is_lost(make_site):
    site = make_site(sections={"storage": {"map_size_mb": 1, "map_max_mb": 64}})
    readings = minute_stream(SENSORS, BASE, 6000)
    site.start()
    site.send(b"".join(encode_all(readings)))
    wait_for(lambda: alerted(site) == len(readings), timeout=60, what="every $ALR")
    assert site.stop() == 0
    log = site.log()
    assert "map grown from 1 to 2 MB" in log and "map grown from 2 to 4 MB" in log, log
    assert "restarting" not in log and "Traceback" not in log
    with site.open_store() as store:
        assert_store_consistent(store)
        assert len(stored_everything(store)) == len(readings)
        with store.read() as view:
            assert view.offset("detector") == len(readings)


@dataclass(frozen=True)
class SmallDisk:
    """A mounted 2 MB tmpfs."""

    path: Path

    def resize(self, mb: int) -> None:
        """Give it more room: the operator freed space."""
        subprocess.run(["mount", "-o", f"remount,size={mb}m", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[SmallDisk]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(disk)
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_reported_and_caught_up_on_when_space_returns(small_disk, make_site):
    site = make_site(store_dir=small_disk.path / "store.lmdb",
                     sections={"storage": {"map_size_mb": 1}})
    readings = minute_stream(SENSORS, BASE, 6000)
    site.start()
    first = readings[:300]
    site.send(b"".join(encode_all(first)))
    wait_for(lambda: alerted(site) == len(first), timeout=30, what="the first $ALR")
    # Another program fills the disk: the next readings are the first to need it,
    # so the reader meets it (the Detector's outbox would otherwise, at random).
    fill(small_disk.path)
    site.send(b"".join(encode_all(readings[len(first):])))
    wait_for(lambda: "store full" in site.log(), timeout=30, what="the store to fill")
    status = site.status()
    assert "DISK FULL" in status, status
    log = site.log()
    assert "disk full" in log and "free disk space" in log
    assert "restart intensity" not in log and not site.exited()
    with site.open_store() as store, store.read() as view:
        held_back = view.journal_head()
    assert held_back < len(readings), "the disk was meant to fill up"

    time.sleep(1.0)  # the reader reads on into memory: a serial line does not wait
    small_disk.resize(64)  # space returns
    wait_for(lambda: alerted(site) == len(readings), timeout=60, what="the catch-up")
    recovered = re.search(r"store writable again after \d+ s: (\d+) held reading", site.log())
    assert recovered, site.log()
    assert int(recovered.group(1)) == len(readings) - held_back, "the reader must read on"
    assert "DISK FULL" not in site.status()
    assert site.stop() == 0
    log = site.log()
    assert log.count("store full, ") <= 2, "the full store must not flood the log"
    assert "restarting transmitter" not in log, "sending does not need the store to grow"
    with site.open_store() as store:
        assert_store_consistent(store)
        assert set(stored_everything(store)) == {(r.sensor, r.time) for r in readings}
        with store.read() as view:
            assert view.offset("detector") == view.offset("night_flow") == len(readings)


def fill(disk: Path) -> Path:
    """Another program fills the disk: a file grows until the disk refuses more."""
    junk = disk / "junk.log"
    with open(junk, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    return junk


@pytest.mark.slow
def test_a_disk_filled_by_others_does_not_stop_a_store_with_reserved_space(
        small_disk, make_site):
    small_disk.resize(8)
    site = make_site(store_dir=small_disk.path / "store.lmdb",
                     sections={"storage": {"map_size_mb": 4, "reserve_mb": 4}})
    site.start()
    assert "4 MB of disk reserved" in site.log()
    fill(small_disk.path)
    assert shutil.disk_usage(small_disk.path).free < 65536, "the disk should be full"
    readings = minute_stream(SENSORS, BASE, 1200)
    site.send(b"".join(encode_all(readings)))
    wait_for(lambda: alerted(site) == len(readings), timeout=60, what="every $ALR")
    status = site.status()
    assert "DISK FULL: the store writes into its reserve" in status, status
    assert site.stop() == 0
    log = site.log()
    assert "store full" not in log and "disk full" not in log, log
    with site.open_store() as store:
        assert_store_consistent(store)
        assert set(stored_everything(store)) == {(r.sensor, r.time) for r in readings}


@pytest.mark.slow
def test_a_disk_that_stays_full_stops_the_service_in_order_and_the_store_survives(
        small_disk, make_site):
    site = make_site(store_dir=small_disk.path / "store.lmdb", sections={
        "storage": {"map_size_mb": 1}, "supervisor": {"restart_max": 2},
    })
    # More readings than the reader holds in memory for a full store.
    readings = minute_stream(SENSORS, BASE, HOLD_MAX // len(SENSORS) + 1000)
    first = readings[:300]
    site.start()
    site.send(b"".join(encode_all(first)))
    wait_for(lambda: alerted(site) == len(first), timeout=30, what="the first $ALR")
    fill(small_disk.path)  # and nobody frees it: the reader meets the full disk
    site.send(b"".join(encode_all(readings[len(first):])))
    wait_for(site.exited, timeout=60, what="the service to give up")
    assert site.service.process.returncode == 1
    log = site.log()
    assert "restart intensity exceeded" in log and "StoreFullError" in log and "disk full" in log
    # The reader stops once its hold is full; restarted, it goes on with what it
    # held (a fresh one would have too little left on the line to stop again).
    held = [int(n) for n in re.findall(r"(\d+) readings held in memory, the most it holds", log)]
    assert len(held) >= 2 and min(held) >= HOLD_MAX, log[-3000:]
    assert "restarting serial_reader" in log
    assert "stopped (exit 1)" in log and "actors still running" not in log

    small_disk.resize(64)
    site.start()  # as systemd would, once space is freed: the store opens and catches up
    with site.open_store() as store, store.read() as view:
        head = view.journal_head()
    wait_for(lambda: alerted(site) >= head, timeout=30, what="the catch-up after the restart")
    assert site.stop() == 0
    with site.open_store() as store:
        assert_store_consistent(store)
        with store.read() as view:
            assert view.offset("detector") == view.offset("night_flow") == view.journal_head()
