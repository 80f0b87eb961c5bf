"""bench/leak_scenarios.py: labelled leak scenarios built on wntr's network models."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import leak_scenarios as ls
from core.types import Reading

# Small and fast: Net3 solves in a fraction of a second; six weeks of minutes.
SMALL = {"network": "Net3", "history_days": 14, "eval_days": 28, "cache_dir": None}


@pytest.fixture(scope="module")
def leaky() -> ls.Scenario:
    return ls.scenario(7, kind="leaks", history_days=14, eval_days=120, network="Net3",
                       cache_dir=None)


def test_same_seed_same_scenario_and_the_cache_gives_it_back(tmp_path: Path) -> None:
    fresh = ls.scenario(3, **SMALL)
    cached_args = {**SMALL, "cache_dir": tmp_path}
    first = ls.scenario(3, **cached_args)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = ls.scenario(3, **cached_args)  # from the cache
    other = ls.scenario(4, **SMALL)
    for sc in (first, again):
        assert sc.labels() == fresh.labels()
        np.testing.assert_array_equal(sc.flow, fresh.flow)
        np.testing.assert_array_equal(sc.pressure, fresh.pressure)
        np.testing.assert_allclose(sc.leak_flow, fresh.leak_flow, rtol=1e-6, atol=1e-4)
    assert not np.array_equal(other.flow, fresh.flow, equal_nan=True)


def test_meters_read_consumption_plus_leaks_in_m3h_and_kgf_cm2(leaky: ls.Scenario) -> None:
    assert leaky.sensors == ("001", "002")
    truth = leaky.consumption + leaky.leak_flow
    seen = ~np.isnan(leaky.flow)
    error = np.abs(leaky.flow[seen] - truth[seen]) / truth[seen]
    assert np.quantile(error, 0.99) < 0.02  # meter noise 0.5 % and 0.01 m3/h resolution
    assert 0.5 < np.nanmedian(leaky.pressure) < 10  # kgf/cm2, not metres of head
    assert np.isnan(leaky.flow).any(), "meters have gaps"
    assert np.array_equal(np.isnan(leaky.flow), np.isnan(leaky.pressure))


def test_leaks_are_labelled_sized_against_the_mnf_and_follow_pressure(
        leaky: ls.Scenario) -> None:
    assert leaky.leaks and {k.kind for k in leaky.leaks} == {"abrupt", "growing"}
    tz = leaky.tz
    for leak in leaky.leaks:
        k = leaky.sensors.index(leak.sensor)
        local = dt.datetime.fromtimestamp(leak.start, tz)
        assert 7 <= local.hour < 20 and leak.start >= leaky.eval_start
        i0, i1 = (leak.start - leaky.start) // 60, (leak.end - leaky.start) // 60
        flow = leaky.leak_flow[k, i0:i1]
        assert flow.min() > 0 and leaky.leak_flow[k, i1:i1 + 60].max() == 0  # repaired
        # First night: the leak is `size` of the clean MNF (the pressure it was sized at,
        # less the little its own draw takes away).
        at = (leak.mnf_time - leaky.start) // 60
        assert leak.start < leak.mnf_time < leak.start + 86400 + 7 * 3600
        assert leaky.leak_flow[k, at] == pytest.approx(leak.size_at(leak.mnf_time) * leak.mnf,
                                                       rel=0.03)
        # Emitter law: more at night (high pressure) than at the evening peak.
        hours = (leaky.times[i0:i1] - leaky.times[i0]) / 3600
        local_hour = (local.hour + local.minute / 60 + hours) % 24
        night = flow[(local_hour > 2) & (local_hour < 4)][:120].mean()
        evening = flow[(local_hour > 19) & (local_hour < 20)][-60:].mean()
        if leak.kind == "abrupt":
            assert night > evening
    for sensor in leaky.sensors:
        mine = sorted((k for k in leaky.leaks if k.sensor == sensor), key=lambda k: k.start)
        for a, b in zip(mine, mine[1:]):
            assert b.start >= a.end + 14 * 86400  # one leak at a time, then a clean spell


def test_growing_leaks_grow_then_stop_at_their_largest(leaky: ls.Scenario) -> None:
    growing = [k for k in leaky.leaks if k.kind == "growing"]
    leak = growing[0]
    assert leak.size < 0.06 and leak.growth_per_day > 0
    k = leaky.sensors.index(leak.sensor)
    nightly = [leaky.leak_flow[k, (t - leaky.start) // 60]
               for t in range(leak.start + 10 * 3600, leak.end, 86400)]  # same hour each day
    assert nightly[-1] > 3 * nightly[0]
    assert leak.size_at(leak.end) <= leak.max_size


def test_weekday_saturday_sunday_and_holidays_differ() -> None:
    sc = ls.scenario(11, network="Net3", kind="clean", history_days=0, eval_days=70,
                     meters=1, cache_dir=None)
    tz = sc.tz
    days = sc.consumption[0].reshape(-1, 1440)
    holidays = {dt.date.fromisoformat(d) for d in sc.holidays}
    kinds: dict[str, list[float]] = {"weekday": [], "sat": [], "sun": []}
    for i, row in enumerate(days):
        date = dt.datetime.fromtimestamp(sc.start + i * 86400, tz).date()
        kind = ("sun" if date.weekday() == 6 or date in holidays else
                "sat" if date.weekday() == 5 else "weekday")
        kinds[kind].append(row[7 * 60:8 * 60].mean() / row.mean())  # 07:00-08:00
    weekday, sat, sun = (np.median(kinds[k]) for k in ("weekday", "sat", "sun"))
    assert weekday > sat > sun  # the morning peak comes later at the weekend
    assert sc.leaks == () and not sc.leak_flow.any()


def test_holidays_take_sundays_shape() -> None:
    sc = ls.scenario(2, network="Net3", kind="clean", history_days=0, eval_days=365,
                     meters=1, cache_dir=None)
    tz = sc.tz
    days = sc.consumption[0].reshape(-1, 1440)
    morning = {dt.datetime.fromtimestamp(sc.start + i * 86400, tz).date():
               row[7 * 60:8 * 60].mean() / row.mean() for i, row in enumerate(days)}
    weekday_holidays = [d for d in map(dt.date.fromisoformat, sc.holidays)
                        if d in morning and d.weekday() < 5]
    assert len(weekday_holidays) >= 5
    weekdays = [v for d, v in morning.items()
                if d.weekday() < 5 and d.isoformat() not in sc.holidays]
    assert max(morning[d] for d in weekday_holidays) < min(weekdays)


def test_night_flow_rises_and_falls_with_the_seasons() -> None:
    sc = ls.scenario(5, network="Net3", kind="clean", history_days=91, eval_days=274,
                     meters=1, cache_dir=None)
    nights = sc.consumption[0].reshape(-1, 1440)[:, 120:240].min(axis=1)  # 02:00-04:00
    monthly = [np.median(nights[i:i + 30]) for i in range(0, nights.size - 29, 30)]
    assert max(monthly) / min(monthly) > 1.4


def test_kinds_clean_and_weekday_probe() -> None:
    probe = ls.scenario(1, network="Net3", kind="weekdays", history_days=14, eval_days=150,
                        meters=1, cache_dir=None)
    tz = probe.tz
    starts = [dt.datetime.fromtimestamp(k.start, tz) for k in probe.leaks]
    assert sorted(s.weekday() for s in starts) == list(range(7))
    assert {(k.kind, k.size) for k in probe.leaks} == {("abrupt", 0.3)}


def test_readings_are_in_time_order_and_skip_gaps() -> None:
    sc = ls.scenario(3, **SMALL)
    out = list(ls.readings(sc))
    assert all(isinstance(r, Reading) for r in out[:10])
    keys = [(r.time, r.sensor) for r in out]
    assert keys == sorted(keys)
    assert len(out) == int((~np.isnan(sc.flow)).sum())
    first = out[0]
    k = sc.sensors.index(first.sensor)
    assert first.flow == sc.flow[k, (first.time - sc.start) // 60]


def test_every_shipped_network_gives_metered_zones() -> None:
    for name in ls.NETWORKS:
        hyd = ls.hydraulics(name)
        assert len(hyd.zones) >= 2, name
        assert hyd.pressure.shape == (len(ls.GRID), len(hyd.nodes))


@pytest.mark.parametrize("kwargs, named", [
    ({"kind": "flood"}, "kind"), ({"network": "Net9"}, "network"), ({"meters": 7}, "meters"),
])
def test_bad_parameters_are_named(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ls.scenario(1, cache_dir=None, **kwargs)  # type: ignore[arg-type]


@given(size=st.floats(0.01, 1.0), growth=st.floats(0, 0.05), top=st.floats(0.01, 1.0),
       days=st.floats(0, 400))
def test_a_leaks_size_never_shrinks_and_stops_at_its_largest(
        size: float, growth: float, top: float, days: float) -> None:
    top = max(top, size)
    leak = ls.Leak("001", 0, 10**9, "growing", size, growth, top, "J", 0.5, 1.0, 3600)
    now, later = leak.size_at(days * 86400), leak.size_at((days + 1) * 86400)
    assert size <= now <= later <= top
