"""One-for-one supervision of the actor tree, with a restart intensity.

Pykka cannot restart an actor: a crashed actor is replaced by a new instance of
the same class, built from the same context, which resumes from the store. More
than ``restart_max`` restarts within ``restart_window_s`` means something is
wrong beyond a transient fault: everything stops in order and the process exits
non-zero so that systemd restarts the whole service.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import pykka

from actors.base import ActorContext, GatewayActor, Peers, RuntimeStats
from core import messages
from core.config import Config
from ports import systemd
from storage.store import Store

log = logging.getLogger("supervisor")

TICK_S = 1.0
POLL_S = 0.1
PING_TIMEOUT_S = 5.0


class RestartIntensityExceeded(RuntimeError):
    """Too many restarts in the window: the service must stop."""


@dataclass(frozen=True)
class Crash:
    role: str
    error: BaseException | None


class Supervisor:
    """Starts the actors in dependency order, restarts the crashed, stops in reverse."""

    def __init__(
        self, config: Config, store: Store, actor_classes: Sequence[type[GatewayActor]],
        *, test_hooks: bool = False,
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
            report_crash=self._report_crash, test_hooks=test_hooks,
        )
        self._restart_times: deque[float] = deque()
        self._stopping = threading.Event()
        self.failure: str | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for role in self.order:
            self._start_actor(role)
        for role in self.order:
            self._ping(role)
        log.info("started %s", ", ".join(self.order))

    def run(self, stop: threading.Event) -> int:
        """Supervise until ``stop`` is set (exit 0) or the restart intensity is exceeded (1)."""
        next_tick = time.monotonic()
        watchdog_every = systemd.watchdog_interval()
        next_watchdog = time.monotonic()
        systemd.notify("READY=1")
        try:
            while not stop.is_set():
                self._restart_crashed()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_S
                    self._broadcast(messages.Tick(time.time()))
                if watchdog_every and now >= next_watchdog:
                    next_watchdog = now + watchdog_every / 2
                    if self.all_answer(timeout=min(PING_TIMEOUT_S, watchdog_every / 4)):
                        systemd.notify("WATCHDOG=1")
                stop.wait(POLL_S)
        except RestartIntensityExceeded as exc:
            self.failure = str(exc)
            log.critical("%s; stopping", exc)
            return 1
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

    def _report_crash(self, role: str, error: BaseException | None) -> None:
        if not self._stopping.is_set():
            self.crashes.put(Crash(role, error))

    def _restart_crashed(self) -> None:
        pending: dict[str, Crash] = {}
        while True:
            try:
                crash = self.crashes.get_nowait()
            except queue.Empty:
                break
            pending[crash.role] = crash
        for role in self.order:
            ref = self.peers.get(role)
            if role not in pending and ref is not None and not ref.is_alive():
                pending[role] = Crash(role, None)  # died in on_start: Pykka skips on_failure
        for role, crash in pending.items():
            self._restart(role, crash.error)

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
        ref = self.classes[role].start(self.context)
        self.peers.set(role, ref)

    def _ping(self, role: str) -> bool:
        ref = self.peers.get(role)
        if ref is None:
            return False
        try:
            return ref.ask(messages.encode(messages.Ping()), timeout=PING_TIMEOUT_S) == "pong"
        except (pykka.Timeout, pykka.ActorDeadError):
            return False

    def all_answer(self, timeout: float = PING_TIMEOUT_S) -> bool:
        """Ping every actor; log the stack of any that does not answer in time."""
        futures = {}
        for role in self.order:
            ref = self.peers.get(role)
            if ref is None:
                return False
            try:
                futures[role] = ref.ask(messages.encode(messages.Ping()), block=False)
            except pykka.ActorDeadError:
                return False
        deadline = time.monotonic() + timeout
        healthy = True
        for role, future in futures.items():
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                healthy = False
                log.error("%s does not answer (hung?); its stack:\n%s", role, _actor_stack(role))
            except pykka.ActorDeadError:
                healthy = False
        return healthy

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
