"""pyserial glue: open any port the configuration names, with one named error.

A port is a device path (``/dev/ttyUSB0``), any pyserial URL (``socket://host:port``,
``loop://``, ``rfc2217://...``) or the built-in simulator (``sim://?...``, served by
:mod:`ports.protocol_sim`). Whatever goes wrong while opening surfaces as
:class:`PortError`, with pyserial's or the OS's exception chained, so callers
(the SerialReader, the Transmitter) catch one type and retry.
"""

from __future__ import annotations

import importlib
import threading

import serial

__all__ = ["PortError", "open_port"]

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


def open_port(url: str, baudrate: int = 9600, timeout: float | None = 0.2) -> serial.SerialBase:
    """Open ``url`` (a pyserial URL or a device path), ready to read and write.

    ``timeout`` is the read timeout in seconds (``None`` blocks, ``0`` never
    waits). Raises :class:`PortError` when the port cannot be opened or the URL
    is not understood.
    """
    _register_handlers()
    if not url:
        raise PortError(url, "no port given")
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        # ValueError: pyserial's "protocol not known" and out-of-range settings.
        raise PortError(url, str(exc) or type(exc).__name__) from exc
