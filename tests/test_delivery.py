"""The outbox and its delivery as a state machine: ACKs, resends, restarts, bad ACKs.

Hypothesis drives the real store (LMDB in a temp dir, an outbox bound small
enough to drop frames) and :class:`core.delivery.Delivery` the way the
Transmitter does, synchronously; the "link" is the list of what went out whole.
Invariants: every frame that got a sequence number is acknowledged exactly once,
still in the outbox, or counted as dropped (the oldest only); only a frame that
went out is acknowledged; sequence numbers only grow, across restarts too; a
resend comes no sooner than ``ack_timeout_s`` after the frame's last try; and a
link that works delivers everything kept.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core import frames, messages
from core.delivery import Delivery
from core.frames import HealthFrame
from core.types import EpochSeconds
from storage.store import OUTBOX_SENDER, Store
from tests.harness import TZ

OUTBOX_MAX = 8
ACK_TIMEOUT_S = 10.0
RESEND_PER_S = 3.0
CHUNK = 12
HEALTH = HealthFrame(EpochSeconds(1_800_000_000), 0, 0, 0, 0, 0, 1.0, True)

# Bad ACKs: small numbers (frames not sent yet, or never given), the edge of what
# a sequence number can be, and far beyond (2^64 once killed the ACK reader).
BOGUS_SEQS = st.one_of(st.integers(0, 60), st.sampled_from([frames.MAX_SEQ, frames.MAX_SEQ + 1,
                                                             2**64 - 1, 2**64]),
                       st.integers(0, 10**30))


class OutboxDelivery(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-delivery-"))
        self.store = self._open()
        self.now = 0.0
        self.delivery = self._resume()
        self.given: list[int] = []  # every sequence number the outbox gave, in order
        self.written: set[int] = set()  # went out whole at least once
        self.acked: set[int] = set()  # removed by an ACK
        self.last_try: dict[int, float] = {}  # this life's writes: what Delivery may know

    def _open(self) -> Store:
        return Store(self.dir / "store.lmdb", outbox_max=OUTBOX_MAX, sync=False)

    def _resume(self) -> Delivery:
        with self.store.read() as view:
            return Delivery.resume(view.offset(OUTBOX_SENDER), ack=True,
                                   ack_timeout_s=ACK_TIMEOUT_S, resend_per_s=RESEND_PER_S)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kept(self) -> list[int]:
        with self.store.read() as view:
            return [e.seq for e in view.outbox(after=0, limit=10_000)]

    def _went_out(self, seqs: list[int]) -> None:
        self.written.update(seqs)
        self.last_try.update((seq, self.now) for seq in seqs)

    def _record(self) -> None:
        sent = self.delivery.sent
        self.store.transact(lambda b: b.set_offset(OUTBOX_SENDER, sent))

    def _ack(self, seq: int) -> None:
        seq = messages.decode(messages.encode(messages.AckReceived(seq))).seq  # as the actor gets it
        if not self.delivery.acknowledged(seq):
            assert seq not in self.last_try, "an ACK of a frame sent in this life was refused"
            return
        if self.store.transact(lambda b: b.delete_outbox(seq)):
            assert seq in self.written, f"an ACK removed frame {seq}, never delivered"
            assert seq not in self.acked, f"frame {seq} acknowledged twice"
            self.acked.add(seq)

    # -- rules ---------------------------------------------------------------------

    @rule(n=st.integers(1, 5))
    def producers_append(self, n: int) -> None:
        seqs = self.store.transact(
            lambda b: [b.append_outbox(HEALTH) for _ in range(n)])
        assert seqs == list(range(max(self.given, default=0) + 1, max(self.given, default=0)
                                  + n + 1)), "sequence numbers must only grow"
        self.given += seqs

    @rule(take=st.integers(0, CHUNK), record=st.booleans())
    def drain(self, take: int, record: bool) -> None:
        """The link takes ``take`` frames whole (fewer: it stalled); the offset is
        recorded unless the process dies first."""
        with self.store.read() as view:
            entries = view.outbox(after=self.delivery.sent, limit=CHUNK)
        done = [e.seq for e in entries[:take]]
        self.delivery.written(done, self.now)
        self._went_out(done)
        if record:
            self._record()

    @precondition(lambda self: self.written)
    @rule(data=st.data())
    def upstream_acks(self, data: st.DataObject) -> None:
        """An ACK of a frame that went out, maybe for the second time."""
        self._ack(data.draw(st.sampled_from(sorted(self.written))))

    @precondition(lambda self: set(self.given) - self.written)
    @rule(data=st.data())
    def upstream_acks_a_frame_never_sent(self, data: st.DataObject) -> None:
        self._ack(data.draw(st.sampled_from(sorted(set(self.given) - self.written))))

    @rule(seq=BOGUS_SEQS)
    def upstream_sends_a_bad_ack(self, seq: int) -> None:
        text = b"ACK,%d" % seq
        decoded = frames.decode_ack(b"$" + text + b"*%02X\r\n" % frames.checksum(text), TZ)
        if isinstance(decoded, frames.Reject):
            assert seq > frames.MAX_SEQ and decoded.reason is frames.RejectReason.BAD_FIELD
            return
        self._ack(decoded.seq)

    @rule(seconds=st.floats(0.5, 30))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def tick_resends(self) -> None:
        with self.store.read() as view:
            oldest = [e.seq for e in view.outbox(after=0, limit=self.delivery.resend_window())]
        due = self.delivery.due(oldest, self.now)
        assert len(due) <= RESEND_PER_S
        for seq in due:
            assert seq in oldest and seq <= self.delivery.sent
            assert self.now - self.last_try.get(seq, -math.inf) >= ACK_TIMEOUT_S, "resent too soon"
            self.delivery.resent(seq, self.now)
            self._went_out([seq])
            self.store.transact(lambda b, s=seq: b.mark_outbox_attempt(s))

    @rule()
    def link_reconnects(self) -> None:
        """What went out on the old link may be lost: all that is kept goes again, in order."""
        with self.store.read() as view:
            oldest = view.outbox_oldest()
        self.delivery.link_up(oldest.seq if oldest is not None else None)
        assert oldest is None or self.delivery.sent < oldest.seq

    @rule(record=st.booleans())
    def service_restarts(self, record: bool) -> None:
        if record:
            self._record()
        self.store.close()
        self.store = self._open()
        self.delivery = self._resume()
        self.last_try = {}
        self.link_reconnects()
        with self.store.read() as view:
            assert view.peek_sequence() == max(self.given, default=0)

    @rule()
    def link_works_until_the_outbox_is_empty(self) -> None:
        self.link_reconnects()
        for _ in range(4 * OUTBOX_MAX):
            self.drain(CHUNK, record=True)
            for seq in self._kept():
                if seq in self.written:
                    self._ack(seq)
            if not self._kept():
                break
            self.now += ACK_TIMEOUT_S
            self.tick_resends()
        assert self._kept() == [], "a working link left frames undelivered"

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def each_frame_acknowledged_kept_or_counted_dropped(self) -> None:
        kept = set(self._kept())
        assert len(kept) <= OUTBOX_MAX
        assert kept <= set(self.given) and not kept & self.acked
        assert self.acked <= self.written
        dropped = set(self.given) - kept - self.acked
        with self.store.read() as view:
            assert len(dropped) == view.counters().get("outbox_dropped", 0)
        if dropped and kept:
            assert max(dropped) < min(kept), "only the oldest may be dropped"

    @invariant()
    def delivery_stays_within_what_was_given(self) -> None:
        assert 0 <= self.delivery.sent <= self.delivery.written_through <= max(self.given,
                                                                              default=0)


OutboxDelivery.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_outbox_delivery = OutboxDelivery.TestCase
