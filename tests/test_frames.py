"""Frame codec (core/frames.py): known answers, every reject reason, round trips, fuzzing."""

from __future__ import annotations

import functools
import operator
import re
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core import frames, messages
from core.frames import (
    MAX_LINE,
    Ack,
    AlertFrame,
    DailyForecastLine,
    HealthFrame,
    LineSplitter,
    Reject,
    RejectReason,
    ServerReportLine,
    checksum,
    decode,
    decode_ack,
    decode_reading,
    encode,
    format_local_time,
    format_value,
    parse_local_time,
)
from core.localtime import local_datetime
from core.types import FLAG_SYSTEM, EpochSeconds, Reading, SensorId, sensor_id

SEOUL = ZoneInfo("Asia/Seoul")
BERLIN = ZoneInfo("Europe/Berlin")  # DST: ambiguous and missing local hours
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # DST shifts by 30 minutes, inside an hour
ZONES = [SEOUL, BERLIN, LORD_HOWE]

EXAMPLE_BODY = b"WDN,001,20231102140500,8.02,4.11,00"
EXAMPLE_LINE = b"$WDN,001,20231102140500,8.02,4.11,00*4F\r\n"
EXAMPLE_TIME = 1698901500  # 2023-11-02 05:05:00 UTC = 14:05 KST
EXAMPLE_READING = Reading(SensorId("001"), EpochSeconds(EXAMPLE_TIME), 8.02, 4.11, 0)

EPOCH_2000 = int(datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp())
EPOCH_2100 = int(datetime(2100, 1, 1, tzinfo=timezone.utc).timestamp())

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def xor(data: bytes) -> int:
    """Reference checksum, independent of the codec's."""
    return functools.reduce(operator.xor, data, 0)


def framed(body: bytes, terminator: bytes = b"\r\n") -> bytes:
    return b"$" + body + b"*%02X" % xor(body) + terminator


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp())


# --- known answers --------------------------------------------------------------------------


def test_checksum_of_the_protocol_example() -> None:
    assert checksum(EXAMPLE_BODY) == 0x4F
    assert checksum(b"") == 0
    assert checksum(b"A") == 0x41


@given(st.binary(max_size=600))
@FAST
def test_checksum_is_the_xor_of_every_byte(body: bytes) -> None:
    assert checksum(body) == xor(body)


def test_protocol_example_decodes() -> None:
    assert decode(EXAMPLE_LINE, SEOUL) == EXAMPLE_READING
    assert decode_reading(EXAMPLE_LINE, SEOUL) == EXAMPLE_READING


def test_protocol_example_encodes() -> None:
    assert encode(EXAMPLE_READING, SEOUL) == EXAMPLE_LINE


@pytest.mark.parametrize(
    ("frame", "body"),
    [
        (AlertFrame(SensorId("012"), EpochSeconds(EXAMPLE_TIME), 8.02, None, 0x05, 0x00, seq=7),
         b"ALR,7,012,20231102140500,8.02,,05,00"),
        (ServerReportLine(SensorId("999"), EpochSeconds(EXAMPLE_TIME), None, None, 0x01, 0x01,
                          12.5, 4.0, seq=8),
         b"SRV,8,999,20231102140500,,,01,01,12.5,4"),
        (ServerReportLine(SensorId("999"), EpochSeconds(EXAMPLE_TIME), 3.0, 4.0, 0x00, 0x00,
                          None, 4.0, seq=8),
         b"SRV,8,999,20231102140500,3,4,00,00,,4"),
        (DailyForecastLine(SensorId("001"), EpochSeconds(EXAMPLE_TIME), date(2023, 11, 3),
                           10.125, -0.5, seq=9),
         b"FCD,9,001,20231102140500,20231103,10.125,-0.5"),
        (HealthFrame(EpochSeconds(EXAMPLE_TIME), 3600, 2, 15, 1, 4, 12.3, True, seq=10),
         b"HLT,10,20231102140500,3600,2,15,1,4,12.3,1"),
        (HealthFrame(EpochSeconds(EXAMPLE_TIME), 0, 0, 0, 0, 0, 0.0, False, seq=11),
         b"HLT,11,20231102140500,0,0,0,0,0,0,0"),
        (Ack(12345), b"ACK,12345"),
        (Reading(SensorId("042"), EpochSeconds(EXAMPLE_TIME), None, 3.0, 0xA5),
         b"WDN,042,20231102140500,,3,A5"),
    ],
)
def test_known_encodings_and_back(frame: frames.Frame, body: bytes) -> None:
    line = encode(frame, SEOUL)
    assert line == framed(body)
    assert decode(line, SEOUL) == frame


def test_checksum_is_written_in_upper_case() -> None:
    # Find a frame whose checksum has a letter in it and check its case.
    for seq in range(256):
        line = encode(Ack(seq), SEOUL)
        cs = line[-4:-2]
        if any(c in b"abcdefABCDEF" for c in cs):
            assert cs == cs.upper()
            return
    pytest.fail("no checksum with a hex letter found")


# --- accepted variations ----------------------------------------------------------------------


def test_missing_values_are_none_not_rejects() -> None:
    line = framed(b"WDN,001,20231102140500,,,00")
    assert decode_reading(line, SEOUL) == Reading(SensorId("001"), EpochSeconds(EXAMPLE_TIME),
                                                  None, None, 0)


@pytest.mark.parametrize(("text", "bits"), [("FF", 0xFF), ("a5", 0xA5), ("40", 0x40), ("c0", 0xC0)])
def test_status_bits_are_kept_including_unknown_ones(text: str, bits: int) -> None:
    line = framed(f"WDN,001,20231102140500,1,2,{text}".encode())
    reading = decode_reading(line, SEOUL)
    assert isinstance(reading, Reading)
    assert reading.status == bits


