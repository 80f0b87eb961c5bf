"""Health frames and the systemd watchdog.

The service runs as systemd would run it: ``NOTIFY_SOCKET`` names a datagram
socket the test listens on, ``WATCHDOG_USEC`` the watchdog period. It must say
``READY=1``, feed ``WATCHDOG=1`` while every actor answers a ping, stop feeding
while one hangs inside a handler (logging the actor's name and stack), feed
again once it is back, and say ``STOPPING=1`` on the way out. ``$HLT`` frames
(every ``supervisor.health_interval_s``) carry the gateway's health. The unit
file in ``deploy/`` is the one that sets this up.
"""

from __future__ import annotations

import configparser
import socket
import threading
import time

import pytest

from core import frames
from core.config import default_config
from tests.faults.helpers import encode_all, minute_stream
from tests.harness import ROOT, wait_for

WATCHDOG_S = 2.0
HANG_S = 5.0


class NotifySocket:
    """systemd's end of the notify protocol: timestamped datagrams."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, state: str) -> list[float]:
        return [t for t, m in self.messages if state in m.split("\n")]

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=1)
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


@pytest.mark.slow
def test_watchdog_is_fed_only_while_every_actor_answers(make_site, notify):
    site = make_site(
        sections={"supervisor": {"health_interval_s": 1.0}},
        env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))},
    )
    site.start()
    wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 3, timeout=10, what="watchdog feeding")
    assert notify.messages[0][1] == "READY=1"
    fed = notify.times("WATCHDOG=1")
    assert all(b - a <= WATCHDOG_S for a, b in zip(fed, fed[1:])), fed

    now = int(time.time()) // 60 * 60
    site.send(b"".join(encode_all(minute_stream(["001"], now - 600, 10))) + b"garbage\r\n" * 2)

    hung_at = time.monotonic()
    site.crash("detector", "hang", hang_s=HANG_S)
    wait_for(lambda: "detector does not answer (hung?)" in site.log(), timeout=5,
             what="the hang logged")
    wait_for(lambda: time.monotonic() > hung_at + HANG_S + WATCHDOG_S, timeout=HANG_S + 5)
    fed = notify.times("WATCHDOG=1")
    during = [t for t in fed if hung_at + 1.0 < t < hung_at + HANG_S]
    assert not during, "the watchdog was fed while the detector hung"
    assert [t for t in fed if t > hung_at + HANG_S], "feeding did not resume"
    log = site.log()
    stack = log.split("detector does not answer (hung?); its stack:", 1)[1]
    assert "_injected_crash" in stack and "time.sleep(crash.hang_s)" in stack, stack[:2000]

    health = [f for f in site.frames() if isinstance(f, frames.HealthFrame)]
    assert len(health) >= 3, "no $HLT frames"
    seqs = [f.seq for f in health]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    last = health[-1]
    assert abs(last.time - time.time()) < 30 and last.uptime_s >= 5
    assert last.restarts == 0 and last.rejects == 2 and last.clock
    assert 0 <= last.store_used_pct < 100 and last.outbox_depth >= 0 and last.oldest_unsent_s >= 0
    uptimes = [f.uptime_s for f in health]
    assert uptimes == sorted(uptimes)

    assert site.stop() == 0
    assert notify.messages[-1][1] == "STOPPING=1"
    assert "restarting" not in site.log()


def test_no_watchdog_feeding_when_it_is_switched_off(make_site, notify):
    site = make_site(sections={"supervisor": {"watchdog": False}},
                     env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    site.start()
    wait_for(lambda: notify.times("READY=1"), timeout=5, what="READY=1")
    time.sleep(2.5)
    assert not notify.times("WATCHDOG=1")
    assert site.stop() == 0


def test_health_every_ten_minutes_by_default_and_the_unit_file():
    assert default_config().supervisor.health_interval_s == 600.0
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive in systemd units
    unit.read(ROOT / "deploy" / "wdn-gateway.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service.get("User") not in (None, "", "root")
    assert "dialout" in service.get("SupplementaryGroups", "") + service.get("Group", "")
    assert "supervisor.py" in service["ExecStart"]
