"""Tests of core.config: the shipped files, defaults, every error shape, fuzzing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import reprlib
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import (
    RULES,
    SCHEMA,
    Boolean,
    Config,
    ConfigError,
    FilePath,
    Float,
    CHECKED_KEYS,
    Holidays,
    Integer,
    ListenAddress,
    MqttUrl,
    PortSpec,
    Setting,
    String,
    TimeOfDay,
    TimeZone,
    default_config,
    describe_schema,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "conf" / "site.toml"
RS485 = ROOT / "conf" / "examples" / "rs485-site.toml"
PI = ROOT / "conf" / "pi.toml"

ALL_SETTINGS = [(section.name, s) for section in SCHEMA for s in section.settings]
STABLE_KEYS = [
    "site.name", "site.timezone", "serial.port", "serial.baudrate", "upstream.port",
    "upstream.baudrate", "upstream.ack", "storage.path", "storage.retention_days",
]


def errors_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    return info.value.errors


def value(config: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


# -- shipped files ------------------------------------------------------------


def test_shipped_site_toml_runs_on_the_simulator() -> None:
    config = load_config(SITE)
    assert config.source == str(SITE)
    assert config.serial.port == "sim://?sensors=3&speed=600&seed=1"
    assert config.upstream.port == "-"
    assert config.storage.path == "data/demo.lmdb"


def test_shipped_site_toml_lists_every_key_at_its_default() -> None:
    document = tomllib.loads(SITE.read_text())
    assert list(document) == [section.name for section in SCHEMA]
    for section in SCHEMA:
        assert list(document[section.name]) == [s.key for s in section.settings]
    shipped = load_config(SITE)
    defaults = default_config()
    for name, setting in ALL_SETTINGS:
        dotted = f"{name}.{setting.key}"
        if dotted not in ("site.name", "web.listen", "criteria.initial_data"):
            assert value(shipped, dotted) == value(defaults, dotted), dotted
    assert shipped.site.name == "demo"
    # The demo shows its page (off by default: a site opts in).
    assert shipped.web.listen == "127.0.0.1:8080" and defaults.web.listen == ""
    # The demo names its own history; a new site has none unless it names one.
    assert shipped.criteria.initial_data == "conf/initial_data.csv"


@pytest.mark.parametrize("path", sorted((ROOT / "conf").rglob("*.toml")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_is_valid(path: Path) -> None:
    load_config(path)


def test_pi_example_uses_the_pis_devices_and_the_installed_paths() -> None:
    config = load_config(PI)
    assert config.serial.port == "/dev/ttyUSB0"
    assert config.upstream.port == "/dev/serial0"
    assert config.storage.path == "/var/lib/wdn-gateway/site.lmdb"
    assert config.storage.map_max_mb <= 1024  # what a 32-bit Pi can map
    assert config.criteria.initial_data == ""  # the site's own history, if any, is added
    assert config.train.nice > default_config().train.nice
    text = PI.read_text()
    # The 1 GB Pi's and the no-training settings are commented alternatives: each
    # one, uncommented, must be valid too.
    alternatives = [line.strip()[1:].strip() for line in text.splitlines()
                    if line.strip().startswith("#   ") and " = " in line]
    assert len(alternatives) == 5
    document = tomllib.loads(text)
    for line in alternatives:
        document["train"].update(tomllib.loads(line))
    assert parse_config(document).train.min_days == 3650


def test_rs485_example_parses_with_real_devices() -> None:
    config = load_config(RS485)
    assert config.serial.port.startswith("/dev/")
    assert config.upstream.port == "/dev/serial0"
    assert config.upstream.ack is True
    assert Path(config.storage.path).is_absolute()
    assert config.storage.map_max_mb <= 1024
    assert config.night.start == dt.time(2, 0) and config.night.end == dt.time(4, 0)


# -- defaults and typed values ------------------------------------------------


def test_defaults_fill_every_absent_key() -> None:
    config = parse_config({})
    assert config.site == type(config.site)(name="site", timezone="Asia/Seoul", holidays=())
    assert config.serial.baudrate == 9600
    assert config.upstream.ack is False
    assert config.storage.retention_days == 365
    assert config.storage.map_max_mb == 1024
    assert config.system.flow_max == 10000.0 and isinstance(config.system.flow_max, float)
    assert config.detection.clear_minutes == 5
    assert config.criteria.initial_data == ""  # no demo history on a new site
    assert (config.night.start, config.night.end) == (dt.time(22, 0), dt.time(5, 0))
    assert config.night.block_minutes == 10
    assert config.train.lookback_hours == 336
    assert config.supervisor.watchdog is True and config.supervisor.test_hooks is False
    assert config.source == "<config>"


def test_stable_keys_exist() -> None:
    names = {f"{section}.{s.key}" for section, s in ALL_SETTINGS}
    assert set(STABLE_KEYS) <= names


def test_every_setting_has_a_meaning_and_a_valid_default() -> None:
    for section, setting in ALL_SETTINGS:
        assert setting.meaning.strip(), f"{section}.{setting.key}"
        assert setting.type.validate(setting.default) == setting.default


def test_dataclasses_match_schema() -> None:
    for section in SCHEMA:
        assert [f.name for f in dataclasses.fields(section.target)] == [
            s.key for s in section.settings
        ]


def test_config_is_frozen_and_has_tz() -> None:
    config = default_config()
    assert config.tz == ZoneInfo("Asia/Seoul")
    assert config.site.tz is config.tz  # ZoneInfo caches: one instance per zone
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.site.name = "x"  # type: ignore[misc]


def test_numbers_take_toml_integers_for_floats() -> None:
    config = parse_config({"system": {"flow_max": 50}, "serial": {"reconnect_max_s": 2}})
    assert config.system.flow_max == 50.0 and type(config.system.flow_max) is float
    assert type(config.serial.reconnect_max_s) is float


def test_relative_paths_are_kept_as_written() -> None:
    config = parse_config({"storage": {"path": "../x/./y.lmdb"}, "criteria": {"initial_data": ""}})
    assert config.storage.path == "../x/./y.lmdb"
    assert config.criteria.initial_data == ""


def test_night_times_from_strings_and_toml_local_times(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[night]\nstart = 23:30:00\nend = "04:15"\n')
    config = load_config(path)
    assert (config.night.start, config.night.end) == (dt.time(23, 30), dt.time(4, 15))


@pytest.mark.parametrize("port", [
    "/dev/ttyUSB0", "COM3", "socket://10.0.0.2:4001", "loop://", "rfc2217://h:1",
    "SIM://?sensors=1", "spy://loop://",
])
def test_port_strings_accepted(port: str) -> None:
    assert parse_config({"serial": {"port": port}}).serial.port == port


# -- every error class, exact shape ---------------------------------------------


@pytest.mark.parametrize(("document", "expected"), [
    ({"storage": {"retention_days": "abc"}},
     "storage.retention_days: expected an integer, got string 'abc'"),
    ({"storage": {"retention_days": True}},
     "storage.retention_days: expected an integer, got boolean True"),
    ({"storage": {"retention_days": 5.0}},
     "storage.retention_days: expected an integer, got float 5.0"),
    ({"storage": {"retention_days": 0}}, "storage.retention_days: must be >= 1, got 0"),
    ({"storage": {"retention_days": 3651}},
     "storage.retention_days: must be <= 3650, got 3651"),
    ({"serial": {"reconnect_initial_s": 0.05}},
     "serial.reconnect_initial_s: must be >= 0.1, got 0.05"),
    ({"serial": {"reconnect_max_s": "30"}},
     "serial.reconnect_max_s: expected a number, got string '30'"),
    ({"serial": {"reconnect_max_s": False}},
     "serial.reconnect_max_s: expected a number, got boolean False"),
    ({"system": {"flow_max": math.inf}}, "system.flow_max: must be a finite number, got inf"),
    ({"system": {"flow_max": math.nan}}, "system.flow_max: must be a finite number, got nan"),
    ({"system": {"flow_max": 10**400}},
     "system.flow_max: is too large, got " + reprlib.repr(10**400)),
    ({"upstream": {"ack": 1}}, "upstream.ack: expected a boolean (true or false), got integer 1"),
    ({"upstream": {"ack": "false"}},
     "upstream.ack: expected a boolean (true or false), got string 'false'"),
    ({"serial": {"baudrate": 9601}},
     "serial.baudrate: must be one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, "
     "got 9601"),
    ({"night": {"block_minutes": 7}},
     "night.block_minutes: must be one of 5, 10, 15, 20, 30, 60, got 7"),
    ({"serial": {"baud": 9600}}, "serial.baud: unknown key (did you mean 'baudrate'?)"),
    ({"serial": {"BaudRate": 9600}}, "serial.BaudRate: unknown key (did you mean 'baudrate'?)"),
    ({"serial": {"ack": True}}, "serial.ack: unknown key (did you mean 'upstream.ack'?)"),
    ({"serial": {"colour": 1}}, "serial.colour: unknown key"),
    ({"serail": {"port": "x"}}, "serail: unknown section (did you mean 'serial'?)"),
    ({"timezone": "Asia/Seoul"}, "timezone: unknown section (did you mean 'site.timezone'?)"),
    ({"zzz": {}}, "zzz: unknown section"),
    ({"serial": "loop://"}, "serial: expected a table [serial], got string 'loop://'"),
    ({"site": {"name": "  "}}, "site.name: must not be empty"),
    ({"site": {"name": 7}}, "site.name: expected a string, got integer 7"),
    ({"site": {"timezone": "Asia/Seol"}},
     "site.timezone: unknown time zone 'Asia/Seol' (did you mean 'Asia/Seoul'?)"),
    ({"site": {"timezone": "Mars/Olympus"}}, "site.timezone: unknown time zone 'Mars/Olympus'"),
    ({"site": {"timezone": "../../etc/passwd"}},
     "site.timezone: unknown time zone '../../etc/passwd'"),
    ({"night": {"start": "25:00"}},
     'night.start: expected a time of day "HH:MM" (00:00..23:59), got string \'25:00\''),
    ({"night": {"end": "5:00"}},
     'night.end: expected a time of day "HH:MM" (00:00..23:59), got string \'5:00\''),
    ({"night": {"end": 500}},
     'night.end: expected a time of day "HH:MM" (00:00..23:59), got integer 500'),
    ({"night": {"start": dt.time(22, 0, 30)}},
     "night.start: must be whole minutes of local time, got time 22:00:30"),
    ({"storage": {"path": ""}}, "storage.path: must not be empty"),
    ({"storage": {"path": "a\0b"}},
     "storage.path: must not contain a NUL character, got 'a\\x00b'"),
    ({"criteria": {"initial_data": 3}},
     "criteria.initial_data: expected a path string, got integer 3"),
    ({"serial": {"port": "-"}},
     'serial.port: "-" (standard output) is only valid for an outbound port'),
    ({"serial": {"port": ""}}, "serial.port: must not be empty"),
    ({"serial": {"port": "/dev/tty USB0\n"}},
     "serial.port: has blanks or control characters, got '/dev/tty USB0\\n'"),
    ({"upstream": {"port": "sokcet://h:1"}},
     "upstream.port: unknown port URL scheme 'sokcet' (did you mean 'socket'?); "
     "known: sim, socket, rfc2217, loop, spy, alt, hwgrep, cp2110"),
    ({"system": {"flow_min": 10, "flow_max": 10}},
     "system.flow_min: must be < system.flow_max (10), got 10"),
    ({"system": {"pressure_min": 5.5, "pressure_max": 2.25}},
     "system.pressure_min: must be < system.pressure_max (2.25), got 5.5"),
    ({"night": {"min_readings": 6, "block_minutes": 5}},
     "night.min_readings: must be <= night.block_minutes (5), got 6"),
    ({"night": {"start": "03:00", "end": "03:00"}},
     "night.end: must differ from night.start (03:00), got 03:00"),
    ({"serial": {"reconnect_initial_s": 40, "reconnect_max_s": 20}},
     "serial.reconnect_initial_s: must be <= serial.reconnect_max_s (20), got 40"),
    ({"storage": {"map_size_mb": 2048, "map_max_mb": 1024}},
     "storage.map_size_mb: must be <= storage.map_max_mb (1024), got 2048"),
    ({"serial": {"port": "/dev/ttyAMA0"}, "upstream": {"port": "/dev/ttyAMA0"}},
     "upstream.port: must differ from serial.port ('/dev/ttyAMA0'), got '/dev/ttyAMA0'"),
    ({"upstream": {"write_timeout_s": 5}},
     "upstream.write_timeout_s: must be < supervisor.stop_timeout_s (5), got 5"),
])
def test_error_message(document: dict[str, Any], expected: str) -> None:
    assert errors_of(document) == [expected]


def test_time_zone_directory_is_not_a_zone() -> None:
    # "Asia" is a directory of the zone database; ZoneInfo raises an OSError for it.
    [line] = errors_of({"site": {"timezone": "Asia"}})
    assert line.startswith("site.timezone: unknown time zone 'Asia'")


def test_same_url_on_both_sides_is_allowed() -> None:
    # loop:// and socket:// endpoints open independently; only devices clash.
    config = parse_config({"serial": {"port": "loop://"}, "upstream": {"port": "loop://"}})
    assert config.upstream.port == "loop://"


def test_cross_field_rule_is_skipped_when_a_side_is_invalid() -> None:
    # flow_max is wrong; comparing flow_min with the default would only add noise.
    assert errors_of({"system": {"flow_min": 20000, "flow_max": "big"}}) == [
        "system.flow_max: expected a number, got string 'big'"
    ]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
[site]
timezone = "Nowhere/City"

[serial]
baud = 9600
port = 5

[storage]
retention_days = "abc"
map_size_mb = 0

[night]
start = "22:60"
min_readings = 30

[colour]
red = 1
"""
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = [
        "site.timezone: unknown time zone 'Nowhere/City'",
        "serial.baud: unknown key (did you mean 'baudrate'?)",
        "serial.port: expected a port string, got integer 5",
        "storage.retention_days: expected an integer, got string 'abc'",
        "storage.map_size_mb: must be >= 1, got 0",
        'night.start: expected a time of day "HH:MM" (00:00..23:59), got string \'22:60\'',
        "colour: unknown section",
        "night.min_readings: must be <= night.block_minutes (10), got 30",
    ]
    assert info.value.errors == expected
    assert str(info.value) == "\n".join(expected)
    assert info.value.source == str(path)


