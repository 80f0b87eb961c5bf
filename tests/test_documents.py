"""storage.documents: each stored document kind read back through its accessor, at
the key format the store has always had (the store format does not change)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.replay import repair_record
from core.types import SensorId
from storage import documents
from storage.store import Store

S1, S2 = SensorId("001"), SensorId("002")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db", sync=False) as s:
        yield s


def test_criteria_versions_and_the_one_in_force(store: Store) -> None:
    store.transact(lambda b: documents.put_criteria(b, S1, 1, {"version": 1}))
    store.transact(lambda b: documents.put_criteria(b, S1, 2, {"version": 2}))
    store.transact(lambda b: documents.put_criteria(b, S2, 1, {"version": 1, "of": "002"}))
    with store.read() as view:
        assert documents.current_criteria(view, S1) == {"version": 2}
        assert documents.criteria_versions(view, S1) == [{"version": 1}, {"version": 2}]
        assert documents.current_criteria(view, SensorId("003")) is None
        # The keys as they always were: <sensor>/<version:06d> and <sensor>/current.
        assert [key for key, _ in view.docs("criteria", prefix="001/")] == [
            "001/000001", "001/000002", "001/current"]


def test_forecast_model_training_and_uplink_state(store: Store) -> None:
    def write(b):
        documents.put_forecast(b, S1, {"issued": 3600})
        documents.put_model(b, S1, {"version": "v1"})
        documents.put_training(b, S1, {"outcome": "accepted"})
        documents.put_uplink_state(b, "mqtt", {"state": "connected"})

    store.transact(write)
    with store.read() as view:
        assert documents.forecast(view, S1) == {"issued": 3600}
        assert documents.model(view, S1) == {"version": "v1"}
        assert documents.training(view, S1) == {"outcome": "accepted"}
        assert documents.uplink_state(view, "mqtt") == {"state": "connected"}
        assert (documents.forecast(view, S2), documents.model(view, S2),
                documents.training(view, S2), documents.uplink_state(view, "x")) == (
                    None, None, None, None)
        assert [view.doc(kind, key) is not None for kind, key in (
            ("forecast", "001"), ("model", "001"), ("training", "001"), ("uplink", "mqtt"))] \
            == [True] * 4


def test_night_verdicts_by_night_after_newest_first_and_where(store: Store) -> None:
    nights = [dt.date(2026, 1, d) for d in range(1, 6)]

    def write(b):
        for i, night in enumerate(nights):
            documents.put_night_verdict(b, S1, night, {"leak": i % 2 == 0 or None, "n": i})
        documents.put_night_verdict(b, S2, nights[0], {"leak": True, "n": 9})

    store.transact(write)
    with store.read() as view:
        every = documents.night_verdicts(view, S1)
        assert [night for night, _ in every] == [n.isoformat() for n in nights]
        assert [night for night, _ in documents.night_verdicts(view, S1, after="2026-01-03")] \
            == ["2026-01-04", "2026-01-05"]
        newest = documents.night_verdicts(view, S1, newest_first=True, limit=2)
        assert [record["n"] for _, record in newest] == [4, 3]
        judged = documents.night_verdicts(view, S1, where=lambda r: r["leak"] is not None)
        assert [record["n"] for _, record in judged] == [0, 2, 4]
        assert view.doc("night", "001/2026-01-02") == {"leak": None, "n": 1}


def test_repairs_pending_until_applied(store: Store) -> None:
    first = repair_record(S1, 1000, 5.0)
    second = repair_record(S1, 2000, 6.0)
    other = repair_record(S2, None, 7.0)
    store.transact(lambda b: [documents.put_repair(b, r) for r in (first, second, other)])
    with store.read() as view:
        assert documents.repairs(view, S1) == [first, second]
        assert documents.repairs(view, S1, newest_first=True, limit=1) == [second]
        assert documents.pending_repairs(view) == [first, second, other]
    store.transact(lambda b: documents.put_repair(b, {**first, "applied": 1060}))
    with store.read() as view:
        assert documents.pending_repairs(view) == [second, other]
        assert view.doc("repair", first["key"])["applied"] == 1060


def test_an_actor_state_saved_alone_or_with_its_offset(store: Store) -> None:
    store.transact(lambda b: documents.save_actor_state(b, "predictor", {"issued": {S1: 7200}}))
    store.transact(lambda b: b.set_offset("detector", 4, {"persist": {}}))
    with store.read() as view:
        assert documents.actor_state(view, "predictor") == {"issued": {S1: 7200}}
        assert view.offset("predictor") == 0
        assert documents.actor_state(view, "detector") == {"persist": {}}
        assert documents.actor_state(view, "nobody") is None