@pytest.mark.parametrize("noise", [b"x", b"garbage ", b"\x00\xff\xfe", b"**,,", b"\r"])
def test_noise_before_the_start_is_skipped(noise: bytes) -> None:
    assert decode_reading(noise + EXAMPLE_LINE, SEOUL) == EXAMPLE_READING


def test_lower_case_checksum_is_accepted() -> None:
    body = b"ALR,1,001,20231102140500,1.5,2,00,00"
    line = b"$%s*%02x\r\n" % (body, xor(body))
    assert line.endswith(b"*6a\r\n")  # a checksum with a hex letter, written lower-case
    assert isinstance(decode(line, SEOUL), AlertFrame)


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n", b""])
def test_crlf_lf_or_no_terminator(terminator: bytes) -> None:
    assert decode(framed(EXAMPLE_BODY, terminator), SEOUL) == EXAMPLE_READING


def test_splitter_accepts_crlf_and_lf() -> None:
    data = framed(EXAMPLE_BODY, b"\r\n") + framed(EXAMPLE_BODY, b"\n")
    lines = LineSplitter().feed(data)
    assert lines == [framed(EXAMPLE_BODY, b"")] * 2
    assert [decode_reading(line, SEOUL) for line in lines] == [EXAMPLE_READING] * 2


@pytest.mark.parametrize("line", [b"", b"\r", b"   ", b"\t \r\n", b"\n"])
def test_blank_lines_are_ignored_on_the_ports(line: bytes) -> None:
    assert decode_reading(line, SEOUL) is None
    assert decode_ack(line, SEOUL) is None
    assert isinstance(decode(line, SEOUL), Reject)


def test_line_of_exactly_max_line_bytes_is_accepted() -> None:
    head = b"WDN,001,20231102140500,1."
    tail = b",2,00"
    padding = MAX_LINE - len(b"$*CS") - len(head) - len(tail)
    line = framed(head + b"0" * padding + tail, b"")
    assert len(line) == MAX_LINE
    assert isinstance(decode_reading(line + b"\r\n", SEOUL), Reading)
    too_long = framed(head + b"0" * (padding + 1) + tail, b"")
    assert decode_reading(too_long, SEOUL).reason is RejectReason.TOO_LONG


def test_decoders_take_any_bytes_like() -> None:
    assert decode_reading(bytearray(EXAMPLE_LINE), SEOUL) == EXAMPLE_READING
    assert decode(memoryview(EXAMPLE_LINE), SEOUL) == EXAMPLE_READING
    assert decode_ack(bytearray(framed(b"ACK,5")), SEOUL) == Ack(5)


# --- rejects ----------------------------------------------------------------------------------

VALID_ALR = framed(b"ALR,1,001,20231102140500,1,2,00,00")
REJECTS = [
    # (line, reason, start of the detail)
    (b"$WDN,001," + b"1" * 300 + b"*00\r\n", RejectReason.TOO_LONG, "line:"),
    (b"\xff" * 400, RejectReason.TOO_LONG, "line:"),
    (framed("WDN,001,20231102140500,1.0,2.0,é".encode()), RejectReason.NOT_ASCII, "line:"),
    (b"hello, world\r\n", RejectReason.NO_START, "line:"),
    (b"\xff\xfe\r\n", RejectReason.NO_START, "line:"),
    (b"$WDN,001,20231102140500,1.0,2.0,00\r\n", RejectReason.NO_CHECKSUM, "checksum:"),
    (b"$WDN,001,20231102140500,1.0,2.0,00*\r\n", RejectReason.NO_CHECKSUM, "checksum:"),
    (b"$WDN,001,20231102140500,1.0,2.0,00*4\r\n", RejectReason.NO_CHECKSUM, "checksum:"),
    (b"$WDN,001,20231102140500,1.0,2.0,00*4FF\r\n", RejectReason.NO_CHECKSUM, "checksum:"),
    (b"$WDN,001,20231102140500,1.0,2.0,00*4G\r\n", RejectReason.NO_CHECKSUM, "checksum:"),
    (b"$WDN,001,20231102140500,8.02,4.11,00*4F \r\n", RejectReason.NO_CHECKSUM, "checksum:"),
    (b"$WDN,001,20231102140500,1.0,2.0,00*00\r\n", RejectReason.BAD_CHECKSUM, "checksum:"),
    (b"$WDN,001,20231102140500,8.02,4.11,00*5B\r\n", RejectReason.BAD_CHECKSUM, "checksum:"),
    (framed(b"XYZ,1,2"), RejectReason.UNKNOWN_TYPE, "type:"),
    (framed(b"wdn,001,20231102140500,1,2,00"), RejectReason.UNKNOWN_TYPE, "type:"),
    (framed(b""), RejectReason.UNKNOWN_TYPE, "type:"),
    (framed(b"WDN,001,20231102140500,1.0,00"), RejectReason.FIELD_COUNT, "fields:"),
    (framed(b"WDN,001,20231102140500,1.0,2.0,00,"), RejectReason.FIELD_COUNT, "fields:"),
    (framed(b"WDN"), RejectReason.FIELD_COUNT, "fields:"),
    (framed(b"ACK"), RejectReason.FIELD_COUNT, "fields:"),
    (framed(b"HLT,1,20231102140500,1,2,3,4,5,6"), RejectReason.FIELD_COUNT, "fields:"),
    (framed(b"WDN,0A1,20231102140500,1.0,2.0,00"), RejectReason.BAD_FIELD, "sid:"),
]


