"""msgspec against today's code on the per-reading work it could take over (issue 14).

What msgspec (``Struct``, array-like encoding, typed msgpack decoding) would
replace on the ingest path, each timed per reading, today's code beside the
msgspec equivalent, in this process:

- ``tell``: the ``readings`` message from the reader to a consumer, encoded once
  and decoded by each of two consumers into stored readings (today: msgpack,
  the row checks, :func:`core.types.new_reading`; msgspec: a typed decoder
  straight to ``Struct`` readings);
- ``alert``: building the ``$ALR`` frame of a reading (a frozen dataclass vs a
  frozen ``Struct``);
- ``outbox``: packing that frame's outbox form for the store.

msgspec is not a dependency of the gateway (see README, "Choices where the
contract is silent"): to run this, ``pip install msgspec`` into a scratch
directory and put it on ``PYTHONPATH``. Prints a table, then a JSON line with
microseconds per reading for each and the sum.
"""

# No `from __future__ import annotations`: msgspec reads the local Structs' annotations.

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack

from core import messages, outbox
from core.frames import AlertFrame
from core.types import EpochSeconds, Reading, SensorId, StoredReading

BATCH = 500  # readings per message, as the reader's group commit sends them
T0 = 1_735_657_200


def main() -> int:
    try:
        import msgspec
    except ImportError:
        print("msgspec_eval: msgspec is not installed (pip install --target DIR msgspec; "
              "PYTHONPATH=DIR)", file=sys.stderr)
        return 2

    class MReading(msgspec.Struct, frozen=True, array_like=True):
        sensor: str
        time: int
        flow: float | None
        pressure: float | None
        status: int = 0

    class MStored(msgspec.Struct, frozen=True, array_like=True):
        arrival: int
        reading: MReading

    class MReadings(msgspec.Struct, frozen=True, array_like=True, tag="readings"):
        rows: list[MStored]

    class MAlert(msgspec.Struct, frozen=True, tag="ALR"):
        sensor: str
        time: int
        flow: float | None
        pressure: float | None
        flow_flags: int
        pressure_flags: int

    stored = [StoredReading(i + 1, Reading(SensorId("001"), EpochSeconds(T0 + 60 * i),
                                           10.0 + i % 50 / 10, 4.0 + i % 7 / 100, 0))
              for i in range(BATCH)]
    m_stored = [MStored(s.arrival, MReading(*(getattr(s.reading, f) for f in
                                               ("sensor", "time", "flow", "pressure",
                                                "status")))) for s in stored]
    encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(MReadings)
    packer = msgpack.Packer(use_bin_type=True)

    def tell_today() -> None:
        envelope = messages.encode(messages.ReadingsCommitted.of(stored))
        for _ in range(2):
            messages.decode(envelope).stored()

    def tell_msgspec() -> None:
        envelope = encoder.encode(MReadings(m_stored))
        for _ in range(2):
            decoder.decode(envelope)

    r = stored[7].reading

    def alert_today() -> None:
        for _ in range(BATCH):
            AlertFrame(r.sensor, r.time, r.flow, r.pressure, 0, 1)

    def alert_msgspec() -> None:
        for _ in range(BATCH):
            MAlert(r.sensor, r.time, r.flow, r.pressure, 0, 1)

    frame, m_frame = AlertFrame(r.sensor, r.time, r.flow, r.pressure, 0, 1), MAlert(
        r.sensor, r.time, r.flow, r.pressure, 0, 1)
    assert msgspec.msgpack.decode(encoder.encode(m_frame)) == outbox.outbox_form(frame)

    def outbox_today() -> None:
        for _ in range(BATCH):
            packer.pack(outbox.outbox_form(frame))

    def outbox_msgspec() -> None:
        for _ in range(BATCH):
            encoder.encode(m_frame)

    figures = {}
    for name, today, other in (("tell", tell_today, tell_msgspec),
                               ("alert", alert_today, alert_msgspec),
                               ("outbox", outbox_today, outbox_msgspec)):
        t = min(timeit.repeat(today, number=20, repeat=7)) / 20 / BATCH * 1e6
        m = min(timeit.repeat(other, number=20, repeat=7)) / 20 / BATCH * 1e6
        figures[name] = {"today_us": round(t, 2), "msgspec_us": round(m, 2)}
        print(f"{name:8s} today {t:6.2f} us/reading   msgspec {m:6.2f} us/reading")
    today = sum(f["today_us"] for f in figures.values())
    other = sum(f["msgspec_us"] for f in figures.values())
    print(f"{'sum':8s} today {today:6.2f} us/reading   msgspec {other:6.2f} us/reading")
    print(json.dumps({"bench": "msgspec_eval", "msgspec": msgspec.__version__, **figures,
                      "today_us": round(today, 2), "msgspec_us": round(other, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
