"""End to end: the real service, real sockets as ports, a scripted stream.

Covers every reject reason and every SYSTEM cause, duplicates, missing values
and status bits, the ``$ALR`` sequence and checksums, ``status`` and
``export readings`` while it runs, and a clean SIGTERM stop.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from core import frames
from core.types import FLAG_SYSTEM, Reading, SensorId
from tests.harness import TZ, PeerServer, Service, run_cli, wait_for, write_config

BASE = int(datetime(2026, 1, 5, 10, 0, tzinfo=TZ).timestamp())  # a Monday, in the past


def wdn(sensor: str, minute: int, flow: float | None, pressure: float | None, status: int = 0,
        at: int | None = None) -> bytes:
    t = at if at is not None else BASE + minute * 60
    return frames.encode(Reading(SensorId(sensor), t, flow, pressure, status), TZ)


def with_body(body: bytes) -> bytes:
    return b"$" + body + b"*%02X\r\n" % frames.checksum(body)


GARBAGE = {
    "too_long": b"$WDN,001," + b"1" * 300 + b"*00\r\n",
    "not_ascii": with_body("WDN,001,20260105100000,1.0,2.0,00,é".encode()),
    "no_start": b"hello, world\r\n",
    "no_checksum": b"$WDN,001,20260105100000,1.0,2.0,00\r\n",
    "bad_checksum": b"$WDN,001,20260105100000,1.0,2.0,00*00\r\n",
    "unknown_type": with_body(b"XYZ,1,2"),
    "field_count": with_body(b"WDN,001,20260105100000,1.0,00"),
    "bad_field": with_body(b"WDN,0A1,20260105100000,1.0,2.0,00"),
}


def script() -> tuple[list[bytes], dict[tuple[str, int], tuple[str, str]]]:
    """The stream, and the expected flags (flow, pressure) per (sensor, time)."""
    lines: list[bytes] = []
    expect: dict[tuple[str, int], tuple[str, str]] = {}

    def send(sensor: str, minute: int, flow, pressure, status=0, ff="00", pf="00", at=None):
        lines.append(wdn(sensor, minute, flow, pressure, status, at))
        expect[(sensor, at if at is not None else BASE + minute * 60)] = (ff, pf)

    send("003", 0, 5.0, 3.0)  # then silent: a silence alert must follow
    for minute in range(0, 12):
        flow1 = 10.0 + minute * 0.37
        if minute == 1:
            send("001", minute, None, 4.0, ff="01")  # missing flow
        elif minute == 2:
            send("001", minute, flow1, 4.1, status=0x01, ff="01")  # flow sensor fault
        elif minute == 3:
            send("001", minute, flow1, 4.2, status=0x02, pf="01")  # pressure sensor fault
        elif minute == 4:
            send("001", minute, flow1, 4.3, status=0x08, ff="01", pf="01")  # power failure
        elif minute == 5:
            send("001", minute, 20000.0, 4.4, ff="01")  # flow out of physical range
        elif minute == 6:
            send("001", minute, flow1, 25.0, pf="01")  # pressure out of physical range
        else:
            send("001", minute, flow1, 4.0 + minute * 0.01)
        # sensor 002 is flat-lined from minute 3 on (stuck_minutes = 4)
        send("002", minute, 7.5 if minute >= 3 else 7.0 + minute * 0.1, 3.0 + minute * 0.01,
             ff="01" if minute >= 7 else "00")
        if minute == 2:
            lines.append(lines[-1])  # identical duplicate: stored once
            lines.append(wdn("002", minute, 99.0, 1.0))  # differing duplicate: first wins
            lines.extend(GARBAGE.values())
            lines.append(b"noise before the dollar " + wdn("004", 11, 11.0, 4.0))
            expect[("004", BASE + 11 * 60)] = ("00", "00")
    future = int(time.time()) + 86400
    send("001", 0, 12.0, 4.0, at=future, ff="01", pf="01")  # clock ahead
    return lines, expect


@pytest.fixture
def ports():
    rtu, upstream = PeerServer(), PeerServer()
    yield rtu, upstream
    rtu.close()
    upstream.close()


def test_scripted_stream_end_to_end(tmp_path, ports):
    rtu, upstream = ports
    config = write_config(
        tmp_path / "site.toml", serial_port=rtu.url, upstream_port=upstream.url,
        store=tmp_path / "store.lmdb",
        extra="[system]\nsilence_minutes = 3\nstuck_minutes = 4\n",
    )
    service = Service(config).start()
    try:
        lines, expect = script()
        rtu.send(b"".join(lines))
        alerts = lambda: [f for f in _frames(upstream) if isinstance(f, frames.AlertFrame)]
        wait_for(lambda: len([a for a in alerts() if a.flow is not None or a.pressure is not None])
                 >= len(expect), what="an $ALR per reading")
        wait_for(lambda: any(a.sensor == "003" and a.flow is None and a.pressure is None
                             for a in alerts()), what="silence alert for 003")

        received = _frames(upstream)
        assert all(not isinstance(f, frames.Reject) for f in received), received
        seqs = [f.seq for f in received]
        assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers must step by one"

        by_reading = {}
        silence = [a for a in alerts() if a.flow is None and a.pressure is None
                   and (a.sensor, a.time) not in expect]
        for a in alerts():
            if a in silence:
                continue
            assert (a.sensor, a.time) not in by_reading, f"two $ALR for {a}"
            by_reading[(a.sensor, a.time)] = (f"{a.flow_flags:02X}", f"{a.pressure_flags:02X}")
        assert by_reading == expect

        assert {a.sensor for a in silence} == {"003"}
        assert silence and all(a.flow_flags == FLAG_SYSTEM == a.pressure_flags for a in silence)
        assert all(a.time - BASE >= 3 * 60 for a in silence)

        status = run_cli(config, "status")
        assert status.returncode == 0, status.stderr
        # The memory budget: the service keeps heavy libraries out (pandas ~40 MB,
        # TensorFlow far more); the criteria work in numpy, training in its own process.
        mapped = Path(f"/proc/{service.process.pid}/maps").read_text()
        assert "pandas" not in mapped and "tensorflow" not in mapped
        for reason in GARBAGE:
            assert f"{reason}=1" in status.stdout, (reason, status.stdout)
        assert "duplicates: 2 (differing: 1)" in status.stdout
        # Without ACK every frame was sent: nothing the outbox bound removed is lost.
        assert "outbox dropped: 0 never sent" in status.stdout, status.stdout
        assert "003:" in status.stdout
        # The map limit and the history it holds (default 1024 MB, outbox 100,000 frames).
        assert "% used of 1024 MB (room for about 40 sensor-years of readings)" in status.stdout

        export = run_cli(config, "export", "readings", "--sensor", "002")
        rows = export.stdout.splitlines()
        assert rows[0] == "sensor,time,flow,pressure,status"
        assert rows[1] == "002,2026-01-05T10:00:00+09:00,7,3,00"
        assert len(rows) == 1 + 12
    finally:
        code = service.terminate(timeout=10)
    log = service.log()
    assert code == 0, log
    assert "stopped (exit 0)" in log
    assert "map up to 1024 MB, room for about 40 sensor-years of readings" in log


def _frames(upstream: PeerServer) -> list[object]:
    return [frames.decode(line, TZ) for line in upstream.lines()]


def test_a_flow_too_long_for_the_alert_line_goes_out_empty_with_system(tmp_path, ports):
    rtu, upstream = ports
    config = write_config(tmp_path / "site.toml", serial_port=rtu.url,
                          upstream_port=upstream.url, store=tmp_path / "store.lmdb")
    long_flow = b"1" * 219  # a valid decimal: the $WDN is 254 bytes, within the limit
    at = BASE + 3 * 60
    line = with_body(b"WDN,001,%s,%s,4.11,00"
                     % (frames.format_local_time(at, TZ).encode(), long_flow))
    assert len(line) <= frames.MAX_LINE
    service = Service(config).start()
    try:
        # Minutes 0-10: the reading at minute 10 closes the $SRV block holding minute 3.
        rtu.send(b"".join(line if m == 3 else wdn("001", m, 10.0 + m, 4.0) for m in range(11)))
        wait_for(lambda: sum(isinstance(f, frames.ServerReportLine) for f in _frames(upstream))
                 >= 10, what="the $ALR of each reading and the $SRV block")
        received = upstream.lines()
        assert all(len(raw) + len(b"\r\n") <= frames.MAX_LINE for raw in received)
        decoded = [frames.decode(raw, TZ) for raw in received]
        assert not any(isinstance(f, frames.Reject) for f in decoded), decoded
        [alert] = [f for f in decoded if isinstance(f, frames.AlertFrame) and f.time == at]
        assert (alert.flow, alert.pressure) == (None, 4.11)
        assert alert.flow_flags & FLAG_SYSTEM and alert.pressure_flags == 0
        [report] = [f for f in decoded if isinstance(f, frames.ServerReportLine) and f.time == at]
        assert report.flow is None and report.flow_flags & FLAG_SYSTEM and report.pressure == 4.11

        export = run_cli(config, "export", "readings", "--sensor", "001")
        assert export.returncode == 0, export.stderr
        [row] = [r for r in export.stdout.splitlines() if "T10:03:00" in r]
        sensor, _, flow, pressure, status = row.split(",")
        assert float(flow) == float(long_flow) and (pressure, status) == ("4.11", "00")
    finally:
        assert service.terminate(timeout=10) == 0, service.log()
