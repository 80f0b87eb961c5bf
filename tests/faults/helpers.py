"""What every fault test shares: the service on real sockets, frames, hooks, /proc.

A :class:`Site` is one gateway under test: a store directory, a site file, the
RTU and upstream peers (``tests.harness.PeerServer``) and the service child
process, restartable on the same store. The helpers parse what the upstream got
(tolerating a frame cut short by a ``kill -9``), drop test-hook messages for the
running service (``supervisor.test_hooks``), and read a process's CPU time,
memory and file descriptors from ``/proc``.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.base import JOURNAL_CONSUMERS
from actors.test_hooks import CLOCK_OFFSET_FILE, hooks_dir
from core import frames, messages
from core.config import load_config
from core.types import EpochSeconds, Reading, SensorId
from storage.store import ReadView, Store
from tests.harness import TZ, PeerServer, Service, run_cli, send_all, wait_for, write_config

_hook_numbers = itertools.count(1)
STARTED = "supervisor: started"


def minute_stream(sensors: Sequence[str], start: int, minutes: int,
                  seconds: Sequence[int] = ()) -> list[Reading]:
    """Plausible readings, every sensor every minute, in time order (no two alike).

    ``seconds`` stamps each sensor that many seconds into its minute (an RTU
    polling its sensors one after the other); default ``:00``.
    """
    out = []
    for m in range(minutes):
        for i, sensor in enumerate(sensors):
            flow = round(40.0 + 10 * i + 5.0 * ((m * 7 + i) % 13) / 13, 2)
            pressure = round(4.0 + 0.01 * ((m * 3 + i) % 17), 3)
            t = start + m * 60 + (seconds[i] if seconds else 0)
            out.append(Reading(SensorId(sensor), EpochSeconds(t), flow, pressure, 0))
    return out


def encode_all(readings: Iterable[Reading]) -> list[bytes]:
    return [frames.encode(r, TZ) for r in readings]


def parse_frames(data: bytes) -> list[Any]:
    """Every complete outbound frame in ``data``, in order.

    A ``kill -9`` can cut a frame short; the next connection's first frame is then
    glued to it. No frame contains ``$`` except at its start, so the text after
    the last ``$`` of a line is the one frame that line can still hold.
    """
    out = []
    for line in data.split(b"\r\n"):
        if b"$" not in line:
            continue
        decoded = frames.decode(b"$" + line.rsplit(b"$", 1)[1], TZ)
        if not isinstance(decoded, frames.Reject):
            out.append(decoded)
    return out


def received(upstream: PeerServer) -> list[Any]:
    with upstream._lock:
        data = bytes(upstream.received)
    return parse_frames(data)


def reading_alerts(fs: Iterable[Any]) -> list[frames.AlertFrame]:
    """``$ALR`` frames of readings (silence alerts have neither value)."""
    return [f for f in fs if isinstance(f, frames.AlertFrame)
            and (f.flow is not None or f.pressure is not None)]


def silence_alerts(fs: Iterable[Any]) -> list[frames.AlertFrame]:
    return [f for f in fs if isinstance(f, frames.AlertFrame)
            and f.flow is None and f.pressure is None]


def distinct_by_seq(fs: Iterable[Any]) -> dict[int, Any]:
    """Frames by sequence number; a resent frame must be identical to its first send."""
    by_seq: dict[int, Any] = {}
    for f in fs:
        first = by_seq.setdefault(f.seq, f)
        assert first == f, f"sequence number {f.seq} reused for a different frame: {first} / {f}"
    return by_seq


@dataclass
class Site:
    """One gateway under test: store, site file, RTU and upstream peers, service."""

    tmp: Path
    sections: dict[str, dict[str, object]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    store_dir: Path | None = None
    rtu: PeerServer = field(default_factory=PeerServer)
    upstream: PeerServer = field(default_factory=PeerServer)
    service: Service | None = None

    def __post_init__(self) -> None:
        store = self.store_dir or self.tmp / "store.lmdb"
        sections = {"supervisor": {"test_hooks": True}, "train": {"min_days": 3650}}
        for name, values in self.sections.items():
            sections.setdefault(name, {}).update(values)
        self.config = write_config(self.tmp / "site.toml", serial_port=self.rtu.url,
                                   upstream_port=self.upstream.url, store=store, sections=sections)
        self.store_path = store
        self.hooks = hooks_dir(load_config(self.config))

    # -- the service -------------------------------------------------------------

    def start(self, *, wait: bool = True) -> Service:
        starts = self.log().count(STARTED)  # the log file is appended to across restarts
        self.service = Service(self.config, env=self.env).start()
        if wait:
            wait_for(lambda: self.log().count(STARTED) > starts or self.exited(),
                     timeout=30, what="the service to start")
            assert not self.exited(), self.log()
        return self.service

    @property
    def pid(self) -> int:
        assert self.service is not None and self.service.process is not None
        return self.service.process.pid

    def exited(self) -> bool:
        return self.service is not None and self.service.process.poll() is not None

    def log(self) -> str:
        return self.service.log() if self.service is not None else ""

    def kill(self) -> None:
        assert self.service is not None
        self.service.kill()

    def stop(self, timeout: float = 15.0) -> int:
        assert self.service is not None
        if self.exited():
            self.service._log.close()
            return self.service.process.returncode
        return self.service.terminate(timeout=timeout)

    def close(self) -> None:
        if self.service is not None and not self.exited():
            self.service.kill()
        self.rtu.close()
        self.upstream.close()

    # -- looking at it -------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """The RTU sends ``data`` (however slowly the gateway reads it)."""
        self.rtu.send(data)

    def frames(self) -> list[Any]:
        return received(self.upstream)

    def status(self) -> str:
        result = run_cli(self.config, "status")
        assert result.returncode == 0, result.stderr
        return result.stdout

    def open_store(self) -> Store:
        return Store(self.store_path, readonly=True)

    def send_to_actor(self, role: str, raw: bytes) -> None:
        """Test hook: the supervisor tells ``raw`` (an envelope, or junk) to ``role``."""
        self.hooks.mkdir(parents=True, exist_ok=True)
        n = next(_hook_numbers)
        tmp = self.hooks / f".{role}.{n}.tmp"
        tmp.write_bytes(raw)
        tmp.rename(self.hooks / f"{role}.{n}.msg")  # atomic: never read half-written

    def shift_clock(self, offset_s: float) -> None:
        """Test hook: the gateway's wall clock runs ``offset_s`` off from now on."""
        self.hooks.mkdir(parents=True, exist_ok=True)
        tmp = self.hooks / f".{CLOCK_OFFSET_FILE}.tmp"
        tmp.write_text(repr(float(offset_s)))
        tmp.rename(self.hooks / CLOCK_OFFSET_FILE)

    def crash(self, role: str, reason: str = "injected", hang_s: float = 0.0) -> None:
        self.send_to_actor(role, messages.encode(messages.Crash(reason, hang_s)))


