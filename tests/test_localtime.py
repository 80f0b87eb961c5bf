"""Local time of epoch-second arrays and per-group medians, against the slow obvious way."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.localtime import group_medians, local_seconds, utc_offsets

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
