"""Labelled leak scenarios on real network models (wntr/EPANET), one reading a minute.

    python bench/leak_scenarios.py --seed 101                # summary of one scenario
    python bench/leak_scenarios.py --seed 3 --kind clean --network Net3

Importable: :func:`scenario` returns a :class:`Scenario` (minute arrays and
labels), :func:`readings` turns it into :class:`core.types.Reading` objects in
time order. Needs the ``eval`` extra (``pip install -e '.[eval]'``: wntr).

**What a meter sees.** Each network shipped in wntr's wheel (``ky4``, ``ky10``,
``Net3``, ``Net6``) is cut into supply zones: every junction belongs to the
source (reservoir or tank) nearest to it along the pipes. The largest zones by
base demand are the metered DMAs (sensors ``001``, ``002``, ...). A DMA inlet
meter with no storage downstream measures the zone's consumption plus its
leaks (the water balance), in m3/h, and the pressure at the zone's inlet
junction, in kgf/cm2 (10 m of head = 1 kgf/cm2).

**Hydraulics, at a cost that fits a laptop.** Simulating a year at one-minute
steps is far too slow, and it is not needed: with tank levels held (tanks are
made wide, controls removed, pumps left on) the network's hydraulic state
depends only on how much water is drawn. So EPANET solves the network once
per network at each demand multiplier of :data:`GRID` (one extended-period
run, one multiplier an hour), and every minute's pressures are interpolated
from that table at the minute's total draw (consumption plus leaks, so a leak
lowers the pressure a little, as it does). A tank outlet's level swings over
the day (:data:`SOURCE_SWING_M`); that swing is added to every pressure.

**Consumption per zone** (noise-free part): a night base (legitimate night use
plus background leakage) and daily peaks whose shape depends on the kind of
day: weekday, Saturday, Sunday or holiday (holidays take Sunday's shape). The
night base follows a seasonal curve whose highest to lowest ratio is
:data:`NIGHT_SEASON_RATIO` (night flow that doubles or triples from winter to
summer: irrigation, pools); the day part has a milder season. Both carry
day-to-day weather (autocorrelated daily factors). On top: consumption noise
(autocorrelated over minutes), occasional legitimate night uses (a pool filled
at night, 20-150 minutes), meter noise and a 0.01 m3/h resolution, and gaps
(minutes to days without a line).

**Leaks** (emitter law): a leak at a junction of the zone draws
``q = C * p ** N1`` (``N1`` 0.5 to 1.2, FAVAD) with the junction's pressure ``p``,
so it is largest at night, when the pressure is highest. Its size is the
fraction of the zone's clean minimum night flow (MNF) it adds on its first night
(``C`` is set so): *abrupt* leaks keep their size, *growing* leaks start at
2-5 % and grow by ``growth_per_day`` (in MNF fractions) up to ``max_size``. Each
is repaired at its ``end``; the next leak on the same meter starts 2-5 weeks
later. Leak starts fall between 07:00 and 20:00 local, so a leak's first night
is the night after its start.

**Kinds**: ``leaks`` (a random sequence of abrupt and growing leaks per meter,
sizes 5-100 % of the MNF), ``clean`` (no leak: false events), ``weekdays``
(abrupt 30 % leaks starting on each day of the week, one week each), ``single``
(one large abrupt leak per meter, 50-100 % of the MNF, 3-10 days into the
evaluated span: a burst, for quick checks).

Scenarios are cached under ``.cache/leak_scenarios/`` keyed by their
parameters, the seed and :data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.types import EpochSeconds, Reading, SensorId, sensor_id  # noqa: E402

log = logging.getLogger("bench.leak_scenarios")

# Bump when a change makes the same parameters give other data (invalidates the cache).
GENERATOR_VERSION = 1
NETWORKS = ("ky4", "ky10", "Net3", "Net6")
KINDS = ("leaks", "clean", "weekdays", "single")
CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "leak_scenarios"

MINUTE_S = 60
DAY_S = 86400
DAY_MIN = 1440
# Demand multipliers EPANET solves the network at (1 = the model's base demands).
GRID = np.round(np.linspace(0.0, 2.5, 26), 2)
M_HEAD_PER_KGF_CM2 = 10.0
# A leak junction needs at least this head at the base demand (no leak where water barely
# reaches), and the meter's pressure point too (not a tank outlet stub).
MIN_HEAD_M = 15.0
# Tank levels swing over the day: lowest in the evening, refilled overnight (m).
SOURCE_SWING_M = (0.5, 2.0)
# The night base's seasonal ratio, highest (summer) over lowest (winter).
NIGHT_SEASON_RATIO = (1.5, 3.0)
DAY_SEASON_AMPLITUDE = (0.05, 0.2)
# Legitimate night uses (a pool filled at night): per meter per day, minutes, MNF fraction.
NIGHT_USE_RATE = 1 / 14
NIGHT_USE_MINUTES = (20, 150)
NIGHT_USE_SIZE = (0.1, 0.4)
CONSUMPTION_NOISE = (0.03, 0.06)  # relative sd, autocorrelated over minutes
METER_NOISE = 0.005  # relative sd, white
FLOW_RESOLUTION = 0.01  # m3/h
PRESSURE_NOISE = 0.005  # kgf/cm2 sd
PRESSURE_RESOLUTION = 0.001  # kgf/cm2
GAPS_PER_DAY = 4 / 30
# Abrupt leak size classes (MNF fractions), drawn evenly; growing leaks start small.
ABRUPT_CLASSES = ((0.05, 0.10), (0.10, 0.20), (0.20, 0.50), (0.50, 1.00))
GROWING_START = (0.02, 0.05)
GROWING_PER_DAY = (0.004, 0.025)
GROWING_MAX = (0.3, 1.0)
ABRUPT_DAYS = (10, 35)
GAP_BETWEEN_LEAKS_DAYS = (14, 35)
LEAK_START_HOURS = (7.0, 20.0)  # local; keeps a leak's first night unambiguous
WEEKDAY_PROBE_SIZE = 0.30
WEEKDAY_PROBE_DAYS = 7
WEEKDAY_PROBE_GAP_DAYS = 14
NIGHT_HOURS = (22, 5)  # the window the reference MNF of a leak is taken in (local)
FIRST_YEAR, LAST_YEAR = 2023, 2024  # start dates are drawn from FIRST_YEAR
# Fixed-date public holidays (month, day) of the default time zone's country, and how many
# 3-day moving feasts a year gets (drawn per seed: their dates move from year to year).
FIXED_HOLIDAYS = ((1, 1), (3, 1), (5, 5), (6, 6), (8, 15), (10, 3), (10, 9), (12, 25))
MOVING_FEASTS = 2


# ---------------------------------------------------------------------------------------------
# Labels


@dataclass(frozen=True, slots=True)
class Meter:
    """One metered zone: the sensor id the gateway sees and what it covers."""

    sensor: SensorId
    source: str  # the zone's supply (reservoir or tank) in the network model
    inlet: str  # the junction whose pressure the meter reports
    base_demand: float  # m3/h, the zone's junction base demands
    junctions: int


@dataclass(frozen=True, slots=True)
class Leak:
    """One labelled leak on one meter's zone."""

    sensor: SensorId
    start: int  # epoch seconds
    end: int  # epoch seconds, repaired (or the scenario's end)
    kind: str  # "abrupt" or "growing"
    size: float  # MNF fraction on its first night
    growth_per_day: float  # MNF fraction per day (0 for abrupt)
    max_size: float  # growing leaks stop growing here
    node: str  # the junction it is at
    exponent: float  # N1 of the emitter law
    mnf: float  # m3/h: the zone's clean MNF on the first night (the size's reference)
    mnf_time: int  # epoch seconds of that minimum: the size holds at its pressure

    def size_at(self, t: float) -> float:
        """MNF fraction at epoch ``t`` (at the reference pressure)."""
        days = max(0.0, (t - self.start) / DAY_S)
        return min(self.max_size, self.size + self.growth_per_day * days)

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class Scenario:
    """Minute readings of a site's meters with their labels.

    ``flow``/``pressure`` are ``(meters, minutes)``: what the meters send (NaN =
    no line that minute). ``leak_flow`` and ``consumption`` are the truth behind
    ``flow`` (before meter noise). ``times[i]`` is minute ``i``'s epoch second.
    """

    seed: int
    network: str
    kind: str
    timezone: str
    start: int  # local midnight, epoch seconds
    history_days: int
    eval_days: int
    meters: tuple[Meter, ...]
    leaks: tuple[Leak, ...]
    holidays: tuple[str, ...]  # ISO dates
    flow: np.ndarray
    pressure: np.ndarray
    leak_flow: np.ndarray
    consumption: np.ndarray

    @property
    def minutes(self) -> int:
        return self.flow.shape[1]

    @property
    def times(self) -> np.ndarray:
        return self.start + MINUTE_S * np.arange(self.minutes, dtype=np.int64)

    @property
    def eval_start(self) -> int:
        """Epoch second the evaluated span starts (the history before it is not scored)."""
        return self.start + self.history_days * DAY_S

    @property
    def end(self) -> int:
        return self.start + self.minutes * MINUTE_S

    @property
    def sensors(self) -> tuple[SensorId, ...]:
        return tuple(m.sensor for m in self.meters)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def labels(self) -> dict[str, object]:
        """Everything but the arrays, JSON-ready."""
        return {
            "seed": self.seed, "network": self.network, "kind": self.kind,
            "timezone": self.timezone, "start": self.start, "history_days": self.history_days,
            "eval_days": self.eval_days, "meters": [asdict(m) for m in self.meters],
            "leaks": [asdict(k) for k in self.leaks], "holidays": list(self.holidays),
        }


