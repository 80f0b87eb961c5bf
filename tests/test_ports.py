"""open_port and the sim:// pyserial handler: real pyserial reads, pacing, timeouts, close;
write_lines on a tty (pty), a socket and loop:// whose far end stops taking bytes."""

from __future__ import annotations

import mmap
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import serial
from hypothesis import example, given, settings as hyp_settings, strategies as st

from core import frames
from core.simulator import Simulator, SimulatorSettings
from core.types import Reading
from ports import PortError, Written, open_port, write_lines
from ports.disk import reserve_file
from ports.memory import limit_malloc_arenas, release_file_mapping, release_free_heap
from tests.harness import StalledPeer, wait_for

TZ = ZoneInfo("Asia/Seoul")
START = 1_735_657_200  # 2025-01-01 00:00 +09:00
FAST = "sim://?sensors=3&speed=0&seed=4&start=20250101&faults=all&realtime_cap=0"


@pytest.fixture
def port_factory() -> Iterator:
    opened: list[serial.SerialBase] = []

    def make(url: str, **kwargs: object) -> serial.SerialBase:
        port = open_port(url, **kwargs)  # type: ignore[arg-type]
        opened.append(port)
        return port

    yield make
    for port in opened:
        port.close()


def read_for(port: serial.SerialBase, seconds: float) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data += port.read(4096)
    return bytes(data)


def future_start() -> str:
    """A start two days ahead (Asia/Seoul): with realtime_cap nothing is due yet."""
    return time.strftime("%Y%m%d", time.gmtime(time.time() + 2 * 86400))


# -- sim:// through open_port ------------------------------------------------------------------


def test_sim_port_serves_the_simulator_lines(port_factory) -> None:
    port = port_factory(FAST, timeout=1.0)
    assert isinstance(port, serial.SerialBase) and port.is_open
    expected = b"".join(
        Simulator(SimulatorSettings.from_url(FAST)).lines_for_minutes(START, 2 * 1440)
    )
    data = port.read(len(expected))
    assert data == expected
    splitter = frames.LineSplitter()
    decoded = [frames.decode_reading(line, TZ) for line in splitter.feed(data)]
    readings = [d for d in decoded if isinstance(d, Reading)]
    assert len(readings) >= 3 * 2 * 1440 - 100
    assert (readings[0].sensor, readings[0].time, readings[0].status) == ("001", START, 0)


@hyp_settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=30))
@example(sizes=[5000] * 10)  # past the 300 minutes first compared against (a fresh-clone failure)
def test_the_stream_does_not_depend_on_read_sizes(sizes: list[int]) -> None:
    port = open_port(FAST, timeout=1.0)
    try:
        data = b"".join(port.read(n) for n in sizes)
    finally:
        port.close()
    wanted = sum(sizes)
    expected = b""
    minutes = 300
    # Enough minutes to cover every byte read: a minute of three sensors is some
    # 130 bytes, so 30 reads of up to 5,000 bytes can run past 300 minutes.
    while len(expected) < wanted:
        simulator = Simulator(SimulatorSettings.from_url(FAST))
        expected = b"".join(simulator.lines_for_minutes(START, minutes))
        minutes *= 2
    assert data == expected[:wanted]


def test_in_waiting_reports_ready_bytes(port_factory) -> None:
    port = port_factory(FAST, timeout=0)
    ready = port.in_waiting
    assert ready > 1000
    assert len(port.read(ready)) == ready


def test_speed_paces_minutes_in_real_time(port_factory) -> None:
    port = port_factory("sim://?sensors=2&speed=600&start=20250101&realtime_cap=0", timeout=0)
    first = port.read(100_000)
    assert first.count(b"\n") == 2  # minute 0 only, right at open
    time.sleep(0.2)
    lines = (first + port.read(100_000)).count(b"\n")
    # 0.2 s at 600 minutes per second is about 120 minutes; allow a slow, busy machine.
    assert 2 * 100 <= lines <= 2 * 600


def test_realtime_cap_never_emits_the_future(port_factory) -> None:
    now = time.time()
    start = time.strftime("%Y%m%d%H%M", time.gmtime(now - 10 * 60))
    port = port_factory(f"sim://?sensors=2&speed=0&start={start}&tz=UTC", timeout=0.3)
    data = read_for(port, 0.5)
    lines = frames.LineSplitter().feed(data)
    readings = [frames.decode_reading(line, ZoneInfo("UTC")) for line in lines]
    times = {r.time for r in readings if isinstance(r, Reading)}
    assert 10 <= len(times) <= 12  # the past ten minutes and the current one, no more
    assert max(times) <= time.time()


def test_timeout_zero_returns_at_once_and_float_timeout_waits(port_factory) -> None:
    port = port_factory(f"sim://?start={future_start()}", timeout=0)
    started = time.monotonic()
    assert port.read(10) == b""
    assert time.monotonic() - started < 0.1
    port.timeout = 0.3
    started = time.monotonic()
    assert port.read(10) == b""
    assert 0.25 <= time.monotonic() - started < 1.5


def test_close_unblocks_a_blocked_read(port_factory) -> None:
    port = port_factory(f"sim://?start={future_start()}", timeout=None)
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(port.read(100)))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()  # blocked: nothing is due
    port.close()
    reader.join(timeout=2.0)
    assert not reader.is_alive() and result == [b""]
    with pytest.raises(serial.PortNotOpenError):
        port.read(1)


def test_cancel_read_unblocks_a_blocked_read(port_factory) -> None:
    port = port_factory(f"sim://?start={future_start()}", timeout=None)
    reader = threading.Thread(target=port.read, args=(100,))
    reader.start()
    time.sleep(0.1)
    port.cancel_read()
    reader.join(timeout=2.0)
    assert not reader.is_alive()


