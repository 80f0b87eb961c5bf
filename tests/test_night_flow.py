"""Tests for core.night_flow: night window, blocks, MNF aggregation, NIGHT verdict."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.night_flow import (
    NightBlock,
    NightFlowAggregator,
    NightSummary,
    NightWindow,
)
from core.config import default_config
from core.day_kind import NO_HOLIDAYS
from core.night_model import NightModel, NightSettings, NightVerdict
from core.types import STATUS_FLOW_FAULT, STATUS_LOW_BATTERY, EpochSeconds, Reading, SensorId

SEOUL = ZoneInfo("Asia/Seoul")
BERLIN = ZoneInfo("Europe/Berlin")
S1, S2 = SensorId("001"), SensorId("002")
MIN = 60
HOUR = 3600

# Europe/Berlin 2024: clocks go forward in the night of 30/31 March, back in the
# night of 26/27 October.
SPRING_NIGHT = datetime.date(2024, 3, 30)
FALL_NIGHT = datetime.date(2024, 10, 26)


def window(tz: ZoneInfo = SEOUL, start: tuple[int, int] = (22, 0), end: tuple[int, int] = (5, 0),
           **kw: int) -> NightWindow:
    return NightWindow(datetime.time(*start), datetime.time(*end), tz, **kw)


def at(tz: ZoneInfo, y: int, mo: int, d: int, h: int, mi: int = 0, fold: int = 0) -> EpochSeconds:
    """UTC epoch of a local wall time."""
    return EpochSeconds(int(datetime.datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).timestamp()))


def local(t: int, tz: ZoneInfo) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t, tz)


def reading(t: int, flow: float | None = 1.0, sensor: SensorId = S1, status: int = 0) -> Reading:
    return Reading(sensor, EpochSeconds(t), flow, 3.0, status)


def feed(agg: NightFlowAggregator, readings: Iterable[Reading], now: int | None = None,
         live: bool = False) -> tuple[list[NightBlock], list[NightSummary]]:
    """Fold in readings arriving at gateway time ``now`` (``live``: each at its minute)."""
    blocks: list[NightBlock] = []
    nights: list[NightSummary] = []
    for r in readings:
        b, n = agg.add(r, r.time // MIN * MIN if live else now)
        blocks += b
        nights += n
    return blocks, nights


def minutes(start: int, end: int, flow: float = 1.0, sensor: SensorId = S1) -> list[Reading]:
    """One reading per minute in [start, end)."""
    return [reading(t, flow, sensor) for t in range(start, end, MIN)]


# -- window ----------------------------------------------------------------------------


def test_window_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        window(start=(22, 0), end=(22, 0))
    with pytest.raises(ValueError):
        window(block_minutes=10, min_readings=11)
    with pytest.raises(ValueError):
        window(block_minutes=0)
    with pytest.raises(ValueError):
        window(min_readings=0)
    with pytest.raises(TypeError):
        NightWindow(datetime.time(22, tzinfo=SEOUL), datetime.time(5), SEOUL)


def test_night_crossing_midnight_is_named_by_its_start_date() -> None:
    w = window(SEOUL)
    night = datetime.date(2026, 1, 5)
    start, end = w.bounds(night)
    assert start == at(SEOUL, 2026, 1, 5, 22)
    assert end == at(SEOUL, 2026, 1, 6, 5)
    assert w.night_of(start - 1) is None
    assert w.night_of(start) == night
    assert w.night_of(at(SEOUL, 2026, 1, 5, 23, 59)) == night
    assert w.night_of(at(SEOUL, 2026, 1, 6, 0, 0)) == night
    assert w.night_of(end - 1) == night
    assert w.night_of(end) is None
    assert w.night_of(at(SEOUL, 2026, 1, 6, 12)) is None


@pytest.mark.parametrize(("night", "hours"), [
    (SPRING_NIGHT, 6), (FALL_NIGHT, 8), (datetime.date(2024, 6, 1), 7),
])
def test_berlin_dst_nights_last_6_8_and_7_hours(night: datetime.date, hours: int) -> None:
    w = window(BERLIN, block_minutes=10)
    start, end = w.bounds(night)
    assert end - start == hours * HOUR
    assert (local(start, BERLIN).hour, local(end, BERLIN).hour) == (22, 5)
    # every minute of the night belongs to it, the minutes around it do not
    assert all(w.night_of(EpochSeconds(t)) == night for t in range(start, end, MIN))
    assert w.night_of(EpochSeconds(start - MIN)) is None
    assert w.night_of(EpochSeconds(end)) is None
    # 10-minute blocks tile the night, each starting on a local :x0 minute
    block_starts = sorted({w.block_start(EpochSeconds(t)) for t in range(start, end, MIN)})
    assert len(block_starts) == hours * 6
    assert np.all(np.diff(block_starts) == 600)
    assert all(local(b, BERLIN).minute % 10 == 0 for b in block_starts)


def test_berlin_dst_nights_through_the_aggregator() -> None:
    agg = NightFlowAggregator(window(BERLIN))
    for night, hours in ((SPRING_NIGHT, 6), (FALL_NIGHT, 8)):
        start, end = window(BERLIN).bounds(night)
        blocks, nights = feed(agg, minutes(start - HOUR, end + HOUR))
        assert len(blocks) == hours * 6
        assert len({b.start for b in blocks}) == len(blocks)
        assert all(b.complete and b.readings == 10 for b in blocks)
        assert [(n.night, n.blocks, n.complete_blocks) for n in nights] == [
            (night, hours * 6, hours * 6)]


def test_narrowed_window_lies_within_one_day() -> None:
    w = window(SEOUL, start=(2, 0), end=(4, 0))
    day = datetime.date(2026, 1, 6)
    assert w.bounds(day) == (at(SEOUL, 2026, 1, 6, 2), at(SEOUL, 2026, 1, 6, 4))
    assert w.night_of(at(SEOUL, 2026, 1, 6, 1, 59)) is None
    assert w.night_of(at(SEOUL, 2026, 1, 6, 2)) == day
    assert w.night_of(at(SEOUL, 2026, 1, 6, 3, 59)) == day
    assert w.night_of(at(SEOUL, 2026, 1, 6, 4)) is None
    assert w.night_of(at(SEOUL, 2026, 1, 6, 23)) is None


def test_narrowed_window_on_berlin_dst_days() -> None:
    w = window(BERLIN, start=(2, 0), end=(4, 0))
    # 02:00 does not exist on 31 March: the window starts at the jump (03:00 CEST)
    start, end = w.bounds(datetime.date(2024, 3, 31))
    assert end - start == HOUR
    assert local(start, BERLIN).hour == 3
    # on 27 October 02:00 comes twice: the window starts at the first one
    start, end = w.bounds(datetime.date(2024, 10, 27))
    assert end - start == 3 * HOUR
    assert local(start, BERLIN).utcoffset() == datetime.timedelta(hours=2)


def test_narrowed_window_mnf_ignores_flow_outside_it() -> None:
    w = window(SEOUL, start=(2, 0), end=(4, 0))
    agg = NightFlowAggregator(w)
    t0 = at(SEOUL, 2026, 1, 6, 0)
    readings = [reading(t, 0.5 if local(t, SEOUL).hour < 2 else 2.0)
                for t in range(t0, t0 + 5 * HOUR, MIN)]
    blocks, nights = feed(agg, readings)
    assert len(blocks) == 12
    assert [(n.night, n.mnf, n.blocks) for n in nights] == [(datetime.date(2026, 1, 6), 2.0, 12)]


def test_hour_blocks_start_at_the_jump_when_the_clock_skips_their_start() -> None:
    # 60-minute blocks from 22:30: on the spring-forward night the clock jumps from
    # 02:00 to 03:00 past 02:30, so that block starts at the jump.
    w = window(BERLIN, start=(22, 30), end=(5, 0), block_minutes=60, min_readings=30)
    start, end = w.bounds(SPRING_NIGHT)
    starts = sorted({w.block_start(EpochSeconds(t)) for t in range(start, end, MIN)})
    walls = [local(b, BERLIN).strftime("%H:%M") for b in starts]
    assert walls == ["22:30", "23:30", "00:30", "01:30", "03:00", "03:30", "04:30"]
    # on the fall-back night the repeated 02:30 starts a block again
    start, end = w.bounds(FALL_NIGHT)
    starts = sorted({w.block_start(EpochSeconds(t)) for t in range(start, end, MIN)})
    walls = [local(b, BERLIN).strftime("%H:%M") for b in starts]
    assert walls == ["22:30", "23:30", "00:30", "01:30", "02:30", "02:30", "03:30", "04:30"]


def test_window_starting_in_the_skipped_hour_starts_at_the_jump() -> None:
    w = window(BERLIN, start=(2, 30), end=(4, 0))
    start, end = w.bounds(datetime.date(2024, 3, 31))
    assert local(start, BERLIN).strftime("%H:%M %z") == "03:00 +0200"
    assert end - start == HOUR


def test_window_inside_the_skipped_hour_is_empty_that_night() -> None:
    w = window(BERLIN, start=(2, 10), end=(2, 50))
    start, end = w.bounds(datetime.date(2024, 3, 31))
    assert start == end
    t0 = at(BERLIN, 2024, 3, 31, 0)
    assert all(w.night_of(EpochSeconds(t)) is None for t in range(t0, t0 + 6 * HOUR, MIN))


ZONES = ["Europe/Berlin", "Asia/Seoul", "America/New_York", "Australia/Lord_Howe",
         "Asia/Kathmandu", "America/St_Johns"]


def _clock_change_days(zone: str) -> list[datetime.date]:
    """Days of 2024 on which the zone's UTC offset changes, and the days before them."""
    tz = ZoneInfo(zone)
    day = datetime.date(2024, 1, 1)
    offsets = [datetime.datetime.combine(day + datetime.timedelta(days=i), datetime.time(12),
                                         tz).utcoffset() for i in range(367)]
    changes = [day + datetime.timedelta(days=i) for i in range(1, 367)
               if offsets[i] != offsets[i - 1]]
    return sorted({d - datetime.timedelta(days=k) for d in changes for k in (0, 1)})