def readings(sc: Scenario) -> Iterator[Reading]:
    """The scenario's readings in time order (then sensor order); a gap sends nothing."""
    flow = sc.flow.T
    pressure = sc.pressure.T
    sensors = sc.sensors
    for i, t in enumerate(sc.times.tolist()):
        for k, sensor in enumerate(sensors):
            f, p = float(flow[i, k]), float(pressure[i, k])
            if f != f and p != p:
                continue
            yield Reading(sensor, EpochSeconds(t), None if f != f else f,
                          None if p != p else p)


# ---------------------------------------------------------------------------------------------
# Hydraulics (wntr), once per network


@dataclass(frozen=True)
class Hydraulics:
    """A network's pressures (m) at each demand multiplier of :data:`GRID`, and its zones."""

    network: str
    nodes: tuple[str, ...]  # junction names, the columns of ``pressure``
    pressure: np.ndarray  # (len(GRID), nodes)
    base_demand: float  # m3/h, all junctions
    zones: tuple[tuple[str, str, float, tuple[str, ...]], ...]  # (source, inlet, m3/h, junctions)

    def column(self, node: str) -> int:
        return self.nodes.index(node)


def network_path(name: str) -> Path:
    """The .inp file wntr's wheel ships for ``name``."""
    import wntr

    path = Path(wntr.__file__).parent / "library" / "networks" / f"{name}.inp"
    if not path.exists():
        raise ValueError(f"network {name!r}: no {path.name} in wntr's package")
    return path


