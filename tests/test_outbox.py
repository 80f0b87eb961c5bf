"""core.outbox: the outbox form the store keeps of each frame (unchanged on disk) and back."""

from __future__ import annotations

import dataclasses
import datetime
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import frames, outbox
from core.types import EpochSeconds, SensorId

S = SensorId("001")
TZ = ZoneInfo("Asia/Seoul")
T = EpochSeconds(1_700_000_000)

# The maps the producers wrote before the frame types were built directly: the
# store's records must stay byte for byte what they were (key order included).
BEFORE = [
    (frames.AlertFrame(S, T, 1.5, None, 0, 1),
     {"type": "ALR", "sensor": S, "time": T, "flow": 1.5, "pressure": None,
      "flow_flags": 0, "pressure_flags": 1}),
    (frames.ServerReportLine(S, T, None, 4.0, 1, 0, None, 4.25),
     {"type": "SRV", "sensor": S, "time": T, "flow": None, "pressure": 4.0,
      "flow_flags": 1, "pressure_flags": 0, "pred_flow": None, "pred_pressure": 4.25}),
    (frames.DailyForecastLine(S, T, datetime.date(2026, 1, 5), 12.5, 4.1),
     {"type": "FCD", "sensor": S, "issued": T, "day": "2026-01-05", "flow_mean": 12.5,
      "pressure_mean": 4.1}),
    (frames.HealthFrame(T, 60, 2, 3, 0, 4, 3.7, True),
     {"type": "HLT", "time": T, "uptime_s": 60, "outbox_depth": 2, "oldest_unsent_s": 3,
      "restarts": 0, "rejects": 4, "store_used_pct": 3.7, "clock": True}),
]


@pytest.mark.parametrize(("frame", "form"), BEFORE)
def test_the_outbox_form_is_the_map_stored_before(frame, form) -> None:
    assert msgpack.packb(outbox.outbox_form(frame)) == msgpack.packb(form)
    numbered = outbox.outbox_frame(9, form)
    assert numbered == dataclasses.replace(frame, seq=9)


values = st.one_of(st.none(), st.floats(allow_nan=False, width=32))
flags = st.integers(0, 255)
sensors = st.integers(1, 999).map(lambda n: SensorId(f"{n:03d}"))
times = st.integers(0, 2**40).map(EpochSeconds)
outbound = st.one_of(
    st.builds(frames.AlertFrame, sensors, times, values, values, flags, flags),
    st.builds(frames.ServerReportLine, sensors, times, values, values, flags, flags, values,
              values),
    st.builds(frames.DailyForecastLine, sensors, times, st.dates(), st.floats(allow_nan=False),
              st.floats(allow_nan=False)),
    st.builds(frames.HealthFrame, times, *[st.integers(0, 10**6)] * 5, st.floats(0, 100),
              st.booleans()),
)


@given(outbound, st.integers(1, 2**63 - 1))
def test_a_frame_comes_back_from_its_stored_form_numbered(frame, seq) -> None:
    stored = msgpack.unpackb(msgpack.packb(outbox.outbox_form(frame)))
    back = outbox.outbox_frame(seq, stored)
    assert back.seq == seq
    assert outbox.outbox_form(back) == outbox.outbox_form(frame)


@pytest.mark.parametrize("form", [
    {"type": "XYZ"}, {"sensor": "001"}, {"type": "ALR", "sensor": "001"},
    {**BEFORE[0][1], "extra": 1},
])
def test_a_map_that_is_no_frame_is_refused(form) -> None:
    with pytest.raises((ValueError, TypeError)):
        outbox.outbox_frame(1, form)


def test_the_wire_encoder_numbers_the_frame_and_leaves_it_as_built() -> None:
    frame = BEFORE[0][0]
    line = outbox.wire_encoder(TZ)(12, frame)
    assert frames.decode(line, TZ) == dataclasses.replace(frame, seq=12)
    assert frame.seq == 0