CHANGE_DAYS = {zone: _clock_change_days(zone) for zone in ZONES}


@st.composite
def zone_and_night(draw: st.DrawFn) -> tuple[str, datetime.date]:
    zone = draw(st.sampled_from(ZONES))
    ordinary = st.dates(datetime.date(2023, 1, 1), datetime.date(2025, 12, 31))
    if CHANGE_DAYS[zone]:
        # mostly the nights around clock changes, where the arithmetic is hard
        return zone, draw(st.one_of(st.sampled_from(CHANGE_DAYS[zone]), ordinary))
    return zone, draw(ordinary)


@settings(max_examples=60, deadline=None)
@given(
    zone_night=zone_and_night(),
    start=st.times(), end=st.times(),
    block_minutes=st.sampled_from([5, 10, 15, 30, 60, 90]),
)
def test_blocks_tile_every_night(zone_night: tuple[str, datetime.date], start: datetime.time,
                                 end: datetime.time, block_minutes: int) -> None:
    zone, night = zone_night
    start, end = start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
    if start == end:
        return
    tz = ZoneInfo(zone)
    w = NightWindow(start, end, tz, block_minutes=block_minutes, min_readings=1)
    lo, hi = w.bounds(night)
    assert 0 <= hi - lo < 26 * HOUR  # empty when both bounds fall in a skipped hour
    # each bound is the first instant at which the clock shows its time or jumps past it
    end_day = night + datetime.timedelta(days=1) if end <= start else night
    for bound, wall in ((lo, datetime.datetime.combine(night, start)),
                        (hi, datetime.datetime.combine(end_day, end))):
        assert local(bound - 1, tz).replace(tzinfo=None) < wall <= local(
            bound, tz).replace(tzinfo=None)
    # nights never overlap, even a window of nearly a day on a clock-change night
    assert hi <= w.bounds(night + datetime.timedelta(days=1))[0]
    assert w.bounds(night - datetime.timedelta(days=1))[1] <= lo
    own = range(lo, hi, MIN)
    origin = datetime.datetime.combine(night, start)
    previous = lo
    for t in own:
        assert w.night_of(EpochSeconds(t)) == night
        b = w.block_start(EpochSeconds(t))
        assert previous <= b <= t          # contiguous and in order
        previous = b
    for b in {w.block_start(EpochSeconds(t)) for t in own}:
        assert w.block_start(b) == b
        wall = local(b, tz).replace(tzinfo=None)
        aligned = not (wall - origin) % datetime.timedelta(minutes=block_minutes)
        clock_change = local(b - 1, tz).utcoffset() != local(b, tz).utcoffset()
        assert b == lo or aligned or clock_change


