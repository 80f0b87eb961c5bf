"""Entry point of the gateway: ``python supervisor.py --config conf/site.toml``.

Without a command it runs the service: validates the config (exit 2 on any
error, before a port is opened), takes the store's service lock (exit 2 when
another service holds it), opens the store, starts the actor tree and
supervises it until SIGTERM/SIGINT. A damaged store stops it with exit 3,
which systemd does not restart. The operator commands (``status``,
``export``, ``forecast``, ``train``, ``repaired``) work while the service runs:
they read the store through read-only transactions (``train`` and ``repaired``
add one small write, which LMDB orders with the service's); ``check-store`` and ``recover-store``
refuse to run beside it.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_USAGE = 2  # a bad argument, or one the store cannot serve (no such sensor)
EXIT_STORE_IN_USE = 2  # another service holds the store
GC_YOUNG_THRESHOLD = 5000  # allocations between young-generation collections (default 700)

log = logging.getLogger("supervisor")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its error as one line (it prints the usage first), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from cli.arguments import argument_type, parse_sensor, parse_time

    sensor_arg, time_arg = argument_type(parse_sensor), argument_type(parse_time)
    parser = ArgumentParser(prog="supervisor.py", description="Water-network edge gateway.")
    parser.add_argument("--config", default="conf/site.toml", help="site configuration (TOML)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration and exit")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the service (the default)")
    commands.add_parser("status", help="per-sensor state, rejects, restarts, models")
    export = commands.add_parser("export", help="write stored data to standard output")
    export.add_argument("what", choices=["readings", "criteria", "night", "detections"])
    export.add_argument("--sensor", type=sensor_arg, help="sensor id, e.g. 001")
    export.add_argument("--since", type=time_arg, help="ISO 8601 time (local when no offset)")
    export.add_argument("--until", type=time_arg, help="ISO 8601 time (local when no offset)")
    forecast = commands.add_parser("forecast", help="current 168-hour forecast as CSV")
    forecast.add_argument("--sensor", type=sensor_arg, help="sensor id, e.g. 001")
    train = commands.add_parser("train", help="train the forecasting models now")
    train.add_argument("--sensor", type=sensor_arg, help="sensor id, e.g. 001")
    repaired = commands.add_parser(
        "repaired", help="record that a sensor's leak was repaired: NIGHT clears and its "
        "evidence restarts (works beside the service)")
    repaired.add_argument("--sensor", type=sensor_arg, required=True,
                          help="sensor id, e.g. 001")
    commands.add_parser("check-store", help="check every record of the store (service stopped)")
    commands.add_parser("recover-store", help="copy what can be read of a damaged store into a "
                        "fresh one, keep the damaged one aside (service stopped)")
    return parser


def setup_logging(level: str) -> None:
    # journald adds the time; levels and logger (actor) names are ours.
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, level),
        format="%(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    from core.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    command = args.command or "run"
    if args.check_config or command == "run":
        # Only the service writes the store: operator commands read it where it is.
        from storage.location import store_path_problem

        problem = store_path_problem(config.storage.path)
        if problem is not None:
            print(f"config error: storage.path: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: ok")
        return EXIT_OK
    if command == "run":
        return run_service(config)
    from cli import commands, store_repair
    from cli.arguments import UsageError

    if command in store_repair.COMMANDS:
        return store_repair.run(command, config)

    try:
        return commands.run(command, config, args)
    except UsageError as exc:
        print(f"supervisor.py {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK


def run_service(config: object) -> int:
    from storage.lock import LockHeld, ServiceLock

    cfg = config.storage  # type: ignore[attr-defined]
    lock = ServiceLock(cfg.path)
    try:
        lock.acquire("service")
    except LockHeld as exc:
        log.critical("%s already runs on the store at %s (lock %s): a second service would "
                     "send every reading twice; this one exits", exc.holder, cfg.path, exc.path)
        return EXIT_STORE_IN_USE
    with lock:
        return _serve(config)


def _serve(config: object) -> int:
    """The service's life, while it holds the store's lock."""
    import pykka.debug

    from actors import actor_classes
    from actors.base import shifted_clock
    from actors.supervision import (
        EXIT_STORE_DAMAGED,
        LIVENESS_PING_S,
        Supervisor,
        hide_store_damage_tracebacks,
    )
    from actors.test_hooks import CLOCK_OFFSET_FILE, TestHookDelivery, hooks_dir
    from cli.store_repair import damaged_advice
    from core.outbox import wire_encoder
    from ports.memory import limit_malloc_arenas
    from storage.store import Store, StoreDamagedError, StoreError, history_sensor_years

    cfg = config.storage  # type: ignore[attr-defined]
    source = config.source  # type: ignore[attr-defined]
    for handler in logging.getLogger().handlers:
        handler.addFilter(hide_store_damage_tracebacks)
    test_hooks = config.supervisor.test_hooks  # type: ignore[attr-defined]
    clock = shifted_clock(hooks_dir(config) / CLOCK_OFFSET_FILE) if test_hooks else time.time
    try:
        store = Store(
            Path(cfg.path), map_size_mb=cfg.map_size_mb, map_max_mb=cfg.map_max_mb,
            rejects_max=cfg.rejects_max, outbox_max=config.upstream.outbox_max,  # type: ignore[attr-defined]
            clock=clock, reserve_mb=cfg.reserve_mb,
            outbox_wire=wire_encoder(config.site.tz),  # type: ignore[attr-defined]
            outbox_publisher=config.mqtt.enabled,  # type: ignore[attr-defined]
        )
    except StoreDamagedError as exc:
        log.critical("%s", damaged_advice(exc, source))
        return EXIT_STORE_DAMAGED
    except StoreError as exc:
        log.critical("%s", exc)  # the store's errors name the path already
        return EXIT_FAILURE
    outbox_max = config.upstream.outbox_max  # type: ignore[attr-defined]
    log.info("store at %s: map up to %d MB, room for about %.0f sensor-years of readings",
             cfg.path, store.map_max_mb, history_sensor_years(store.map_max_mb, outbox_max))
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGUSR1, pykka.debug.log_thread_tracebacks)
    web_on = config.web.address is not None  # type: ignore[attr-defined]
    supervisor = Supervisor(
        config, store, actor_classes(config), test_hooks=test_hooks, clock=clock,  # type: ignore[arg-type]
        ping_every_s=LIVENESS_PING_S if web_on else None,
    )
    limit_malloc_arenas()
    # Before the actors: its address is logged before the first frame goes out.
    web = start_web(config, store, supervisor, clock) if web_on else None
    hooks = TestHookDelivery(hooks_dir(config), supervisor.peers) if test_hooks else None
    try:
        supervisor.start()
        if hooks is not None:
            hooks.start()
        tune_gc()
        code = supervisor.run(stop)
    finally:
        if hooks is not None:
            hooks.stop()
        if web is not None:
            web.stop()
        store.close()
    if code == EXIT_STORE_DAMAGED:
        log.critical("%s", damaged_advice(supervisor.failure, source))
    log.info("stopped (exit %d)", code)
    return code


def start_web(config: Any, store: Any, supervisor: Any, clock: Any) -> Any:
    """Serve the technician's page (``[web]``); None, logged, if it cannot be served.

    The page is for people: a taken port or an unreadable token costs the page,
    never the gateway's readings and frames.
    """
    from web.server import WebError, WebServer, build_app

    host, port = config.web.address
    try:
        server = WebServer(build_app(config, store, lambda: supervisor.liveness, clock=clock),
                           host, port)
        server.start()
    except WebError as exc:
        log.error("web page not served: %s", exc)
        return None
    log.info("web page at %s (metrics at %smetrics)", server.url, server.url)
    return server


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap on the per-reading path.

    Every reading allocates a few dozen short-lived objects, nearly none in
    cycles; at the default threshold (700) the young generation is collected
    every few readings. Everything alive after start-up (modules, numpy, the
    actors) is frozen out of the collector's scans. Measured with
    bench/ingest.py: about 5-10 % more readings per second.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


if __name__ == "__main__":
    sys.exit(main())
