"""A gateway clock that is wrong at boot and jumps when NTP corrects it.

A Raspberry Pi has no real-time clock: it boots with the time it saved at
shutdown (fake-hwclock), here three days stale, and NTP sets it right a while
later, a jump of three days forward. The service's wall clock is shifted
through the test hook (``Site.shift_clock``); the RTU's stamps are right.

While the gateway clock is behind, the readings are more than five minutes
ahead of it: stored, flagged SYSTEM as PROTOCOL.md says, and ``$HLT`` reports
the clock as not right. Once it is corrected the readings are clean again and
``$HLT`` trusts the clock. Event-time schedules ignore the jump: every block
finished after it is reported exactly once, and nothing restarts.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from core import frames
from core.types import FLAG_SYSTEM
from tests.faults.helpers import encode_all, minute_stream, reading_alerts
from tests.harness import wait_for

STALE_S = 3 * 86400


def health_frames(site) -> list[frames.HealthFrame]:
    return sorted((f for f in site.frames() if isinstance(f, frames.HealthFrame)),
                  key=lambda f: f.seq)


@pytest.mark.slow
def test_a_stale_boot_clock_then_an_ntp_jump_flags_then_clears_and_stalls_nothing(make_site):
    site = make_site(sections={"supervisor": {"health_interval_s": 1.0}})
    # The last reading is a minute old: $HLT's clock check compares with it.
    now = int(time.time()) // 60 * 60
    before = minute_stream(["001"], now - 120 * 60, 60)  # sent while the clock is stale
    after = minute_stream(["001"], now - 60 * 60, 60)  # sent once NTP has set it right
    site.shift_clock(-STALE_S)
    site.start()

    site.send(b"".join(encode_all(before)))
    wait_for(lambda: len(reading_alerts(site.frames())) >= len(before), timeout=20,
             what="the alerts of the readings sent with the clock stale")
    stale = {(a.sensor, a.time): a for a in reading_alerts(site.frames())}
    assert all(stale[(r.sensor, r.time)].flow_flags & FLAG_SYSTEM
               and stale[(r.sensor, r.time)].pressure_flags & FLAG_SYSTEM for r in before), \
        "readings three days ahead of the gateway clock must be flagged SYSTEM"
    wait_for(lambda: health_frames(site), timeout=10, what="a health frame")
    health = health_frames(site)[-1]
    assert not health.clock, "a clock three days behind the readings is not right"
    assert abs(health.time - (time.time() - STALE_S)) < 60, "$HLT carries the gateway's clock"

    site.shift_clock(0)  # NTP: three days forward
    time.sleep(0.5)
    site.send(b"".join(encode_all(after)))
    wait_for(lambda: len(reading_alerts(site.frames())) >= len(before) + len(after),
             timeout=20, what="the alerts of the readings sent after the jump")
    alerts = {(a.sensor, a.time): a for a in reading_alerts(site.frames())}
    assert not any(alerts[(r.sensor, r.time)].flow_flags & FLAG_SYSTEM
                   or alerts[(r.sensor, r.time)].pressure_flags & FLAG_SYSTEM for r in after), \
        "with the clock right, normal readings are clean"
    wait_for(lambda: health_frames(site)[-1].clock, timeout=10,
             what="a health frame trusting the corrected clock")
    assert abs(health_frames(site)[-1].time - time.time()) < 60

    reports = Counter((f.sensor, f.time) for f in site.frames()
                      if isinstance(f, frames.ServerReportLine))
    assert all(n == 1 for n in reports.values()), "a server report went out twice"
    finished = {r.time for r in after[:-10]}  # every block closed after the jump
    assert finished <= {t for _, t in reports}, "a block was not reported after the jump"
    assert site.stop() == 0
    assert "restarting" not in site.log() and "Traceback" not in site.log()
