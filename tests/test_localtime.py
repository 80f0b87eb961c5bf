"""Local time of epoch-second arrays and per-group medians, against the slow obvious way."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.localtime import group_medians, local_datetime, local_seconds, utc_offsets

ZONES = [ZoneInfo("Asia/Seoul"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"),
         ZoneInfo("Australia/Lord_Howe")]  # the last one shifts by 30 minutes


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2_000_000_000), min_size=0, max_size=50),
       st.sampled_from(ZONES))
def test_offsets_match_zoneinfo_at_every_time(times, tz):
    expected = [int(datetime.datetime.fromtimestamp(t, tz).utcoffset().total_seconds())
                for t in times]
    assert utc_offsets(np.array(times, dtype=np.int64), tz).tolist() == expected


def test_local_seconds_across_a_dst_change():
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
    change = int(datetime.datetime(2026, 3, 29, 1, 0, tzinfo=datetime.timezone.utc).timestamp())
    local = local_seconds(np.array([change - 60, change]), berlin)
    assert (local % 86400 // 60).tolist() == [1 * 60 + 59, 3 * 60]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5),
                          st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")))),
                max_size=60))
def test_group_medians_match_numpy_per_group(pairs):
    index = np.array([g for g, _ in pairs], dtype=np.int64)
    values = np.array([v for _, v in pairs], dtype=np.float64)
    medians = group_medians(index, values, 6)
    for g in range(6):
        mine = values[(index == g) & np.isfinite(values)]
        if mine.size:
            assert np.isclose(medians[g], np.median(mine), rtol=1e-12, atol=1e-9)
        else:
            assert np.isnan(medians[g])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(0, 4_102_444_800),  # to 2100, past a 32-bit time_t's 2038
                 st.integers(2_147_483_647 - 86_400, 2_147_483_647 + 86_400)),
       st.sampled_from(ZONES))
def test_local_datetime_is_fromtimestamp_without_time_t(t: int, tz: ZoneInfo) -> None:
    # fromtimestamp is the reference where the platform's time_t reaches (all of
    # it on 64 bits); on a 32-bit Pi it raises past 2038-01-19.
    ours = local_datetime(t, tz)
    try:
        reference = datetime.datetime.fromtimestamp(t, tz)
    except OverflowError:
        return
    assert ours == reference and ours.utcoffset() == reference.utcoffset()
    assert (ours.replace(tzinfo=None), ours.fold) == (reference.replace(tzinfo=None),
                                                       reference.fold)


def test_local_datetime_goes_past_2038() -> None:
    # One hour past the last second of a 32-bit time_t, in Seoul (UTC+9).
    assert local_datetime(2**31 - 1 + 3600, ZONES[0]) == datetime.datetime(
        2038, 1, 19, 13, 14, 7, tzinfo=ZONES[0])
