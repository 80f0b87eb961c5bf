"""An exception inside each actor of the running service, through the test hook.

The hook (``supervisor.test_hooks = true``) lets the test drop an encoded
``messages.Crash`` for an actor; the supervisor tells it, the actor raises inside
its handler. Each actor must be back within a second while the others go on,
and no reading may be lost or processed twice. A crash loop beyond the restart
intensity stops the service in order, non-zero, naming the actor and the cause.
With the hooks off (production) a dropped crash request does nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime

import pytest

from actors import ACTOR_CLASSES
from tests.faults.helpers import (
    Streamer, assert_store_consistent, distinct_by_seq, encode_all, minute_stream,
    reading_alerts, stored_everything,
)
from tests.harness import TZ, wait_for

SENSORS = ("001", "002")
BASE = int(datetime(2026, 2, 2, 8, 0, tzinfo=TZ).timestamp())
ROLES = [cls.role for cls in ACTOR_CLASSES]


def alerted(site) -> set[tuple[str, int]]:
    return {(a.sensor, a.time) for a in reading_alerts(site.frames())}


@pytest.mark.slow
def test_each_actor_crashed_in_turn_is_back_within_a_second_and_nothing_is_lost(make_site):
    site = make_site(sections={"supervisor": {"restart_max": 20}})
    readings = minute_stream(SENSORS, BASE, 1500)
    streamer = Streamer(site.rtu, encode_all(readings), chunk=10, interval_s=0.02)
    site.start()
    streamer.start()
    try:
        for role in ROLES:
            if role == "serial_reader":
                # Bytes still in the socket when the port closes are the RTU's to
                # resend: let the line go quiet first, so every sent reading counts.
                streamer.pause()
                sent = streamer.index
                wait_for(lambda: len(alerted(site)) >= sent, timeout=20, what="the line to drain")
            head_before = _journal_head(site)
            restarts = site.log().count(f"restarting {role} after")
            crashed_at = time.monotonic()
            site.crash(role, f"{role} test")
            wait_for(lambda: site.log().count(f"restarting {role} after") > restarts,
                     timeout=5, interval=0.01, what=f"{role} restarted")
            assert time.monotonic() - crashed_at < 1.0, f"{role} took too long to come back"
            streamer.go()
            # The others kept working, and the restarted one works again.
            wait_for(lambda: _journal_head(site) > head_before + 30, timeout=10,
                     what=f"readings flowing after the {role} crash")
        wait_for(streamer.done, timeout=60, what="the script sent")
        wait_for(lambda: len(alerted(site)) == len(readings), timeout=30, what="every $ALR")
    finally:
        streamer.stop()
    status = site.status()
    code = site.stop()
    log = site.log()
    assert code == 0, log
    for role in ROLES:
        assert f"restarting {role} after InjectedCrash: {role} test" in log
    assert "actor restarts: " + ", ".join(f"{r}=1" for r in sorted(ROLES)) in status, status

    by_seq = distinct_by_seq(site.frames())
    seqs = defaultdict(set)
    for a in reading_alerts(by_seq.values()):
        seqs[(a.sensor, a.time)].add(a.seq)
    assert all(len(s) == 1 for s in seqs.values()), "a reading was detected twice"
    with site.open_store() as store:
        assert_store_consistent(store)
        assert set(stored_everything(store)) == {(r.sensor, r.time) for r in readings}
        with store.read() as view:
            assert view.offset("detector") == view.offset("night_flow") == view.journal_head()


def _journal_head(site) -> int:
    with site.open_store() as store, store.read() as view:
        return view.journal_head()


def test_crash_loop_beyond_the_restart_intensity_stops_in_order(make_site):
    site = make_site(sections={"supervisor": {"restart_max": 3, "restart_window_s": 60.0}})
    site.start()
    for n in range(1, 5):
        restarts = site.log().count("restarting detector after")
        site.crash("detector", f"loop {n}")
        wait_for(lambda: site.log().count("restarting detector after") > restarts or site.exited(),
                 timeout=5, what=f"crash {n} handled")
    wait_for(site.exited, timeout=20, what="the service to give up")
    assert site.service.process.returncode == 1
    log = site.log()
    assert ("restart intensity exceeded: 4 restarts in 60 s, last detector "
            "(InjectedCrash: loop 4); stopping") in log, log
    assert "stopped (exit 1)" in log
    assert "actors still running after stop" not in log and "did not stop" not in log


def test_crash_requests_are_ignored_with_the_test_hooks_off(make_site):
    site = make_site(sections={"supervisor": {"test_hooks": False}})
    site.start()
    site.crash("detector", "production")
    time.sleep(1.0)
    assert list(site.hooks.glob("*.msg")), "the request must not even be read"
    assert "restarting" not in site.log() and not site.exited()
    assert site.stop() == 0
