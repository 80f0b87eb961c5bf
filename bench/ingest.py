"""Ingest benchmark: one sensor-year through the real service.

Workload: 525,600 one-minute ``$WDN`` readings of one simulated sensor (seed 7,
no faults), served over a real TCP socket to ``python supervisor.py`` running as
a child process (serial.port = socket://...), whose ``$ALR`` frames come back on
a second socket. Phase 1 sends everything as fast as the gateway takes it
(throughput, end to end: first line out -> last ``$ALR`` in), ``--runs`` times
on fresh stores, reporting the median. Phase 2 sends
readings one at a time at a real-time-like pace on a fresh store and measures
each reading's latency (its frame written -> its ``$ALR`` read). RSS is the
service's peak (VmHWM), with the heap / mapped-files split at the end.
``--during-training`` runs a training child while phase 2 measures, to show
training does not stall the real-time path. The service's own first training,
which a replayed year would start after 28 simulated days, is held off in
phase 1 (``--allow-training`` lets it run) so that the figure is the pipeline's.
``--poll-web`` runs each throughput replay twice, the web page off and on, the
page (``/``) and ``/metrics`` fetched every second meanwhile, and reports both.
``--mqtt URL`` likewise runs each replay twice, the MQTT uplink off and on
(publishing every frame to the broker at URL; ``--mqtt local`` starts a Mosquitto
here), and reports both.

Prints the figures, the budget from DESIGN.md, and last a JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import frames  # noqa: E402
from core.simulator import Simulator, SimulatorSettings  # noqa: E402
from tests.harness import TZ, PeerServer, Service, write_config  # noqa: E402

START = 1_735_657_200  # 2025-01-01 00:00 +09:00
BUDGET = {"readings_per_s": ">= 10000", "p99_ms": "<= 20", "rss_mb": "<= 150"}


def year_of_lines(minutes: int, seed: int = 7) -> list[bytes]:
    sim = Simulator(SimulatorSettings(sensors=1, seed=seed, start=START, faults=frozenset(),
                                      realtime_cap=False))
    return [frames.encode(r, TZ) for r in sim.readings(START, minutes)]


def memory_mb(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM); heap (anon) and mapped files (shared libraries, LMDB) now."""
    fields = {"VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in fields:
            found[fields[key]] = int(line.split()[1]) / 1024
    return found


class AlertCounter:
    """Counts ``$ALR`` frames received so far, scanning only what is new.

    Re-reading the whole buffer on every poll (tens of MB by the end of a year)
    would spend a core of this 2-core machine on the benchmark itself.
    """

    def __init__(self, upstream: PeerServer) -> None:
        self.upstream = upstream
        self.scanned = 0
        self.count = 0

    def __call__(self) -> int:
        received = self.upstream.received
        end = len(received)
        self.count += received.count(b"$ALR", self.scanned, end)
        # A frame start cut off at the end is counted on the next call.
        self.scanned = max(self.scanned, end - 3)
        return self.count


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(tmp: Path, name: str, sections: dict | None = None,
                  ) -> tuple[Service, PeerServer, PeerServer]:
    rtu, upstream = PeerServer(), PeerServer()
    config = write_config(tmp / f"{name}.toml", serial_port=rtu.url, upstream_port=upstream.url,
                          store=tmp / f"{name}.lmdb", sections=sections)
    service = Service(config, args=["--log-level", "WARNING"]).start()
    rtu.wait_connected(60)
    upstream.wait_connected(60)
    return service, rtu, upstream


class WebPoller:
    """Fetches the page and /metrics every second, as a technician's browser and a
    scraper would (harsher: the page refreshes itself every 10 s)."""

    PATHS = ("", "metrics")

    def __init__(self, url: str) -> None:
        self.url = url
        self.fetch_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for path in self.PATHS:
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(self.url + path, timeout=10) as response:
                        response.read()
                    self.fetch_ms.append((time.perf_counter() - started) * 1000)
                except OSError:
                    self.failures += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throughput(tmp: Path, lines: list[bytes], allow_training: bool, web: bool = False,
               mqtt: dict | None = None) -> tuple[float, dict[str, float]]:
    # A replayed year passes train.min_days within seconds and the service's
    # trainer would start its first training beside the pipeline being timed.
    sections: dict = {} if allow_training else {"train": {"min_days": 3650}}
    if mqtt:
        sections["mqtt"] = mqtt
    port = free_port()
    if web:
        sections["web"] = {"listen": f"127.0.0.1:{port}"}
    service, rtu, upstream = start_service(tmp, "throughput", sections or None)
    alerts = AlertCounter(upstream)
    poller = WebPoller(f"http://127.0.0.1:{port}/") if web else None
    try:
        started, cpu_before = time.perf_counter(), cpu_s(service.process.pid)
        chunk = 5000
        for i in range(0, len(lines), chunk):
            rtu.send(b"".join(lines[i:i + chunk]))
        while alerts() < len(lines):
            if time.perf_counter() - started > 1800:
                raise TimeoutError("throughput phase did not finish in 30 minutes")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        memory = memory_mb(service.process.pid)
        memory["cpu_share"] = (cpu_s(service.process.pid) - cpu_before) / elapsed
        if poller is not None:
            poller.stop()
            memory["web_fetches"] = len(poller.fetch_ms)
            memory["web_failures"] = poller.failures
            memory["web_fetch_p50_ms"] = statistics.median(poller.fetch_ms or [0.0])
            memory["web_fetch_max_ms"] = max(poller.fetch_ms or [0.0])
    finally:
        if poller is not None:
            poller.stop()
        service.terminate(timeout=30)
        rtu.close()
        upstream.close()
    return len(lines) / elapsed, memory


def latency(tmp: Path, lines: list[bytes], pace_s: float, during_training: bool) -> list[float]:
    service, rtu, upstream = start_service(tmp, "latency")
    trainer = None
    alerts = AlertCounter(upstream)
    try:
        if during_training:
            trainer = start_training_load(tmp)
        samples = []
        for line in lines:
            before = alerts()
            sent = time.perf_counter()
            rtu.send(line)
            while alerts() <= before:
                time.sleep(0.0002)
            samples.append((time.perf_counter() - sent) * 1000)
            time.sleep(pace_s)
        return samples
    finally:
        if trainer is not None:
            trainer.kill()
        service.terminate(timeout=30)
        rtu.close()
        upstream.close()


def start_training_load(tmp: Path):
    """A real training child on a separate store: CPU load like the trainer's."""
    import subprocess

    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "train.py"), "--load-only"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=525_600)
    parser.add_argument("--runs", type=int, default=3,
                        help="throughput replays, each on a fresh store; the median is reported")
    parser.add_argument("--latency-readings", type=int, default=1000)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--during-training", action="store_true",
                        help="run a training child while latency is measured")
    parser.add_argument("--allow-training", action="store_true",
                        help="let the service train its first model during the throughput replay")
    parser.add_argument("--poll-web", action="store_true",
                        help="also replay with the web page on, fetched every second, "
                             "and report both")
    parser.add_argument("--mqtt", metavar="URL",
                        help="also replay with the MQTT uplink on, publishing to this broker "
                             "('local': a Mosquitto started here), and report both")
    args = parser.parse_args()
    lines = year_of_lines(args.minutes)
    runs = []
    web_runs = []
    mqtt_runs = []
    with mqtt_broker(args.mqtt) as mqtt:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp_dir:
                runs.append(throughput(Path(tmp_dir), lines, args.allow_training))
            if args.poll_web:  # alternated with the page-off runs: the same load around both
                with tempfile.TemporaryDirectory() as tmp_dir:
                    web_runs.append(throughput(Path(tmp_dir), lines, args.allow_training,
                                               web=True))
            if mqtt:
                with tempfile.TemporaryDirectory() as tmp_dir:
                    mqtt_runs.append(throughput(Path(tmp_dir), lines, args.allow_training,
                                                mqtt=mqtt))
    poll_web = report_web(runs, web_runs) if args.poll_web else None
    mqtt_on = report_on_off("mqtt", runs, mqtt_runs) if mqtt_runs else None
    rates = sorted(rate for rate, _ in runs)
    rate = statistics.median(rates)
    memory = max((m for _, m in runs), key=lambda m: m["peak"])  # the worst run's
    rss = memory["peak"]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        samples = latency(tmp, lines[: args.latency_readings], args.pace_ms / 1000,
                          args.during_training)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"workload: {len(lines)} readings of one simulated sensor-year (seed 7), "
          f"latency on {len(samples)} readings paced {args.pace_ms} ms apart"
          + (" while a training child runs" if args.during_training else "")
          + ("; the service trained its first model during the replay" if args.allow_training
             else "; the service's first training held off (train.min_days = 3650)"))
    print(f"throughput {rate:,.0f} readings/s, median of {len(rates)} replays "
          f"({', '.join(f'{r:,.0f}' for r in rates)}; budget {BUDGET['readings_per_s']}); "
          f"latency p50 {p50:.2f} ms, p99 {p99:.2f} ms (budget {BUDGET['p99_ms']}); "
          f"service peak RSS {rss:.0f} MB, highest of the replays (budget {BUDGET['rss_mb']}); "
          f"at its end "
          f"{memory['anon']:.0f} MB heap + {memory['file']:.0f} MB mapped files (libraries, LMDB)")
    print(json.dumps({"bench": "ingest", "readings": len(lines), "readings_per_s": round(rate),
                      "runs": [round(r) for r in rates],
                      "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "rss_mb": round(rss, 1),
                      "rss_heap_mb": round(memory["anon"], 1), "rss_file_mb": round(memory["file"], 1),
                      "service_cpu_per_wall_s": round(memory["cpu_share"], 2),
                      "during_training": args.during_training,
                      "allow_training": args.allow_training, "budget": BUDGET,
                      **({"poll_web": poll_web} if poll_web else {}),
                      **({"mqtt": mqtt_on} if mqtt_on else {})}))