# -- the file itself ----------------------------------------------------------


@pytest.mark.parametrize(("text", "line"), [
    ('[site]\nname = "a"\n[serial\nport = "x"\n', 3),
    ('[site]\nname = "a"\nname = "b"\n', 3),
    ("[site]\nname = \n", 2),
    ('[site]\nname = "a"\n\n[storage]\npath = [1,', 5),  # "at end of document": last line
])
def test_toml_syntax_error_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f"{path}:{line}: TOML syntax error: ")


@pytest.mark.parametrize("text", [
    "x = " + "[" * 5000,  # arrays: tomllib recurses once per level
    "x = " + "{a = " * 5000,  # inline tables
    "[site]\nname = " + "[" * 5000 + "]" * 5000,
])
def test_nesting_too_deep_for_the_parser_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: not valid TOML: nested too deeply"]


def test_what_else_tomllib_cannot_read_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "long.toml"
    path.write_text("[storage]\nretention_days = " + "7" * 5000 + "\n")  # over str->int's limit
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = info.value.errors
    assert line.startswith(f"{path}: not valid TOML: ValueError: Exceeds the limit")
    assert "\n" not in line


def test_integer_too_long_to_print_is_described(tmp_path: Path) -> None:
    # Hexadecimal integers have no length limit in tomllib; str() of one has.
    path = tmp_path / "hex.toml"
    path.write_text("[storage]\nretention_days = 0x" + "f" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == ["storage.retention_days: must be <= 3650, "
                                 "got <integer of 6021 digits>"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: cannot read: No such file or directory"]


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[site]\nname = "Caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}:2: not valid UTF-8"]


def test_non_table_document() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(["site"])  # type: ignore[arg-type]
    assert info.value.errors == ["expected a table of sections, got array ['site']"]


# -- reference table ------------------------------------------------------------


def test_describe_schema_has_one_row_per_key() -> None:
    text = describe_schema()
    lines = text.splitlines()
    assert lines[0] == "| key | type | default | meaning |"
    rows = lines[2:]
    assert len(rows) == len(ALL_SETTINGS)
    for row, (section, setting) in zip(rows, ALL_SETTINGS, strict=True):
        assert row.startswith(f"| `{section}.{setting.key}` | ")
        assert row.count(" | ") == 3  # no stray pipe breaks the columns
        assert setting.meaning in row
    assert '| `night.start` | time of day "HH:MM" | `"22:00"` |' in text
    assert "| `upstream.ack` | boolean | `false` |" in text
    assert "| `storage.retention_days` | integer, 1..3650 | `365` |" in text


def test_readme_table_is_the_schema() -> None:
    # The README's configuration reference is describe_schema()'s output, pasted.
    assert describe_schema() in (ROOT / "README.md").read_text()


# -- properties -----------------------------------------------------------------

SECTION_NAMES = [section.name for section in SCHEMA]
KEY_NAMES = sorted({s.key for _, s in ALL_SETTINGS})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**500), 10**500),
    st.floats(), st.text(max_size=20), st.binary(max_size=8),
    st.sampled_from(["22:00", "24:00", "Asia/Seoul", "Asia", "/etc", "-", "sim://", "x://"]),
    st.times(), st.datetimes(), st.dates(),
)
keys = st.one_of(st.sampled_from(SECTION_NAMES + KEY_NAMES), st.text(max_size=12), st.integers())
documents = st.dictionaries(
    keys,
    st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=12,
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_arbitrary_documents_raise_only_config_error(document: dict[Any, Any]) -> None:
    try:
        config = parse_config(document)
    except ConfigError as exc:
        assert exc.errors
        assert all(isinstance(line, str) and line for line in exc.errors)
    else:
        assert isinstance(config, Config)


def valid_values(setting: Setting) -> st.SearchStrategy[Any]:
    kind = setting.type
    if isinstance(kind, Integer):
        if kind.choices is not None:
            return st.sampled_from(kind.choices)
        return st.integers(kind.minimum, kind.maximum)
    if isinstance(kind, Float):
        bounded = st.floats(kind.minimum, kind.maximum, allow_nan=False, allow_infinity=False)
        lo = math.ceil(kind.minimum) if kind.minimum is not None else -(10**6)
        hi = math.floor(kind.maximum) if kind.maximum is not None else 10**6
        return bounded | st.integers(lo, hi)
    if isinstance(kind, Boolean):
        return st.booleans()
    if isinstance(kind, TimeZone):
        return st.sampled_from(["UTC", "Asia/Seoul", "Europe/Paris", "America/Sao_Paulo"])
    if isinstance(kind, TimeOfDay):
        return st.builds(dt.time, st.integers(0, 23), st.integers(0, 59)).flatmap(
            lambda t: st.sampled_from([t, f"{t:%H:%M}"])
        )
    if isinstance(kind, PortSpec):
        return st.sampled_from(["/dev/ttyUSB1", "loop://", "socket://127.0.0.1:7000", "COM4"])
    if isinstance(kind, MqttUrl):
        return st.sampled_from(["", "mqtt://127.0.0.1:1883", "mqtts://broker.example:8883",
                                "mqtt://[::1]", "mqtts://gw-7.local/"])
    if isinstance(kind, ListenAddress):
        return st.sampled_from(["", "127.0.0.1:8080", "[::1]:1", "localhost:65535", "0.0.0.0:80"])
    if isinstance(kind, FilePath):
        text = st.text(st.characters(blacklist_characters="\0"), min_size=1, max_size=12)
        stripped = text.filter(lambda s: s == s.strip())
        return stripped | st.just("") if kind.optional else stripped
    if isinstance(kind, String):
        return st.text(min_size=1, max_size=12).filter(lambda s: s.strip())
    if isinstance(kind, Holidays):
        days = st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31))
        return (st.sampled_from(["", "KR", "de-by", "US"])
                | st.lists(days | days.map(dt.date.isoformat), max_size=5))
    raise AssertionError(f"no strategy for {kind!r}")