@pytest.mark.parametrize(("line", "reason", "detail"), REJECTS)
def test_each_reject_reason(line: bytes, reason: RejectReason, detail: str) -> None:
    result = decode(line, SEOUL)
    assert isinstance(result, Reject), result
    assert result.reason is reason
    assert result.detail.startswith(detail), result.detail
    assert len(result.line) <= MAX_LINE + 1
    if reason is not RejectReason.TOO_LONG:
        assert result.line == line.rstrip(b"\r\n")  # kept whole for inspection


def test_every_reason_is_covered_and_distinct() -> None:
    assert {reason for _, reason, _ in REJECTS} == set(RejectReason)
    assert len({str(reason) for reason in RejectReason}) == len(RejectReason)
    assert str(RejectReason.BAD_FIELD) == "bad_field"


def test_reading_port_refuses_other_valid_types() -> None:
    assert isinstance(decode(VALID_ALR, SEOUL), AlertFrame)
    result = decode_reading(VALID_ALR, SEOUL)
    assert isinstance(result, Reject) and result.reason is RejectReason.UNKNOWN_TYPE
    assert decode_reading(framed(b"ACK,1"), SEOUL).reason is RejectReason.UNKNOWN_TYPE


def test_ack_port_reads_acks_only() -> None:
    assert decode_ack(framed(b"ACK,42"), SEOUL) == Ack(42)
    assert decode_ack(framed(b"ACK,42", b"\n"), SEOUL) == Ack(42)
    assert decode_ack(EXAMPLE_LINE, SEOUL).reason is RejectReason.UNKNOWN_TYPE
    assert decode_ack(framed(b"ACK,-1"), SEOUL).reason is RejectReason.BAD_FIELD
    assert decode_ack(b"ACK,42", SEOUL).reason is RejectReason.NO_START


def test_ack_seq_is_bounded_to_what_an_outbox_gives() -> None:
    assert decode_ack(framed(b"ACK,%d" % frames.MAX_SEQ), SEOUL) == Ack(frames.MAX_SEQ)
    for seq in (frames.MAX_SEQ + 1, 2**64, 10**200):
        reject = decode_ack(framed(b"ACK,%d" % seq), SEOUL)
        assert reject.reason is RejectReason.BAD_FIELD and reject.detail.startswith("seq:")


@given(st.one_of(st.integers(0, 10**80), st.text("0123456789", min_size=1, max_size=250)))
@settings(max_examples=300)
def test_every_ack_the_port_takes_fits_a_message(seq: int | str) -> None:
    """Whatever number an upstream sends, an accepted ACK crosses to the actor."""
    decoded = decode_ack(framed(b"ACK," + str(seq).encode()), SEOUL)
    if isinstance(decoded, Ack):
        assert messages.decode(messages.encode(messages.AckReceived(decoded.seq))) \
            == messages.AckReceived(decoded.seq)
    else:
        assert decoded.reason in (RejectReason.BAD_FIELD, RejectReason.TOO_LONG)


def test_check_order_first_failure_wins() -> None:
    # Over-long and non-ASCII without '$': too_long first.
    assert decode(b"\xff" * 300, SEOUL).reason is RejectReason.TOO_LONG
    # Non-ASCII after '$' and no checksum: not_ascii first.
    assert decode("$WDN,é".encode(), SEOUL).reason is RejectReason.NOT_ASCII
    # Bad checksum on an unknown type with a wrong field count: bad_checksum first.
    assert decode(b"$XYZ*00", SEOUL).reason is RejectReason.BAD_CHECKSUM
    # Unknown type wins over field count; field count over bad fields.
    assert decode(framed(b"XYZ"), SEOUL).reason is RejectReason.UNKNOWN_TYPE
    assert decode(framed(b"WDN,000,x,y"), SEOUL).reason is RejectReason.FIELD_COUNT
    # Fields are checked left to right: sid before time.
    assert decode(framed(b"WDN,000,2023,x,y,zz"), SEOUL).detail.startswith("sid:")