def solve_network(name: str) -> Hydraulics:
    """Pressures at every :data:`GRID` multiplier with tank levels held, and the zones."""
    import networkx as nx
    import wntr

    wn = wntr.network.WaterNetworkModel(str(network_path(name)))
    for control in list(wn.control_name_list):
        wn.remove_control(control)
    for _, tank in wn.tanks():
        # A tank this wide keeps its level through the run: each hour is the steady
        # state at that hour's demand, not a drained or overflowing tank.
        tank.diameter = 1e4
        tank.min_level = 0.0
        tank.max_level = max(tank.max_level, tank.init_level + 10.0)
    for _, pump in wn.pumps():
        pump.initial_status = wntr.network.LinkStatus.Open
    wn.add_pattern("grid", list(GRID))
    for _, junction in wn.junctions():
        for demand in junction.demand_timeseries_list:
            demand.pattern_name = "grid"
    opts = wn.options.time
    opts.duration = (len(GRID) - 1) * 3600
    opts.hydraulic_timestep = opts.pattern_timestep = opts.report_timestep = 3600
    opts.pattern_start = opts.start_clocktime = 0
    wn.options.hydraulic.demand_model = "DD"
    with tempfile.TemporaryDirectory() as tmp:
        results = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / name))
    nodes = tuple(wn.junction_name_list)
    pressure = results.node["pressure"][list(nodes)].to_numpy(dtype=np.float64)
    base = {j: sum(d.base_value for d in junction.demand_timeseries_list) * 3600.0
            for j, junction in wn.junctions()}

    graph = wn.to_graph().to_undirected()
    for _, _, key, data in graph.edges(keys=True, data=True):
        data["length"] = getattr(wn.get_link(key), "length", 1.0)
    sources = list(wn.reservoir_name_list) + list(wn.tank_name_list)
    distance, paths = nx.multi_source_dijkstra(graph, sources, weight="length")
    members: dict[str, list[str]] = {}
    for j in nodes:
        if j in paths:
            members.setdefault(paths[j][0], []).append(j)
    at_base = pressure[int(np.argmin(np.abs(GRID - 1.0)))]
    index = {j: i for i, j in enumerate(nodes)}
    zones = []
    for source, junctions in members.items():
        demand = sum(base[j] for j in junctions)
        usable = [j for j in junctions if at_base[index[j]] >= MIN_HEAD_M]
        if demand <= 0 or not usable:
            continue
        inlet = min(usable, key=lambda j: distance[j])
        zones.append((source, inlet, float(demand), tuple(sorted(usable))))
    zones.sort(key=lambda z: -z[2])
    return Hydraulics(name, nodes, pressure, float(sum(base.values())), tuple(zones))