def test_writes_are_accepted_and_discarded(port_factory) -> None:
    port = port_factory(FAST, timeout=1.0)
    assert port.write(b"$ACK,1*00\r\n") == 11
    port.flush()
    assert port.read(4).startswith(b"$WDN")


def test_reset_input_buffer_drops_unread_lines(port_factory) -> None:
    port = port_factory(FAST, timeout=1.0)
    assert port.in_waiting > 0
    port.reset_input_buffer()
    first = frames.decode_reading(port.read(200).split(b"\r\n")[0], TZ)
    assert isinstance(first, Reading)  # a whole line: the cut falls between minutes
    assert first.time >= START + 100 * 60  # what was generated before the reset is gone


# -- open_port ------------------------------------------------------------------------------------


def test_loop_url_works_through_open_port(port_factory) -> None:
    port = port_factory("loop://", timeout=0.5)
    port.write(b"$ACK,7*00\r\n")
    assert port.read(11) == b"$ACK,7*00\r\n"


def test_open_port_passes_baudrate_and_timeout(port_factory) -> None:
    port = port_factory("loop://", baudrate=19200, timeout=0.05)
    assert (port.baudrate, port.timeout) == (19200, 0.05)


def test_missing_device_is_a_port_error(tmp_path) -> None:
    missing = str(tmp_path / "ttyUSB9")
    with pytest.raises(PortError) as info:
        open_port(missing)
    assert info.value.url == missing
    assert isinstance(info.value.__cause__, (serial.SerialException, OSError))
    assert missing in str(info.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [("sim://?sensors=0", "sensors"), ("sim://?colour=red", "colour"),
     ("nosuch://x", "nosuch"), ("", "no port")],
)
def test_bad_urls_are_port_errors(url: str, reason: str) -> None:
    with pytest.raises(PortError, match=reason):
        open_port(url)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_goes_back_to_the_os() -> None:
    def burst() -> None:  # in another thread: glibc gives it an arena of its own
        junk = [bytes(200) for _ in range(300_000)]
        del junk

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()
    assert release_free_heap() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_takes_the_arena_limit() -> None:
    assert limit_malloc_arenas(2) is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps is Linux's")
def test_a_read_only_file_mapping_leaves_rss_and_reads_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    with data.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[::4096]) == 0  # every page touched: resident
        assert release_file_mapping(data) == len(mapped)
        assert mapped[:256] == bytes(range(256))  # read back from the page cache
    assert release_file_mapping(data) == 0  # no longer mapped
    assert release_file_mapping(tmp_path / "absent") == 0


def test_reserving_disk_lengthens_a_file_and_never_shortens_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"kept")
    reserve_file(data, 1 << 20)
    assert data.stat().st_size == 1 << 20 and data.read_bytes()[:4] == b"kept"
    reserve_file(data, 1024)
    assert data.stat().st_size == 1 << 20
    with pytest.raises(OSError):
        reserve_file(tmp_path / "absent", 1024)


# -- write_lines: a far end that stops taking bytes ----------------------------------------

LINES = [b"$ALR,%d,001,20250101000000,1.500,4.000,00,00*00\r\n" % i for i in range(1, 4001)]


def _read_all(fd: int, stop: threading.Event, into: bytearray) -> None:
    while not stop.is_set():
        try:
            into += os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            return


def test_write_lines_on_a_tty_stops_where_the_line_stalls_and_goes_on_from_there(
        port_factory) -> None:
    master, slave = os.openpty()
    try:
        port = port_factory(os.ttyname(slave), for_write_lines=True)
        started = time.monotonic()
        first = write_lines(port, LINES, stall_s=0.3)  # nobody reads the master side
        assert first.stalled and 0 < first.lines < len(LINES)
        assert 0.3 <= time.monotonic() - started < 5
        os.set_blocking(master, False)
        got, stop = bytearray(), threading.Event()
        reader = threading.Thread(target=_read_all, args=(master, stop, got), daemon=True)
        reader.start()
        rest = write_lines(port, LINES[first.lines:], stall_s=2.0)
        assert rest == Written(len(LINES) - first.lines, cut=False, stalled=False)
        whole = b"".join(LINES[:first.lines])
        wait_for(lambda: len(got) >= len(b"".join(LINES)), timeout=10, what="every byte")
        stop.set()
        reader.join()
        assert got.startswith(whole)
        cut = bytes(got[len(whole):len(got) - len(b"".join(LINES[first.lines:]))])
        assert bool(cut) == first.cut and LINES[first.lines].startswith(cut)
        assert got.endswith(b"".join(LINES[first.lines:]))
    finally:
        os.close(master)
        os.close(slave)


def test_write_lines_on_a_socket_keeps_its_buffer_small_and_stops_at_the_deadline(
        port_factory) -> None:
    peer = StalledPeer()
    try:
        port = port_factory(peer.url, for_write_lines=True)
        stalled = write_lines(port, LINES, stall_s=0.3)
        assert stalled.stalled and len(b"".join(LINES[:stalled.lines])) < 128 * 1024
        peer.drain()
        rest = LINES[stalled.lines:]
        hurried = write_lines(port, rest, stall_s=2.0, deadline=0.0)
        assert 1 <= hurried.lines < len(rest) and not hurried.stalled and not hurried.cut
        assert write_lines(port, rest[hurried.lines:], stall_s=2.0).lines == \
            len(rest) - hurried.lines
    finally:
        peer.close()


def test_write_lines_on_a_port_without_a_descriptor_writes_everything(port_factory) -> None:
    port = port_factory("loop://", for_write_lines=True)
    assert write_lines(port, LINES[:3], stall_s=0.1) == Written(3, cut=False, stalled=False)
    assert port.read(len(b"".join(LINES[:3]))) == b"".join(LINES[:3])