@contextlib.contextmanager
def mqtt_broker(url: str | None) -> Iterator[dict | None]:
    """The ``[mqtt]`` keys for ``--mqtt``: a given broker, or a Mosquitto started here."""
    if not url:
        yield None
        return
    if url != "local":
        yield {"url": url}
        return
    from tests.mosquitto import PASSWORD, USER, Broker

    with tempfile.TemporaryDirectory() as tmp_dir:
        broker = Broker(Path(tmp_dir) / "broker").start()
        password = Path(tmp_dir) / "password"
        password.write_text(PASSWORD)
        try:
            yield {"url": broker.url, "username": USER, "password_file": str(password)}
        finally:
            broker.stop()


def report_on_off(name: str, runs: list[tuple[float, dict]],
                  on_runs: list[tuple[float, dict]]) -> dict:
    off = statistics.median(rate for rate, _ in runs)
    on = statistics.median(rate for rate, _ in on_runs)
    change = (on - off) / off
    print(f"{name} on: {on:,.0f} readings/s against {off:,.0f} off ({change:+.1%}; "
          f"budget: within -10%)")
    return {"readings_per_s_off": round(off), "readings_per_s_on": round(on),
            "change": round(change, 3), "runs_on": sorted(round(r) for r, _ in on_runs)}