# -- blocks ----------------------------------------------------------------------------


def test_block_mean_and_closing_by_the_next_reading() -> None:
    agg = NightFlowAggregator(window(SEOUL))
    t0 = at(SEOUL, 2026, 1, 5, 22)
    blocks, nights = feed(agg, [reading(t0 + i * MIN, float(i)) for i in range(10)])
    assert (blocks, nights) == ([], [])  # the block stays open until a later reading
    blocks, nights = agg.add(reading(t0 + 10 * MIN, 100.0))
    assert nights == []
    assert blocks == [NightBlock(S1, datetime.date(2026, 1, 5), t0, 10, 4.5, True)]


@pytest.mark.parametrize(("count", "complete"), [(4, False), (5, True)])
def test_block_completeness_needs_min_readings(count: int, complete: bool) -> None:
    agg = NightFlowAggregator(window(SEOUL, min_readings=5))
    t0 = at(SEOUL, 2026, 1, 5, 23)
    feed(agg, [reading(t0 + i * MIN, 2.0) for i in range(count)])
    [block], _ = agg.add(reading(t0 + 10 * MIN))
    assert block.readings == count
    assert block.complete is complete
    assert block.mean == (2.0 if complete else None)


def test_unmeasured_readings_are_not_averaged() -> None:
    agg = NightFlowAggregator(window(SEOUL, min_readings=5))
    t0 = at(SEOUL, 2026, 1, 5, 23)
    values = [1.0, None, 3.0, math.nan, 5.0, 7.0, None, 9.0]
    feed(agg, [reading(t0 + i * MIN, v) for i, v in enumerate(values)])
    agg.add(reading(t0 + 8 * MIN, 1000.0, status=STATUS_FLOW_FAULT))
    agg.add(reading(t0 + 9 * MIN, 11.0, status=STATUS_LOW_BATTERY))  # advisory: still measured
    [block], _ = agg.add(reading(t0 + 10 * MIN, None))
    assert (block.readings, block.mean, block.complete) == (6, 6.0, True)