BAD_FIELDS = [
    # (body, field named in the detail)
    (b"WDN,000,20231102140500,1,2,00", "sid"),
    (b"WDN,01,20231102140500,1,2,00", "sid"),
    (b"WDN,0001,20231102140500,1,2,00", "sid"),
    (b"WDN,,20231102140500,1,2,00", "sid"),
    (b"WDN,001,20231302140500,1,2,00", "time: month 13"),
    (b"WDN,001,20230229140500,1,2,00", "time: day 29"),
    (b"WDN,001,20231100140500,1,2,00", "time: day 0"),
    (b"WDN,001,20231102240500,1,2,00", "time: hour 24"),
    (b"WDN,001,20231102146000,1,2,00", "time: minute 60"),
    (b"WDN,001,20231102140560,1,2,00", "time: second 60"),
    (b"WDN,001,19691231235959,1,2,00", "time: year 1969"),
    (b"WDN,001,19700101080000,1,2,00", "time: before 1970"),  # 1969-12-31 23:00 UTC
    (b"WDN,001,2023110214050,1,2,00", "time: not 14 digits"),
    (b"WDN,001,202311021405000,1,2,00", "time: not 14 digits"),
    (b"WDN,001,2023-11-02T14:05,1,2,00", "time: not 14 digits"),
    (b"WDN,001,20231102140500,nan,2,00", "flow"),
    (b"WDN,001,20231102140500,inf,2,00", "flow"),
    (b"WDN,001,20231102140500,1e3,2,00", "flow"),
    (b"WDN,001,20231102140500,+1,2,00", "flow"),
    (b"WDN,001,20231102140500, 1,2,00", "flow"),
    (b"WDN,001,20231102140500,1.,2,00", "flow"),
    (b"WDN,001,20231102140500,.5,2,00", "flow"),
    (b"WDN,001,20231102140500,-,2,00", "flow"),
    (b"WDN,001,20231102140500,--1,2,00", "flow"),
    (b"WDN,001,20231102140500,1.2.3,2,00", "flow"),
    (b"WDN,001,20231102140500,1_0,2,00", "flow"),
    (b"WDN,001,20231102140500,1,0x2,00", "pressure"),
    (b"WDN,001,20231102140500,1,2,0", "status"),
    (b"WDN,001,20231102140500,1,2,000", "status"),
    (b"WDN,001,20231102140500,1,2,0G", "status"),
    (b"WDN,001,20231102140500,1,2,+F", "status"),
    (b"WDN,001,20231102140500,1,2,", "status"),
    (b"ALR,-1,001,20231102140500,1,2,00,00", "seq"),
    (b"ALR,1.0,001,20231102140500,1,2,00,00", "seq"),
    (b"ALR,,001,20231102140500,1,2,00,00", "seq"),
    (b"ALR,1,001,20231102140500,1,2,100,00", "flow_flags"),
    (b"ALR,1,001,20231102140500,1,2,00,x", "pressure_flags"),
    (b"SRV,1,001,20231102140500,1,2,00,00,x,0", "pred_flow"),
    (b"SRV,1,001,20231102140500,1,2,00,00,0,nan", "pred_pressure"),
    (b"FCD,1,001,20231102140500,20230230,1,2", "day"),
    (b"FCD,1,001,20231102140500,2023113,1,2", "day"),
    (b"FCD,1,001,2023110214050x,20231103,1,2", "issued"),
    (b"FCD,1,001,20231102140500,20231103,,2", "flow_mean"),
    (b"FCD,1,001,20231102140500,20231103,1,x", "pressure_mean"),
    (b"HLT,1,20231102140500,-5,0,0,0,0,1,1", "uptime_s"),
    (b"HLT,1,20231102140500,5,a,0,0,0,1,1", "outbox_depth"),
    (b"HLT,1,20231102140500,5,0,0.5,0,0,1,1", "oldest_unsent_s"),
    (b"HLT,1,20231102140500,5,0,0,x,0,1,1", "restarts"),
    (b"HLT,1,20231102140500,5,0,0,0,,1,1", "rejects"),
    (b"HLT,1,20231102140500,5,0,0,0,0,,1", "store_used_pct"),
    (b"HLT,1,20231102140500,5,0,0,0,0,1,2", "clock"),
    (b"HLT,1,20231102140500,5,0,0,0,0,1,true", "clock"),
    (b"ACK,x", "seq"),
]


@pytest.mark.parametrize(("body", "field"), BAD_FIELDS)
def test_bad_field_names_the_field(body: bytes, field: str) -> None:
    result = decode(framed(body), SEOUL)
    assert isinstance(result, Reject), result
    assert result.reason is RejectReason.BAD_FIELD
    assert result.detail.startswith(field), result.detail


# --- local time -------------------------------------------------------------------------------


def test_local_time_known_answers() -> None:
    assert parse_local_time("20231102140500", SEOUL) == EXAMPLE_TIME
    assert format_local_time(EpochSeconds(EXAMPLE_TIME), SEOUL) == "20231102140500"
    assert parse_local_time("20240229235959", SEOUL) == utc(2024, 2, 29, 14, 59, 59)
    # Berlin, 29 Oct 2023: 02:30 happens twice; fold=0 is the first (CEST, UTC+2).
    assert parse_local_time("20231029023000", BERLIN) == utc(2023, 10, 29, 0, 30)
    assert format_local_time(EpochSeconds(utc(2023, 10, 29, 0, 30)), BERLIN) == "20231029023000"
    assert format_local_time(EpochSeconds(utc(2023, 10, 29, 1, 30)), BERLIN) == "20231029023000"
    # Berlin, 26 Mar 2023: 02:30 does not exist; read with the offset before the jump.
    assert parse_local_time("20230326023000", BERLIN) == utc(2023, 3, 26, 1, 30)
    # Lord Howe, 1 Oct 2023: UTC+10:30 -> +11 at 02:00, a half-hour gap inside one hour.
    assert parse_local_time("20231001014500", LORD_HOWE) == utc(2023, 9, 30, 15, 15)
    assert parse_local_time("20231001021500", LORD_HOWE) == utc(2023, 9, 30, 15, 45)  # in the gap
    assert parse_local_time("20231001024500", LORD_HOWE) == utc(2023, 9, 30, 15, 45)
    assert parse_local_time("20231001031500", LORD_HOWE) == utc(2023, 9, 30, 16, 15)


def _reference_parse(text: str, tz: ZoneInfo) -> int | None:
    if not re.fullmatch(r"[0-9]{14}", text):
        return None
    parts = [int(text[:4])] + [int(text[i:i + 2]) for i in range(4, 14, 2)]
    try:
        local = datetime(*parts, tzinfo=tz)
    except ValueError:
        return None
    epoch = int(local.timestamp())
    return epoch if local.year >= 1970 and epoch >= 0 else None


def _time_texts(junk: st.SearchStrategy[str] = st.text(max_size=16)) -> st.SearchStrategy[str]:
    """Mostly plausible local times, with components a little out of range, or ``junk``."""
    parts = st.tuples(
        st.sampled_from([1969, 1970, 2000, 2023, 2024, 2099, 2100, 9999]) | st.integers(1970, 2100),
        st.integers(0, 13), st.integers(0, 32), st.integers(0, 24), st.integers(0, 60),
        st.integers(0, 60),
    ).map(lambda p: f"{p[0]:04d}{p[1]:02d}{p[2]:02d}{p[3]:02d}{p[4]:02d}{p[5]:02d}")
    return parts | st.text("0123456789", min_size=12, max_size=16) | junk