def report_web(runs: list[tuple[float, dict]], web_runs: list[tuple[float, dict]]) -> dict:
    off = statistics.median(rate for rate, _ in runs)
    on = statistics.median(rate for rate, _ in web_runs)
    fetches = sum(m["web_fetches"] for _, m in web_runs)
    failures = sum(m["web_failures"] for _, m in web_runs)
    p50 = statistics.median(m["web_fetch_p50_ms"] for _, m in web_runs)
    worst = max(m["web_fetch_max_ms"] for _, m in web_runs)
    print(f"web page polled (/ and /metrics every second): {on:,.0f} readings/s vs "
          f"{off:,.0f} with the page off ({100 * (on / off - 1):+.1f} %; budget within 10 %), "
          f"runs on {', '.join(f'{r:,.0f}' for r, _ in web_runs)}; {fetches} fetches, "
          f"{failures} failed, median {p50:.0f} ms, slowest {worst:.0f} ms")
    return {"readings_per_s_off": round(off), "readings_per_s_on": round(on),
            "change_pct": round(100 * (on / off - 1), 1),
            "runs_on": [round(r) for r, _ in web_runs], "fetches": fetches,
            "failures": failures, "fetch_p50_ms": round(p50, 1), "fetch_max_ms": round(worst, 1)}


if __name__ == "__main__":
    main()
