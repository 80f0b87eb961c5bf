"""The inbound port goes away and comes back, several times.

Two short outages (the RTU's port refuses connections for a moment), then a long
one: first refused, then "flapping" (the port accepts and at once closes every
connection). The reader must reconnect with backoff -- little CPU while the port
is gone, and no faster than ``reconnect_max_s`` while it flaps -- the SYSTEM
silence alert must go out during the outage, and readings must flow again after
each outage.

Silence is judged in event time carried on by the wall clock, so with
``silence_minutes = 1`` it takes a minute after the newest reading. The RTU here
polls sensor 002 fifty seconds into each minute (stamps ``hh:mm:50``), so sensor
001 (stamped ``hh:mm:00``) is due its alert ten seconds into the outage.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from core.types import FLAG_SYSTEM
from tests.faults.helpers import (
    VanishingPeer, cpu_seconds, encode_all, flapping_port, minute_stream, reading_alerts,
    silence_alerts,
)
from tests.harness import TZ, wait_for

SENSORS = ("001", "002")
BASE = int(datetime(2026, 3, 2, 9, 0, tzinfo=TZ).timestamp())
RECONNECT_MAX_S = 2.0


@pytest.mark.slow
def test_reader_reconnects_with_backoff_and_silence_alerts_go_out_meanwhile(make_site):
    rtu = VanishingPeer()
    site = make_site(rtu=rtu, sections={
        "system": {"silence_minutes": 1},
        "serial": {"reconnect_initial_s": 0.1, "reconnect_max_s": RECONNECT_MAX_S},
    })
    readings = minute_stream(SENSORS, BASE, 40, seconds=(0, 50))
    batches = [encode_all(readings[i:i + 20]) for i in range(0, len(readings), 20)]
    site.start()

    def deliver(batch_no: int) -> None:
        """Send one batch on the current connection; wait for its alerts."""
        wait_for(lambda: rtu.conn is not None, timeout=10, what="the reader to reconnect")
        rtu.send(b"".join(batches[batch_no]))
        expected = 20 * (batch_no + 1)
        wait_for(lambda: len({(a.sensor, a.time) for a in reading_alerts(site.frames())})
                 == expected, timeout=10, what=f"alerts of batch {batch_no}")

    deliver(0)
    for outage in (1, 2):  # short outages: the port refuses connections for a moment
        rtu.vanish()
        time.sleep(1.5)
        rtu.reappear()
        deliver(outage)

    # The long outage: refused for a while, then flapping.
    rtu.vanish()
    gone_at = time.monotonic()
    cpu_before = cpu_seconds(site.pid)
    time.sleep(10.0)
    cpu_share = (cpu_seconds(site.pid) - cpu_before) / (time.monotonic() - gone_at)
    assert cpu_share < 0.05, f"{cpu_share:.1%} CPU while the port is gone: a busy loop?"
    flap_s = 12.0
    connections = flapping_port(rtu.port, flap_s)
    assert connections <= flap_s / RECONNECT_MAX_S * 1.5 + 3, \
        f"{connections} connections in {flap_s:.0f} s of a flapping port: no backoff"
    assert connections >= 5, "the reader gave up on a flapping port"
    alerts = silence_alerts(site.frames())  # the port is still gone
    assert {a.sensor for a in alerts} == {"001"}, alerts
    assert all(a.flow_flags == FLAG_SYSTEM == a.pressure_flags for a in alerts)
    last_of_001 = max(r.time for r in readings[:60] if r.sensor == "001")
    assert [a.time for a in alerts] == [last_of_001 + 60], alerts

    rtu.reappear()
    deliver(3)  # the last batch: readings flow again
    assert not site.exited()
    log = site.log()
    assert "restarting" not in log and "Traceback" not in log, log
    assert log.count("reading from") >= 4 + 5  # the first connection, 3 reconnections, flaps
    assert site.stop() == 0