@given(_time_texts(), st.sampled_from(ZONES))
@FAST
def test_parse_local_time_matches_datetime(text: str, tz: ZoneInfo) -> None:
    expected = _reference_parse(text, tz)
    if expected is None:
        with pytest.raises(ValueError):
            parse_local_time(text, tz)
    else:
        assert parse_local_time(text, tz) == expected


@given(st.integers(0, EPOCH_2100), st.sampled_from(ZONES))
@FAST
def test_format_local_time_matches_datetime(t: int, tz: ZoneInfo) -> None:
    expected = local_datetime(t, tz).strftime("%Y%m%d%H%M%S")
    assert format_local_time(EpochSeconds(t), tz) == expected


@given(st.integers(EPOCH_2000, EPOCH_2100), st.sampled_from(ZONES))
@FAST
def test_local_time_round_trip(t: int, tz: ZoneInfo) -> None:
    text = format_local_time(EpochSeconds(t), tz)
    back = parse_local_time(text, tz)
    if local_datetime(t, tz).fold == 0:
        assert back == t
    else:  # second occurrence of an ambiguous wall time: fold=0 is the earlier instant
        assert back < t and format_local_time(EpochSeconds(back), tz) == text


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (8.02, "8.02"), (4.1, "4.1"), (0, "0"), (0.0, "0"), (-1.5, "-1.5"),
     (100.0, "100"), (1.23456, "1.235"), (-0.0001, "0"), (-0.0, "0"), (12, "12"),
     (float("nan"), ""), (float("inf"), "")],
)
def test_format_value(value: float | None, text: str) -> None:
    assert format_value(value) == text


@given(st.floats(-1e9, 1e9, allow_nan=False))
@FAST
def test_format_value_is_a_plain_decimal_rounded_to_3_places(x: float) -> None:
    text = format_value(x)
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]{1,3})?", text), text
    assert not (text.endswith("0") and "." in text)
    assert abs(float(text) - x) <= 0.0005 + 1e-9 * abs(x)


# --- encode guards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        Reading(SensorId("001"), EpochSeconds(EXAMPLE_TIME), 1.0, 2.0, 0x100),
        Reading(SensorId("000"), EpochSeconds(EXAMPLE_TIME), 1.0, 2.0, 0),
        Reading(SensorId("1"), EpochSeconds(EXAMPLE_TIME), 1.0, 2.0, 0),
        AlertFrame(SensorId("001"), EpochSeconds(EXAMPLE_TIME), 1.0, 2.0, 0, 0, seq=-1),
        AlertFrame(SensorId("001"), EpochSeconds(EXAMPLE_TIME), 1.0, 2.0, -1, 0, seq=1),
        HealthFrame(EpochSeconds(EXAMPLE_TIME), -1, 0, 0, 0, 0, 1.0, True, seq=1),
        Ack(-3),
        Ack(10**20),  # wider than the line budgets for a sequence number
        HealthFrame(EpochSeconds(EXAMPLE_TIME), 10**20, 0, 0, 0, 0, 1.0, True, seq=1),
        AlertFrame(SensorId("001"), EpochSeconds(-60), 1.0, 2.0, 0, 0, seq=1),  # before 1970
        AlertFrame(SensorId("001"), EpochSeconds(utc(9999, 12, 31, 20)), 1.0, 2.0, 0, 0, seq=1),
        Reading(SensorId("001"), EpochSeconds(EXAMPLE_TIME), 1e120, 2.0, 0),
        DailyForecastLine(SensorId("001"), EpochSeconds(EXAMPLE_TIME), date(2023, 11, 3),
                          float("nan"), 4.0, seq=1),  # FCD has no flag to say a mean is missing
        DailyForecastLine(SensorId("001"), EpochSeconds(EXAMPLE_TIME), date(2023, 11, 3),
                          8.0, 1e100, seq=1),
        HealthFrame(EpochSeconds(EXAMPLE_TIME), 0, 0, 0, 0, 0, 1e110, True, seq=1),
    ],
)
def test_encode_refuses_what_the_protocol_cannot_carry(frame: frames.Frame) -> None:
    with pytest.raises(ValueError):
        encode(frame, SEOUL)


def test_encode_refuses_non_frames() -> None:
    with pytest.raises(TypeError):
        encode("WDN", SEOUL)  # type: ignore[arg-type]


# --- round trips ------------------------------------------------------------------------------

sensors = st.integers(1, 999).map(sensor_id)
times = st.integers(EPOCH_2000, EPOCH_2100 - 1).map(EpochSeconds)
numbers = st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3))
measured = st.none() | numbers
bits = st.integers(0, 0xFF)
seqs = st.integers(0, 10**12)
counts = st.integers(0, 10**9)

any_frame = st.one_of(
    st.builds(Reading, sensors, times, measured, measured, bits),
    st.builds(AlertFrame, sensors, times, measured, measured, bits, bits, seq=seqs),
    st.builds(ServerReportLine, sensors, times, measured, measured, bits, bits, measured,
              measured, seq=seqs),
    st.builds(DailyForecastLine, sensors, times,
              st.dates(date(2000, 1, 1), date(2099, 12, 31)), numbers, numbers, seq=seqs),
    st.builds(HealthFrame, times, counts, counts, counts, counts, counts,
              st.floats(0, 100).map(lambda x: round(x, 3)), st.booleans(), seq=seqs),
    st.builds(Ack, seqs),
)


