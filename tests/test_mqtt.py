"""The MQTT uplink against a real Mosquitto: the real service, real brokers, real subscribers.

Each test starts its own broker on free local ports (``tests/mosquitto.py``),
plays the RTU and the serial upstream through sockets (``tests/harness.py``)
and subscribes to what the gateway publishes.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from core import frames
from core.types import Reading, SensorId
from storage.store import Store
from tests.harness import TZ, PeerServer, Service, run_cli, wait_for, write_config
from tests.mosquitto import PASSWORD, USER, Broker, Certificates, Mqtt311Front, Subscriber

pytestmark = pytest.mark.slow

BASE = int(datetime(2026, 3, 2, 0, 0, tzinfo=TZ).timestamp())  # a Monday, in the past


def readings(minutes: range, sensors: tuple[str, ...] = ("001",)) -> bytes:
    lines = []
    for minute in minutes:
        for sensor in sensors:
            flow = 10.0 + (minute % 1440) / 144 + int(sensor)
            lines.append(frames.encode(
                Reading(SensorId(sensor), BASE + minute * 60, round(flow, 2), 4.0, 0), TZ))
    return b"".join(lines)


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def peers():
    inbound, upstream = PeerServer(), PeerServer()
    yield inbound, upstream
    inbound.close()
    upstream.close()


def gateway(tmp_path: Path, inbound: PeerServer, upstream: PeerServer, mqtt: dict,
            password: str = PASSWORD, sections: dict | None = None) -> Service:
    password_file = tmp_path / "mqtt.password"
    password_file.write_text(password + "\n")
    config = write_config(
        tmp_path / "site.toml", serial_port=inbound.url, upstream_port=upstream.url,
        store=tmp_path / "store",
        sections={"mqtt": {"username": USER, "password_file": str(password_file),
                           "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0, **mqtt},
                  "supervisor": {"health_interval_s": 2.0}, **(sections or {})})
    return Service(config).start()


def serial_frames(upstream: PeerServer) -> dict[int, bytes]:
    """The serial upstream's frames by seq (a resend is the same line)."""
    out = {}
    for line in upstream.lines():
        frame = frames.decode(line, TZ)
        if not isinstance(frame, frames.Reject):
            out[frame.seq] = line  # type: ignore[union-attr]
    return out


def test_every_frame_arrives_once_with_its_payload(tmp_path, broker, peers) -> None:
    inbound, upstream = peers
    subscriber = Subscriber(broker, "wdn/test/#")
    service = gateway(tmp_path, inbound, upstream, {"url": broker.url})
    try:
        # Nine days of one sensor: a week of history gives forecasts, so $FCD goes out.
        inbound.send(readings(range(0, 9 * 1440)))
        wait_for(lambda: any(p["type"] == "fcd" for p in subscriber.payloads("/fcd")),
                 timeout=120, what="a daily forecast over MQTT")
        wait_for(lambda: any(p["type"] == "hlt" for p in subscriber.payloads("/health")),
                 timeout=30, what="a health frame over MQTT")
        sent = serial_frames(upstream)
        # Everything the serial side has also reached the broker (the two run apart).
        wait_for(lambda: {p["seq"] for p in subscriber.payloads()} >= set(sent),
                 timeout=60, what="every serial frame over MQTT")
        published = subscriber.payloads()
        seqs = [p["seq"] for p in published]
        assert len(seqs) == len(set(seqs)), "a frame arrived twice without a reconnect"
        for p in published:
            if p["seq"] in sent:
                assert p["line"].encode() == sent[p["seq"]]
        by_topic = defaultdict(list)
        for topic, payload, _ in subscriber.messages:
            if payload.startswith(b"{"):
                by_topic[topic].append(json.loads(payload)["seq"])
        assert set(by_topic) >= {"wdn/test/001/alr", "wdn/test/001/srv", "wdn/test/001/fcd",
                                 "wdn/test/health"}
        for topic, order in by_topic.items():
            assert order == sorted(order), f"{topic} out of order"
        alr = next(p for p in published if p["type"] == "alr")
        assert set(alr) == {"type", "seq", "line", "sensor", "time", "flow", "pressure",
                            "flow_flags", "pressure_flags"}
        assert alr["sensor"] == "001" and alr["time"].endswith("+09:00")
        assert subscriber.texts("wdn/test/status")[-1] == "online"
        status = run_cli(service.config, "status").stdout
        assert f"mqtt {broker.url}: connected" in status
        assert "dropped unpublished: 0" in status
    finally:
        code = service.terminate()
        subscriber.close()
    assert code == 0
    assert "offline" in subscriber.texts("wdn/test/status")


