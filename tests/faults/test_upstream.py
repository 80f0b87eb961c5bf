"""The upstream link down, with ``upstream.ack = true``.

The upstream peer timestamps every frame it gets and answers ``$ACK`` as the
test decides. A frame it does not acknowledge is resent, no sooner than
``ack_timeout_s`` after the last try, until it is. While the peer is gone the
frames wait in the persistent outbox, also across a restart of the service; when
the outbox overflows ``outbox_max`` the oldest are dropped, counted in ``status``
and logged; when the peer returns every kept frame is delivered oldest first and
the outbox empties as the acknowledgements come in.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from core import frames
from tests.faults.helpers import VanishingPeer, encode_all, minute_stream, parse_frames
from tests.harness import TZ, StalledPeer, wait_for

BASE = int(datetime(2026, 4, 6, 9, 0, tzinfo=TZ).timestamp())
ACK_TIMEOUT_S = 2.0
OUTBOX_MAX = 100


class Acker(threading.Thread):
    """Reads what the upstream peer got, timestamps each frame, acknowledges per ``policy``."""

    def __init__(self, peer: VanishingPeer) -> None:
        super().__init__(daemon=True)
        self.peer = peer
        self.policy: Callable[[int], bool] = lambda seq: True
        self.seen: list[tuple[float, object]] = []
        self._pos = 0
        self._halt = threading.Event()

    def sends_of(self, seq: int) -> list[float]:
        return [t for t, f in self.seen if f.seq == seq]

    def first_delivery_order(self) -> list[int]:
        return list(dict.fromkeys(f.seq for _, f in self.seen))

    def run(self) -> None:
        while not self._halt.wait(0.02):
            with self.peer._lock:
                data = bytes(self.peer.received[self._pos:])
                conn = self.peer.conn
            end = data.rfind(b"\r\n")
            if end < 0:
                continue
            self._pos += end + 2
            now = time.monotonic()
            acks = b""
            for frame in parse_frames(data[:end + 2]):
                self.seen.append((now, frame))
                if self.policy(frame.seq):
                    acks += frames.encode(frames.Ack(frame.seq), TZ)
            if acks and conn is not None:
                try:
                    conn.sendall(acks)
                except OSError:
                    pass

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


def outbox(site) -> tuple[int, list[int]]:
    """(last sequence number given, sequence numbers kept)."""
    with site.open_store() as store, store.read() as view:
        return view.peek_sequence(), [e.seq for e in view.outbox(0, 10_000)]


@pytest.mark.slow
def test_outbox_survives_the_link_and_a_restart_and_is_bounded(make_site):
    peer = VanishingPeer()
    site = make_site(upstream=peer, sections={"upstream": {
        "ack": True, "ack_timeout_s": ACK_TIMEOUT_S, "resend_per_s": 100.0,
        "outbox_max": OUTBOX_MAX,
    }})
    readings = minute_stream(["001"], BASE, 200)
    lines = encode_all(readings)
    acker = Acker(peer)
    acker.start()
    site.start()
    try:
        # 1. Up, but frame 3 goes unacknowledged for a while: resent until it is.
        acker.policy = lambda seq: seq != 3
        site.send(b"".join(lines[:8]))
        wait_for(lambda: len(acker.sends_of(3)) >= 3, timeout=15, what="frame 3 resent twice")
        acker.policy = lambda seq: True
        wait_for(lambda: outbox(site)[1] == [], timeout=10, what="every frame acknowledged")
        sends = acker.sends_of(3)
        gaps = [b - a for a, b in zip(sends, sends[1:])]
        assert all(g >= ACK_TIMEOUT_S * 0.9 for g in gaps), f"resent too soon: {gaps}"
        assert all(len(acker.sends_of(seq)) == 1 for seq in range(4, 9)), \
            "an acknowledged frame was resent"

        # 2. The peer goes away: frames wait in the outbox, also across a restart.
        peer.vanish()
        for batch in (lines[8:18], lines[18:28]):  # the first into the dead connection
            before = outbox(site)[0]
            site.send(b"".join(batch))
            wait_for(lambda: outbox(site)[0] >= before + len(batch), timeout=10,
                     what="frames queued")
            time.sleep(0.3)
        last, kept_before = outbox(site)
        assert kept_before == list(range(9, last + 1)), kept_before
        assert site.stop() == 0
        site.start()
        site.send(b"".join(lines[28:40]))
        wait_for(lambda: outbox(site)[0] >= 40, timeout=10, what="frames queued")
        last, kept = outbox(site)
        assert kept == list(range(9, last + 1)), "the outbox did not survive the restart"
        delivered_before = len(acker.seen)
        peer.reappear()
        wait_for(lambda: outbox(site)[1] == [], timeout=30, what="the outbox to empty")
        after = list(dict.fromkeys(f.seq for _, f in acker.seen[delivered_before:]))
        assert after[:len(kept)] == kept, "not delivered in sequence order"

        # 3. Gone again, for more frames than the outbox holds: the oldest are dropped.
        peer.vanish()
        site.send(b"".join(lines[40:]))
        wait_for(lambda: outbox(site)[0] >= 200, timeout=10, what="frames queued")
        time.sleep(0.5)
        last, kept = outbox(site)
        assert kept == list(range(last - OUTBOX_MAX + 1, last + 1)), "not the newest kept"
        status = site.status()
        dropped = int(re.search(r"outbox dropped: (\d+)", status).group(1))
        assert dropped > 0 and f"{OUTBOX_MAX} kept" in status, status
        wait_for(lambda: "oldest frame(s) dropped undelivered" in site.log(), timeout=5,
                 what="the drops logged (never silently)")

        # 4. The peer returns: the kept frames arrive oldest first, each until acknowledged.
        delivered_before = len(acker.seen)
        peer.reappear()
        wait_for(lambda: outbox(site)[1] == [], timeout=40, what="the outbox to empty")
        after = list(dict.fromkeys(f.seq for _, f in acker.seen[delivered_before:]))
        assert after[:len(kept)] == kept, "not delivered oldest first"
        never_delivered = set(range(1, last + 1)) - {f.seq for _, f in acker.seen}
        assert len(never_delivered) == dropped, "a frame lost without being counted as dropped"
        assert max(never_delivered) < kept[0], "only the oldest may be dropped"
    finally:
        acker.stop()
    assert site.stop() == 0
    assert f"dropped undelivered, {dropped} in all" in site.log(), "the total, at the latest on stop"


@pytest.mark.slow
def test_a_live_link_slower_than_detection_is_not_outrun(make_site):
    """Without ACK the outbox is bounded too: the reader must wait for a sending
    Transmitter rather than let the bound drop frames it has not sent yet."""
    site = make_site(sections={"upstream": {"outbox_max": 20_000}})
    readings = minute_stream(["001", "002", "003"], BASE, 8000)
    site.start()
    site.send(b"".join(encode_all(readings)))
    wait_for(lambda: outbox(site)[0] >= 2 * len(readings), timeout=60, what="every frame queued")
    wait_for(lambda: _last_seq(site) == outbox(site)[0], timeout=30, what="every frame sent")
    seqs = {f.seq for f in site.frames()}
    assert seqs == set(range(1, outbox(site)[0] + 1)), "frames dropped before they were sent"
    assert "dropped before they were sent" not in site.log()
    assert site.stop() == 0


def _last_seq(site) -> int:
    return max((f.seq for f in site.frames()), default=0)


def _ack_line(text: bytes) -> bytes:
    return b"$" + text + b"*%02X\r\n" % frames.checksum(text)


def test_an_ack_beyond_any_sequence_number_leaves_the_acks_working(make_site):
    """A single ``$ACK`` of 2^64 once killed the thread reading ACKs: from then on
    every frame was resent every ``ack_timeout_s`` until the outbox dropped it."""
    peer = VanishingPeer()
    site = make_site(upstream=peer, sections={"upstream": {
        "ack": True, "ack_timeout_s": ACK_TIMEOUT_S, "resend_per_s": 100.0}})
    lines = encode_all(minute_stream(["001"], BASE, 12))
    acker = Acker(peer)
    acker.start()
    site.start()
    try:
        for batch in (lines[:6], lines[6:]):
            peer.send(_ack_line(b"ACK,18446744073709551616"))
            peer.send(_ack_line(b"ACK,99999999999999999999999999999999999999"))
            before = outbox(site)[0]
            site.send(b"".join(batch))
            wait_for(lambda: outbox(site)[0] >= before + len(batch) and not outbox(site)[1],
                     timeout=15, what="every frame acknowledged")
        wait_for(lambda: "upstream rejects: bad_field=4" in site.status(), timeout=5,
                 what="the bad ACKs counted")
    finally:
        acker.stop()
    assert {f.seq for _, f in acker.seen} == set(range(1, outbox(site)[0] + 1))
    log = site.log()
    assert "Traceback" not in log and "restarting" not in log, log
    assert "upstream sent an unusable line (bad_field: seq: 20 digits" in log
    assert site.stop() == 0


def test_sigterm_with_a_stalled_upstream_stops_in_time(make_site):
    """A peer that accepts and stops reading once held the Transmitter's write
    forever: SIGTERM left "actors still running after stop" and a live process."""
    site = make_site(upstream=StalledPeer(), sections={"upstream": {"write_timeout_s": 1.0}})
    site.start()
    site.send(b"".join(encode_all(minute_stream(["001", "002"], BASE, 600))))
    # (Not just "stalled": the test's own directory, in the log's store path, says that.)
    wait_for(lambda: "took nothing for" in site.log(), timeout=30, what="the stall noticed")
    with site.open_store() as store, store.read() as view:
        assert view.offset("transmitter") < view.peek_sequence(), "nothing stalled"
    started = time.monotonic()
    assert site.stop(timeout=10) == 0
    assert time.monotonic() - started < 5.0
    log = site.log()
    assert "still running after stop" not in log and "did not stop within" not in log, log