@given(any_frame)
@FAST
def test_encode_decode_round_trip(frame: frames.Frame) -> None:
    line = encode(frame, SEOUL)
    assert line.endswith(b"\r\n") and line.isascii() and len(line) - 2 <= MAX_LINE
    assert decode(line, SEOUL) == frame
    if isinstance(frame, Reading):
        assert decode_reading(line, SEOUL) == frame
    if isinstance(frame, Ack):
        assert decode_ack(line, SEOUL) == frame


@given(st.builds(Reading, sensors, times, measured, measured, bits), st.sampled_from(ZONES))
@FAST
def test_reading_round_trip_in_zones_with_dst(reading: Reading, tz: ZoneInfo) -> None:
    decoded = decode_reading(encode(reading, tz), tz)
    assert isinstance(decoded, Reading)
    local_fold = local_datetime(reading.time, tz).fold
    if local_fold == 0:
        assert decoded == reading
    else:  # the repeated hour reads back as its first occurrence
        assert decoded.time < reading.time


@given(st.lists(any_frame, max_size=20), st.lists(st.integers(1, 80), max_size=30))
@FAST
def test_stream_of_frames_survives_any_chunking(frame_list: list[frames.Frame],
                                                 cuts: list[int]) -> None:
    data = b"".join(encode(frame, SEOUL) for frame in frame_list)
    splitter = LineSplitter()
    lines: list[bytes] = []
    for chunk in _chunks(data, cuts):
        lines += splitter.feed(chunk)
    assert [decode(line, SEOUL) for line in lines] == frame_list


# --- outbound lines within the limit ---------------------------------------------------------

LONG_FLOW = float("1" * 219)  # a valid inbound decimal (a 254-byte $WDN), far out of range


def test_alert_of_a_219_digit_flow_has_an_empty_flow_field_and_system() -> None:
    frame = AlertFrame(SensorId("001"), EpochSeconds(EXAMPLE_TIME), LONG_FLOW, 4.11, 0, 0, seq=12345)
    line = encode(frame, SEOUL)
    assert line == framed(b"ALR,12345,001,20231102140500,,4.11,01,00")
    assert frame.flow == LONG_FLOW  # the frame (and the stored reading) keep the true value


@pytest.mark.parametrize("kind", ["ALR", "SRV"])
def test_value_width_boundary(kind: str) -> None:
    width = frames.VALUE_WIDTH[kind]
    fits, too_long = float("7" * width), -float("7" * width)  # "-" makes it one too long
    assert len(format_value(fits)) == width and len(format_value(too_long)) == width + 1
    for value, empty in ((fits, False), (too_long, True)):
        if kind == "ALR":
            frame: frames.Frame = AlertFrame(SensorId("002"), EpochSeconds(EXAMPLE_TIME),
                                             2.0, value, 0x02, 0x04, seq=1)
        else:
            frame = ServerReportLine(SensorId("002"), EpochSeconds(EXAMPLE_TIME), 2.0, 3.0,
                                     0x02, 0x04, 1.0, value, seq=1)
        decoded = decode(encode(frame, SEOUL), SEOUL)
        assert isinstance(decoded, AlertFrame | ServerReportLine)
        got = decoded.pressure if kind == "ALR" else decoded.pred_pressure
        assert (got is None) is empty
        assert decoded.pressure_flags == (0x05 if empty else 0x04)
        assert decoded.flow_flags == 0x02


def _widest(kind: str) -> float:
    value = -float("7" * (frames.VALUE_WIDTH[kind] - 1))
    assert len(format_value(value)) == frames.VALUE_WIDTH[kind]
    return value


def test_the_widest_line_of_each_type_fits() -> None:
    # The largest sequence number the decoder takes (an outbox never gives more);
    # counters may have the whole width of their field.
    seq, count, t = frames.MAX_SEQ, 10**20 - 1, EpochSeconds(EXAMPLE_TIME)
    widest = [
        Reading(SensorId("999"), t, _widest("WDN"), _widest("WDN"), 0xFF),
        AlertFrame(SensorId("999"), t, _widest("ALR"), _widest("ALR"), 0xFF, 0xFF, seq=seq),
        ServerReportLine(SensorId("999"), t, *[_widest("SRV")] * 2, 0xFF, 0xFF,
                         *[_widest("SRV")] * 2, seq=seq),
        DailyForecastLine(SensorId("999"), t, date(2023, 11, 3), *[_widest("FCD")] * 2, seq=seq),
        HealthFrame(t, count, count, count, count, count, _widest("HLT"), True, seq=seq),
        Ack(seq),
    ]
    for frame in widest:
        line = encode(frame, SEOUL)
        assert len(line) <= MAX_LINE, (len(line), line)
        assert decode(line, SEOUL) == frame
    assert max(len(encode(frame, SEOUL)) for frame in widest) >= MAX_LINE - 4  # budgets used


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_measured_value_the_line_cannot_carry_is_flagged_system(value: float) -> None:
    frame = ServerReportLine(SensorId("003"), EpochSeconds(EXAMPLE_TIME), value, 3.0, 0, 0,
                             None, 2.5, seq=7)
    decoded = decode(encode(frame, SEOUL), SEOUL)
    assert decoded == ServerReportLine(SensorId("003"), EpochSeconds(EXAMPLE_TIME), None,
                                       3.0, 0x01, 0, None, 2.5, seq=7)


