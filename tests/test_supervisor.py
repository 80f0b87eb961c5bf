"""Supervision: start order, one-for-one restart, restart intensity, config errors."""

from __future__ import annotations

import threading
import time

import pykka

from actors import ACTOR_CLASSES
from actors.base import GatewayActor
from actors.supervision import Supervisor
from core import messages
from tests.conftest import make_config
from tests.harness import run_cli, wait_for


def supervisor_for(tmp_path, store, **supervisor):
    config = make_config(tmp_path, serial={"port": "loop://"}, upstream={"port": "-"},
                         supervisor={"restart_max": 3, "restart_window_s": 60.0, **supervisor})
    return Supervisor(config, store, ACTOR_CLASSES, test_hooks=True)


def run_in_thread(sup: Supervisor) -> tuple[threading.Event, list[int]]:
    stop, result = threading.Event(), []
    thread = threading.Thread(target=lambda: result.append(sup.run(stop)), daemon=True)
    thread.start()
    return stop, result


def test_each_crashed_actor_is_restarted_within_a_second(tmp_path, store):
    sup = supervisor_for(tmp_path, store, restart_max=10)
    sup.start()
    stop, result = run_in_thread(sup)
    try:
        for role in sup.order:
            old = sup.peers.get(role)
            crashed_at = time.monotonic()
            old.tell(messages.encode(messages.Crash(f"{role} test")))
            wait_for(lambda: sup.peers.get(role) is not old and sup.peers.get(role).is_alive(),
                     timeout=5, what=f"{role} restarted")
            assert time.monotonic() - crashed_at < 1.0, role
            assert sup.all_answer(timeout=2)
        assert sup.stats.restarts == {role: 1 for role in sup.order}
        with store.read() as view:
            assert view.counters()["restart.detector"] == 1
    finally:
        stop.set()
        wait_for(lambda: result, timeout=10)
    assert result == [0]
    assert pykka.ActorRegistry.get_all() == []


def test_crash_loop_beyond_the_intensity_stops_everything_non_zero(tmp_path, store, caplog):
    sup = supervisor_for(tmp_path, store, restart_max=2)
    sup.start()
    stop, result = run_in_thread(sup)
    for _ in range(3):
        ref = sup.peers.get("detector")
        ref.tell(messages.encode(messages.Crash("loop")))
        wait_for(lambda: result or sup.peers.get("detector") is not ref, timeout=5)
    wait_for(lambda: result, timeout=10, what="supervisor gave up")
    assert result == [1]
    assert "restart intensity exceeded" in caplog.text and "detector" in caplog.text
    assert "InjectedCrash: loop" in caplog.text
    assert pykka.ActorRegistry.get_all() == []


def test_hung_actor_fails_the_ping_and_its_stack_is_logged(tmp_path, store, caplog):
    sup = supervisor_for(tmp_path, store)
    sup.start()
    try:
        sup.peers.get("predictor").tell(messages.encode(messages.Crash("hang", hang_s=2.0)))
        time.sleep(0.1)
        assert not sup.all_answer(timeout=0.5)
        assert "predictor does not answer" in caplog.text
        assert "_injected_crash" in caplog.text  # the hung handler is in the stack
        wait_for(lambda: sup.all_answer(timeout=0.5), timeout=5)
    finally:
        sup.stop()


class PortWatcher(GatewayActor):
    """An actor with a helper thread (as the reader and the transmitter have): the
    first instance's thread dies from a bug, its successors' run until stopped."""

    role = "port_watcher"
    instances: list[PortWatcher] = []

    def on_start(self) -> None:
        self.first = not PortWatcher.instances
        PortWatcher.instances.append(self)
        self.thread = self.start_helper("port", self._watch)

    def _watch(self) -> None:
        if self.first:
            raise OverflowError("int too big to convert")  # what msgpack raised for a 2^64 $ACK
        self.stopping.wait()


def test_a_helper_thread_that_dies_crashes_its_actor_and_it_is_restarted(tmp_path, store,
                                                                          caplog):
    PortWatcher.instances.clear()
    config = make_config(tmp_path, supervisor={"restart_max": 3})
    sup = Supervisor(config, store, [PortWatcher])
    sup.start()
    first = sup.peers.get("port_watcher")
    stop, result = run_in_thread(sup)
    try:
        wait_for(lambda: sup.peers.get("port_watcher") is not first, timeout=5,
                 what="the actor replaced")
        assert not first.is_alive(), "the crashed instance was not stopped"
        assert sup.stats.restarts == {"port_watcher": 1}
        assert "restarting port_watcher after OverflowError: int too big" in caplog.text
        assert "port thread failed" in caplog.text
        second = PortWatcher.instances[-1]
        assert second.thread.is_alive() and sup.all_answer(timeout=2)
    finally:
        stop.set()
        wait_for(lambda: result, timeout=10)
    assert result == [0], "a helper thread ended by stopping is no crash"
    assert sup.stats.restarts == {"port_watcher": 1}
    assert not second.thread.is_alive()


def test_bad_config_stops_before_start_with_one_line_per_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[serial]\nbaud = 9600\n[storage]\nretention_days = "long"\n')
    result = run_cli(config)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert errors == [
        "config error: serial.baud: unknown key (did you mean 'baudrate'?)",
        "config error: storage.retention_days: expected an integer, got string 'long'",
    ]


def test_toml_nested_too_deeply_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "deep.toml"
    config.write_text("x = " + "[" * 5000 + "\n")
    for args in (("--check-config",), ()):
        result = run_cli(config, *args)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"config error: {config}: not valid TOML: nested too deeply"]


def test_check_config_accepts_the_shipped_site_file():
    from tests.harness import ROOT

    result = run_cli(ROOT / "conf" / "site.toml", "--check-config")
    assert result.returncode == 0, result.stderr
