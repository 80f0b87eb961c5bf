"""Test harness: the real service as a subprocess, with real sockets as its ports.

The gateway connects out to both ports (pyserial ``socket://`` URLs), so the test
plays the RTU (it serves readings) and the upstream (it collects frames).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from core import frames
from storage.store import ReadView, Store

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Asia/Seoul")


def send_all(conn: socket.socket, data: bytes) -> None:
    """Send all of ``data``, however long the gateway holds back reading (backpressure).

    Peer connections have a short timeout (for their receiving loop): ``sendall``
    would give up after it with part of a line sent, so send piecewise. Raises
    ``OSError`` when the connection dies.
    """
    view = memoryview(data)
    while view:
        try:
            view = view[conn.send(view):]
        except TimeoutError:
            continue


class PeerServer:
    """A TCP server that accepts one connection at a time (the gateway's port)."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.received = bytearray()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._closed:
            try:
                readable, _, _ = select.select([self.listener], [], [], 0.1)
                if not readable:
                    continue
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.conn = conn
            conn.settimeout(0.1)
            while not self._closed:
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                with self._lock:
                    self.received += chunk
            with self._lock:
                if self.conn is conn:
                    self.conn = None
            conn.close()

    def wait_connected(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.conn is not None:
                return
            time.sleep(0.02)
        raise TimeoutError("the gateway did not connect")

    def send(self, data: bytes) -> None:
        self.wait_connected()
        assert self.conn is not None
        send_all(self.conn, data)

    def drop(self) -> None:
        """Close the current connection (the peer goes away)."""
        with self._lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def lines(self) -> list[bytes]:
        with self._lock:
            data = bytes(self.received)
        return [line for line in data.split(b"\r\n") if line]

    def close(self) -> None:
        self._closed = True
        self.drop()
        self.listener.close()


class StalledPeer:
    """An upstream that accepts the gateway's connection and reads nothing until
    :meth:`drain`: a peer that hung, a modem whose far side went away silently.

    Its receive buffer is small, so the gateway's writes back up after a few
    tens of kilobytes.
    """

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.received = bytearray()
        self._reading = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        try:
            self.conn, _ = self.listener.accept()
        except OSError:
            return
        self._reading.wait()
        self.conn.settimeout(0.1)
        while not self._closed.is_set():
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.received += chunk

    def drain(self) -> None:
        """Start reading (and go on until closed)."""
        self._reading.set()

    def close(self) -> None:
        self._closed.set()
        self._reading.set()
        self.listener.close()  # ends a wait in accept
        self._thread.join(timeout=2)
        if self.conn is not None:
            self.conn.close()


def decoded_frames(lines: Iterable[bytes]) -> list[object]:
    return [frames.decode(line, TZ) for line in lines]


def read(store: Store, what: Callable[[ReadView], T]) -> T:
    """``what`` read in one read transaction of ``store``: a poll's predicate
    (``wait_for(lambda: read(store, lambda v: v.offset("detector")) == 5)``),
    where a ``with store.read()`` block cannot go."""
    with store.read() as view:
        return what(view)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def write_config(path: Path, *, serial_port: str, upstream_port: str, store: Path,
                 extra: str = "", initial_data: str = "",
                 sections: dict[str, dict[str, object]] | None = None) -> Path:
    """A site file for tests; ``sections`` adds or overrides keys per section.

    ``extra`` is appended verbatim (for sections the base file does not have).
    """
    document: dict[str, dict[str, object]] = {
        "site": {"name": "test", "timezone": "Asia/Seoul"},
        "serial": {"port": serial_port, "reconnect_initial_s": 0.1, "reconnect_max_s": 1.0},
        "upstream": {"port": upstream_port},
        # No disk reserved by default: a suite of services would allocate gigabytes.
        "storage": {"path": str(store), "reserve_mb": 0},
        "criteria": {"initial_data": initial_data},
    }
    for section, values in (sections or {}).items():
        document.setdefault(section, {}).update(values)
    text = "".join(
        f"[{section}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in values.items()) + "\n"
        for section, values in document.items()
    )
    path.write_text(text + extra + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Service:
    """The gateway as a child process."""

    config: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> Service:
        self.log_path = self.config.with_suffix(".log")
        self._log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), "--config", str(self.config),
             "--log-level", "INFO", *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )
        return self

    def log(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._log.close()


def run_cli(config: Path, *args: str, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "supervisor.py"), "--config", str(config), *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout,
    )