def test_only_unmeasured_readings_give_an_incomplete_block() -> None:
    agg = NightFlowAggregator(window(SEOUL))
    t0 = at(SEOUL, 2026, 1, 5, 23)
    feed(agg, [reading(t0 + i * MIN, None) for i in range(10)])
    [block], _ = agg.add(reading(t0 + 10 * MIN))
    assert (block.readings, block.mean, block.complete) == (0, None, False)


def test_mnf_is_the_lowest_complete_block_and_incomplete_blocks_do_not_count() -> None:
    w = window(SEOUL, min_readings=5)
    agg = NightFlowAggregator(w)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    low_block = start + 3 * HOUR
    sparse_block = start + 4 * HOUR
    readings = []
    for t in range(start, end, MIN):
        if sparse_block <= t < sparse_block + 600:
            if t < sparse_block + 2 * MIN:  # two very low values: not a 10-minute mean
                readings.append(reading(t, 0.01))
            continue
        readings.append(reading(t, 0.8 if low_block <= t < low_block + 600 else 1.5))
    readings.append(reading(end))
    blocks, [summary] = feed(agg, readings)
    assert summary.mnf == pytest.approx(0.8)
    assert summary.mnf_block_start == low_block
    assert (summary.blocks, summary.complete_blocks) == (42, 41)
    [sparse] = [b for b in blocks if b.start == sparse_block]
    assert (sparse.readings, sparse.mean, sparse.complete) == (2, None, False)
    assert summary.mnf == min(b.mean for b in blocks if b.complete)


