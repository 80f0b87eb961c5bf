"""What every gateway actor shares: envelope decoding, peers, crash reporting.

Pykka has no supervision: an exception in a ``tell`` handler stops the actor for
good. Each actor therefore reports its failure to the supervisor, which starts a
*new* instance of the same class; that instance rebuilds its state from the store
(its persisted offset and state), so nothing committed is lost or repeated.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pykka

from core import messages
from core.config import Config
from core.log_limit import LogLimiter
from core.types import Reading, StoredReading
from storage.store import RejectRecord, Store

CrashReport = Callable[[str, BaseException | None], None]

# The actors that consume the arrival journal, each with its own offset: the
# reader tells them of new arrivals and the journal is kept until all have them.
JOURNAL_CONSUMERS = ("detector", "night_flow")
# The actors that send the outbox, each with its own cursor: producers tell them
# of new frames (a role not running, MQTT off, is skipped).
UPLINKS = ("transmitter", "mqtt")
CLOCK_FILE_POLL_S = 0.2


class InjectedCrash(RuntimeError):
    """Raised by the test-only crash hook; never raised in production."""


class Peers:
    """The current reference of each actor role.

    Senders look a peer up on every send, so a restarted peer is reached without
    the sender knowing. A message to a dead or missing peer is dropped: the peer's
    replacement catches up from the store.
    """

    def __init__(self) -> None:
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._lock = threading.Lock()

    def set(self, role: str, ref: pykka.ActorRef[Any] | None) -> None:
        with self._lock:
            if ref is None:
                self._refs.pop(role, None)
            else:
                self._refs[role] = ref

    def get(self, role: str) -> pykka.ActorRef[Any] | None:
        with self._lock:
            return self._refs.get(role)

    def tell(self, role: str, message: Any) -> bool:
        """Send ``message`` (a messages dataclass) to ``role``; False if not delivered."""
        return self._tell_encoded(role, messages.encode(message))

    def tell_each(self, roles: tuple[str, ...], message: Any) -> None:
        """Send one ``message`` to several roles, encoded once (readings go to two)."""
        envelope = messages.encode(message)
        for role in roles:
            self._tell_encoded(role, envelope)

    def _tell_encoded(self, role: str, envelope: bytes) -> bool:
        ref = self.get(role)
        if ref is None:
            return False
        try:
            ref.tell(envelope)
        except pykka.ActorDeadError:
            return False
        return True


@dataclass
class RuntimeStats:
    """Process-wide counters the supervisor keeps and actors report."""

    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    restarts: dict[str, int] = field(default_factory=dict)
    storage_error: str | None = None

    def total_restarts(self) -> int:
        return sum(self.restarts.values())


@dataclass(slots=True)
class PendingIngest:
    """Readings and rejects read from a port and not yet committed to the store."""

    readings: list[Reading] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)


@dataclass
class ActorContext:
    """Everything an actor is built from; a restarted actor gets the same context."""

    config: Config
    store: Store
    peers: Peers
    stats: RuntimeStats
    report_crash: CrashReport
    test_hooks: bool = False
    # The gateway's wall clock (epoch seconds). A Pi without a real-time clock
    # boots with a stale time that NTP later corrects; tests shift it through
    # :func:`shifted_clock`.
    clock: Callable[[], float] = time.time
    # What a serial reader leaves to its restarted self, by role (the readings a
    # full store refused): the context outlives the actor, so this does too.
    carried: dict[str, PendingIngest] = field(default_factory=dict)


def shifted_clock(offset_file: Path, base: Callable[[], float] = time.time) -> Callable[[], float]:
    """The wall clock shifted by the seconds written in ``offset_file`` (tests only).

    A test writes a number there to make the gateway's clock wrong (a stale
    boot time) and another to correct it (NTP); no file means no shift. The
    file is looked at no more than every ``CLOCK_FILE_POLL_S``.
    """
    state = {"offset": 0.0, "checked": -math.inf}

    def clock() -> float:
        now = time.monotonic()
        if now - state["checked"] >= CLOCK_FILE_POLL_S:
            state["checked"] = now
            try:
                state["offset"] = float(offset_file.read_text())
            except (OSError, ValueError):
                state["offset"] = 0.0
        return base() + state["offset"]

    return clock


class GatewayActor(pykka.ThreadingActor):
    """Base of every gateway actor: decodes envelopes and dispatches ``on_<type>``.

    A malformed envelope is logged and dropped; the actor stays alive. Blocking
    I/O runs in helper threads the actor owns (:meth:`start_helper`): one that
    dies from an exception is a crash of the actor, so supervision restarts it.
    """

    role: ClassVar[str] = "actor"

    def __init__(self, context: ActorContext) -> None:
        super().__init__()
        self.context = context
        self.config = context.config
        self.store = context.store
        self.peers = context.peers
        self.log = logging.getLogger(f"actors.{self.role}")
        # Every warning that input or a failing peer can repeat goes through this:
        # summarised every tick once a minute is over, and when the actor stops.
        self.repeats = LogLimiter(self.log)
        self.dropped_messages = 0
        # Set once the actor releases what it owns: its helper threads end, and an
        # error they meet on the way out (a port closed under a read) is no crash.
        self.stopping = threading.Event()

    def on_receive(self, message: Any) -> Any:
        try:
            decoded = messages.decode(message)
        except messages.MessageError as exc:
            self.dropped_messages += 1
            self.repeats.warning("malformed", "dropped malformed message: %s", exc)
            return None
        if isinstance(decoded, messages.Ping):
            return "pong"
        if isinstance(decoded, messages.Tick):
            self.repeats.flush()
        if isinstance(decoded, messages.Crash):
            return self._injected_crash(decoded)
        handler = getattr(self, f"on_{decoded.TYPE}", None)
        if handler is None:
            self.log.debug("ignored %s", decoded.TYPE)
            return None
        return handler(decoded)

    def _injected_crash(self, crash: messages.Crash) -> None:
        if not self.context.test_hooks:
            self.log.warning("crash hook ignored: supervisor.test_hooks is off")
            return
        if crash.hang_s > 0:
            self.log.warning("test hook: hanging for %.1f s", crash.hang_s)
            time.sleep(crash.hang_s)
            return
        raise InjectedCrash(crash.reason)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._release_safely()
        self.context.report_crash(self.role, exception_value)

    def on_stop(self) -> None:
        self._release_safely()

    def _release_safely(self) -> None:
        self.stopping.set()
        try:
            self.release()
        except Exception:
            self.log.exception("error while releasing resources")
        self.repeats.flush(force=True)

    def release(self) -> None:
        """Close what the actor owns (ports, threads). Called on stop and on failure."""

    def start_helper(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        """Run ``target(*args)`` in a daemon thread the actor owns, named ``<role>-<name>``.

        The thread must return once :attr:`stopping` is set. An exception that
        ends it otherwise is the actor's crash: logged and reported, so the
        supervisor replaces the actor. A thread that died quietly would leave an
        actor answering pings with its port unread (the ACKs of a whole link).
        """

        def guarded() -> None:
            try:
                target(*args)
            except Exception as exc:
                if self.stopping.is_set():
                    return  # what it used was closed under it: we are stopping anyway
                self.log.exception("%s thread failed", name)
                self.context.report_crash(self.role, exc)

        thread = threading.Thread(target=guarded, name=f"{self.role}-{name}", daemon=True)
        thread.start()
        return thread

    def tell_self(self, message: Any) -> None:
        """Queue ``message`` behind what is already in this actor's inbox."""
        try:
            self.actor_ref.tell(messages.encode(message))
        except pykka.ActorDeadError:
            pass


