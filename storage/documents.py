"""The stored documents and actor states: every kind's key format, in one place.

Each document is a msgpack map in the ``docs`` database, keyed ``kind NUL key``;
each actor's state is a msgpack value in ``meta`` under ``s:<consumer>``. Read
them through a :class:`~storage.store.ReadView` (``with store.read() as view:``)
and write them through the :class:`~storage.store.WriteBatch` of a
``store.transact`` call, with the functions here, so that no other module
spells a key.

=========  ==========================  ==========================================
kind       key                         value (written by)
=========  ==========================  ==========================================
criteria   ``<sensor>/<version:06d>``  every criteria version built (Detector)
criteria   ``<sensor>/current``        the version in force (Detector)
forecast   ``<sensor>``                the latest forecast (Predictor)
model      ``<sensor>``                the model in use: version, paths (Trainer)
training   ``<sensor>``                the last training's outcome (Trainer)
night      ``<sensor>/<YYYY-MM-DD>``   a night's MNF and verdict (NightFlow)
repair     ``<sensor>/<wall ms>``      a repair the operator recorded (CLI, NightFlow)
uplink     ``<uplink>``                an uplink's connection state (MqttPublisher)
=========  ==========================  ==========================================
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from core.types import SensorId
from storage._read import ReadView
from storage._write import WriteBatch

__all__ = [
    "actor_state", "criteria_versions", "current_criteria", "forecast", "forecast_choice",
    "model",
    "night_verdicts", "pending_repairs", "put_criteria", "put_forecast", "put_forecast_choice", "put_model",
    "put_night_verdict", "put_repair", "put_training", "put_uplink_state", "repairs",
    "save_actor_state", "training", "uplink_state",
]

# A stored document: a msgpack map as its writer built it.
Document = dict[str, Any]

CRITERIA = "criteria"
FORECAST = "forecast"
MODEL = "model"
FORECAST_CHOICE = "forecast_choice"
TRAINING = "training"
NIGHT = "night"
UPLINK = "uplink"
REPAIR = "repair"
_CURRENT = "current"


# -- criteria ---------------------------------------------------------------------------


def current_criteria(view: ReadView, sensor: SensorId) -> Document | None:
    """The criteria in force for ``sensor`` (None before the first build)."""
    return view.doc(CRITERIA, f"{sensor}/{_CURRENT}")


def criteria_versions(view: ReadView, sensor: SensorId) -> list[Document]:
    """Every criteria version built for ``sensor``, oldest first."""
    return [doc for key, doc in view.docs(CRITERIA, prefix=f"{sensor}/")
            if not key.endswith(f"/{_CURRENT}")]


def put_criteria(batch: WriteBatch, sensor: SensorId, version: int, record: Document) -> None:
    """Keep criteria ``version`` and make it the one in force."""
    batch.put_doc(CRITERIA, f"{sensor}/{version:06d}", record)
    batch.put_doc(CRITERIA, f"{sensor}/{_CURRENT}", record)


# -- forecasts, models, training --------------------------------------------------------


def forecast(view: ReadView, sensor: SensorId) -> Document | None:
    """The latest forecast of ``sensor``."""
    return view.doc(FORECAST, sensor)


def put_forecast(batch: WriteBatch, sensor: SensorId, record: Document) -> None:
    batch.put_doc(FORECAST, sensor, record)


def forecast_choice(view: ReadView, sensor: SensorId) -> Document | None:
    """The Predictor's daily check: which source each quantity forecasts from
    (``core.forecast_check.Choice``; None: not checked yet)."""
    return view.doc(FORECAST_CHOICE, sensor)


def put_forecast_choice(batch: WriteBatch, sensor: SensorId, record: Document) -> None:
    batch.put_doc(FORECAST_CHOICE, sensor, record)


def model(view: ReadView, sensor: SensorId) -> Document | None:
    """The model ``sensor`` forecasts with (None: seasonal-naive)."""
    return view.doc(MODEL, sensor)


def put_model(batch: WriteBatch, sensor: SensorId, record: Document) -> None:
    """Swap ``sensor``'s model (one transaction: the Predictor sees the old or the new)."""
    batch.put_doc(MODEL, sensor, record)


def training(view: ReadView, sensor: SensorId) -> Document | None:
    """The outcome of ``sensor``'s last training."""
    return view.doc(TRAINING, sensor)


def put_training(batch: WriteBatch, sensor: SensorId, record: Document) -> None:
    batch.put_doc(TRAINING, sensor, record)


# -- night verdicts and repairs ---------------------------------------------------------


def _night_key(sensor: SensorId, night: str) -> str:
    return f"{sensor}/{night}"


def night_verdicts(view: ReadView, sensor: SensorId, *, after: str = "",
                   newest_first: bool = False, limit: int | None = None,
                   where: Callable[[Document], bool] | None = None) -> list[tuple[str, Document]]:
    """``sensor``'s judged nights as (night ``YYYY-MM-DD``, record), by night.

    Only nights after ``after`` (a night, "" for all), only records ``where``
    accepts, at most ``limit``; ``newest_first`` reads from the newest back.
    """
    found = view.docs(NIGHT, prefix=f"{sensor}/",
                      after=_night_key(sensor, after) if after else "",
                      newest_first=newest_first, limit=limit, where=where)
    return [(key.split("/", 1)[1], record) for key, record in found]


def put_night_verdict(batch: WriteBatch, sensor: SensorId, night: dt.date,
                      record: Document) -> None:
    batch.put_doc(NIGHT, _night_key(sensor, night.isoformat()), record)


def repairs(view: ReadView, sensor: SensorId, *, newest_first: bool = False,
            limit: int | None = None) -> list[Document]:
    """The repairs recorded for ``sensor`` (keyed by wall-clock time)."""
    return [record for _, record in view.docs(REPAIR, prefix=f"{sensor}/",
                                              newest_first=newest_first, limit=limit)]


def pending_repairs(view: ReadView) -> list[Document]:
    """Every sensor's repairs not yet applied by NightFlow."""
    return [record for _, record in view.docs(
        REPAIR, where=lambda record: record.get("applied") is None)]


def put_repair(batch: WriteBatch, record: Document) -> None:
    """Keep a repair (``core.replay.repair_record``: its key names sensor and time)."""
    batch.put_doc(REPAIR, record["key"], record)


# -- uplinks and actor states -----------------------------------------------------------


def uplink_state(view: ReadView, uplink: str) -> Document | None:
    """What an uplink last said of its connection (``status`` shows it)."""
    return view.doc(UPLINK, uplink)


def put_uplink_state(batch: WriteBatch, uplink: str, record: Document) -> None:
    batch.put_doc(UPLINK, uplink, record)


def actor_state(view: ReadView, consumer: str) -> Any | None:
    """The state ``consumer`` saved with its offset or alone (None: never saved)."""
    return view.consumer_state(consumer)


def save_actor_state(batch: WriteBatch, consumer: str, state: Any) -> None:
    """Save ``consumer``'s state without moving its offset (an actor that keeps no offset)."""
    batch.save_state(consumer, state)
