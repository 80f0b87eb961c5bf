"""Operator command arguments: one clear line and exit 2 for a bad one (cli/arguments.py).

The commands run as real subprocesses of supervisor.py on a real store.
"""

from __future__ import annotations

import calendar
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.arguments import (
    UsageError,
    check_sensor,
    epoch_seconds,
    parse_sensor,
    parse_time,
)
from core.types import EpochSeconds, Reading, SensorId
from storage.store import Store
from tests.harness import TZ, run_cli, write_config

BASE = int(dt.datetime(2026, 1, 5, 10, 0, tzinfo=TZ).timestamp())
STORED = ("001", "002", "003")
TIME_FORMS = "(expected ISO 8601, e.g. 2026-11-01, 2026-11-01T06:30 or 2026-11-01T06:30+09:00)"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose store holds three readings of each of 001-003 (10:00-10:02 local)."""
    root = tmp_path_factory.mktemp("cli")
    with Store(root / "store.lmdb") as store:
        store.ingest([Reading(SensorId(s), EpochSeconds(BASE + 60 * m), 1.0 + m, 2.0, 0)
                      for s in STORED for m in range(3)])
    return write_config(root / "site.toml", serial_port="loop://", upstream_port="-",
                        store=root / "store.lmdb")


def refused(site: Path, *args: str) -> str:
    """The one line a refused command printed (and nothing on standard output)."""
    result = run_cli(site, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


@pytest.mark.parametrize(("args", "line"), [
    (("export", "readings", "--since", "garbage"),
     f"supervisor.py export: argument --since: not a time: 'garbage' {TIME_FORMS}"),
    (("export", "readings", "--since", "2026-13-45"),
     "supervisor.py export: argument --since: not a time: '2026-13-45': month must be in "
     f"1..12 {TIME_FORMS}"),
    (("export", "night", "--until", "2026-01-05T25:00"),
     "supervisor.py export: argument --until: not a time: '2026-01-05T25:00': hour must be in "
     f"0..23 {TIME_FORMS}"),
    (("export", "readings", "--sensor", "../../etc"),
     "supervisor.py export: argument --sensor: not a sensor id: '../../etc' (three digits "
     "001-999)"),
    (("export", "readings", "--sensor", "1"),
     "supervisor.py export: argument --sensor: not a sensor id: '1' (three digits 001-999; "
     "did you mean 001?)"),
    (("forecast", "--sensor", "nonexistent"),
     "supervisor.py forecast: argument --sensor: not a sensor id: 'nonexistent' (three digits "
     "001-999)"),
    (("train", "--sensor", "000"),
     "supervisor.py train: argument --sensor: not a sensor id: '000' (three digits 001-999)"),
    (("export", "bogus"),
     "supervisor.py export: argument what: invalid choice: 'bogus' (choose from 'readings', "
     "'criteria', 'night', 'detections')"),
])
def test_a_bad_argument_is_one_line_and_exit_2(site: Path, args: tuple[str, ...],
                                                line: str) -> None:
    assert refused(site, *args) == line


@pytest.mark.parametrize("args", [
    ("export", "readings"), ("export", "criteria"), ("export", "night"),
    ("export", "detections"), ("forecast",), ("train",),
])
def test_every_command_taking_a_sensor_refuses_one_not_stored(site: Path,
                                                              args: tuple[str, ...]) -> None:
    assert refused(site, *args, "--sensor", "123") == (
        f"supervisor.py {args[0]}: no such sensor: 123 (stored: 001, 002, 003)")


def test_since_after_until_is_refused(site: Path) -> None:
    assert refused(site, "export", "readings", "--since", "2026-01-06", "--until",
                   "2026-01-05") == (
        "supervisor.py export: --since is after --until: nothing lies between them")


@pytest.mark.parametrize(("since", "until"), [
    ("2026-01-05T10:01", "2026-01-05T10:02:30"),  # the site's local time
    ("2026-01-05T01:01:00+00:00", "2026-01-05T10:02:30+09:00"),  # with offsets
    ("2026-01-05T01:01Z", "2026-01-05 10:02:30"),
])
def test_since_and_until_select_local_or_offset_times(site: Path, since: str, until: str) -> None:
    result = run_cli(site, "export", "readings", "--sensor", "002", "--since", since,
                     "--until", until)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sensor,time,flow,pressure,status",
        "002,2026-01-05T10:01:00+09:00,2,2,00",
        "002,2026-01-05T10:02:00+09:00,3,2,00",
    ]


# -- the parsers alone --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "hint"), [("1", "001"), ("01", "001"), ("42", "042"),
                                            ("0999", "999"), ("00007", "007")])
def test_an_id_not_written_as_the_protocol_writes_it_gets_a_hint(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=f"did you mean {hint}\\?"):
        parse_sensor(text)


@pytest.mark.parametrize("text", ["", "000", "1000", "0", "abc", "٠٠١", "+01", " 001", "001 ",
                                  "1e2", "x" * 500])
def test_no_hint_where_no_sensor_is_meant(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_sensor(text)
    message = str(info.value)
    assert "did you mean" not in message and len(message) < 120 and "\n" not in message


@given(st.integers(1, 999))
def test_every_protocol_sensor_id_is_taken_as_written(number: int) -> None:
    assert parse_sensor(f"{number:03d}") == f"{number:03d}"


def test_the_stored_list_is_cut_after_ten() -> None:
    stored = [SensorId(f"{n:03d}") for n in range(1, 31)]
    with pytest.raises(UsageError) as info:
        check_sensor(SensorId("500"), stored)
    assert str(info.value) == ("no such sensor: 500 (stored: 001, 002, 003, 004, 005, 006, 007, "
                               "008, 009, 010, ... (30 in all))")
    with pytest.raises(UsageError, match=r"\(stored: none\)$"):
        check_sensor(SensorId("001"), [])
    check_sensor(SensorId("030"), stored)


@given(st.datetimes(dt.datetime(1971, 1, 1), dt.datetime(9998, 12, 31)),
       st.one_of(st.none(), st.integers(-14 * 60, 14 * 60)))
@settings(max_examples=200, deadline=None)
def test_iso_times_read_back_as_the_moment_written(moment: dt.datetime,
                                                   offset_minutes: int | None) -> None:
    if offset_minutes is not None:
        moment = moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
    parsed = parse_time(moment.isoformat())
    assert parsed == moment and (parsed.tzinfo is None) == (offset_minutes is None)
    expected = moment if moment.tzinfo else moment.replace(tzinfo=TZ)
    assert epoch_seconds(parsed, TZ) == calendar.timegm(expected.utctimetuple())