def setting_of(section: str, key: str) -> Setting:
    found = next(sec for sec in SCHEMA if sec.name == section).setting(key)
    assert found is not None
    return found


valid_documents = st.fixed_dictionaries({
    section.name: st.fixed_dictionaries({}, optional={
        s.key: valid_values(s) for s in section.settings
    })
    for section in SCHEMA
})
RULE_SUBJECTS = {rule.subject for rule in RULES} | CHECKED_KEYS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_documents)
def test_valid_values_are_kept(document: dict[str, dict[str, Any]]) -> None:
    try:
        config = parse_config(document)
    except ConfigError as exc:
        # Each value is valid alone; only a cross-key rule may refuse the mix.
        assert {line.split(":")[0] for line in exc.errors} <= RULE_SUBJECTS
        return
    for section, table in document.items():
        for key, raw in table.items():
            got = value(config, f"{section}.{key}")
            if isinstance(raw, str) and isinstance(got, dt.time):
                assert f"{got:%H:%M}" == raw
            elif isinstance(setting_of(section, key).type, Holidays):
                assert got == (raw.upper() if isinstance(raw, str) else tuple(sorted(
                    {d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in raw})))
            else:
                assert got == raw
                assert isinstance(got, bool) == isinstance(raw, bool)


@given(st.integers(-(10**30), 10**30))
def test_integer_range_boundaries(number: int) -> None:
    document = {"storage": {"retention_days": number}}
    if 1 <= number <= 3650:
        assert parse_config(document).storage.retention_days == number
    elif number < 1:
        assert errors_of(document) == [f"storage.retention_days: must be >= 1, got {number}"]
    else:
        shown = reprlib.repr(number)
        assert errors_of(document) == [f"storage.retention_days: must be <= 3650, got {shown}"]


