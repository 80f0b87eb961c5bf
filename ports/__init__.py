"""pyserial glue: open any port the configuration names, with one named error.

A port is a device path (``/dev/ttyUSB0``), any pyserial URL (``socket://host:port``,
``loop://``, ``rfc2217://...``) or the built-in simulator (``sim://?...``, served by
:mod:`ports.protocol_sim`). Whatever goes wrong while opening surfaces as
:class:`PortError`, with pyserial's or the OS's exception chained, so callers
(the SerialReader, the Transmitter) catch one type and retry.

Writing lines to a far end that may stop taking them (:func:`write_lines`) is
here too: pyserial's own ``write_timeout`` is a deadline for the whole write, so
a slow line that drains would trip it, and its wait spins on a full buffer.
"""

from __future__ import annotations

import importlib
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import serial

__all__ = ["Drain", "PortError", "Written", "open_port", "write_lines"]

_HANDLER_PACKAGE = "ports"
_registered = False
_register_lock = threading.Lock()


class PortError(Exception):
    """A port could not be opened: ``url`` is what was asked, ``reason`` why not."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot open {url!r}: {reason}")
        self.url = url
        self.reason = reason


def _register_handlers() -> None:
    """Let pyserial find ``ports.protocol_<scheme>`` (``sim://``), once per process."""
    global _registered
    if _registered:
        return
    with _register_lock:
        if _HANDLER_PACKAGE not in serial.protocol_handler_packages:
            serial.protocol_handler_packages.append(_HANDLER_PACKAGE)
        # pyserial swallows an ImportError in a handler module as "protocol not known";
        # importing it here makes a broken handler fail loudly instead.
        importlib.import_module(f"{_HANDLER_PACKAGE}.protocol_sim")
        _registered = True


def open_port(url: str, baudrate: int = 9600, timeout: float | None = 0.2, *,
              for_write_lines: bool = False) -> serial.SerialBase:
    """Open ``url`` (a pyserial URL or a device path), ready to read and write.

    ``timeout`` is the read timeout in seconds (``None`` blocks, ``0`` never
    waits). ``for_write_lines`` prepares the port for :func:`write_lines`: a
    device or socket then writes what fits without waiting, and a socket's send
    buffer is kept small. Raises :class:`PortError` when the port cannot be
    opened or the URL is not understood.
    """
    _register_handlers()
    if not url:
        raise PortError(url, "no port given")
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        if for_write_lines and _fileno(port) is not None:
            port.write_timeout = 0  # write what fits; write_lines waits for room itself
            _limit_send_buffer(port)
        return port
    except (serial.SerialException, OSError, ValueError) as exc:
        # ValueError: pyserial's "protocol not known" and out-of-range settings.
        raise PortError(url, str(exc) or type(exc).__name__) from exc


class Drain:
    """Reads a port in chunks, without a busy loop while the line is quiet.

    Waiting is a blocking one-byte read (``idle_timeout``, also how fast a stop
    is noticed); once bytes flow the port is drained without waiting, up to
    ``chunk`` bytes a read, because pyserial's socket handler reports only
    whether *some* data is waiting (``in_waiting`` is 0 or 1): reading what it
    reports takes a flood one byte at a time.
    """

    def __init__(self, port: Any, idle_timeout: float, chunk: int = 65_536) -> None:
        self._port = port
        self._idle_timeout = idle_timeout
        self._chunk = chunk
        self._draining = False

    def read(self) -> bytes:
        """The next bytes; empty after ``idle_timeout`` without any, or when drained."""
        port = self._port
        data = port.read(self._chunk if self._draining else 1)
        if data and not self._draining:
            port.timeout, self._draining = 0, True
        elif not data and self._draining:
            port.timeout, self._draining = self._idle_timeout, False
        return data


# What a socket may hold that the far end has not taken. Linux grows a send buffer
# to 4 MB: some 60,000 frames counted as sent (the offset moves past them) that a
# dropped connection loses without ack, and that a stalled peer hides for minutes.
# The kernel doubles the figure.
SEND_BUFFER_BYTES = 16_384
# The most handed to one write call: pyserial copies what is left on every call.
_WRITE_PIECE = 65_536


@dataclass(frozen=True, slots=True)
class Written:
    """What :func:`write_lines` achieved."""

    lines: int  # how many of the lines went out whole, in order
    cut: bool  # the line after them went out in part: the far end holds a broken line
    stalled: bool  # the far end took nothing for ``stall_s``


def write_lines(port: Any, lines: Sequence[bytes], *, stall_s: float,
                deadline: float = float("inf")) -> Written:
    """Write ``lines`` in order while the far end keeps taking them.

    Gives up (``stalled``) when the port takes nothing for ``stall_s`` seconds:
    a peer that stopped reading, a line held by flow control. A slow line that
    drains never stalls, however long it takes. After ``deadline``
    (``time.monotonic()``) it stops at the next line's start, so that its caller
    answers its messages (the first line is always tried). A port not opened ``for_write_lines`` (``loop://``,
    the simulator, standard output) takes everything in one write. Errors of
    the port itself (a closed connection) are raised.
    """
    fd = _fileno(port) if getattr(port, "write_timeout", None) == 0 else None
    if fd is None:
        port.write(b"".join(lines))
        return Written(len(lines), False, False)
    ends, total = [], 0
    for line in lines:
        total += len(line)
        ends.append(total)
    data = b"".join(lines)
    room = select.poll()
    room.register(fd, select.POLLOUT)
    written = whole = start = 0  # start: where line ``whole`` begins
    while written < total:
        end = written + _WRITE_PIECE
        if time.monotonic() >= deadline:
            if whole and written == start:
                break
            end = ends[whole]  # finish the line begun, then stop
        if not room.poll(stall_s * 1000):
            return Written(whole, written > start, True)
        written += port.write(data[written:end]) or 0
        while whole < len(ends) and ends[whole] <= written:
            start = ends[whole]
            whole += 1
    return Written(whole, False, False)


def _fileno(port: Any) -> int | None:
    try:
        return int(port.fileno())
    except (AttributeError, OSError, ValueError, serial.SerialException):
        return None


def _limit_send_buffer(port: Any) -> None:
    fd = _fileno(port)
    if fd is None:
        return
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return  # not a socket: a device has its own (small) buffer
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    except OSError:
        pass
    finally:
        sock.detach()  # the descriptor stays the port's