def test_mnf_is_the_quietest_run_of_contiguous_blocks_or_the_lowest_block_without_one() -> None:
    w = window(SEOUL, mnf_blocks=3)
    agg = NightFlowAggregator(w)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    # One very low block alone (a lucky ten minutes) and, later, a quieter half hour.
    lone, run = start + HOUR, start + 3 * HOUR
    flows = {lone: 0.5, run: 0.9, run + 600: 0.8, run + 1200: 0.9}
    readings = [reading(t, flows.get(t - (t - start) % 600, 1.5)) for t in range(start, end, MIN)]
    _, [summary] = feed(agg, readings + [reading(end)])
    assert summary.mnf == pytest.approx((0.9 + 0.8 + 0.9) / 3)
    assert summary.mnf_block_start == run
    # With a gap every other block no three blocks are contiguous: the lowest block.
    agg = NightFlowAggregator(w)
    gappy = [r for r in readings if (r.time - start) // 600 % 2 == 0]
    _, [summary] = feed(agg, gappy + [reading(end)])
    assert (summary.mnf, summary.mnf_block_start) == (pytest.approx(0.5), lone)


def test_night_without_complete_block_has_no_mnf() -> None:
    agg = NightFlowAggregator(window(SEOUL))
    t0 = at(SEOUL, 2026, 1, 5, 23)
    feed(agg, [reading(t0), reading(t0 + MIN)])
    _, [summary] = agg.add(reading(at(SEOUL, 2026, 1, 6, 6)))
    assert (summary.mnf, summary.mnf_block_start, summary.blocks, summary.complete_blocks) == (
        None, None, 1, 0)


def test_last_block_and_night_closed_by_first_reading_at_window_end() -> None:
    w = window(SEOUL)
    agg = NightFlowAggregator(w)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    blocks, nights = feed(agg, minutes(start - HOUR, end))
    assert nights == [] and len(blocks) == 41  # the last block is still open
    blocks, nights = agg.add(reading(end))
    assert [b.start for b in blocks] == [end - 600]
    assert blocks[0].complete
    assert [(n.night, n.blocks, n.complete_blocks) for n in nights] == [
        (datetime.date(2026, 1, 5), 42, 42)]
    assert feed(agg, minutes(end + MIN, end + HOUR)) == ([], [])


def test_night_closed_by_first_reading_after_a_dropout() -> None:
    w = window(SEOUL)
    agg = NightFlowAggregator(w)
    start, _ = w.bounds(datetime.date(2026, 1, 5))
    feed(agg, minutes(start, start + 3 * HOUR, 2.0))  # silent from 01:00
    blocks, nights = agg.add(reading(at(SEOUL, 2026, 1, 6, 13, 7)))
    assert [b.start for b in blocks] == [start + 3 * HOUR - 600]
    assert [(n.mnf, n.blocks) for n in nights] == [(2.0, 18)]


def test_reading_in_the_next_night_closes_the_previous_one() -> None:
    w = window(SEOUL)
    agg = NightFlowAggregator(w)
    first, second = datetime.date(2026, 1, 5), datetime.date(2026, 1, 6)
    start, _ = w.bounds(first)
    feed(agg, minutes(start, start + HOUR, 2.0))
    next_start, next_end = w.bounds(second)
    blocks, nights = agg.add(reading(next_start + 5 * MIN, 3.0))
    assert [b.night for b in blocks] == [first]
    assert [n.night for n in nights] == [first]
    feed(agg, minutes(next_start + 6 * MIN, next_start + 20 * MIN, 3.0))
    _, nights = agg.add(reading(next_end))
    assert [(n.night, n.mnf, n.blocks) for n in nights] == [(second, 3.0, 2)]


def test_sensors_are_independent() -> None:
    w = window(SEOUL)
    agg = NightFlowAggregator(w)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    feed(agg, minutes(start, start + 20 * MIN, 1.0, S1) + minutes(start, start + 20 * MIN, 2.0, S2))
    blocks, nights = agg.add(reading(end, sensor=S2))
    assert {b.sensor for b in blocks} == {S2} and [n.sensor for n in nights] == [S2]
    assert nights[0].mnf == 2.0
    _, nights = agg.add(reading(end, sensor=S1))
    assert [(n.sensor, n.mnf) for n in nights] == [(S1, 1.0)]


def test_late_reading_of_a_closed_block_is_ignored() -> None:
    agg = NightFlowAggregator(window(SEOUL))
    t0 = at(SEOUL, 2026, 1, 5, 22)
    feed(agg, minutes(t0, t0 + 10 * MIN, 1.0))
    [closed], _ = agg.add(reading(t0 + 10 * MIN, 1.0))
    assert closed.mean == 1.0
    assert agg.add(reading(t0 + 5 * MIN, 50.0)) == ([], [])
    feed(agg, minutes(t0 + 11 * MIN, t0 + 20 * MIN, 1.0))
    [block], _ = agg.add(reading(t0 + 20 * MIN))
    assert (block.start, block.readings, block.mean) == (t0 + 10 * MIN, 10, 1.0)


def test_late_reading_of_a_closed_night_is_ignored() -> None:
    w = window(SEOUL)
    agg = NightFlowAggregator(w)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    feed(agg, minutes(start, end + MIN))
    assert agg.add(reading(end - 5 * MIN)) == ([], [])
    # ... and opens no night that a later reading would close again
    assert agg.add(reading(end + 2 * HOUR)) == ([], [])


def test_out_of_order_readings_within_the_open_block_are_averaged() -> None:
    agg = NightFlowAggregator(window(SEOUL))
    t0 = at(SEOUL, 2026, 1, 5, 22)
    order = [5, 1, 9, 0, 3, 2, 8, 7, 4, 6]
    feed(agg, [reading(t0 + i * MIN, float(i)) for i in order])
    [block], _ = agg.add(reading(t0 + 10 * MIN))
    assert (block.readings, block.mean) == (10, 4.5)


# -- readings stamped ahead ---------------------------------------------------------


def _night_with_a_jump(jump_at: int, jump: int, count: int = 1) -> tuple[list[Reading], int, int]:
    """A whole night of minutes with ``count`` readings stamped ``jump`` s ahead
    arriving after its ``jump_at``-th minute (as the simulator's clock fault)."""
    w = window(SEOUL)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    normal = minutes(start, end + MIN, 1.0)
    ahead = [reading(normal[jump_at].time + jump + 17 + i * MIN, 9.0) for i in range(count)]
    return normal[:jump_at + 1] + ahead + normal[jump_at + 1:], start, end


@pytest.mark.parametrize("count", [1, 5])
def test_live_a_reading_stamped_ahead_of_the_gateway_clock_closes_no_night(count: int) -> None:
    readings, start, end = _night_with_a_jump(60, 8 * HOUR, count)
    agg = NightFlowAggregator(window(SEOUL), clock_ahead_s=300)
    # Each arrives in the minute it was sent: the jumped ones hours ahead of it.
    nows = {r.time: r.time // MIN * MIN for r in readings}
    for r in readings[61:61 + count]:
        nows[r.time] = readings[60].time
    blocks, nights = [], []
    for r in readings:
        b, n = agg.add(r, nows[r.time])
        blocks += b
        nights += n
    assert [(n.mnf, n.blocks, n.complete_blocks) for n in nights] == [(1.0, 42, 42)]
    assert all(b.mean == 1.0 for b in blocks)
    assert agg.add(reading(end + 8 * HOUR), end + MIN) == ([], [])  # still ahead


def test_without_the_gateway_clock_a_jump_closes_the_night_early() -> None:
    # What the guard prevents: unguarded, the jumped reading ends the night.
    readings, start, end = _night_with_a_jump(60, 8 * HOUR)
    _, nights = feed(NightFlowAggregator(window(SEOUL)), readings)
    assert [(n.blocks, n.complete_blocks) for n in nights] == [(7, 6)]


@pytest.mark.parametrize("count", [1, 4])
def test_replay_a_clock_glitch_closes_no_night(count: int) -> None:
    readings, _, end = _night_with_a_jump(60, 8 * HOUR, count)
    agg = NightFlowAggregator(window(SEOUL), clock_ahead_s=300)
    blocks, nights = feed(agg, readings, now=end + 30 * 86400)  # a month later
    assert [(n.mnf, n.blocks, n.complete_blocks) for n in nights] == [(1.0, 42, 42)]
    assert all(b.mean == 1.0 and b.readings == 10 for b in blocks)


def test_replay_a_sensor_back_after_an_outage_is_folded_in_once_confirmed() -> None:
    w = window(SEOUL)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    readings = minutes(start, start + HOUR, 1.0) + minutes(start + 3 * HOUR, end + MIN, 2.0)
    guarded = NightFlowAggregator(w, clock_ahead_s=300)
    expected = feed(NightFlowAggregator(w), readings)
    got = feed(guarded, readings, now=end + 30 * 86400)
    assert got == expected
    assert [(n.mnf, n.blocks) for n in got[1]] == [(1.0, 30)]  # 6 + 24 blocks


def test_state_round_trip_while_a_jump_is_held() -> None:
    w = window(SEOUL)
    start, end = w.bounds(datetime.date(2026, 1, 5))
    readings = minutes(start, start + HOUR, 1.0) + minutes(start + 3 * HOUR, end + MIN, 2.0)
    now = end + 30 * 86400
    reference = feed(NightFlowAggregator(w, clock_ahead_s=300), readings, now=now)
    agg = NightFlowAggregator(w, clock_ahead_s=300)
    cut = 62  # two readings of the outage's return are held
    first = feed(agg, readings[:cut], now=now)
    state = msgpack.unpackb(msgpack.packb(agg.state(), strict_types=True))
    rest = feed(NightFlowAggregator(w, state, clock_ahead_s=300), readings[cut:], now=now)
    assert (first[0] + rest[0], first[1] + rest[1]) == reference


def test_records_round_trip_through_msgpack() -> None:
    block = NightBlock(S1, datetime.date(2026, 1, 5), EpochSeconds(1_767_618_000), 7, 1.25, True)
    summary = NightSummary(S2, datetime.date(2026, 1, 5), None, None, 3, 0)
    for item in (block, summary):
        record = msgpack.unpackb(msgpack.packb(item.to_record()))
        assert record["night"] == "2026-01-05"
        assert type(item).from_record(record) == item


# -- state -------------------------------------------------------------------------


def _journal(seed: int) -> list[Reading]:
    """Two sensors over the Berlin fall-back night and the next, with gaps, holes and late ones."""
    rng = np.random.default_rng(seed)
    w = window(BERLIN)
    lo, _ = w.bounds(FALL_NIGHT)
    _, hi = w.bounds(FALL_NIGHT + datetime.timedelta(days=1))
    out = []
    for t in range(lo - HOUR, hi + HOUR, MIN):
        for sensor in (S1, S2):
            u = rng.random()
            if u < 0.15:
                continue  # missing minute
            flow = None if u < 0.2 else float(rng.uniform(0.5, 2.0))
            late = u > 0.98
            out.append(reading(t - 15 * MIN if late else t, flow, sensor))
    return out


JOURNAL = _journal(7)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=st.integers(0, len(JOURNAL)), second=st.integers(0, len(JOURNAL)))
def test_state_round_trip_gives_identical_output(split: int, second: int) -> None:
    w = window(BERLIN, min_readings=5)
    reference = NightFlowAggregator(w)
    expected = [reference.add(r) for r in JOURNAL]
    # rebuilt from its (msgpack round-tripped) state at two points
    agg = NightFlowAggregator(w)
    got = []
    cuts = sorted({split, second})
    for i, r in enumerate(JOURNAL):
        if i in cuts:
            state = agg.state()
            packed = msgpack.packb(state, strict_types=True)
            assert msgpack.unpackb(packed) == state
            agg = NightFlowAggregator(w, msgpack.unpackb(packed))
        got.append(agg.add(r))
    assert got == expected
    assert sum(len(n) for _, n in expected) == 4  # two nights, two sensors


def test_state_from_another_window_drops_open_nights_but_keeps_late_guard() -> None:
    w = window(SEOUL)
    agg = NightFlowAggregator(w)
    start, _ = w.bounds(datetime.date(2026, 1, 5))
    feed(agg, minutes(start, start + 30 * MIN))
    narrowed = window(SEOUL, start=(2, 0), end=(4, 0))
    rebuilt = NightFlowAggregator(narrowed, agg.state())
    assert rebuilt.add(reading(start)) == ([], [])  # late
    assert rebuilt.add(reading(start + 2 * HOUR)) == ([], [])  # nothing was open
    assert rebuilt.state()["sensors"][S1]["open"] is None


def test_state_of_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError):
        NightFlowAggregator(window(), {"version": 99, "sensors": {}})