_HYDRAULICS: dict[str, Hydraulics] = {}


def hydraulics(name: str) -> Hydraulics:
    """:func:`solve_network`, once per process."""
    if name not in _HYDRAULICS:
        _HYDRAULICS[name] = solve_network(name)
    return _HYDRAULICS[name]


# ---------------------------------------------------------------------------------------------
# Demand


def holidays_for(rng: np.random.Generator, years: range) -> list[dt.date]:
    """Fixed-date holidays plus :data:`MOVING_FEASTS` 3-day feasts a year."""
    days: set[dt.date] = set()
    for year in years:
        days.update(dt.date(year, m, d) for m, d in FIXED_HOLIDAYS)
        for _ in range(MOVING_FEASTS):
            first = dt.date(year, 1, 1) + dt.timedelta(days=int(rng.integers(20, 330)))
            days.update(first + dt.timedelta(days=i) for i in range(3))
    return sorted(days)


# (centre hour, width hours, height) of the peaks per kind of day: weekday, Saturday, Sunday.
_PEAKS = (
    ((7.0, 1.2, 1.0), (12.5, 2.5, 0.45), (19.5, 1.8, 0.85)),
    ((9.0, 1.8, 0.8), (13.0, 2.5, 0.55), (19.0, 2.0, 0.8)),
    ((10.0, 2.2, 0.75), (14.0, 2.5, 0.5), (18.5, 2.2, 0.75)),
)


def day_shapes(rng: np.random.Generator) -> np.ndarray:
    """(3, 1440) peak shapes (0 at night) for weekday, Saturday, Sunday; a zone's own
    jitter of the peaks' times and heights."""
    hours = np.arange(DAY_MIN) / 60.0
    shift = rng.uniform(-0.5, 0.5)
    shapes = np.zeros((3, DAY_MIN))
    for kind, peaks in enumerate(_PEAKS):
        for centre, width, height in peaks:
            d = (hours - centre - shift + 12.0) % 24.0 - 12.0
            shapes[kind] += height * rng.uniform(0.85, 1.15) * np.exp(-0.5 * (d / width) ** 2)
    return shapes


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) series with marginal standard deviation ``sd`` (scipy ships with
    wntr; its IIR filter runs a year of minutes in milliseconds)."""
    from scipy.signal import lfilter

    e = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
    e[0] = rng.normal(0.0, sd)
    return lfilter([1.0], [1.0, -phi], e)


@dataclass(frozen=True)
class _Calendar:
    days: int
    kind: np.ndarray  # per day: 0 weekday, 1 Saturday, 2 Sunday or holiday
    day_of_year: np.ndarray  # per minute, fractional
    hour: np.ndarray  # per minute, local fractional hour
    day: np.ndarray  # per minute, index of the local day


def _calendar(start: int, days: int, tz: ZoneInfo, holidays: set[dt.date]) -> _Calendar:
    first = dt.datetime.fromtimestamp(start, tz).date()
    dates = [first + dt.timedelta(days=i) for i in range(days + 1)]
    kind = np.array([2 if d in holidays or d.weekday() == 6 else 1 if d.weekday() == 5 else 0
                     for d in dates])
    minutes = days * DAY_MIN
    t = start + MINUTE_S * np.arange(minutes, dtype=np.int64)
    # Local time by day offsets (a zone may change its offset: DST).
    offsets = np.array([dt.datetime.fromtimestamp(start + i * DAY_S, tz).utcoffset()
                        .total_seconds() for i in range(days + 2)], dtype=np.int64)
    local = t + offsets[(t - start) // DAY_S]
    local_day = (local - (start + offsets[0])) // DAY_S
    hour = ((local - (start + offsets[0])) % DAY_S) / 3600.0
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)
    return _Calendar(days, kind, doy[np.clip(local_day, 0, days)] + hour / 24.0, hour,
                     np.clip(local_day, 0, days))


def _season(doy: np.ndarray, peak_doy: float) -> np.ndarray:
    """-1 .. 1 over the year, 1 at ``peak_doy``."""
    return np.cos(2.0 * math.pi * (doy - peak_doy) / 365.25)


@dataclass(frozen=True)
class _Zone:
    """One metered zone's noise-free consumption and its night base, per minute."""

    clean: np.ndarray  # m3/h, consumption without minute noise or night uses
    night_base: np.ndarray  # m3/h, per minute (the MNF's level)