def stored_everything(store: Store) -> dict[tuple[str, int], Reading]:
    with store.read() as view:
        return _stored(view)


def _stored(view: ReadView) -> dict[tuple[str, int], Reading]:
    return {(r.sensor, r.time): r for s in view.sensors() for r in view.readings(s)}


def assert_store_consistent(store: Store) -> None:
    """Journal and readings agree; every consumer is within the journal (one snapshot).

    The journal may have been trimmed (the Housekeeper): what is left runs
    without gaps to the head, and no trimmed arrival was still unconsumed.
    """
    with store.read() as view:
        head = view.journal_head()
        journal = view.journal(0, head + 10)
        stored = _stored(view)
        offsets = {consumer: view.offset(consumer) for consumer in JOURNAL_CONSUMERS}
    first = journal[0].arrival if journal else head + 1
    assert [j.arrival for j in journal] == list(range(first, head + 1)), "journal has gaps"
    keys = [(j.reading.sensor, j.reading.time) for j in journal]
    assert len(set(keys)) == len(keys), "a reading arrived twice"
    assert set(keys) <= set(stored), "a journal entry is not among the readings"
    assert len(stored) == head, "readings and arrivals differ in number"
    for consumer, offset in offsets.items():
        assert first - 1 <= offset <= head, consumer


# -- /proc -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, kind: str = "VmRSS") -> float:
    """Resident memory in MB: ``VmRSS`` (all), ``RssAnon`` (the heap: what leaks),
    ``RssFile`` (mapped files: LMDB's pages, which grow with the store)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {kind} for {pid}")


def write_bytes(pid: int) -> int:
    """Bytes the process has caused to be written to the disk (``/proc/<pid>/io``):
    what wears an SD card, page cache written back and fsyncs included."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise ValueError(f"no write_bytes for {pid}")


def mapped_store_mb(pid: int) -> float:
    """Resident pages of the process's mappings of an LMDB data file, in MB.

    They are page cache the service reads the store through (the Housekeeper
    drops them from the process every few seconds), not memory it holds.
    """
    total_kb, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not line.startswith(head[0] + ":"):
            inside = line.rstrip().endswith("/data.mdb")  # a mapping's first line
        elif inside and line.startswith("Rss:"):
            total_kb += int(head[1])
    return total_kb / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


# -- a peer that can vanish and come back on the same port ------------------------------


class VanishingPeer(PeerServer):
    """A :class:`PeerServer` whose port can disappear (connection refused) and return."""

    def vanish(self) -> None:
        self._closed = True
        self.drop()
        self.listener.close()
        self._thread.join(timeout=2)

    def reappear(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(1)
        self.listener, self._closed = listener, False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()


def flapping_port(port: int, seconds: float) -> int:
    """Serve ``port`` for ``seconds``, closing every connection at once; how many came."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    listener.settimeout(0.05)
    accepted = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted += 1
            conn.close()
    finally:
        listener.close()
    return accepted


class Streamer(threading.Thread):
    """The RTU side: streams ``lines`` in small chunks to whatever connection is up.

    On each new connection it continues from ``resume()`` when given (an RTU that
    re-sends what the gateway may not have got), else from where it was.
    ``pause()``/``go()`` hold and release the stream.
    """

    def __init__(self, rtu: PeerServer, lines: Sequence[bytes], *, chunk: int = 20,
                 interval_s: float = 0.02, resume: Any = None) -> None:
        super().__init__(daemon=True)
        self.rtu, self.lines, self.chunk, self.interval_s = rtu, lines, chunk, interval_s
        self.resume = resume
        self.index = 0
        self.connections = 0
        self._halt = threading.Event()
        self._go = threading.Event()
        self._go.set()

    def pause(self) -> None:
        self._go.clear()

    def go(self) -> None:
        self._go.set()

    def done(self) -> bool:
        return self.index >= len(self.lines)

    def stop(self) -> None:
        self._halt.set()
        self._go.set()
        self.join(timeout=5)

    def run(self) -> None:
        current = None
        while not self._halt.is_set():
            self._go.wait()
            conn = self.rtu.conn
            if conn is None:
                time.sleep(0.01)
                continue
            if conn is not current:
                current = conn
                self.connections += 1
                if self.resume is not None:
                    self.index = self.resume()
            if self.done():
                time.sleep(0.02)
                continue
            try:
                send_all(conn, b"".join(self.lines[self.index:self.index + self.chunk]))
            except OSError:
                time.sleep(0.01)
                continue
            self.index += self.chunk
            time.sleep(self.interval_s)