# -- holidays ---------------------------------------------------------------------


def test_holidays_as_dates_or_a_country_code() -> None:
    config = parse_config({"site": {"holidays": ["2026-12-25", dt.date(2026, 1, 1), "2026-12-25"]}})
    assert config.site.holidays == (dt.date(2026, 1, 1), dt.date(2026, 12, 25))
    assert config.site.calendar.is_holiday(dt.date(2026, 12, 25))
    assert not config.site.calendar.is_holiday(dt.date(2026, 12, 24))
    config = parse_config({"site": {"holidays": "kr"}})
    assert config.site.holidays == "KR"
    assert config.site.calendar.is_holiday(dt.date(2027, 1, 1))
    assert parse_config({"site": {"holidays": "DE-BY"}}).site.calendar.is_holiday(
        dt.date(2026, 1, 6))  # Epiphany: Bavaria, not all of Germany
    assert not parse_config({"site": {"holidays": "DE"}}).site.calendar.is_holiday(
        dt.date(2026, 1, 6))
    assert parse_config({"site": {"holidays": ""}}).site.calendar.describe() == "no holidays"


def test_every_bad_holiday_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"site": {"holidays": ["2026-12-25", "2026-13-01", 5, "25.12.2026"]},
                      "night": {"cusum_h": 0}})
    assert info.value.errors == [
        "site.holidays: entry 2: expected an ISO date \"YYYY-MM-DD\", got string '2026-13-01'",
        "site.holidays: entry 3: expected an ISO date \"YYYY-MM-DD\", got integer 5",
        "site.holidays: entry 4: expected an ISO date \"YYYY-MM-DD\", got string '25.12.2026'",
        "night.cusum_h: must be >= 0.5, got 0",
    ]
    with pytest.raises(ConfigError) as info:
        parse_config({"site": {"holidays": "XX"}})
    assert info.value.errors == [
        "site.holidays: unknown country code 'XX' (ISO 3166-1 alpha-2, e.g. 'KR', 'DE-BY')"]
    with pytest.raises(ConfigError) as info:
        parse_config({"site": {"holidays": 2026}})
    assert info.value.errors == [
        'site.holidays: expected a list of ISO dates or a country code such as "KR", '
        "got integer 2026"]


