"""Ingest benchmark: one sensor-year through the real service.

Workload: 525,600 one-minute ``$WDN`` readings of one simulated sensor (seed 7,
no faults), served over a real TCP socket to ``python supervisor.py`` running as
a child process (serial.port = socket://...), whose ``$ALR`` frames come back on
a second socket. Phase 1 sends everything as fast as the gateway takes it
(throughput, end to end: first line out -> last ``$ALR`` in). Phase 2 sends
readings one at a time at a real-time-like pace on a fresh store and measures
each reading's latency (its frame written -> its ``$ALR`` read). RSS is the
service's peak (VmHWM). ``--during-training`` runs a training child while
phase 2 measures, to show training does not stall the real-time path.

Prints the figures, the budget from DESIGN.md, and last a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_alerts(upstream: PeerServer) -> int:
    return sum(1 for line in upstream.lines() if line.startswith(b"$ALR"))


def start_service(tmp: Path, name: str, extra: str = "") -> tuple[Service, PeerServer, PeerServer]:
    rtu, upstream = PeerServer(), PeerServer()
    config = write_config(tmp / f"{name}.toml", serial_port=rtu.url, upstream_port=upstream.url,
                          store=tmp / f"{name}.lmdb", extra=extra)
    service = Service(config, args=["--log-level", "WARNING"]).start()
    rtu.wait_connected(60)
    upstream.wait_connected(60)
    return service, rtu, upstream


def throughput(tmp: Path, lines: list[bytes]) -> tuple[float, float]:
    service, rtu, upstream = start_service(tmp, "throughput")
    try:
        started = time.perf_counter()
        chunk = 5000
        for i in range(0, len(lines), chunk):
            rtu.send(b"".join(lines[i:i + chunk]))
        while count_alerts(upstream) < len(lines):
            if time.perf_counter() - started > 1800:
                raise TimeoutError("throughput phase did not finish in 30 minutes")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        rss = peak_rss_mb(service.process.pid)
    finally:
        service.terminate(timeout=30)
        rtu.close()
        upstream.close()
    return len(lines) / elapsed, rss


def latency(tmp: Path, lines: list[bytes], pace_s: float, during_training: bool) -> list[float]:
    service, rtu, upstream = start_service(tmp, "latency")
    trainer = None
    try:
        if during_training:
            trainer = start_training_load(tmp)
        samples = []
        for line in lines:
            before = count_alerts(upstream)
            sent = time.perf_counter()
            rtu.send(line)
            while count_alerts(upstream) <= before:
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
    parser.add_argument("--latency-readings", type=int, default=1000)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--during-training", action="store_true")
    args = parser.parse_args()
    lines = year_of_lines(args.minutes)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        rate, rss = throughput(tmp, lines)
        samples = latency(tmp, lines[: args.latency_readings], args.pace_ms / 1000,
                          args.during_training)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"workload: {len(lines)} readings of one simulated sensor-year (seed 7), "
          f"latency on {len(samples)} readings paced {args.pace_ms} ms apart"
          + (" while a training child runs" if args.during_training else ""))
    print(f"throughput {rate:,.0f} readings/s (budget {BUDGET['readings_per_s']}); "
          f"latency p50 {p50:.2f} ms, p99 {p99:.2f} ms (budget {BUDGET['p99_ms']}); "
          f"service peak RSS {rss:.0f} MB (budget {BUDGET['rss_mb']})")
    print(json.dumps({"bench": "ingest", "readings": len(lines), "readings_per_s": round(rate),
                      "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "rss_mb": round(rss, 1),
                      "during_training": args.during_training, "budget": BUDGET}))


if __name__ == "__main__":
    main()
