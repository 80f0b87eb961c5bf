"""MQTT topics and payloads: pure, from the wire line the outbox keeps."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from core import frames
from core.mqtt_payload import flag_names, publication, status_topic
from core.types import EpochSeconds, SensorId

TZ = ZoneInfo("Asia/Seoul")
T = EpochSeconds(1_764_379_020)  # 2025-11-29 10:17 +09:00

sensors = st.integers(1, 999).map(lambda n: SensorId(f"{n:03d}"))
times = st.integers(0, 4_000_000_000).map(lambda t: EpochSeconds(t - t % 60))
values = st.none() | st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3))
flags = st.integers(0, 0x0F)
seqs = st.integers(1, frames.MAX_SEQ)
outbound = st.one_of(
    st.builds(frames.AlertFrame, sensors, times, values, values, flags, flags, seq=seqs),
    st.builds(frames.ServerReportLine, sensors, times, values, values, flags, flags,
              values, values, seq=seqs),
    st.builds(frames.DailyForecastLine, sensors, times,
              st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)),
              st.floats(0, 1e5, allow_nan=False).map(lambda x: round(x, 2)),
              st.floats(0, 20, allow_nan=False).map(lambda x: round(x, 3)), seq=seqs),
    st.builds(frames.HealthFrame, times, st.integers(0, 10**9), st.integers(0, 10**7),
              st.integers(0, 10**9), st.integers(0, 1000), st.integers(0, 10**9),
              st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 1)), st.booleans(), seq=seqs),
)


def test_an_alert_payload_names_its_fields_and_decodes_its_flags() -> None:
    line = frames.encode(frames.AlertFrame(SensorId("001"), T, 71.58, None, 0x09, 0, seq=12), TZ)
    pub = publication("wdn/demo", line, TZ)
    assert pub.topic == "wdn/demo/001/alr" and pub.seq == 12
    assert json.loads(pub.payload) == {
        "type": "alr", "seq": 12, "line": line.decode().rstrip("\r\n"), "sensor": "001",
        "time": "2025-11-29T10:17:00+09:00", "flow": 71.58, "pressure": None,
        "flow_flags": ["system", "night"], "pressure_flags": []}


def test_each_frame_type_has_its_topic() -> None:
    lines = {
        "wdn/x/002/srv": frames.ServerReportLine(SensorId("002"), T, 1.0, 2.0, 0, 0, 3.0, None, seq=1),
        "wdn/x/003/fcd": frames.DailyForecastLine(SensorId("003"), T, dt.date(2025, 11, 30),
                                                  12.5, 4.1, seq=2),
        "wdn/x/health": frames.HealthFrame(T, 60, 0, 0, 0, 0, 3.7, True, seq=3),
    }
    for topic, frame in lines.items():
        pub = publication("wdn/x", frames.encode(frame, TZ), TZ)
        assert pub.topic == topic
    assert status_topic("wdn/x") == "wdn/x/status"


def test_flag_names_in_bit_order() -> None:
    assert flag_names(0) == []
    assert flag_names(0x0F) == ["system", "value", "predict", "night"]
    assert flag_names(0x30) == ["0x10", "0x20"]


def test_a_line_the_decoder_refuses_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="does not decode"):
        publication("wdn/x", b"$ALR,1,001*00\r\n", TZ)


@given(outbound)
def test_every_outbound_frame_publishes_as_json_with_its_seq_and_line(frame) -> None:
    line = frames.encode(frame, TZ)
    pub = publication("wdn/site-1", line, TZ)
    document = json.loads(pub.payload)
    assert document["seq"] == frame.seq == pub.seq
    assert document["line"].encode() + b"\r\n" == line
    assert pub.topic.startswith("wdn/site-1/")
    if hasattr(frame, "sensor"):
        assert pub.topic.split("/")[2] == document["sensor"] == frame.sensor
    for key in ("flow_flags", "pressure_flags"):
        if key in document:
            assert flag_names(getattr(frame, key)) == document[key]
