"""One-for-one supervision of the actor tree, with a restart intensity.

Pykka cannot restart an actor: a crashed actor is replaced by a new instance of
the same class, built from the same context, which resumes from the store. More
than ``restart_max`` restarts within ``restart_window_s`` means something is
wrong beyond a transient fault: everything stops in order and the process exits
non-zero so that systemd restarts the whole service. A damaged store is no
transient fault: restarting cannot mend it, so the first damage any actor meets
stops everything in order with ``EXIT_STORE_DAMAGED``, which systemd is told
not to restart (``RestartPreventExitStatus``).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pykka

from actors.base import ActorContext, GatewayActor, Peers, RuntimeStats
from core import messages
from core.config import Config
from ports import systemd
from storage.store import Store, StoreDamagedError, StoreFullError

log = logging.getLogger("supervisor")

TICK_S = 1.0
POLL_S = 0.1
PING_TIMEOUT_S = 5.0
# Ping rounds for readers of `Supervisor.liveness` (the web page's /healthz).
LIVENESS_PING_S = 5.0
# A dead actor normally reports its crash once on_failure has released its
# resources (a port thread joined: well under a second). One found dead without a
# report for this long (it died in on_start, where Pykka calls no on_failure) is
# restarted anyway.
REPORT_GRACE_S = 0.5
# An actor stopped by a full store is restarted after this, doubled for every
# restart in the window: a full disk gets time to be freed, and the restart
# intensity stops the service in order only if it is not.
STORE_FULL_RETRY_S = 1.0
EXIT_STORE_DAMAGED = 3


@dataclass(frozen=True)
class Liveness:
    """The verdict of the last ping round, for readers outside the actor system.

    ``/healthz`` reads it instead of pinging from its own thread: a page poll
    then never queues work in front of the real-time path.
    """

    answered: bool  # every actor answered in time
    at: float | None = None  # time.monotonic() of the round; None: no round yet
    silent: tuple[str, ...] = ()  # roles that did not answer (hung, dead or missing)

    def age_s(self, now: float | None = None) -> float | None:
        if self.at is None:
            return None
        return (time.monotonic() if now is None else now) - self.at


@dataclass
class _PingRound:
    """One ping of every actor, checked without waiting (see Supervisor.run)."""

    started: float
    futures: dict[str, pykka.Future] = field(default_factory=dict)  # not answered yet
    silent: list[str] = field(default_factory=list)


def hide_store_damage_tracebacks(record: logging.LogRecord) -> bool:
    """Logging filter: keep a damaged store's tracebacks out of the service's log.

    Every actor that meets the damage would log its own (Pykka logs each
    actor's failure); the supervisor stops the service on the first with one
    line that says what is wrong and what to do.
    """
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, StoreDamagedError)


class RestartIntensityExceeded(RuntimeError):
    """Too many restarts in the window: the service must stop."""


@dataclass(frozen=True)
class Crash:
    role: str
    error: BaseException | None
    ref: pykka.ActorRef | None = None  # the instance that crashed, when it reported


class Supervisor:
    """Starts the actors in dependency order, restarts the crashed, stops in reverse."""

    def __init__(
        self, config: Config, store: Store, actor_classes: Sequence[type[GatewayActor]],
        *, test_hooks: bool = False, clock: Callable[[], float] = time.time,
        ping_every_s: float | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.classes = {cls.role: cls for cls in actor_classes}
        self.order = [cls.role for cls in actor_classes]
        self.peers = Peers()
        self.stats = RuntimeStats()
        self.crashes: queue.Queue[Crash] = queue.Queue()
        self.context = ActorContext(
            config=config, store=store, peers=self.peers, stats=self.stats,
            report_crash=self._report_crash, test_hooks=test_hooks, clock=clock,
        )
        self._restart_times: deque[float] = deque()
        self._dead_since: dict[str, float] = {}
        self._deferred: dict[str, tuple[float, Crash]] = {}  # role -> (restart at, why)
        self._stopping = threading.Event()
        self.failure: str | None = None
        # Ping rounds for `liveness` even without systemd's watchdog (the web page's
        # /healthz asks for them); None: only for the watchdog.
        self._ping_every_s = ping_every_s
        self.liveness = Liveness(answered=False)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for role in self.order:
            self._start_actor(role)
        for role in self.order:
            self._ping(role)
        log.info("started %s", ", ".join(self.order))

    def run(self, stop: threading.Event) -> int:
        """Supervise until ``stop`` is set (exit 0), the restart intensity is exceeded (1)
        or the store is found damaged (``EXIT_STORE_DAMAGED``)."""
        next_tick = time.monotonic()
        watchdog_every = systemd.watchdog_interval() if self.config.supervisor.watchdog else None
        ping_every = min(filter(None, (watchdog_every and watchdog_every / 2, self._ping_every_s)),
                         default=None)
        ping_timeout = min(PING_TIMEOUT_S, watchdog_every / 4) if watchdog_every else PING_TIMEOUT_S
        next_ping = time.monotonic()
        round_: _PingRound | None = None
        systemd.notify("READY=1")
        try:
            while not stop.is_set():
                if self.store.damage is not None:
                    # Before any restart: an actor the damage stopped must stay stopped.
                    raise self.store.damage
                self._restart_crashed()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_S
                    self._broadcast(messages.Tick(self.context.clock()))
                if ping_every and round_ is None and now >= next_ping:
                    next_ping = now + ping_every
                    round_ = self._start_ping_round()
                if round_ is not None:
                    answered = self._finish_ping_round(round_, ping_timeout)
                    if answered is not None:
                        round_ = None
                        if answered and watchdog_every:
                            systemd.notify("WATCHDOG=1")
                stop.wait(POLL_S)
        except RestartIntensityExceeded as exc:
            self.failure = str(exc)
            log.critical("%s; stopping", exc)
            return 1
        except StoreDamagedError as exc:
            self.failure = str(exc)  # the caller says it, with what to do
            return EXIT_STORE_DAMAGED
        finally:
            systemd.notify("STOPPING=1")
            self.stop()
        return 0

    def stop(self) -> None:
        """Stop the actors in reverse start order; log any left running as a bug."""
        self._stopping.set()
        timeout = self.config.supervisor.stop_timeout_s
        for role in reversed(self.order):
            ref = self.peers.get(role)
            if ref is None:
                continue
            try:
                ref.stop(block=True, timeout=timeout)
            except pykka.Timeout:
                log.error("%s did not stop within %.1f s", role, timeout)
            except pykka.ActorDeadError:
                pass
        leftovers = pykka.ActorRegistry.get_all()
        if leftovers:
            log.error("actors still running after stop (a bug): %s", leftovers)
            pykka.ActorRegistry.stop_all(block=True, timeout=1)

    # -- supervision -------------------------------------------------------------

    def _report_crash(self, role: str, error: BaseException | None,
                      ref: pykka.ActorRef | None = None) -> None:
        if not self._stopping.is_set():
            self.crashes.put(Crash(role, error, ref))

    def _restart_crashed(self) -> None:
        pending: dict[str, Crash] = {}
        while True:
            try:
                crash = self.crashes.get_nowait()
            except queue.Empty:
                break
            # A late report from an instance already replaced must not restart
            # its replacement (which would also count twice toward the intensity).
            if crash.ref is None or crash.ref is self.peers.get(crash.role):
                pending[crash.role] = crash
        now = time.monotonic()
        for role in self.order:
            ref = self.peers.get(role)
            if role in pending or role in self._deferred or ref is None or ref.is_alive():
                self._dead_since.pop(role, None)
            elif now - self._dead_since.setdefault(role, now) >= REPORT_GRACE_S:
                pending[role] = Crash(role, None)  # died in on_start: Pykka skips on_failure
        for role, crash in pending.items():
            if isinstance(crash.error, StoreDamagedError):
                raise crash.error  # met outside the store's own calls (an outbox frame)
            if isinstance(crash.error, StoreFullError):
                self._defer(role, crash, now)
            else:
                self._deferred.pop(role, None)
                self._restart(role, crash.error)
        for role, (due, crash) in list(self._deferred.items()):
            if now >= due:
                del self._deferred[role]
                self._restart(role, crash.error)

    def _defer(self, role: str, crash: Crash, now: float) -> None:
        """A full store stopped ``role``: restarting it at once cannot help."""
        window = self.config.supervisor.restart_window_s
        recent = sum(1 for t in self._restart_times if now - t <= window)
        delay = min(STORE_FULL_RETRY_S * 2 ** recent, window)
        self._deferred[role] = (now + delay, crash)
        log.error("%s stopped, the store is full (%s); restarting it in %.0f s",
                  role, crash.error, delay)

    def _restart(self, role: str, error: BaseException | None) -> None:
        now = time.monotonic()
        window = self.config.supervisor.restart_window_s
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > window:
            self._restart_times.popleft()
        reason = f"{type(error).__name__}: {error}" if error is not None else "stopped unexpectedly"
        if len(self._restart_times) > self.config.supervisor.restart_max:
            raise RestartIntensityExceeded(
                f"restart intensity exceeded: {len(self._restart_times)} restarts in "
                f"{window:.0f} s, last {role} ({reason})"
            )
        old = self.peers.get(role)
        if old is not None and old.is_alive():
            try:
                old.stop(block=True, timeout=self.config.supervisor.stop_timeout_s)
            except (pykka.Timeout, pykka.ActorDeadError):
                pass
        self.stats.restarts[role] = self.stats.restarts.get(role, 0) + 1
        try:
            self.store.transact(lambda b: b.count(f"restart.{role}"))
        except Exception:  # the count is for status only; a full store must not stop a restart
            log.exception("could not record the restart of %s", role)
        log.warning("restarting %s after %s", role, reason)
        self._start_actor(role)

    def _start_actor(self, role: str) -> None:
        # Each instance reports its crash as itself (see _restart_crashed).
        instance: list[pykka.ActorRef] = []
        context = replace(self.context, report_crash=lambda r, error: self._report_crash(
            r, error, instance[0] if instance else None))
        ref = self.classes[role].start(context)
        instance.append(ref)
        self.peers.set(role, ref)
        self._dead_since.pop(role, None)

    def _ping(self, role: str) -> bool:
        ref = self.peers.get(role)
        if ref is None:
            return False
        try:
            return ref.ask(messages.encode(messages.Ping()), timeout=PING_TIMEOUT_S) == "pong"
        except (pykka.Timeout, pykka.ActorDeadError):
            return False

    def all_answer(self, timeout: float = PING_TIMEOUT_S) -> bool:
        """Ping every actor; log the stack of any that does not answer in time.

        The verdict is kept in :attr:`liveness` as well.
        """
        round_ = self._start_ping_round()
        deadline = time.monotonic() + timeout
        for future in round_.futures.values():
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except (pykka.Timeout, pykka.ActorDeadError):
                pass  # judged below
        verdict = self._finish_ping_round(round_, timeout=0.0)
        assert verdict is not None
        return verdict

    def _start_ping_round(self) -> _PingRound:
        round_ = _PingRound(time.monotonic())
        for role in self.order:
            ref = self.peers.get(role)
            try:
                if ref is None:
                    raise pykka.ActorDeadError(role)
                round_.futures[role] = ref.ask(messages.encode(messages.Ping()), block=False)
            except pykka.ActorDeadError:
                round_.silent.append(role)
        return round_

    def _finish_ping_round(self, round_: _PingRound, timeout: float) -> bool | None:
        """True/False once every actor answered or ``timeout`` passed; None meanwhile.

        Never waits: the supervision loop checks a round on each pass, so a busy
        actor delays neither restarts nor ticks.
        """
        for role, future in list(round_.futures.items()):
            try:
                future.get(timeout=0)
            except pykka.Timeout:
                continue
            except pykka.ActorDeadError:
                round_.silent.append(role)
            del round_.futures[role]
        if round_.futures and time.monotonic() - round_.started < timeout:
            return None
        for role in round_.futures:
            round_.silent.append(role)
            log.error("%s does not answer (hung?); its stack:\n%s", role, _actor_stack(role))
        self.liveness = Liveness(not round_.silent, time.monotonic(), tuple(round_.silent))
        return not round_.silent

    def _broadcast(self, message: object) -> None:
        for role in self.order:
            self.peers.tell(role, message)


def _actor_stack(role: str) -> str:
    wanted = {
        t.ident for t in threading.enumerate()
        if t.name.lower().replace(" ", "").startswith(role.replace("_", ""))
    }
    frames = sys._current_frames()
    stacks = ["".join(traceback.format_stack(frames[i])) for i in wanted if i in frames]
    return "\n".join(stacks) or "(thread not found)"
