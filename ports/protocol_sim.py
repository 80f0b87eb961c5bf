"""pyserial URL handler for ``sim://``: the built-in simulator as a serial port.

pyserial imports ``<package>.protocol_<scheme>`` for every package in
``serial.protocol_handler_packages``; :func:`ports.open_port` adds ``ports``, so
``serial.serial_for_url("sim://?sensors=3&speed=600")`` lands here (parameters:
:meth:`core.simulator.SimulatorSettings.from_url`).

Pacing: minute ``k`` after ``start`` becomes readable ``k / speed`` seconds after
``open()`` (``speed=0``: as fast as the reader reads). With ``realtime_cap`` a
minute is also held back until the wall clock has reached it, so once the
simulation catches up with the present it runs at one minute per real minute,
as a real RTU does. Lines are generated a batch of minutes at a time into a
buffer, never byte by byte, and only as far as the reader asks, so a high speed
costs nothing while nobody reads.

Threads: one thread may block in :meth:`Serial.read` while another calls
:meth:`Serial.close` (or :meth:`Serial.cancel_read`): the read returns what it
has so far. Writes are accepted and discarded (an RTU that ignores commands).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from typing import Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException, to_bytes

from core.simulator import Simulator, SimulatorSettings

log = logging.getLogger(__name__)

# Most minutes generated in one go: bounds the work done while holding the lock
# (a concurrent close() waits for it) and the memory of the buffer.
BATCH_MINUTES = 240
# in_waiting reports up to this much ready data (it generates what is due up to it).
READY_BYTES = 65536
# Longest single wait: re-checks the wall clock (it may be stepped) and the deadline.
MAX_WAIT_S = 1.0
_UNBOUNDED = sys.maxsize


class Serial(SerialBase):
    """The ``sim://`` port: reads simulator lines, discards writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self._simulator: Simulator | None = None
        self._next_minute = 0  # index (from the simulator's start) of the next minute to generate
        self._opened_at = 0.0  # time.monotonic() at open
        self._cancelled = False
        super().__init__(*args, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        settings = self.from_url(self._port)
        simulator = Simulator(settings)
        with self._cond:
            self._simulator = simulator
            self._buffer.clear()
            self._next_minute = 0
            self._cancelled = False
            self._opened_at = time.monotonic()
            self.is_open = True
        log.debug("sim:// open: %s, start %d", settings, simulator.start)

    def close(self) -> None:
        with self._cond:
            self.is_open = False
            self._buffer.clear()
            self._cond.notify_all()  # a blocked read returns

    def from_url(self, url: str) -> SimulatorSettings:
        """The simulator settings of a ``sim://`` URL (a :class:`SerialException` if bad)."""
        try:
            return SimulatorSettings.from_url(url)
        except ValueError as exc:
            raise SerialException(f"bad simulator URL {url!r}: {exc}") from exc

    def _reconfigure_port(self) -> None:
        """Baud rate, parity and the like mean nothing to the simulator."""

    # -- reading -----------------------------------------------------------------------

    @property
    def in_waiting(self) -> int:
        """Bytes readable now without waiting (up to ``READY_BYTES`` are prepared)."""
        with self._cond:
            if not self.is_open:
                raise PortNotOpenError()
            self._generate(READY_BYTES)
            return len(self._buffer)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes: blocks for all of them when ``timeout`` is None,
        returns what is ready when it is 0, else waits at most ``timeout`` seconds."""
        if not self.is_open:
            raise PortNotOpenError()
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        data = bytearray()
        with self._cond:
            while self.is_open:
                self._generate(size - len(data))
                take = min(size - len(data), len(self._buffer))
                if take:
                    data += self._buffer[:take]
                    del self._buffer[:take]
                if len(data) >= size or self._cancelled:
                    break
                wait = self._until_next_minute()
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left)
                self._cond.wait(wait)
            self._cancelled = False
        return bytes(data)

    def cancel_read(self) -> None:
        """Make a blocked (or the next) read return what it has."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def reset_input_buffer(self) -> None:
        """Drop what is generated but unread; the simulation goes on from where it is."""
        with self._cond:
            if not self.is_open:
                raise PortNotOpenError()
            self._buffer.clear()

    def _due_minutes(self) -> int:
        """How many minutes (from the start) may have been emitted by now."""
        assert self._simulator is not None
        settings = self._simulator.settings
        due = _UNBOUNDED
        if settings.speed > 0:
            due = math.floor((time.monotonic() - self._opened_at) * settings.speed) + 1
        if settings.realtime_cap:
            caught_up = math.floor((time.time() - self._simulator.start) / 60) + 1
            due = min(due, max(caught_up, 0))
        return due

    def _generate(self, wanted: int) -> None:
        """Append due minutes to the buffer until it holds ``wanted`` bytes (lock held)."""
        simulator = self._simulator
        if simulator is None or len(self._buffer) >= wanted:
            return
        due = self._due_minutes()
        while len(self._buffer) < wanted and self._next_minute < due:
            count = min(due - self._next_minute, BATCH_MINUTES)
            first = simulator.start + 60 * self._next_minute
            lines = simulator.lines_for_minutes(first, count)  # type: ignore[arg-type]
            self._buffer += b"".join(lines)
            self._next_minute += count

    def _until_next_minute(self) -> float:
        """Seconds until the next minute becomes due (lock held)."""
        assert self._simulator is not None
        settings = self._simulator.settings
        waits = [0.0]
        if settings.speed > 0:
            waits.append(self._opened_at + self._next_minute / settings.speed - time.monotonic())
        if settings.realtime_cap:
            waits.append(self._simulator.start + 60 * self._next_minute - time.time())
        return min(max(max(waits), 0.001), MAX_WAIT_S)

    # -- writing and modem lines: accepted, meaningless -------------------------------------

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        return len(to_bytes(data))

    def flush(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    def reset_output_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    @property
    def out_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        return 0

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