class JournalConsumer(GatewayActor):
    """An actor that consumes the store's arrival journal exactly once.

    Messages carry committed readings for speed, but the journal is the truth:
    a gap between the offset and a message (readings committed while this actor
    was being restarted) is filled from the store, and anything at or below the
    offset is skipped. The subclass commits its offset with its work.
    """

    consumer: ClassVar[str] = "consumer"
    catch_up_chunk: ClassVar[int] = 2000

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.offset = 0

    def on_start(self) -> None:
        with self.store.read() as view:
            self.offset = view.offset(self.consumer)
        self.log.info("resuming after arrival %d", self.offset)
        self.tell_self(messages.Resume())

    def on_readings(self, message: messages.ReadingsCommitted) -> None:
        rows = message.rows
        if not rows or rows[-1][0] <= self.offset:
            return  # already taken from the journal
        if rows[0][0] != self.offset + 1 or self._journal_head() > rows[-1][0]:
            # A gap (readings committed while this actor restarted), or more
            # arrivals queued behind this message: take a whole chunk from the
            # journal. Behind, the batches grow, so one commit covers more readings
            # and the consumer catches up instead of falling further behind.
            self.on_resume(messages.Resume())
            return
        self.process(message.stored())

    def on_resume(self, _: messages.Resume) -> None:
        with self.store.read() as view:
            batch = view.journal(self.offset, self.catch_up_chunk)
        if batch:
            self.process(batch)
        if len(batch) == self.catch_up_chunk:
            # Yield to pings and ticks between chunks of a long catch-up.
            self.tell_self(messages.Resume())

    def _journal_head(self) -> int:
        with self.store.read() as view:
            return view.journal_head()

    def process(self, batch: list[StoredReading]) -> None:
        """Handle readings ``offset+1 ..`` in arrival order and commit the new offset."""
        raise NotImplementedError
