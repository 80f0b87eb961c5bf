"""Forecasting through the service: the trainer's spawned process, the model swap,
$FCD from the model, PREDICT against it, and a failed training keeping the model.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from core import frames
from core.simulator import Simulator, SimulatorSettings
from core.types import FLAG_PREDICT, Reading
from tests.harness import TZ, PeerServer, Service, run_cli, wait_for, write_config

DAYS = 26


@pytest.fixture
def trained_service(tmp_path):
    """A service fed 26 days of one sensor, until its first model is accepted."""
    rtu, upstream = PeerServer(), PeerServer()
    config = write_config(
        tmp_path / "site.toml", serial_port=rtu.url, upstream_port=upstream.url,
        store=tmp_path / "store.lmdb",
        sections={"train": {"min_days": 25, "epochs": 3, "lookback_hours": 96, "timeout_s": 300}},
    )
    service = Service(config).start()
    start = int(datetime.combine(date.today() - timedelta(days=DAYS + 1), datetime.min.time(),
                                 TZ).timestamp())
    sim = Simulator(SimulatorSettings(sensors=1, seed=5, start=start, realtime_cap=False))
    history = list(sim.readings(start, DAYS * 1440))
    rtu.send(b"".join(frames.encode(r, TZ) for r in history))
    try:
        wait_for(lambda: _model_line(config).startswith("model 2"), timeout=240, what="an accepted model")
        yield config, service, rtu, upstream, history
    finally:
        if service.process.poll() is None:
            service.terminate()
        rtu.close()
        upstream.close()


def _model_line(config: Path) -> str:
    status = run_cli(config, "status").stdout
    return next((line.strip() for line in status.splitlines()
                 if line.strip().startswith("model")), "")


def _received(upstream: PeerServer) -> list[object]:
    return [frames.decode(line, TZ) for line in upstream.lines()]


def test_model_trained_in_a_child_swapped_in_and_used(trained_service):
    config, service, rtu, upstream, history = trained_service
    line = _model_line(config)
    assert "MAE model" in line and "residual band" in line, line
    assert "tensorflow" not in Path(f"/proc/{service.process.pid}/maps").read_text(), \
        "the service process must never load TensorFlow"

    # The next hours are forecast by the model; a deviation from it raises PREDICT.
    last = history[-1].time
    before = len(upstream.lines())
    normal = [Reading(r.sensor, r.time + 2 * 3600 - (r.time - last) % 60, r.flow, r.pressure, 0)
              for r in history[-120:-60]]
    rtu.send(b"".join(frames.encode(r, TZ) for r in normal))
    wait_for(lambda: json.loads(run_cli(config, "export", "criteria").stdout or "{}") is not None
             and _forecast_source(config) == "lstm", timeout=60, what="an LSTM forecast")
    fcd = [f for f in _received(upstream)[before:] if isinstance(f, frames.DailyForecastLine)]
    assert len(fcd) >= 7

    spike_start = normal[-1].time + 60
    deviation = [Reading(history[-1].sensor, spike_start + m * 60, 5 * (normal[-1].flow or 1) + 50,
                         normal[-1].pressure, 0) for m in range(8)]
    rtu.send(b"".join(frames.encode(r, TZ) for r in deviation))
    alerts = wait_for(lambda: [f for f in _received(upstream) if isinstance(f, frames.AlertFrame)
                               and f.time >= spike_start and f.time < spike_start + 8 * 60]
                      if len([f for f in _received(upstream) if isinstance(f, frames.AlertFrame)
                              and f.time >= spike_start]) >= 8 else None,
                      timeout=30, what="alerts for the deviation")
    flags = [a.flow_flags for a in sorted(alerts, key=lambda a: a.time)]
    assert not flags[0] & FLAG_PREDICT, "PREDICT must wait for persist_minutes"
    assert all(f & FLAG_PREDICT for f in flags[3:]), flags


def _forecast_source(config: Path) -> str | None:
    from storage.store import Store

    with Store(Path(_store_path(config)), readonly=True) as store:
        with store.read() as view:
            doc = view.doc("forecast", "001")
        return doc and doc["source"]


def _store_path(config: Path) -> str:
    import tomllib

    return tomllib.loads(config.read_text())["storage"]["path"]


def test_a_failed_training_keeps_the_model_and_says_so(trained_service):
    config, service, rtu, upstream, history = trained_service
    model_before = _model_line(config)
    result = run_cli(config, "train", "--sensor", "001", timeout=120,
                     env={"WDN_TRAIN_FAULT": "crash", "WDN_TRAIN_FAULT_AFTER_S": "0.5"})
    assert result.returncode == 1
    assert "001: failed" in result.stdout
    status = run_cli(config, "status").stdout
    assert model_before.split(";")[0] in status, "the old model stays in service"
    assert "last training failed" in status and "retry after" in status