def test_value_fits() -> None:
    assert frames.value_fits("FCD", 12.5) and frames.value_fits("FCD", None)
    assert not frames.value_fits("FCD", float("nan"))
    assert not frames.value_fits("FCD", float("9" * (frames.VALUE_WIDTH["FCD"] + 1)))


def _wire_field(value: float | None, width: int) -> tuple[float | None, bool]:
    """Reference: what a decimal field decodes to, and whether it could not carry the value."""
    text = format_value(value)
    if value is None:
        return None, False
    if not text or len(text) > width:
        return None, True
    return float(text), False


_NEAR_WIDTHS = sorted({w + d for w in frames.VALUE_WIDTH.values() for d in (-1, 0, 1)})
hostile_values = st.one_of(
    st.none(), st.floats(), st.floats(-1e300, 1e300),
    st.one_of(st.integers(1, 300), st.sampled_from(_NEAR_WIDTHS)).flatmap(
        lambda digits: st.sampled_from([float("7" * digits), -float("7" * digits)])),
)
hostile_times = st.one_of(times, st.integers(-(10**6), utc(9999, 12, 31) + 3 * 86400))
hostile_seqs = st.one_of(seqs, st.integers(0, 2 * 10**20))
hostile_frames = st.one_of(
    st.builds(AlertFrame, sensors, hostile_times, hostile_values, hostile_values,
              bits, bits, seq=hostile_seqs),
    st.builds(ServerReportLine, sensors, hostile_times, hostile_values,
              hostile_values, bits, bits, hostile_values, hostile_values, seq=hostile_seqs),
    st.builds(Reading, sensors, hostile_times, hostile_values, hostile_values, bits),
    st.builds(DailyForecastLine, sensors, hostile_times,
              st.dates(date(1970, 1, 2), date(9999, 12, 31)), hostile_values, hostile_values, seq=hostile_seqs),
    st.builds(HealthFrame, hostile_times, hostile_seqs, counts, counts, counts,
              hostile_seqs, hostile_values, st.booleans(), seq=hostile_seqs),
    st.builds(Ack, hostile_seqs),
)


@given(hostile_frames, st.sampled_from(ZONES))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The hot path's own seq check once let a seq past 2^63 - 1 through (hypothesis found it).
@example(AlertFrame(SensorId("001"), EpochSeconds(946684800), None, None,
                    0, 0, seq=frames.MAX_SEQ + 1), SEOUL)
def test_every_line_the_encoder_makes_fits_and_decodes(frame: frames.Frame, tz: ZoneInfo) -> None:
    try:
        line = encode(frame, tz)
    except ValueError:
        return  # refused: a frame the protocol cannot carry
    assert len(line) <= MAX_LINE and line.endswith(b"\r\n")
    decoded = decode(line, tz)
    assert type(decoded) is type(frame), decoded
    if isinstance(frame, AlertFrame | ServerReportLine):
        assert isinstance(decoded, AlertFrame | ServerReportLine)
        width = frames.VALUE_WIDTH["ALR" if isinstance(frame, AlertFrame) else "SRV"]
        flow, flow_lost = _wire_field(frame.flow, width)
        pressure, pressure_lost = _wire_field(frame.pressure, width)
        if isinstance(frame, ServerReportLine):
            assert isinstance(decoded, ServerReportLine)
            pred_flow, pred_flow_lost = _wire_field(frame.pred_flow, width)
            pred_pressure, pred_pressure_lost = _wire_field(frame.pred_pressure, width)
            assert (decoded.pred_flow, decoded.pred_pressure) == (pred_flow, pred_pressure)
            flow_lost |= pred_flow_lost
            pressure_lost |= pred_pressure_lost
        assert (decoded.flow, decoded.pressure) == (flow, pressure)
        assert decoded.flow_flags == frame.flow_flags | (FLAG_SYSTEM if flow_lost else 0)
        assert decoded.pressure_flags == frame.pressure_flags | (
            FLAG_SYSTEM if pressure_lost else 0)
        assert (decoded.seq, decoded.sensor) == (frame.seq, frame.sensor)


# --- never raises -----------------------------------------------------------------------------

WIRE_ALPHABET = list(b"$*,.-0123456789ABCDEFabcdefWDNALRSVFCHTK \r\n\xff\x00")


def _check_total(line: bytes) -> None:
    result = decode(line, SEOUL)
    assert isinstance(result, Reject | Reading | Ack | AlertFrame | ServerReportLine
                      | DailyForecastLine | HealthFrame)
    reading = decode_reading(line, SEOUL)
    assert reading is None or isinstance(reading, Reading | Reject)
    ack = decode_ack(line, SEOUL)
    assert ack is None or isinstance(ack, Ack | Reject)


@given(st.binary(max_size=400))
@FAST
def test_random_bytes_never_raise(line: bytes) -> None:
    _check_total(line)


@given(st.lists(st.sampled_from(WIRE_ALPHABET), max_size=120).map(bytes))
@FAST
def test_random_wire_like_bytes_never_raise(line: bytes) -> None:
    _check_total(line)


@given(st.sampled_from(["WDN", "ALR", "SRV", "FCD", "HLT", "ACK", "XYZ"]),
       st.lists(st.text("0123456789-.,ABCDEFabcdefxn+ ", max_size=16), max_size=11))
@FAST
def test_random_fields_with_a_valid_checksum_never_raise(kind: str, fields: list[str]) -> None:
    body = ",".join([kind, *fields]).encode()
    result = decode(framed(body), SEOUL)
    if isinstance(result, Reject):
        assert result.reason in {RejectReason.UNKNOWN_TYPE, RejectReason.FIELD_COUNT,
                                 RejectReason.BAD_FIELD, RejectReason.TOO_LONG}
    _check_total(framed(body))


