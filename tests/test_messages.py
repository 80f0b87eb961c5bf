"""The msgpack envelope: round trips, and strict, bounded decoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import messages
from core.types import EpochSeconds, Reading, SensorId, StoredReading

EXAMPLES = [
    messages.ReadingsCommitted.of([StoredReading(7, Reading(SensorId("001"), EpochSeconds(60), 1.5, None, 2))]),
    messages.OutboxAppended(12),
    messages.NightClosed("001", "2026-11-27"),
    messages.HourClosed("002", 3600),
    messages.ForecastIssued("003", 7200),
    messages.ModelChanged("001", "v1"),
    messages.CriteriaChanged("001", 2),
    messages.Tick(1.5),
    messages.Ping(),
    messages.Crash("boom", 0.0),
    messages.Resume(),
    messages.AckReceived(4),
    messages.TrainRequest("001"),
    messages.TrainingFinished("001", "accepted", "ok", "{}"),
    messages.BrokerConnected("5", 3),
    messages.BrokerDelivered([17, 18, 20], 3),
    messages.BrokerDown("connection refused: Not authorized"),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.TYPE)
def test_round_trip(message):
    assert messages.decode(messages.encode(message)) == message


def test_every_type_has_an_example():
    assert {m.TYPE for m in EXAMPLES} == set(messages.MESSAGE_TYPES)


def test_readings_rows_become_stored_readings():
    stored = messages.decode(messages.encode(EXAMPLES[0])).stored()
    assert stored == [StoredReading(7, Reading(SensorId("001"), EpochSeconds(60), 1.5, None, 2))]


@pytest.mark.parametrize("raw", [
    "not bytes",
    b"\xc1",  # never-used msgpack byte
    msgpack.packb({"type": "ping"}),
    msgpack.packb(["nope", 1, {}]),
    msgpack.packb(["ping", 2, {}]),
    msgpack.packb(["hour", 1, {"sensor": 1, "hour": 2}]),
    msgpack.packb(["hour", 1, {"sensor": "001"}]),
    msgpack.packb(["tick", 1, {"now": True}]),
    msgpack.packb(["readings", 1, {"rows": [[1, "001", 2]]}]),
    msgpack.packb(["readings", 1, {"rows": [[1, "001", 2, "x", None, 0]]}]),
])
def test_malformed_envelopes_are_refused(raw):
    with pytest.raises(messages.MessageError):
        messages.decode(raw)


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_message_error(raw):
    try:
        messages.decode(raw)
    except messages.MessageError:
        pass