# -- requirement: realistic noisy nights ---------------------------------------------

BASE_MNF = 2.0  # m3/h at 03:30 local


def _night_curve(hours: np.ndarray) -> np.ndarray:
    """Smooth daily demand with its minimum at 03:30 local."""
    return BASE_MNF * (1.0 + 0.8 * (1.0 - np.cos(2 * np.pi * (hours - 3.5) / 24.0)))


def _simulate(nights: int, seed: int, leak: float = 0.0, leak_from: int | None = None
              ) -> list[tuple[datetime.date, NightVerdict]]:
    """Run synthetic days (one reading a minute) through the aggregator and the
    NIGHT model as the NightFlow actor does."""
    rng = np.random.default_rng(seed)
    w = window(SEOUL)
    agg = NightFlowAggregator(w)
    model = NightModel(NightSettings.from_config(default_config().night), NO_HOLIDAYS, w)
    first = datetime.date(2026, 1, 5)
    verdicts = []
    for k in range(nights):
        night_start, _ = w.bounds(first + datetime.timedelta(days=k))
        t = np.arange(night_start - 16 * HOUR, night_start + 8 * HOUR, MIN)
        hours = ((t - night_start) / HOUR + 22.0) % 24.0
        level = 1.0 + 0.01 * rng.standard_normal()  # nights differ a little
        flow = _night_curve(hours) * level * (1.0 + 0.03 * rng.standard_normal(t.size))
        if leak_from is not None:
            flow = flow + np.where(t >= leak_from, leak * BASE_MNF, 0.0)
        for ti, fi in zip(t.tolist(), flow.tolist()):
            _, summaries = agg.add(reading(ti, fi))
            for s in summaries:
                v = model.judge(s)
                assert v is not None
                verdicts.append((s.night, v))
    return verdicts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_thirty_three_clean_days_raise_no_leak(seed: int) -> None:
    verdicts = _simulate(33, seed)
    judged = [v for _, v in verdicts if v.leak is not None]
    assert len(judged) == 33 - 7  # the first seven nights are learned, not judged
    assert not any(v.leak for v in judged)
    # the expected MNF is the true one within a few percent
    assert judged[-1].expected == pytest.approx(BASE_MNF, rel=0.05)
    assert judged[-1].day_expected is not None