def _zone_consumption(rng: np.random.Generator, cal: _Calendar, demand: float,
                      shared_day: np.ndarray, shared_night: np.ndarray,
                      peak_doy: float) -> _Zone:
    """Noise-free consumption of one zone whose mean is about ``demand`` (m3/h)."""
    shapes = day_shapes(rng)
    night_fraction = rng.uniform(0.25, 0.45)
    ratio = rng.uniform(*NIGHT_SEASON_RATIO)
    amplitude = rng.uniform(*DAY_SEASON_AMPLITUDE)
    season = _season(cal.day_of_year, peak_doy + rng.uniform(-15, 15))
    night_season = ratio ** (0.5 * season)
    day_season = 1.0 + amplitude * season
    days = cal.days + 1
    day_level = np.exp(0.6 * shared_day + _ar1(rng, days, 0.7, 0.04))
    night_level = np.exp(0.6 * shared_night + _ar1(rng, days, 0.6, 0.03))
    # The peaks fill the rest of the mean: weekday mean = demand.
    peak_scale = (1.0 - night_fraction) / shapes[0].mean()
    minute_of_day = np.clip((cal.hour * 60).astype(np.int64), 0, DAY_MIN - 1)
    peaks = shapes[cal.kind[cal.day], minute_of_day] * peak_scale
    night_base = demand * night_fraction * night_season * night_level[cal.day]
    clean = demand * peaks * day_season * day_level[cal.day] + night_base
    return _Zone(clean, night_base)


def _night_uses(rng: np.random.Generator, cal: _Calendar, night_base: np.ndarray) -> np.ndarray:
    """Legitimate night uses (m3/h per minute): a pool, a tanker filled at night."""
    out = np.zeros(cal.hour.size)
    count = rng.poisson(NIGHT_USE_RATE * cal.days)
    for _ in range(count):
        day = int(rng.integers(0, cal.days))
        begin = day * DAY_MIN + int(rng.uniform(22 * 60, 29 * 60))  # 22:00..05:00
        length = int(rng.integers(*NIGHT_USE_MINUTES))
        end = min(begin + length, out.size)
        if begin < end:
            out[begin:end] += rng.uniform(*NIGHT_USE_SIZE) * night_base[begin]
    return out


def _gaps(rng: np.random.Generator, minutes: int) -> np.ndarray:
    """True where the meter sends no line: mostly minutes, sometimes hours or days."""
    gap = np.zeros(minutes, dtype=bool)
    for _ in range(rng.poisson(GAPS_PER_DAY * minutes / DAY_MIN)):
        u = rng.random()
        length = (int(rng.integers(2, 30)) if u < 0.8 else int(rng.integers(60, 360))
                  if u < 0.95 else int(rng.integers(DAY_MIN, 3 * DAY_MIN)))
        begin = int(rng.integers(0, minutes))
        gap[begin:begin + length] = True
    return gap


# ---------------------------------------------------------------------------------------------
# Leaks


