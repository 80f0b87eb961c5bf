"""Fuzz targets: one per parser that takes bytes from outside the gateway.

Each :class:`Target` pairs a hypothesis strategy of hostile input (random bytes
and, to get past the first checks, near-valid structured input) with a check
that runs the parser and asserts its contract: a value or its own refusal,
never another exception. ``tests/test_fuzz.py`` runs each briefly in
``make test``; ``bench/fuzz.py`` runs each for a time budget.

* ``inbound_frames``  the serial port's bytes -> lines -> reading or reject; a
  reading's ``$ALR`` fits the line limit and decodes.
* ``upstream_lines``  the upstream port's lines (``$ACK`` and anything else).
* ``toml_config``     a configuration file's bytes -> Config or ConfigError,
  and the on-disk check of the ``storage.path`` it names.
* ``cli_times``       ``--since/--until`` text -> a time or one clear line.
* ``cli_sensors``     ``--sensor`` text -> a protocol sensor id or one clear line.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.arguments import epoch_seconds, parse_sensor, parse_time
from core import frames
from core.config import SCHEMA, Config, ConfigError, config_from_bytes
from core.types import FLAG_SYSTEM, Reading
from storage.location import store_path_problem

ZONES = [ZoneInfo("Asia/Seoul"), ZoneInfo("Europe/Berlin"), ZoneInfo("Australia/Lord_Howe")]
SEQ_MAX = 2**63 - 1  # the largest outbox sequence number


@dataclass(frozen=True)
class Target:
    """A parser under fuzzing: its input strategy and the check of one input."""

    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], None]


def run_target(target: Target, max_examples: int, *, database: bool = True) -> int:
    """Check ``max_examples`` generated inputs of ``target``; return how many ran.

    A failing input raises (after hypothesis shrank it) whatever the check raised.
    """
    count = 0

    def once(data: Any) -> None:
        nonlocal count
        count += 1
        target.check(data)

    fuzz = settings(
        max_examples=max_examples, deadline=None,
        suppress_health_check=list(HealthCheck),
        **({} if database else {"database": None}),
    )(given(target.inputs)(once))
    fuzz()
    return count


def _one_line(message: str) -> None:
    assert message and "\n" not in message and len(message) < 400, message


# -- inbound frames ------------------------------------------------------------------------------

_WIRE = list(b"$*,.-0123456789ABCDEFabcdefWDNACKLRSVHT \r\n\xff\x00")
_noise = st.one_of(st.just(b""), st.binary(max_size=12))


def _framed(body: bytes, how: str) -> bytes:
    cs = frames.checksum(body)
    tail = {"ok": b"*%02X" % cs, "lower": b"*%02x" % cs, "wrong": b"*%02X" % (cs ^ 0x5A),
            "none": b"", "short": b"*%X" % (cs & 0xF)}[how]
    return b"$" + body + tail


# A valid line with at most one field made hostile, so that most lines get past the
# checks before it to the one that differs; valid decimals include ones too long for
# any outbound field.
_valid_decimals = st.one_of(
    st.from_regex(r"-?[0-9]{1,9}(\.[0-9]{1,4})?", fullmatch=True),
    st.integers(1, 240).map(lambda n: "9" * n),
    st.integers(40, 120).map(lambda n: "-" + "1" * n + ".25"),
    st.just(""),
)
_valid_times = st.datetimes(datetime(1969, 12, 31), datetime(9999, 12, 31)).map(
    lambda t: t.strftime("%Y%m%d%H%M%S"))
_valid_sids = st.integers(1, 999).map(lambda n: f"{n:03d}")
_valid_hex2 = st.integers(0, 255).map(lambda n: f"{n:02X}")
_hostile_fields = st.one_of(
    st.text(max_size=16), st.text(string.digits, min_size=1, max_size=16),
    st.integers(0, 1200).map(lambda n: f"{n:03d}"),
    st.sampled_from(["-", ".", "1.", ".5", "+1", "1e5", "nan", "inf", " 1", "\u0661", "0x1",
                     "000", "20261345000000", "20260229120000", "19691231235959", "ff", "G0"]),
)
_decimals = _valid_decimals  # other types' fields (upstream lines)
_times = _valid_times
_hex2 = st.one_of(_valid_hex2, _hostile_fields)


def _one_made_hostile(fields: tuple[str, ...], which: int | None, hostile: str) -> tuple[str, ...]:
    return fields if which is None else (*fields[:which], hostile, *fields[which + 1:])


_wdn_bodies = st.builds(
    _one_made_hostile,
    st.tuples(_valid_sids, _valid_times, _valid_decimals, _valid_decimals, _valid_hex2),
    st.sampled_from([None, None, None, None, None, 0, 1, 2, 3, 4]), _hostile_fields,
).map(lambda f: ("WDN," + ",".join(f)).encode("utf-8", "surrogatepass"))
_structured_lines = st.tuples(
    _noise, _wdn_bodies,
    st.sampled_from(["ok", "ok", "ok", "ok", "lower", "wrong", "none", "short"]),
).map(lambda t: t[0] + _framed(t[1], t[2]))
_inbound_lines = st.one_of(
    _structured_lines, _structured_lines, _structured_lines,
    st.binary(max_size=300),
    st.lists(st.sampled_from(_WIRE), max_size=120).map(bytes),
)
_terminators = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b""])
inbound_streams = st.tuples(
    st.lists(st.tuples(_inbound_lines, _terminators), min_size=1, max_size=6).map(
        lambda lines: b"".join(line + end for line, end in lines)),
    st.lists(st.integers(1, 400), max_size=8),  # where the port's reads cut the stream
    st.sampled_from(ZONES),
)


def check_inbound(case: tuple[bytes, list[int], ZoneInfo]) -> None:
    data, cuts, tz = case
    splitter, lines, at = frames.LineSplitter(), [], 0
    for size in [*cuts, len(data)]:
        lines += splitter.feed(data[at:at + size])
        at += size
    lines += splitter.flush()
    for line in lines:
        assert len(line) <= frames.MAX_LINE + 1
        result = frames.decode_reading(line, tz)
        if isinstance(result, frames.Reject):
            assert result.reason in frames.RejectReason
            _one_line(result.detail)
        elif result is not None:
            assert isinstance(result, Reading), result
            _check_alert_of(result, tz)


def _check_alert_of(reading: Reading, tz: ZoneInfo) -> None:
    """Every reading the reader accepts has an ``$ALR`` within the line limit."""
    alert = frames.AlertFrame(reading.sensor, reading.time, reading.flow,
                              reading.pressure, 0, 0, seq=SEQ_MAX)
    line = frames.encode(alert, tz)
    assert len(line) <= frames.MAX_LINE, line
    back = frames.decode(line, tz)
    assert isinstance(back, frames.AlertFrame), back
    for sent, got, flags in ((reading.flow, back.flow, back.flow_flags),
                             (reading.pressure, back.pressure, back.pressure_flags)):
        if got is None and sent is not None:
            assert flags & FLAG_SYSTEM  # too long for the field: empty, flagged
        else:
            assert got == (None if sent is None else float(frames.format_value(sent)))


# -- upstream lines ------------------------------------------------------------------------------

_seqs = st.one_of(
    st.integers(0, 2**70).map(str), st.integers(1, 300).map(lambda n: "9" * n),
    st.sampled_from(["", "-1", "+1", "1.0", "0x10", " 1", "\u0661"]), st.text(max_size=8),
)
_other_bodies = st.tuples(
    st.sampled_from(["ALR", "SRV", "FCD", "HLT", "WDN", "ACK", "XYZ", ""]),
    st.lists(st.one_of(_decimals, _seqs, _hex2, _times), max_size=11),
).map(lambda t: ",".join([t[0], *t[1]]).encode("utf-8", "surrogatepass"))
upstream_lines = st.tuples(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(_noise, _seqs.map(lambda seq: f"ACK,{seq}".encode("utf-8", "surrogatepass")),
                  st.sampled_from(["ok", "ok", "lower", "wrong", "none"])).map(
            lambda t: t[0] + _framed(t[1], t[2])),
        _other_bodies.map(lambda body: _framed(body, "ok")),
    ),
    _terminators, st.sampled_from(ZONES),
)


def check_upstream(case: tuple[bytes, bytes, ZoneInfo]) -> None:
    line, end, tz = case
    ack = frames.decode_ack(line + end, tz)
    if isinstance(ack, frames.Reject):
        _one_line(ack.detail)
    elif ack is not None:
        assert isinstance(ack, frames.Ack) and isinstance(ack.seq, int) and 0 <= ack.seq <= SEQ_MAX
    any_frame = frames.decode(line + end, tz)
    assert isinstance(any_frame, frames.Reject | frames.Ack | Reading | frames.AlertFrame
                      | frames.ServerReportLine | frames.DailyForecastLine | frames.HealthFrame)


# -- TOML configuration --------------------------------------------------------------------------

_SECTIONS = [section.name for section in SCHEMA]
_KEYS = sorted({setting.key for section in SCHEMA for setting in section.settings})
# Sizes of long numbers and of nesting: around the limits that matter (CPython's
# 4,300 digits, its recursion limit of 1,000) and between.
_SIZES = st.one_of(st.sampled_from([1, 20, 300, 999, 1000, 1200, 3600, 4300, 4301, 5000]),
                   st.integers(1, 6000))
_SETTINGS = [(section.name, setting.key) for section in SCHEMA for setting in section.settings]
_toml_keys = st.one_of(
    st.sampled_from(_KEYS), st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
    st.text(max_size=8).map(json.dumps),
)
_toml_values = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    _SIZES.map(lambda n: "7" * n),  # past str->int's 4,300-digit limit
    _SIZES.map(lambda n: "0x" + "f" * n),  # hexadecimal has no such limit
    st.floats().map(repr),  # TOML writes nan, inf and 1e+300 as Python does
    st.sampled_from(["inf", "-inf", "nan", "true", "false", "1979-05-27T07:32:00Z", "07:32:00",
                     "22:00:00.5", "1979-05-27", '""', '"\\u0000"', '"22:00"', '"Asia/Seoul"',
                     '"Asia"', '"-"', '"sim://"', '"x://y"', '"/proc"', '"/dev/null"',
                     '"/etc/passwd/store"', '"/sys/x"', '"data/x.lmdb"', '"\\ud800"',
                     "'literal'", '"""multi\nline"""', "[]", "{}", "[1, 'a']"]),
    st.text(max_size=20).map(json.dumps),
    _SIZES.flatmap(lambda n: st.sampled_from(
        ["[" * n, "{a = " * n, "[" * n + "]" * n, "[1, " * n + "1" + "]" * n])),
)
_toml_lines = st.one_of(
    st.sampled_from(_SECTIONS + ["colour", ""]).map(lambda name: f"[{name}]"),
    st.sampled_from(_SECTIONS).map(lambda name: f"[[{name}]]"),
    st.tuples(_toml_keys, _toml_values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.tuples(st.sampled_from(_SECTIONS), _toml_keys, _toml_values).map(
        lambda t: f"{t[0]}.{t[1]} = {t[2]}"),
    st.text(max_size=30),
)
toml_files = st.one_of(
    st.tuples(st.sampled_from(_SETTINGS), _toml_values).map(  # a known key, a hostile value
        lambda t: f"[{t[0][0]}]\n{t[0][1]} = {t[1]}\n".encode("utf-8", "surrogatepass")),
    st.binary(max_size=400),
    st.lists(_toml_lines, max_size=12).map(lambda lines: "\n".join(lines).encode(
        "utf-8", "surrogatepass")),
)


def check_toml(data: bytes) -> None:
    try:
        config = config_from_bytes(data, source="fuzz.toml")
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            assert isinstance(line, str) and line and "\n" not in line, exc.errors
        return
    assert isinstance(config, Config)
    problem = store_path_problem(config.storage.path)
    assert problem is None or (isinstance(problem, str) and "\n" not in problem)


# -- command-line arguments ----------------------------------------------------------------------

_offsets = st.one_of(st.none(), st.integers(-1439, 1439).map(
    lambda m: timezone(timedelta(minutes=m))))
cli_time_texts = st.tuples(
    st.one_of(
        st.text(max_size=40),
        st.text("0123456789-:T+Z.W ", max_size=32),
        st.builds(lambda t, sep: t.isoformat(sep=sep),
                  st.datetimes(timezones=_offsets), st.sampled_from(["T", " "])),
        st.tuples(st.datetimes(timezones=_offsets), st.integers(0, 31), st.characters()).map(
            lambda t: _mutated(t[0].isoformat(), t[1], t[2])),
    ),
    st.sampled_from(ZONES),
)


def _mutated(text: str, at: int, char: str) -> str:
    at %= len(text) + 1
    return text[:at] + char + text[at + 1:]


def _argument(parse: Callable[[str], Any], text: str, refusal: str) -> Any:
    """``parse(text)``, or None when it refused with one line starting ``refusal``."""
    try:
        return parse(text)
    except ValueError as exc:
        assert str(exc).startswith(refusal), exc
        _one_line(str(exc))
        return None


def check_cli_time(case: tuple[str, ZoneInfo]) -> None:
    text, tz = case
    moment = _argument(parse_time, text, "not a time: ")
    if moment is not None:
        assert isinstance(epoch_seconds(moment, tz), int)


cli_sensor_texts = st.one_of(
    st.text(max_size=8), st.integers(-5, 100_000).map(str),
    st.integers(0, 1000).map(lambda n: f"{n:03d}"), st.text(string.digits, max_size=6),
)


def check_cli_sensor(text: str) -> None:
    sensor = _argument(parse_sensor, text, "not a sensor id: ")
    if sensor is not None:
        assert sensor == text and len(text) == 3 and 1 <= int(text) <= 999


TARGETS: tuple[Target, ...] = (
    Target("inbound_frames", inbound_streams, check_inbound),
    Target("upstream_lines", upstream_lines, check_upstream),
    Target("toml_config", toml_files, check_toml),
    Target("cli_times", cli_time_texts, check_cli_time),
    Target("cli_sensors", cli_sensor_texts, check_cli_sensor),
)
