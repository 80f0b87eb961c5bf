"""Test hooks of the running service (``supervisor.test_hooks = true`` only).

Fault tests reach into a real service process through a directory beside the
store: a file ``<role>.<anything>.msg`` holds one encoded envelope (e.g. a
``messages.Crash`` or deliberately malformed bytes), told to that actor and
deleted; ``CLOCK_OFFSET_FILE`` shifts the gateway's wall clock by its number of
seconds (:func:`actors.base.shifted_clock`). The deliveries run in their own
thread, so the supervisor's loop carries nothing that production never uses.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pykka

from actors.base import Peers
from core.config import Config

log = logging.getLogger(__name__)

CLOCK_OFFSET_FILE = "clock_offset_s"
POLL_S = 0.1

__all__ = ["CLOCK_OFFSET_FILE", "TestHookDelivery", "hooks_dir"]


def hooks_dir(config: Config) -> Path:
    """Where tests drop messages for the running service; never looked at in production."""
    return Path(config.storage.path).with_suffix(".hooks")


class TestHookDelivery:
    """Tells each dropped ``<role>.*.msg`` file's bytes to that actor, then deletes it."""

    __test__ = False  # a service part, not a pytest class

    def __init__(self, directory: Path, peers: Peers) -> None:
        self.directory = directory
        self.peers = peers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="TestHooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.deliver()

    def deliver(self) -> int:
        """Deliver what is in the directory now; how many messages were told."""
        try:
            requests = sorted(self.directory.glob("*.msg"))
        except OSError:
            return 0
        told = 0
        for path in requests:
            try:
                raw = path.read_bytes()
                path.unlink()
            except OSError:
                continue
            role = path.name.split(".", 1)[0]
            ref = self.peers.get(role)
            log.warning("test hook: %d bytes for %s", len(raw), role)
            if ref is not None:
                try:
                    ref.tell(raw)
                    told += 1
                except pykka.ActorDeadError:
                    pass
        return told