@pytest.mark.parametrize(("leak", "starts_at", "seed"), [
    (0.10, (17, 0), 1),   # leak begins in the afternoon before night 1
    (0.10, (1, 0), 2),    # during night 1, before its quietest hours
    (0.10, (4, 30), 3),   # during night 1, after its quietest hours: nights 2-3 catch it
    (0.15, (23, 0), 4),
    (0.50, (12, 0), 5),
])
def test_leak_of_ten_percent_is_caught_on_first_or_second_night(
    leak: float, starts_at: tuple[int, int], seed: int
) -> None:
    clean_nights = 22  # three weeks: Saturday and Sunday nights are known kinds
    leak_night = datetime.date(2026, 1, 5) + datetime.timedelta(days=clean_nights)
    # the night the leak first touches: the night of that evening, or of the previous one
    day = leak_night if starts_at[0] >= 12 else leak_night + datetime.timedelta(days=1)
    leak_from = at(SEOUL, day.year, day.month, day.day, *starts_at)
    verdicts = _simulate(clean_nights + 5, seed, leak, leak_from)
    before = [v for n, v in verdicts if n < leak_night]
    after = [(n, v) for n, v in verdicts if n >= leak_night]
    assert not any(v.leak for v in before)
    first_caught = next(n for n, v in after if v.leak)
    # A 10 % leak is caught on its first or second whole night (a night it
    # began in after the quietest hours shows none of it).
    assert (first_caught - leak_night).days <= (2 if starts_at == (4, 30) else 1)
    # a lasting leak stays flagged: it never enters the clean baseline
    assert all(v.leak for n, v in after if n > first_caught)
