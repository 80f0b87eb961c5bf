"""The web page's parts without a browser: config, chart series, the WSGI app over a
real store, /metrics, /healthz from the supervisor's ping rounds, the server thread."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from io import BytesIO

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from actors import ACTOR_CLASSES
from actors.supervision import Liveness, Supervisor
from cli.commands import detection_line
from core import messages
from core.config import ConfigError, parse_config, parse_listen
from core.frames import HealthFrame
from core.types import EpochSeconds, Reading, SensorId
from tests.conftest import make_config
from tests.harness import ROOT, wait_for
from web import series as S
from web.app import Health
from web.metrics import METRICS, describe_metrics
from web.server import WebError, WebServer, build_app, load_token

TOKEN = "abcdef0123456789"
T0 = 1_767_571_200  # 2026-01-05 09:00 +09:00, a Monday


# -- config -------------------------------------------------------------------------


def test_web_is_off_by_default_and_on_with_a_listen_address():
    assert parse_config({}).web.address is None
    assert parse_config({"web": {"listen": "127.0.0.1:8080"}}).web.address == ("127.0.0.1", 8080)
    assert parse_config({"web": {"listen": "[::1]:9"}}).web.address == ("::1", 9)


@pytest.mark.parametrize("listen, message", [
    ("8080", "expected host:port"), ("127.0.0.1:0", "port must be 1..65535"),
    ("127.0.0.1:http", "port must be 1..65535"), ("gateway.local:80", "IP address or localhost"),
    ("::1:80", "IPv6 address goes in brackets"), ("[127.0.0.1]:80", "brackets are for an IPv6"),
])
def test_a_bad_listen_address_is_one_line_naming_the_key(listen, message):
    with pytest.raises(ConfigError) as info:
        parse_config({"web": {"listen": listen}})
    [line] = info.value.errors
    assert line.startswith("web.listen: ") and message in line


def test_a_non_loopback_address_needs_a_token_file():
    with pytest.raises(ConfigError) as info:
        parse_config({"web": {"listen": "0.0.0.0:8080"}})
    assert info.value.errors == [
        "web.token_file: must be set when web.listen is '0.0.0.0:8080' (not a loopback address)"]
    assert parse_config({"web": {"listen": "0.0.0.0:8080", "token_file": "/etc/t"}}).web.token_file
    assert parse_config({"web": {"listen": "localhost:8080"}}).web.address == ("localhost", 8080)


@given(st.text(max_size=40))
def test_parse_listen_takes_any_text_with_a_value_error_at_worst(text):
    try:
        host, port = parse_listen(text)
    except ValueError:
        return
    assert 1 <= port <= 65535 and f":{port}" in text and host


def test_the_readme_lists_every_metric():
    readme = (ROOT / "README.md").read_text()
    assert describe_metrics() in readme
    assert len(describe_metrics().splitlines()) == len(METRICS) + 2


# -- chart series (pure) ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), max_size=3000),
       st.integers(2, 600), st.integers(60, 600))
def test_downsampling_keeps_extremes_within_the_budget(values, max_points, step):
    v = np.array(values, dtype=np.float64)
    t = T0 + step * np.arange(len(v), dtype=np.int64)
    out = S.minmax_downsample(t, v, max_points, step_s=step)
    assert len(out) <= max(max_points, 0)
    assert np.all(np.diff(out.time) > 0)
    kept = out.value[np.isfinite(out.value)]
    finite = v[np.isfinite(v)]
    if len(finite):
        assert kept.min() == finite.min() and kept.max() == finite.max()
        # Every kept point is a real reading at its own time.
        real = dict(zip(t[np.isfinite(v)].tolist(), finite.tolist()))
        for when, value in zip(out.time.tolist(), out.value.tolist()):
            assert np.isnan(value) or real[when] == value
    else:
        assert len(kept) == 0


def test_downsampling_shows_a_dropout_as_a_gap_and_keeps_a_spike():
    t = T0 + 60 * np.arange(90 * 1440, dtype=np.int64)
    v = 10 + np.sin(np.arange(len(t)) / 100)
    v[50_000] = 99.0  # a one-minute spike
    v[70_000:72_000] = np.nan  # a dropout of 33 hours
    out = S.minmax_downsample(t, v, 2000)
    assert len(out) <= 2000
    assert 99.0 in out.value
    gaps = out.time[np.isnan(out.value)]
    assert len(gaps) == 1 and t[70_000] < gaps[0] < t[72_000]


def test_flag_raises_mark_where_a_flag_went_up_not_every_flagged_minute():
    def rec(minute, flow_flags):
        return {"time": T0 + 60 * minute, "flow_flags": flow_flags, "pressure_flags": 0}

    records = [rec(0, 2), rec(1, 2), rec(2, 2 | 8), rec(3, 8), rec(10, 8), rec(11, 1)]
    raises = [(r["time"], methods) for r, methods in S.flag_raises(records, "flow")]
    assert raises == [(T0, ["VALUE"]), (T0 + 120, ["NIGHT"]), (T0 + 600, ["NIGHT"]),
                      (T0 + 660, ["SYSTEM"])]
    assert S.flag_raises(records, "pressure") == []


def test_align_tells_missing_points_from_gaps():
    a = S.Series(np.array([1, 3]), np.array([1.0, np.nan]))
    b = S.Series(np.array([2]), np.array([5.0]))
    assert S.align({"a": a, "b": b}) == {
        "x": [1, 2, 3], "y": {"a": [1.0, None, None], "b": [None, 5.0, None]},
        "gaps": {"a": [2]}}


# -- the app over a real store -----------------------------------------------------------


def fill(store, sensors=("001", "002"), minutes=600, end=None):
    end = end or T0 + minutes * 60
    readings = [Reading(SensorId(s), end - (minutes - i) * 60, 20.0 + i % 7, 4.0, 0)
                for i in range(minutes) for s in sensors]
    store.ingest(readings)
    spike = end - 60 * 100
    record = {"sensor": "001", "time": spike, "flow": 99.0, "pressure": 4.0, "status": 0,
              "flow_flags": 2, "pressure_flags": 0,
              "causes": [{"method": "VALUE", "quantity": "flow", "reason": "gross",
                          "observed": 99.0, "threshold": [10.0, 30.0], "criteria_version": 1}]}
    store.transact(lambda b: (b.put_detection(SensorId("001"), spike, record),
                              b.set_offset("detector", 0, {"last_flags": {"001": [spike, 2, 0]}}),
                              b.count("restart.detector"), b.count("reject.bad_checksum", 3),
                              b.append_outbox(
                                  HealthFrame(EpochSeconds(end), 0, 0, 0, 0, 0, 1.0, True))))
    return record


class Client:
    def __init__(self, app):
        self.app = app

    def get(self, path, headers=None, method="GET"):
        path, _, query = path.partition("?")
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "wsgi.input": BytesIO()}
        for key, value in (headers or {}).items():
            environ["HTTP_" + key.upper().replace("-", "_")] = value
        seen = {}

        def start_response(status, headers):
            seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

        body = b"".join(self.app(environ, start_response))
        return seen["status"], seen["headers"], body


@pytest.fixture
def web_config(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    return make_config(tmp_path, web={"listen": "127.0.0.1:8080",
                                      "token_file": str(tmp_path / "token")})


def live() -> Liveness:
    return Liveness(True, time.monotonic())


def test_every_route_but_healthz_needs_the_token(web_config, store):
    fill(store)
    client = Client(build_app(web_config, store, live, clock=lambda: T0 + 36_000))
    for path in ("/", "/metrics", "/api/overview", "/sensor/001", "/api/sensor/001",
                 "/static/sensor.js"):
        status, headers, _ = client.get(path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
        assert client.get(path, {"Authorization": "Bearer nope"})[0] == 401
        assert client.get(path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200, path
        assert client.get(path, {"Cookie": f"wdn_token={TOKEN}"})[0] == 200, path
    assert client.get("/healthz")[0] == 200
    status, headers, _ = client.get(f"/sensor/001?range=24h&token={TOKEN}")
    assert status == 303 and headers["Location"] == "/sensor/001?range=24h"
    assert headers["Set-Cookie"].startswith(f"wdn_token={TOKEN}; ")
    assert client.get("/?token=wrong")[0] == 401


def test_read_only_and_clear_answers_to_bad_requests(config, store):
    fill(store)
    client = Client(build_app(config, store, live))
    assert client.get("/", method="POST")[0] == 405
    assert client.get("/nowhere")[0] == 404
    assert client.get("/static/../app.py")[0] == 404
    status, _, body = client.get("/api/sensor/001?range=1y")
    assert status == 400 and "24h, 7d, 90d" in json.loads(body)["error"]
    assert client.get("/api/sensor/042")[0] == 404
    status, headers, body = client.get("/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_chart_data_marks_the_flag_with_the_export_text(config, store):
    record = fill(store)
    client = Client(build_app(config, store, live))
    status, _, body = client.get("/api/sensor/001?range=24h")
    data = json.loads(body)
    assert status == 200 and data["readings"] == 600
    [marker] = data["charts"]["flow"]["markers"]
    with store.read() as view:
        stored = view.detections(SensorId("001"))[0]
    assert marker["t"] == record["time"] and marker["methods"] == ["VALUE"]
    assert marker["text"] == detection_line(stored, config.site.tz)
    assert data["charts"]["pressure"]["markers"] == []


def test_overview_shows_each_sensor_and_the_site(config, store):
    fill(store)
    now = T0 + 600 * 60 + 120
    client = Client(build_app(config, store, live, clock=lambda: now))
    overview = json.loads(client.get("/api/overview")[2])
    rows = {row["sensor"]: row for row in overview["sensors"]}
    assert rows["001"]["stale"] is False and rows["001"]["age_s"] == 180
    assert rows["001"]["flags"] == {"flow": "VALUE", "pressure": "ok"}
    assert rows["002"]["flags"] is None
    assert overview["restarts"]["detector"] == 1 and overview["rejects"] == 3
    [serial] = overview["uplinks"]
    assert serial["name"] == "serial" and serial["backlog"] == 1
    assert serial["oldest_unsent_s"] is not None
    later = Client(build_app(config, store, live, clock=lambda: now + 3600))
    html = later.get("/")[2].decode()
    assert html.count('<span class="badge stale">stale</span>') == 2


def test_metrics_in_the_prometheus_format_with_the_issue_labels(config, store):
    fill(store)
    client = Client(build_app(config, store, live, clock=lambda: T0 + 36_000))
    status, headers, body = client.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode())
               for s in family.samples}
    assert samples[("wdn_readings_total", (("sensor", "001"),))] == 600
    assert samples[("wdn_flags_total", (("method", "value"), ("quantity", "flow"),
                                        ("sensor", "001")))] == 1
    assert samples[("wdn_flag_active", (("method", "value"), ("quantity", "flow"),
                                        ("sensor", "001")))] == 1
    assert samples[("wdn_rejects_total", (("reason", "bad_checksum"),))] == 3
    assert samples[("wdn_actor_restarts_total", (("actor", "detector"),))] == 1
    assert samples[("wdn_outbox_backlog_frames", (("uplink", "serial"),))] == 1
    assert samples[("wdn_actors_answering", ())] == 1
    assert samples[("wdn_disk_free_bytes", ())] > 0
    assert all(name.startswith("wdn_") for name, _ in samples)
    # New readings are counted once, on the next scrape.
    store.ingest([Reading(SensorId("001"), T0 + 601 * 60, 1.0, 4.0, 0)])
    again = client.get("/metrics")[2].decode()
    assert 'wdn_readings_total{sensor="001"} 601.0' in again


def test_healthz_follows_the_last_ping_round():
    now = time.monotonic()
    assert Health(lambda: Liveness(False), 20).verdict()["answered"] is False
    assert Health(lambda: Liveness(True, now - 30), 20).verdict()["detail"].startswith(
        "no ping round for")
    verdict = Health(lambda: Liveness(False, now, ("detector",)), 20).verdict()
    assert verdict == {"answered": False, "detail": "not answering: detector", "age_s": 0.0,
                       "silent": ["detector"]}


def test_the_supervisor_keeps_the_verdict_of_its_ping_rounds(tmp_path, store):
    config = make_config(tmp_path, supervisor={"watchdog": False})
    sup = Supervisor(config, store, ACTOR_CLASSES, test_hooks=True, ping_every_s=0.2)
    sup.start()
    import threading
    stop = threading.Event()
    thread = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: sup.liveness.answered, timeout=5, what="a healthy round")
        sup.peers.get("detector").tell(messages.encode(messages.Crash("hang", hang_s=7.0)))
        wait_for(lambda: sup.liveness.silent == ("detector",), timeout=10, what="the hang seen")
        assert not sup.liveness.answered
    finally:
        stop.set()
        thread.join(timeout=30)


def test_the_server_thread_serves_and_stops_and_a_taken_port_is_a_clear_error(config, store):
    fill(store)
    server = WebServer(build_app(config, store, live), "127.0.0.1", 0)
    server.start()
    try:
        with urllib.request.urlopen(server.url + "healthz", timeout=10) as response:
            assert response.status == 200
        taken = WebServer(build_app(config, store, live), "127.0.0.1", server.port)
        with pytest.raises(WebError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            taken.start()
    finally:
        server.stop()
    with pytest.raises((urllib.error.URLError, ConnectionError, socket.timeout)):
        urllib.request.urlopen(server.url + "healthz", timeout=2)


@pytest.mark.parametrize("content", ["", "short", "has space in it", "x" * 7])
def test_an_unusable_token_file_is_named(tmp_path, content):
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(WebError, match="web.token_file"):
        load_token(str(path))
    with pytest.raises(WebError, match="cannot read"):
        load_token(str(tmp_path / "missing"))


def test_with_the_mqtt_uplink_on_its_backlog_is_a_second_uplink(tmp_path, store):
    config = make_config(tmp_path, mqtt={"url": "mqtt://127.0.0.1:1883"})
    fill(store)  # one frame in the outbox, sent on neither uplink
    with store.read() as view:
        sent = view.peek_sequence()
    store.transact(lambda b: b.set_offset("transmitter", sent))
    client = Client(build_app(config, store, live, clock=lambda: T0 + 36_000))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(client.get("/metrics")[2].decode())
               for s in family.samples}
    assert samples[("wdn_outbox_backlog_frames", (("uplink", "serial"),))] == 0
    assert samples[("wdn_outbox_backlog_frames", (("uplink", "mqtt"),))] == 1