def test_a_broker_down_for_ten_minutes_loses_nothing_and_keeps_order(tmp_path, peers) -> None:
    inbound, upstream = peers
    broker = Broker(tmp_path / "broker", persistent=True).start()
    subscriber = Subscriber(broker, "wdn/test/001/alr", persistent=True)
    service = gateway(tmp_path, inbound, upstream, {"url": broker.url})
    try:
        inbound.send(readings(range(0, 10)))
        wait_for(lambda: len(subscriber.payloads()) >= 10, what="the first ten alerts")
        broker.stop()
        # Ten minutes of readings while the broker is away: the serial side goes on.
        inbound.send(readings(range(10, 20)))
        wait_for(lambda: sum(1 for f in serial_frames(upstream).values()
                             if f.startswith(b"$ALR")) >= 20,
                 what="the serial side carrying on while the broker is down")
        status = wait_for(lambda: (s := run_cli(service.config, "status").stdout)
                          and ": down since" in s and s, what="status showing the broker down")
        assert "backlog" in status
        assert len(subscriber.payloads()) <= 10 + 1
        broker.start()
        wait_for(lambda: {p["seq"] for p in subscriber.payloads()}
                 >= {seq for seq, f in serial_frames(upstream).items() if f.startswith(b"$ALR")},
                 timeout=60, what="every alert after the broker came back")
        # In order of first arrival (QoS 1 delivers at least once: a frame in flight
        # when the broker went down may come again later).
        arrived = [(p["seq"], p["time"]) for p in subscriber.payloads()]
        first = list(dict.fromkeys(arrived))
        assert first == sorted(first), f"order not kept: {arrived}"
        assert len({t for _, t in first}) == 20
    finally:
        code = service.terminate()
        subscriber.close()
        broker.stop()
    assert code == 0


def test_a_kill_9_in_flight_republishes_with_the_same_seq(tmp_path, broker, peers) -> None:
    inbound, upstream = peers
    subscriber = Subscriber(broker, "wdn/test/#")
    mqtt = {"url": broker.url, "drain_per_s": 2000.0}
    service = gateway(tmp_path, inbound, upstream, mqtt)
    inbound.send(readings(range(0, 1500), ("001", "002")))
    wait_for(lambda: len(subscriber.payloads()) >= 500, what="frames in flight")
    service.kill()
    inbound.drop()
    service = gateway(tmp_path, inbound, upstream, mqtt)
    try:
        # 1,500 minutes of two sensors: 3,000 $ALR and 3,000 $SRV lines at least.
        # (Health frames keep coming: the backlog is rarely exactly empty.)
        head = wait_for(lambda: (p := mqtt_progress(service))[0] >= 6_000 and p[1] <= 3
                        and p[0], timeout=120, what="the MQTT uplink caught up")
        # Every frame the broker acknowledged reached the subscriber.
        wait_for(lambda: {p["seq"] for p in subscriber.payloads()} >= set(range(1, head + 1)),
                 what="every frame up to the cursor at least once")
        lines: dict[int, set[str]] = defaultdict(set)
        for p in subscriber.payloads():
            lines[p["seq"]].add(p["line"])
        assert all(len(v) == 1 for v in lines.values()), "a seq carried two different frames"
    finally:
        code = service.terminate()
        subscriber.close()
    assert code == 0


def mqtt_progress(service: Service) -> tuple[int, int]:
    """(published through, backlog) from ``status``."""
    status = run_cli(service.config, "status").stdout
    line = next((x for x in status.splitlines() if x.startswith("mqtt ")), "")
    if "published through" not in line:
        return 0, -1
    through = int(line.split("published through ")[1].split(",")[0])
    backlog = int(line.split("backlog ")[1].split(" ")[0])
    return through, backlog


@pytest.mark.parametrize("fault", ["password", "ca"])
def test_a_wrong_password_or_ca_gives_one_clear_line_and_retries(tmp_path, peers, certs,
                                                                   fault) -> None:
    inbound, upstream = peers
    broker = Broker(tmp_path / "broker", tls=certs).start()
    if fault == "password":
        service = gateway(tmp_path, inbound, upstream, {"url": broker.url}, password="wrong")
    else:
        service = gateway(tmp_path, inbound, upstream,
                          {"url": broker.tls_url, "ca_file": str(certs.other_ca)})
    try:
        inbound.send(readings(range(0, 5)))
        wait_for(lambda: len(serial_frames(upstream)) >= 5, what="the serial side unaffected")
        expected = "Not authorized" if fault == "password" else "TLS certificate not trusted"
        wait_for(lambda: expected in service.log(), what=f"the log saying {expected!r}")
        time.sleep(3)  # several retries (reconnect_max_s = 1)
        log = service.log()
        assert sum(expected in line for line in log.splitlines()) == 1, log
        status = run_cli(service.config, "status").stdout
        assert expected in status and "actor restarts: none" in status, status
        assert service.process is not None and service.process.poll() is None
    finally:
        code = service.terminate()
        broker.stop()
    assert code == 0