def _leak_start(rng: np.random.Generator, start: int, day: int, tz: ZoneInfo) -> int:
    """A whole minute between 07:00 and 20:00 local on ``day`` days after ``start``."""
    date = dt.datetime.fromtimestamp(start, tz).date() + dt.timedelta(days=day)
    minute = int(rng.uniform(*LEAK_START_HOURS) * 60)
    local = dt.datetime.combine(date, dt.time(minute // 60, minute % 60), tz)
    return int(local.timestamp())


def _leak_plan(rng: np.random.Generator, kind: str, first_day: int, last_day: int,
               weekday_offset: int, start: int, tz: ZoneInfo) -> list[dict[str, float]]:
    """Leak timings and sizes on one meter, days counted from ``start``."""
    plan: list[dict[str, float]] = []
    if kind == "weekdays":
        day = first_day
        first_date = dt.datetime.fromtimestamp(start, tz).date()
        for i in range(7):
            target = (i + weekday_offset) % 7
            while (first_date + dt.timedelta(days=day)).weekday() != target:
                day += 1
            if day + WEEKDAY_PROBE_DAYS > last_day:
                break
            begin = _leak_start(rng, start, day, tz)
            plan.append({"start": begin, "end": begin + WEEKDAY_PROBE_DAYS * DAY_S,
                         "kind": "abrupt", "size": WEEKDAY_PROBE_SIZE, "growth": 0.0,
                         "max": WEEKDAY_PROBE_SIZE})
            day += WEEKDAY_PROBE_DAYS + WEEKDAY_PROBE_GAP_DAYS
        return plan
    if kind == "single":
        day = first_day + int(rng.integers(3, 11))
        if day + 2 > last_day:
            return plan
        size = float(rng.uniform(*ABRUPT_CLASSES[-1]))
        begin = _leak_start(rng, start, day, tz)
        end = min(begin + int(rng.integers(*ABRUPT_DAYS)) * DAY_S, start + last_day * DAY_S)
        return [{"start": begin, "end": end, "kind": "abrupt", "size": size, "growth": 0.0,
                 "max": size}]
    if kind != "leaks":
        return plan
    day = first_day + int(rng.integers(3, 21))
    while True:
        if rng.random() < 0.5:
            low, high = ABRUPT_CLASSES[int(rng.integers(len(ABRUPT_CLASSES)))]
            size = float(rng.uniform(low, high))
            growth, top, days = 0.0, size, int(rng.integers(*ABRUPT_DAYS))
            leak_kind = "abrupt"
        else:
            size = float(rng.uniform(*GROWING_START))
            growth = float(rng.uniform(*GROWING_PER_DAY))
            top = float(rng.uniform(*GROWING_MAX))
            days = min(70, int((top - size) / growth) + int(rng.integers(0, 15)))
            leak_kind = "growing"
        if day + 7 > last_day:
            return plan
        begin = _leak_start(rng, start, day, tz)
        end = min(begin + days * DAY_S, start + last_day * DAY_S)
        plan.append({"start": begin, "end": end, "kind": leak_kind, "size": size,
                     "growth": growth, "max": top})
        day += days + int(rng.integers(*GAP_BETWEEN_LEAKS_DAYS))


def _first_night_min(t0: int, start: int, cal: _Calendar, clean: np.ndarray) -> int:
    """Minute index of the clean consumption's minimum in the first night after ``t0``."""
    i0 = (t0 - start) // MINUTE_S
    night = np.flatnonzero((cal.hour[i0:i0 + DAY_MIN + 600] >= NIGHT_HOURS[0])
                           | (cal.hour[i0:i0 + DAY_MIN + 600] < NIGHT_HOURS[1]))
    # The first contiguous night after the start.
    first = night[: np.argmax(np.diff(night) > 1) + 1] if np.any(np.diff(night) > 1) else night
    return int(i0 + first[np.argmin(clean[i0 + first])])


# ---------------------------------------------------------------------------------------------
# The scenario


def scenario(seed: int, *, network: str | None = None, kind: str = "leaks", meters: int = 2,
             history_days: int = 91, eval_days: int = 182, timezone: str = "Asia/Seoul",
             cache_dir: Path | None = CACHE_DIR) -> Scenario:
    """The labelled scenario of ``seed``, cached in ``cache_dir`` (None: not cached).

    ``network`` None picks one of :data:`NETWORKS` from the seed. ``meters``: how many
    zones are metered (the largest ones).
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: choose from {', '.join(KINDS)}")
    network = network or NETWORKS[seed % len(NETWORKS)]
    if network not in NETWORKS:
        raise ValueError(f"network {network!r}: choose from {', '.join(NETWORKS)}")
    if not 1 <= meters <= 3:
        raise ValueError(f"meters {meters}: 1 to 3")
    params = {"seed": seed, "network": network, "kind": kind, "meters": meters,
              "history_days": history_days, "eval_days": eval_days, "timezone": timezone,
              "version": GENERATOR_VERSION}
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = None if cache_dir is None else cache_dir / f"{network}-{kind}-{seed}-{key}.npz"
    if path is not None and path.exists():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cached scenario %s unreadable (%s): generating it again", path, exc)
    sc = generate(seed, network=network, kind=kind, meters=meters, history_days=history_days,
                  eval_days=eval_days, timezone=timezone)
    if path is not None:
        _save(sc, path)
    return sc


def generate(seed: int, *, network: str, kind: str, meters: int, history_days: int,
             eval_days: int, timezone: str) -> Scenario:
    """Build a scenario (no cache): see the module docstring."""
    rng = np.random.default_rng([GENERATOR_VERSION, seed, NETWORKS.index(network),
                                 KINDS.index(kind)])
    tz = ZoneInfo(timezone)
    hyd = hydraulics(network)
    zones = hyd.zones[:meters]
    if len(zones) < meters:
        raise ValueError(f"network {network}: only {len(zones)} zone(s) to meter")
    first = dt.date(FIRST_YEAR, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    start = int(dt.datetime.combine(first, dt.time(0), tz).timestamp())
    days = history_days + eval_days
    last_date = first + dt.timedelta(days=days)
    holidays = holidays_for(rng, range(first.year, last_date.year + 1))
    cal = _calendar(start, days, tz, set(holidays))
    n = days * DAY_MIN

    # Weather is shared by the zones of one town: part of the daily factors is common.
    shared_day = _ar1(rng, days + 1, 0.7, 0.05)
    shared_night = _ar1(rng, days + 1, 0.6, 0.04)
    peak_doy = 200.0 + rng.uniform(-20, 20)
    clean, consumption, night_bases = [], [], []
    for _, _, demand, _ in zones:
        zone = _zone_consumption(rng, cal, demand, shared_day, shared_night, peak_doy)
        noise = _ar1(rng, n, 0.9, rng.uniform(*CONSUMPTION_NOISE))
        used = zone.clean * np.exp(noise) + _night_uses(rng, cal, zone.night_base)
        clean.append(zone.clean)
        consumption.append(used)
        night_bases.append(zone.night_base)
    consumption_arr = np.array(consumption)
    metered = sum(z[2] for z in zones)
    multiplier = consumption_arr.sum(axis=0) / metered  # the network follows its metered zones
    # Tank outlets: lowest late in the day, refilled overnight.
    swing = rng.uniform(*SOURCE_SWING_M) * np.cos(2.0 * math.pi * (cal.hour - 3.0) / 24.0)

    def head(node: str, m: np.ndarray, index: slice = slice(None)) -> np.ndarray:
        p = np.interp(m, GRID, hyd.pressure[:, hyd.column(node)]) + swing[index]
        return np.maximum(p, 0.0)

    leaks: list[Leak] = []
    leak_arr = np.zeros_like(consumption_arr)
    weekday_offset = int(rng.integers(7))
    for k, (source, _, _, junctions) in enumerate(zones):
        sensor = sensor_id(k + 1)
        for spec in _leak_plan(rng, kind, history_days, days, weekday_offset + 2 * k, start, tz):
            node = junctions[int(rng.integers(len(junctions)))]
            at = _first_night_min(int(spec["start"]), start, cal, clean[k])
            leaks.append(Leak(sensor, int(spec["start"]), int(spec["end"]), str(spec["kind"]),
                              round(spec["size"], 4), round(spec["growth"], 5),
                              round(spec["max"], 4), node, round(float(rng.uniform(0.5, 1.2)), 3),
                              round(float(clean[k][at]), 4), start + at * MINUTE_S))
    # Leak flows at the pressure of the draw without them, then once more with them
    # (a leak lowers the pressure that drives it; one pass is within a fraction of a percent).
    total_base = hyd.base_demand
    extra = np.zeros(n)
    for _ in range(2):
        leak_arr[:] = 0.0
        for leak in leaks:
            k = int(leak.sensor) - 1
            lo, hi = (leak.start - start) // MINUTE_S, (leak.end - start) // MINUTE_S
            at = (leak.mnf_time - start) // MINUTE_S
            p_ref = float(head(leak.node, np.array([multiplier[at]]), slice(at, at + 1))[0])
            span = slice(lo, hi)
            p = head(leak.node, multiplier[span] + extra[span] / total_base, span)
            t = start + MINUTE_S * np.arange(lo, hi)
            size = np.minimum(leak.max_size, leak.size + leak.growth_per_day
                              * np.maximum(0.0, (t - leak.start) / DAY_S))
            leak_arr[k, span] += size * leak.mnf * (p / max(p_ref, 1e-6)) ** leak.exponent
        extra = leak_arr.sum(axis=0)
    m_all = multiplier + extra / total_base

    flow = np.empty_like(consumption_arr)
    pressure = np.empty_like(consumption_arr)
    out_meters = []
    for k, (source, inlet, demand, junctions) in enumerate(zones):
        true = consumption_arr[k] + leak_arr[k]
        measured = true * (1.0 + rng.normal(0.0, METER_NOISE, n))
        flow[k] = np.round(np.maximum(measured, 0.0) / FLOW_RESOLUTION) * FLOW_RESOLUTION
        p = head(inlet, m_all) / M_HEAD_PER_KGF_CM2 + rng.normal(0.0, PRESSURE_NOISE, n)
        pressure[k] = np.round(p / PRESSURE_RESOLUTION) * PRESSURE_RESOLUTION
        gap = _gaps(rng, n)
        flow[k, gap] = np.nan
        pressure[k, gap] = np.nan
        out_meters.append(Meter(sensor_id(k + 1), source, inlet, round(demand, 3),
                                len(junctions)))
    return Scenario(seed, network, kind, timezone, start, history_days, eval_days,
                    tuple(out_meters), tuple(leaks), tuple(d.isoformat() for d in holidays),
                    flow, pressure, leak_arr, consumption_arr)


def _save(sc: Scenario, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, labels=np.array(json.dumps(sc.labels())),
                        flow=sc.flow.astype(np.float32), pressure=sc.pressure.astype(np.float32),
                        leak_flow=sc.leak_flow.astype(np.float32),
                        consumption=sc.consumption.astype(np.float32))
    tmp.replace(path)


def _load(path: Path) -> Scenario:
    with np.load(path) as data:
        labels = json.loads(str(data["labels"]))
        arrays = {name: data[name].astype(np.float64)
                  for name in ("flow", "pressure", "leak_flow", "consumption")}
    # float32 storage: round back to the meters' resolution so a cached scenario equals
    # a fresh one reading for reading.
    arrays["flow"] = np.round(arrays["flow"] / FLOW_RESOLUTION) * FLOW_RESOLUTION
    arrays["pressure"] = np.round(arrays["pressure"] / PRESSURE_RESOLUTION) * PRESSURE_RESOLUTION
    return Scenario(
        labels["seed"], labels["network"], labels["kind"], labels["timezone"], labels["start"],
        labels["history_days"], labels["eval_days"],
        tuple(Meter(**m) for m in labels["meters"]), tuple(Leak(**k) for k in labels["leaks"]),
        tuple(labels["holidays"]), **arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--network", choices=NETWORKS, default=None)
    parser.add_argument("--kind", choices=KINDS, default="leaks")
    parser.add_argument("--meters", type=int, default=2)
    parser.add_argument("--history-days", type=int, default=91)
    parser.add_argument("--eval-days", type=int, default=182)
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    sc = scenario(args.seed, network=args.network, kind=args.kind, meters=args.meters,
                  history_days=args.history_days, eval_days=args.eval_days,
                  cache_dir=None if args.no_cache else CACHE_DIR)
    tz = sc.tz
    print(f"{sc.network} seed {sc.seed} ({sc.kind}): {sc.minutes} minutes from "
          f"{dt.datetime.fromtimestamp(sc.start, tz):%Y-%m-%d}, evaluated from "
          f"{dt.datetime.fromtimestamp(sc.eval_start, tz):%Y-%m-%d}")
    for m in sc.meters:
        k = int(m.sensor) - 1
        f = sc.flow[k]
        print(f"  meter {m.sensor}: zone of {m.source} ({m.junctions} junctions), mean "
              f"{np.nanmean(f):.1f} m3/h, pressure {np.nanmean(sc.pressure[k]):.2f} kgf/cm2, "
              f"gaps {np.isnan(f).mean():.1%}")
    for leak in sc.leaks:
        print(f"  leak {leak.sensor} {leak.kind:<7} "
              f"{dt.datetime.fromtimestamp(leak.start, tz):%Y-%m-%d %a %H:%M} .. "
              f"{dt.datetime.fromtimestamp(leak.end, tz):%Y-%m-%d}: size {leak.size:.0%}"
              f" (+{leak.growth_per_day:.1%}/day up to {leak.max_size:.0%}) of MNF "
              f"{leak.mnf:.1f} m3/h")
    print(json.dumps({"bench": "leak_scenarios", "seed": sc.seed, "network": sc.network,
                      "kind": sc.kind, "leaks": len(sc.leaks), "meters": len(sc.meters),
                      "seconds": round(time.perf_counter() - began, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
