"""Garbage on the inbound line, and malformed messages inside the service.

100,000 mutated and random lines interleaved with valid readings go through the
real service. What each line should become is decided by the codec the reader
uses (``LineSplitter`` + ``decode_reading``): the service must store every valid
reading (the first of a duplicate), alert each once, and count every reject
under its reason, keeping the newest ones for inspection. Malformed envelopes
told to every actor through the test hook are dropped and logged; no actor dies.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import datetime

import msgpack
import pytest

from actors import ACTOR_CLASSES
from core import frames
from tests.faults.helpers import encode_all, minute_stream, reading_alerts, stored_everything
from tests.harness import TZ, wait_for

BASE = int(datetime(2026, 5, 4, 0, 0, tzinfo=TZ).timestamp())
GARBAGE_LINES = 100_000
PRINTABLE = bytes(range(0x20, 0x7F))


def mutate(line: bytes, rng: random.Random) -> bytes:
    """One plausible line-noise mutation of a valid line (without its CRLF)."""
    body = bytearray(line)
    at = rng.randrange(len(body))
    kind = rng.randrange(9)
    if kind == 0:
        body[at] = rng.choice(PRINTABLE)
    elif kind == 1:
        del body[at]
    elif kind == 2:
        body.insert(at, rng.choice(PRINTABLE))
    elif kind == 3:
        del body[at:]
    elif kind == 4:
        body[at] = rng.randrange(0x80, 0x100)  # a bit flipped high
    elif kind == 5:
        fields = bytes(body).split(b",")
        i = rng.randrange(len(fields))
        body = bytearray(b",".join(fields[:i + 1] + fields[i:]))  # a field twice
    elif kind == 6:
        noise = bytearray(rng.choice(PRINTABLE) for _ in range(rng.randrange(1, 12)))
        body = noise + body  # line noise before the '$'
    elif kind == 7:
        body = body.lower()  # lower-case hex checksum: still valid
    else:
        body += bytes(rng.choice(PRINTABLE) for _ in range(rng.randrange(200, 300)))  # over-long
    return bytes(body)


def random_line(rng: random.Random) -> bytes:
    n = rng.choice((0, 1, 5, 40, 80, 200, 257, 300))
    return bytes(rng.choice(b"$*,0123456789ABCDEFWDN\r\x00\xff" + PRINTABLE) for _ in range(n))


def mutate_body(line: bytes, rng: random.Random) -> bytes:
    """A mutation made before the checksum was computed (a confused RTU): the
    checksum is right, the fields are not."""
    body = line[1:line.index(b"*")]
    mutated = mutate(body, rng)
    return b"$" + mutated + b"*%02X" % frames.checksum(mutated)


def garbage_stream(valid: list[bytes], rng: random.Random) -> bytes:
    out: list[bytes] = []
    per_valid = GARBAGE_LINES // len(valid)
    for line in valid:
        out.append(line)
        for _ in range(per_valid):
            draw = rng.random()
            if draw < 0.5:
                out.append(mutate(rng.choice(valid)[:-2], rng) + b"\r\n")
            elif draw < 0.8:
                out.append(mutate_body(rng.choice(valid)[:-2], rng) + b"\r\n")
            else:
                out.append(random_line(rng) + b"\r\n")
    return b"".join(out)


def classify(stream: bytes) -> tuple[dict[tuple[str, int], object], Counter, int, list[bytes]]:
    """What the service must make of ``stream``: (first reading per key, rejects by
    reason, duplicate count, reject lines in order)."""
    splitter = frames.LineSplitter()
    first: dict[tuple[str, int], object] = {}
    rejects: Counter = Counter()
    reject_lines: list[bytes] = []
    duplicates = 0
    for line in splitter.feed(stream) + splitter.flush():
        decoded = frames.decode_reading(line, TZ)
        if decoded is None:
            continue
        if isinstance(decoded, frames.Reject):
            rejects[str(decoded.reason)] += 1
            reject_lines.append(bytes(decoded.line))
        elif (decoded.sensor, decoded.time) in first:
            duplicates += 1
        else:
            first[(decoded.sensor, decoded.time)] = decoded
    return first, rejects, duplicates, reject_lines


@pytest.mark.slow
def test_a_hundred_thousand_garbage_lines_between_valid_readings(make_site):
    site = make_site(sections={"storage": {"rejects_max": 1000}})
    rng = random.Random(5)
    valid = encode_all(minute_stream(["001", "002", "003", "004"], BASE, 2500))
    stream = garbage_stream(valid, rng)
    expected, rejects, duplicates, reject_lines = classify(stream)
    assert sum(rejects.values()) > 75_000 and set(rejects) == set(frames.RejectReason)
    assert len(expected) > len(valid), "some mutations must stay valid readings"

    site.start()
    site.send(stream)
    wait_for(lambda: len({(a.sensor, a.time) for a in reading_alerts(site.frames())})
             >= len(expected), timeout=90, what="an $ALR for every valid reading")
    with site.open_store() as store:
        stored = stored_everything(store)
        with store.read() as view:
            counters = view.counters()
            kept = view.rejects(limit=5000)
    assert set(stored) == set(expected), "a valid reading was lost (or an invalid one stored)"
    assert all(stored[key] == reading for key, reading in expected.items())
    assert {k.removeprefix("reject."): v for k, v in counters.items() if k.startswith("reject.")} \
        == dict(rejects)
    assert counters.get("duplicates", 0) == duplicates
    assert [r.line for r in kept] == reject_lines[-1000:], "the newest rejects are kept"
    assert not site.exited()
    log = site.log()
    assert "restarting" not in log and "Traceback" not in log
    assert log.count("rejected line (") < 200, "reject logging must be rate-limited"
    assert site.stop() == 0


MALFORMED = [
    b"\xc1",  # never valid msgpack
    b"",
    msgpack.packb([1, 2]),  # not [type, version, payload]
    msgpack.packb(["no-such-type", 1, {}]),
    msgpack.packb(["readings", 1, {"rows": [["x"]]}]),  # rows of the wrong shape
    msgpack.packb(["tick", 99, {"now": 1.0}]),  # unknown version
    msgpack.packb(["outbox", 1, {"seq": "seven"}]),  # wrong field type
    msgpack.packb(["ack", 1, {"seq": 1, "extra": 2}]),  # unknown field
    b"\x91" * 100_000,  # deeply nested arrays
]


def test_malformed_messages_to_every_actor_are_dropped_and_logged(make_site):
    site = make_site()
    site.start()
    roles = [cls.role for cls in ACTOR_CLASSES]
    for role in roles:
        for raw in MALFORMED:
            site.send_to_actor(role, raw)
    for role in roles:
        wait_for(lambda: f"actors.{role}: dropped malformed message" in site.log(), timeout=10,
                 what=f"{role} to drop a malformed message")
    readings = minute_stream(["001"], BASE, 5)
    site.send(b"".join(encode_all(readings)))  # and the pipeline still works
    wait_for(lambda: len(reading_alerts(site.frames())) == 5, timeout=10, what="alerts")
    log = site.log()
    assert "restarting" not in log and "Traceback" not in log, log
    assert site.stop() == 0
    # One line for the first, the rest counted in one summary (at the latest on stop).
    log = site.log()
    for role in roles:
        assert log.count(f"actors.{role}: dropped malformed message") == 1, role
        assert f"actors.{role}: {len(MALFORMED) - 1} more in " in log, role


UPSTREAM_GARBAGE_LINES = 10_000


def test_ten_thousand_unusable_upstream_lines_make_a_few_log_lines(make_site):
    """Every unusable upstream line was logged (some 400 KB/s, an SD card's end):
    now the first of each reason is, the rest are counted in one summary each."""
    site = make_site(sections={"upstream": {"ack": True}})  # the ACKs are read only then
    rng = random.Random(8)
    acks = [frames.encode(frames.Ack(rng.randrange(1, 10**6)), TZ)[:-2] for _ in range(50)]
    garbage: list[bytes] = []
    rejects: Counter = Counter()
    while len(garbage) < UPSTREAM_GARBAGE_LINES:
        draw = rng.random()
        line = (mutate(rng.choice(acks), rng) if draw < 0.4 else
                mutate_body(rng.choice(acks), rng) if draw < 0.8 else random_line(rng))
        decoded = frames.decode_ack(line, TZ)
        if isinstance(decoded, frames.Reject) and b"\r" not in line:  # one line each
            garbage.append(line + b"\r\n")
            rejects[str(decoded.reason)] += 1
    stream = b"".join(garbage)
    assert len(rejects) == len(frames.RejectReason)

    site.start()
    site.upstream.send(stream)
    expected = ", ".join(f"{reason}={n}" for reason, n in sorted(rejects.items()))
    wait_for(lambda: f"upstream rejects: {expected}" in site.status(), timeout=30,
             what="every unusable upstream line counted")
    assert site.stop() == 0
    logged = [line for line in site.log().splitlines() if "upstream sent an unusable line" in line]
    assert len(logged) <= 2 * len(rejects), "upstream garbage floods the log"
    summaries = [re.search(r": (\d+) more in \d+ s, the last: ", line) for line in logged]
    assert sum(int(s.group(1)) if s else 1 for s in summaries) == sum(rejects.values()), \
        "the summaries carry the count of what they did not log"