def test_mutual_tls_delivers(tmp_path, peers, certs) -> None:
    inbound, upstream = peers
    broker = Broker(tmp_path / "broker", tls=certs, require_client_cert=True).start()
    subscriber = Subscriber(broker, "wdn/test/001/alr")
    service = gateway(tmp_path, inbound, upstream, {
        "url": broker.tls_url, "ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
        "key_file": str(certs.client_key)})
    try:
        inbound.send(readings(range(0, 5)))
        wait_for(lambda: len(subscriber.payloads()) >= 5, what="alerts over mutual TLS")
    finally:
        code = service.terminate()
        subscriber.close()
        broker.stop()
    assert code == 0


def test_a_subscriber_sees_offline_when_the_gateway_is_killed(tmp_path, broker, peers) -> None:
    inbound, upstream = peers
    subscriber = Subscriber(broker, "wdn/test/status")
    service = gateway(tmp_path, inbound, upstream, {"url": broker.url, "keepalive_s": 5})
    wait_for(lambda: subscriber.texts("wdn/test/status")[-1:] == ["online"],
             what="the gateway online")
    service.kill()
    wait_for(lambda: subscriber.texts("wdn/test/status")[-1:] == ["offline"],
             timeout=20, what="the last will")
    subscriber.close()


def test_a_broker_without_mqtt_5_gets_3_1_1(tmp_path, broker, peers) -> None:
    inbound, upstream = peers
    front = Mqtt311Front(broker)
    subscriber = Subscriber(broker, "wdn/test/001/alr")
    service = gateway(tmp_path, inbound, upstream, {"url": front.url})
    try:
        inbound.send(readings(range(0, 5)))
        wait_for(lambda: len(subscriber.payloads()) >= 5, what="alerts through a 3.1.1 broker")
        assert front.refused >= 1
        assert "connected since" in run_cli(service.config, "status").stdout
        assert "(MQTT 3.1.1)" in run_cli(service.config, "status").stdout
    finally:
        code = service.terminate()
        subscriber.close()
        front.close()
    assert code == 0


def test_with_serial_acks_a_frame_waits_in_the_outbox_for_the_broker(tmp_path, peers) -> None:
    inbound, upstream = peers
    broker = Broker(tmp_path / "broker", persistent=True).start()
    subscriber = Subscriber(broker, "wdn/test/001/alr", persistent=True)
    broker.stop()  # the subscriber's session stays with the broker
    service = gateway(tmp_path, inbound, upstream, {"url": broker.url},
                      sections={"upstream": {"ack": True, "ack_timeout_s": 1.0}})
    acked: set[int] = set()

    def ack_everything() -> int:
        for seq in set(serial_frames(upstream)) - acked:
            body = f"ACK,{seq}".encode()
            upstream.send(b"$%s*%02X\r\n" % (body, frames.checksum(body)))
            acked.add(seq)
        return len(acked)

    try:
        inbound.send(readings(range(0, 10)))
        wait_for(lambda: ack_everything() >= 10, what="the serial side acknowledging")
        time.sleep(2.5)  # two ack timeouts: nothing acknowledged may go out again
        ack_everything()
        lines = [f for f in upstream.lines() if f.startswith(b"$ALR")]
        assert len(lines) == len(set(lines)) == 10, "an acknowledged frame was resent"
        assert ": down since" in run_cli(service.config, "status").stdout
        broker.start()
        wait_for(lambda: len({p["seq"] for p in subscriber.payloads()}) >= 10,
                 timeout=30, what="the alerts reaching the broker after all")

        alerts = {seq for seq, f in serial_frames(upstream).items() if f.startswith(b"$ALR")}

        def alerts_gone() -> bool:  # (health and silence frames keep coming meanwhile)
            with Store(tmp_path / "store", readonly=True) as store, store.read() as view:
                return not alerts & {e.seq for e in view.outbox(limit=10_000)}

        wait_for(alerts_gone, timeout=30, what="the alerts gone once both uplinks had them")
    finally:
        code = service.terminate()
        subscriber.close()
        broker.stop()
    assert code == 0
