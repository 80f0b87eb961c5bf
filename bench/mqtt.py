"""Bench: drain a backlog of outbox frames to a local Mosquitto through the MQTT uplink.

Workload: a store whose outbox holds ``--frames`` (default 100,000) ``$ALR``
frames of three sensors, then the real ``MqttPublisher`` actor started on it
against a Mosquitto started here (Debian's ``mosquitto``, a free local port),
QoS 1, until the broker has acknowledged every frame. Runs ``--runs`` times
on fresh stores and reports the median drain rate, the p99 time from
publishing a frame to its PUBACK (over all runs), and the process RSS.

Budget (issue 11): >= 5,000 frames/s drained.

Last line: ``{"bench": "mqtt", "frames": N, "frames_per_s": X, "p99_publish_to_ack_ms": Y,
"rss_mb": Z, ...}``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.base import ActorContext, Peers, RuntimeStats  # noqa: E402
from actors.mqtt_publisher import MqttPublisher  # noqa: E402
from core.config import parse_config  # noqa: E402
from core.frames import AlertFrame  # noqa: E402
from core.outbox import wire_encoder  # noqa: E402
from core.types import EpochSeconds, SensorId  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.mosquitto import PASSWORD, USER, Broker  # noqa: E402

BUDGET_FRAMES_PER_S = 5000
T0 = 1_780_000_000


class TimedPublisher(MqttPublisher):
    """The real actor, noting when each frame was handed to the client and acknowledged."""

    last: TimedPublisher | None = None
    published_at: dict[int, float]
    latencies: list[float]

    def on_start(self) -> None:
        self.published_at, self.latencies = {}, []
        TimedPublisher.last = self
        super().on_start()

    def _drain(self) -> None:
        before = self._next
        super()._drain()
        now = time.perf_counter()
        for seq in range(before, self._next):
            self.published_at[seq] = now

    def on_broker_ack(self, message: Any) -> None:
        now = time.perf_counter()
        for seq in message.seqs:
            if seq in self.published_at:
                self.latencies.append(now - self.published_at.pop(seq))
        super().on_broker_ack(message)


def fill(store: Store, frames: int) -> None:
    chunk = 10_000
    for start in range(0, frames, chunk):
        def write(batch: Any, start: int = start) -> None:
            for i in range(start, min(frames, start + chunk)):
                batch.append_outbox(AlertFrame(
                    SensorId(f"{1 + i % 3:03d}"), EpochSeconds(T0 + (i // 3) * 60),
                    12.5 + i % 7, 4.1, 0, 0))
        store.transact(write)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_once(workdir: Path, broker: Broker, frames: int) -> tuple[float, list[float]]:
    password = workdir / "password"
    workdir.mkdir(parents=True)
    password.write_text(PASSWORD)
    config = parse_config({
        "site": {"name": "bench"},
        "upstream": {"outbox_max": frames + 1000},
        "storage": {"path": str(workdir / "store")},
        "mqtt": {"url": broker.url, "username": USER, "password_file": str(password),
                 "drain_per_s": 1_000_000.0, "max_inflight": 1000},
    })
    store = Store(workdir / "store", outbox_max=frames + 1000,
                  outbox_wire=wire_encoder(config.site.tz), outbox_publisher=True)
    fill(store, frames)
    done = threading.Event()
    crashed: list[BaseException | None] = []

    def report_crash(role: str, error: BaseException | None) -> None:
        crashed.append(error)
        done.set()

    context = ActorContext(config, store, Peers(), RuntimeStats(), report_crash)
    started = time.perf_counter()
    ref = TimedPublisher.start(context)
    try:
        while not done.is_set():
            with store.read() as view:
                if view.offset("mqtt") >= frames:
                    break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        ref.stop()
        store.close()
    if crashed:
        raise RuntimeError(f"the publisher crashed: {crashed[0]!r}")
    actor = TimedPublisher.last
    assert actor is not None
    return frames / elapsed, actor.latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rates: list[float] = []
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            for run in range(args.runs):
                rate, lat = run_once(Path(tmp) / f"run{run}", broker, args.frames)
                rates.append(rate)
                latencies.extend(lat)
                print(f"run {run + 1}: {args.frames} frames, {rate:,.0f} frames/s", flush=True)
        finally:
            broker.stop()
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
    median = statistics.median(rates)
    print(f"median {median:,.0f} frames/s (budget >= {BUDGET_FRAMES_PER_S:,}); "
          f"p99 publish->PUBACK {p99:.1f} ms; RSS {rss_mb():.1f} MB")
    print(json.dumps({"bench": "mqtt", "frames": args.frames, "frames_per_s": round(median),
                      "p99_publish_to_ack_ms": round(p99, 2), "rss_mb": round(rss_mb(), 1),
                      "runs": [round(r) for r in rates],
                      "budget_frames_per_s": BUDGET_FRAMES_PER_S}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
