"""$SRV block assembly: ten lines per block, gaps SYSTEM-flagged, forecast on :00."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from core import frames
from core.server_report import BLOCK_S, MAX_EMPTY_BLOCKS, ServerReportBuilder, block_start
from core.types import FLAG_SYSTEM, SensorId

TZ = ZoneInfo("Asia/Seoul")
T0 = int(datetime(2026, 3, 2, 10, 0, tzinfo=TZ).timestamp())
S = SensorId("001")


def expected(sensor, t):
    return (100.0 + (t - T0) / 60, 4.0)


def test_block_start_is_local_ten_minutes():
    kathmandu = ZoneInfo("Asia/Kathmandu")  # +05:45: local blocks are not UTC blocks
    t = int(datetime(2026, 3, 2, 10, 17, 30, tzinfo=kathmandu).timestamp())
    assert datetime.fromtimestamp(block_start(t, kathmandu), kathmandu).minute == 10


def test_block_is_finished_by_a_reading_in_the_next_block():
    b = ServerReportBuilder(TZ)
    for minute in range(10):
        if minute == 4:
            continue  # a gap
        assert b.add(S, T0 + minute * 60, 10.0 + minute, 4.0, 0, 0, expected) == []
    [block] = b.add(S, T0 + 600, 1.0, 4.0, 0, 0, expected)
    assert [line.time for line in block] == [T0 + m * 60 for m in range(10)]
    assert (block[0].pred_flow, block[0].pred_pressure) == (100.0, 4.0)
    assert all(line.pred_flow == 0 and line.pred_pressure == 0 for line in block[1:])
    gap = block[4]
    assert (gap.flow, gap.pressure, gap.flow_flags, gap.pressure_flags) == (None, None, FLAG_SYSTEM, FLAG_SYSTEM)
    assert block[5].flow == 15.0 and block[5].flow_flags == 0


def test_missing_forecast_gives_no_prediction_on_the_first_line():
    b = ServerReportBuilder(TZ)
    b.add(S, T0, 1.0, 2.0, 0, 0, lambda s, t: (None, None))
    [block] = b.add(S, T0 + 600, 1.0, 2.0, 0, 0, lambda s, t: (None, 4.0))
    assert (block[0].pred_flow, block[0].pred_pressure) == (None, 4.0)
    line = frames.decode(frames.encode(block[0], TZ, 1), TZ)  # an empty field on the wire
    assert (line.pred_flow, line.pred_pressure) == (None, 4.0)
    assert all(line.pred_flow == 0 and line.pred_pressure == 0 for line in block[1:])


def test_a_forecast_of_zero_flow_is_zero_not_empty():
    b = ServerReportBuilder(TZ)
    b.add(S, T0, 0.0, 2.0, 0, 0, lambda s, t: (0.0, 4.0))
    [block] = b.add(S, T0 + 600, 0.0, 2.0, 0, 0, lambda s, t: (0.0, 4.0))
    assert (block[0].pred_flow, block[0].pred_pressure) == (0.0, 4.0)


def test_late_reading_for_a_finished_block_is_not_reported_again():
    b = ServerReportBuilder(TZ)
    b.add(S, T0, 1.0, 2.0, 0, 0, expected)
    b.add(S, T0 + 600, 1.0, 2.0, 0, 0, expected)
    assert b.add(S, T0 + 60, 5.0, 2.0, 0, 0, expected) == []


def test_gap_of_whole_blocks_emits_empty_blocks_up_to_the_cap():
    b = ServerReportBuilder(TZ)
    b.add(S, T0, 1.0, 2.0, 0, 0, expected)
    blocks = b.add(S, T0 + 3 * BLOCK_S, 1.0, 2.0, 0, 0, expected)
    assert len(blocks) == 3
    far = b.add(S, T0 + 100 * BLOCK_S, 1.0, 2.0, 0, 0, expected)
    assert len(far) == 1 + MAX_EMPTY_BLOCKS
    assert b.skipped_blocks == 100 - 3 - 1 - MAX_EMPTY_BLOCKS


def test_silent_sensor_blocks_close_after_the_grace():
    b = ServerReportBuilder(TZ)
    b.add(S, T0, 1.0, 2.0, 0, 0, expected)
    assert b.close_silent(T0 + BLOCK_S + 120, 300, expected) == []
    [block] = b.close_silent(T0 + BLOCK_S + 300, 300, expected)
    assert block[0].flow == 1.0 and block[1].flow is None


def test_state_round_trip_continues_identically():
    a = ServerReportBuilder(TZ)
    for minute in range(5):
        a.add(S, T0 + minute * 60, float(minute), 2.0, 0, 0, expected)
    b = ServerReportBuilder(TZ, a.state())
    assert a.add(S, T0 + 600, 9.0, 2.0, 0, 0, expected) == b.add(S, T0 + 600, 9.0, 2.0, 0, 0, expected)
