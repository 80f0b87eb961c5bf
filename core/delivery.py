"""Where sending the outbox got to, and (with ``upstream.ack``) what is due again.

Pure logic for the Transmitter: the outbox itself lives in the store; this keeps
the last sequence number written, when each unacknowledged frame was last tried,
the resend budget, and which ACKs may remove a frame. The caller reads the
outbox, asks, writes and stores; time is passed in (``time.monotonic()``), so a
wall-clock jump neither stalls nor floods the resends, and the state-machine
test drives it synchronously.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Delivery:
    """The sending state of one Transmitter; rebuilt from the store's offset on start."""

    ack: bool
    ack_timeout_s: float
    resend_per_s: float
    # The last sequence number written on this link (recorded as the offset):
    # the next send starts after it.
    sent: int = 0
    # The highest ever written (or recorded before a restart): an ACK above it
    # names a frame the upstream cannot have, whatever it says.
    written_through: int = 0
    _last_try: dict[int, float] = field(default_factory=dict)  # seq -> its last write
    _budget: float = 0.0

    @classmethod
    def resume(cls, offset: int, *, ack: bool, ack_timeout_s: float,
               resend_per_s: float) -> Delivery:
        """The state after a (re)start, from the offset the store recorded."""
        return cls(ack, ack_timeout_s, resend_per_s, sent=offset, written_through=offset)

    def link_up(self, oldest: int | None) -> None:
        """A new link: with ACK, what is unacknowledged may have died with the old one
        (a peer that vanished still takes a write or two), so all of it goes again,
        oldest (``oldest``, the outbox's first seq) first, in sequence order."""
        if self.ack and oldest is not None and oldest <= self.sent:
            self.sent = oldest - 1

    def written(self, seqs: Sequence[int], now: float) -> None:
        """``seqs`` (ascending, after :attr:`sent`) went out whole at ``now``."""
        if not seqs:
            return
        self.sent = seqs[-1]
        self.written_through = max(self.written_through, self.sent)
        if self.ack:
            self._last_try.update((seq, now) for seq in seqs)

    def acknowledged(self, seq: int) -> bool:
        """Whether an ACK of ``seq`` may remove its frame: only a frame written may.

        An ACK of a frame never written (a confused or hostile upstream) would
        lose that frame without its ever being delivered; it is refused, and
        the frame goes out as usual. A duplicate ACK is harmless: the frame is
        gone already.
        """
        if not 0 < seq <= self.written_through:
            return False
        self._last_try.pop(seq, None)
        return True

    def resend_window(self) -> int:
        """Once a tick (a second): top up the budget; how many of the oldest frames to look at."""
        self._budget = min(self._budget + self.resend_per_s, self.resend_per_s)
        return int(self._budget) or 1

    def due(self, oldest: Sequence[int], now: float) -> list[int]:
        """Of the oldest kept frames' seqs (ascending), those to resend now.

        A frame is due ``ack_timeout_s`` after its last try, not on every tick
        once late; frames not written on this link yet are not (they go out in
        order anyway). At most the budget's worth.
        """
        if oldest:  # forget frames dropped from the outbox unacknowledged
            for seq in [s for s in self._last_try if s < oldest[0]]:
                del self._last_try[seq]
        last_try, timeout = self._last_try, self.ack_timeout_s
        due = [s for s in oldest
               if s <= self.sent and now - last_try.get(s, -math.inf) >= timeout]
        return due[:int(self._budget)]

    def resent(self, seq: int, now: float) -> None:
        """``seq`` went out again at ``now``."""
        self._budget -= 1
        self._last_try[seq] = now