@given(any_frame, st.integers(0, 300), st.integers(0, 255), st.sampled_from(["flip", "insert",
                                                                              "delete"]))
@FAST
def test_mutated_frames_never_raise(frame: frames.Frame, at: int, byte: int, how: str) -> None:
    line = bytearray(encode(frame, SEOUL))
    at %= len(line)
    if how == "flip":
        line[at] = byte
    elif how == "insert":
        line.insert(at, byte)
    else:
        del line[at]
    _check_total(bytes(line))


# --- strictness against a regex reference ---------------------------------------------------

NUMBER = r"-?[0-9]+(\.[0-9]+)?"


def _reference_reading(fields: list[str], tz: ZoneInfo) -> Reading | None:
    sid, time_text, flow, pressure, status = fields
    if not re.fullmatch(r"[0-9]{3}", sid) or sid == "000":
        return None
    epoch = _reference_parse(time_text, tz)
    if epoch is None:
        return None
    if any(v and not re.fullmatch(NUMBER, v) for v in (flow, pressure)):
        return None
    if not re.fullmatch(r"[0-9A-Fa-f]{2}", status):
        return None
    return Reading(SensorId(sid), EpochSeconds(epoch), float(flow) if flow else None,
                   float(pressure) if pressure else None, int(status, 16))


def _token(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return valid | st.text("0123456789-.+eEaAfFnx ", max_size=6)


wdn_fields = st.tuples(
    _token(st.integers(0, 999).map(lambda n: f"{n:03d}")),
    _token(_time_texts(st.text("0123456789 -T:", max_size=16))),
    _token(st.just("") | numbers.map(format_value)),
    _token(st.just("") | st.from_regex(NUMBER, fullmatch=True)),
    _token(st.integers(0, 255).map(lambda n: f"{n:02x}") | st.integers(0, 255).map(
        lambda n: f"{n:02X}")),
)


@given(wdn_fields)
@FAST
def test_reading_fields_are_exactly_as_strict_as_the_protocol(fields: tuple[str, ...]) -> None:
    line = framed(",".join(("WDN", *fields)).encode())
    expected = _reference_reading(list(fields), SEOUL)
    result = decode_reading(line, SEOUL)
    if expected is None:
        assert isinstance(result, Reject) and result.reason is RejectReason.BAD_FIELD, result
    else:
        assert result == expected


# --- line splitting ---------------------------------------------------------------------------


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for size in cuts:
        pieces.append(data[pos:pos + size])
        pos += size
    pieces.append(data[pos:])
    return pieces


def _reference_split(data: bytes) -> list[bytes]:
    """What the splitter must return for a whole stream, flush included."""
    def finish(line: bytes) -> bytes:
        line = line[:-1] if line.endswith(b"\r") else line
        return line[:MAX_LINE + 1] if len(line) > MAX_LINE else line

    *complete, last = data.split(b"\n")
    lines = [finish(line) for line in complete]
    if len(last) > MAX_LINE + 1:
        lines.append(last[:MAX_LINE + 1])
    elif last:
        lines.append(finish(last))
    return lines


stream_lines = st.lists(
    st.tuples(
        st.binary(max_size=30) | st.binary(min_size=250, max_size=600)
        | st.lists(st.sampled_from(list(b"ab\r$")), max_size=300).map(bytes),
        st.sampled_from([b"\n", b"\r\n", b"\r\r\n", b""]),
    ).map(lambda pair: pair[0] + pair[1]),
    max_size=12,
).map(b"".join)


@given(stream_lines, st.lists(st.integers(0, 300), max_size=40))
@FAST
def test_splitter_is_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    splitter = LineSplitter()
    lines: list[bytes] = []
    for chunk in _chunks(data, cuts):
        lines += splitter.feed(chunk)
        assert splitter.buffered <= MAX_LINE + 1
    lines += splitter.flush()
    one_shot = LineSplitter()
    assert lines == one_shot.feed(data) + one_shot.flush() == _reference_split(data)


def test_splitter_over_long_line_is_rejected_then_reading_resumes() -> None:
    splitter = LineSplitter()
    lines = splitter.feed(b"$WDN," + b"9" * 1000)
    for _ in range(1000):  # a long run of noise without a newline: nothing is kept
        lines += splitter.feed(b"x" * 1000)
        assert splitter.buffered == 0
    lines += splitter.feed(b"tail\r\n" + EXAMPLE_LINE)
    assert len(lines) == 2
    assert len(lines[0]) == MAX_LINE + 1
    assert decode_reading(lines[0], SEOUL).reason is RejectReason.TOO_LONG
    assert decode_reading(lines[1], SEOUL) == EXAMPLE_READING


def test_splitter_keeps_a_partial_line_until_it_ends() -> None:
    splitter = LineSplitter()
    assert splitter.feed(EXAMPLE_LINE[:10]) == []
    assert splitter.buffered == 10
    assert splitter.feed(EXAMPLE_LINE[10:-1]) == []  # "\r" without "\n" yet
    assert splitter.feed(b"\n") == [EXAMPLE_LINE[:-2]]
    assert splitter.feed(b"$ACK,1*") == []
    assert splitter.flush() == [b"$ACK,1*"]
    assert splitter.buffered == 0 and splitter.flush() == []


def test_splitter_returns_empty_lines_which_the_reader_ignores() -> None:
    lines = LineSplitter().feed(b"\r\n\n" + EXAMPLE_LINE)
    assert lines == [b"", b"", EXAMPLE_LINE[:-2]]
    assert [decode_reading(line, SEOUL) for line in lines] == [None, None, EXAMPLE_READING]