def test_min_baseline_nights_within_the_baseline() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"night": {"min_baseline_nights": 30, "baseline_nights": 20}})
    assert info.value.errors == [
        "night.min_baseline_nights: must be <= night.baseline_nights (20), got 30"]


# -- [mqtt] ----------------------------------------------------------------------


def test_mqtt_is_off_by_default_and_its_url_gives_host_port_and_tls() -> None:
    assert not default_config().mqtt.enabled
    config = parse_config({"site": {"name": "pump-7"}, "mqtt": {"url": "mqtts://broker.lan"}})
    mqtt = config.mqtt
    assert (mqtt.enabled, mqtt.tls, mqtt.host, mqtt.port) == (True, True, "broker.lan", 8883)
    assert mqtt.prefix(config.site.name) == "wdn/pump-7"
    assert mqtt.client(config.site.name) == "wdn-pump-7"
    plain = parse_config({"mqtt": {"url": "mqtt://[::1]:1884", "topic_prefix": "fleet/a"}}).mqtt
    assert (plain.tls, plain.host, plain.port, plain.prefix("x")) == (False, "::1", 1884, "fleet/a")


@pytest.mark.parametrize("mqtt, site, expected", [
    ({"url": "http://broker"}, "demo", "mqtt.url: expected mqtt://host[:port]"),
    ({"url": "mqtt://broker:70000"}, "demo", "mqtt.url: port must be 1..65535"),
    ({"url": "mqtt://broker"}, "pump station 7", "mqtt.topic_prefix: must be set"),
    ({"url": "mqtt://broker", "topic_prefix": "wdn/#"}, "demo", "mqtt.topic_prefix: must be"),
    ({"url": "mqtts://broker", "cert_file": "conf/site.toml"}, "demo",
     "mqtt.key_file: cert_file and key_file go together"),
    ({"url": "mqtt://broker", "ca_file": "conf/site.toml"}, "demo",
     "mqtt.ca_file: needs an mqtts:// url"),
    ({"url": "mqtt://broker", "username": "gw", "password_file": "/no/such/file"}, "demo",
     "mqtt.password_file: no readable file at '/no/such/file'"),
    ({"url": "mqtt://broker", "password_file": "conf/site.toml"}, "demo",
     "mqtt.username: must be set with password_file"),
    ({"url": "mqtt://broker", "reconnect_initial_s": 10, "reconnect_max_s": 5}, "demo",
     "mqtt.reconnect_initial_s: must be <= mqtt.reconnect_max_s"),
])
def test_a_bad_mqtt_value_is_one_line_naming_its_key(mqtt, site, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"site": {"name": site}, "mqtt": mqtt})
    assert len(caught.value.errors) == 1 and caught.value.errors[0].startswith(expected), \
        caught.value.errors
