"""core._codec: declared record formats, both directions from one declaration."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core._codec import ISO_DATE, Codec, Recorded, declared, listed, spread, tuple_of
from core.detection import Cause, Evaluation, QuantityState, SensorState
from core.types import EpochSeconds, Reading, SensorId


class BadDocument(ValueError):
    pass


@declared()
@dataclass(slots=True)
class Counts(Recorded):
    run: int = 0
    active: bool = False


@declared(keys={"when": "t"}, codecs={"day": ISO_DATE, "counts": listed(Counts)},
          order=("name",), constants={"format": 2}, error=BadDocument, what="test document")
@dataclass(frozen=True)
class Doc(Recorded):
    when: EpochSeconds
    day: datetime.date
    name: str
    counts: Counts = field(default_factory=Counts)
    note: str | None = None


DOC = Doc(EpochSeconds(60), datetime.date(2026, 1, 2), "x", Counts(3, True), None)


def test_the_map_follows_the_declaration() -> None:
    assert list(DOC.to_record().items()) == [
        ("format", 2), ("name", "x"), ("t", 60), ("day", "2026-01-02"), ("counts", [3, True]),
        ("note", None)]
    assert Doc.from_record(json.loads(json.dumps(DOC.to_record()))) == DOC


def test_an_older_record_takes_the_defaults_and_scalars_their_declared_type() -> None:
    older = {"t": "60", "day": "2026-01-02", "name": 7}  # no format, counts nor note
    assert Doc.from_record(older) == Doc(EpochSeconds(60), datetime.date(2026, 1, 2), "7")


@pytest.mark.parametrize(("record", "says"), [
    ({**DOC.to_record(), "format": 3}, "unknown test format 3"),
    ({k: v for k, v in DOC.to_record().items() if k != "name"},
     "bad test document: KeyError('name')"),
    ({**DOC.to_record(), "day": "2026-13-01"}, "bad test document: ValueError"),
    ({**DOC.to_record(), "counts": [1]}, "bad test document: ValueError"),
    ({**DOC.to_record(), "t": None}, "bad test document: TypeError"),
])
def test_a_bad_record_raises_the_declared_error_naming_what(record, says) -> None:
    with pytest.raises(BadDocument, match=says.replace("(", r"\(").replace(")", r"\)")):
        Doc.from_record(record)


def test_a_type_without_an_error_lets_the_plain_one_through() -> None:
    with pytest.raises(TypeError):
        Counts.from_record([1, 2])  # type: ignore[arg-type]


def test_spread_and_tuples_of_records() -> None:
    @declared(codecs={"reading": spread(Reading), "causes": tuple_of(Cause)})
    @dataclass(frozen=True)
    class Flagged(Recorded):
        reading: Reading
        causes: tuple[Cause, ...] = ()

    item = Flagged(Reading(SensorId("001"), EpochSeconds(60), 1.5, None, 4),
                   (Cause("VALUE", "flow", "band", 1.5, [1.0, 2.0], 3),))
    record = item.to_record()
    assert list(record) == ["sensor", "time", "flow", "pressure", "status", "causes"]
    assert Flagged.from_record(msgpack.unpackb(msgpack.packb(record))) == item
    assert tuple_of(ISO_DATE).dump((datetime.date(2026, 1, 1),)) == ["2026-01-01"]
    assert isinstance(Codec(str, str), Codec)


values = st.one_of(st.none(), st.floats(allow_nan=False), st.integers(-10**6, 10**6))
persistences = st.tuples(st.integers(0, 100), st.booleans(), st.integers(0, 100))


causes = st.dictionaries(st.text(max_size=5), st.integers(-(2**40), 2**40), max_size=3)


@given(st.one_of(st.none(), st.floats(allow_nan=False)),
       st.one_of(st.none(), st.integers(0, 2**40)), persistences, persistences, st.booleans(),
       st.one_of(st.none(), causes))
def test_detection_state_round_trips_through_msgpack(last, since, value, predict, night, cause):
    state = SensorState(EpochSeconds(60), QuantityState(last, since), QuantityState(),
                        night, cause)
    state.flow.value.run, state.flow.value.active, state.flow.value.clear = value
    predicted = state.pressure.predict
    predicted.run, predicted.active, predicted.clear = predict
    packed = msgpack.unpackb(msgpack.packb(state.to_record()))
    assert SensorState.from_record(packed) == state


thresholds = st.one_of(values, st.lists(st.floats(allow_nan=False), max_size=2))


@given(st.builds(Cause, st.sampled_from(["VALUE", "SYSTEM"]),
                 st.sampled_from(["flow", "pressure"]), st.text(max_size=8), values, thresholds,
                 st.one_of(st.none(), st.integers(0, 99))))
def test_an_evaluation_round_trips_through_msgpack(cause) -> None:
    ev = Evaluation(Reading(SensorId("002"), EpochSeconds(120), 1.0, 2.0, 0), 1, 0, (cause,))
    assert Evaluation.from_record(msgpack.unpackb(msgpack.packb(ev.to_record()))) == ev
