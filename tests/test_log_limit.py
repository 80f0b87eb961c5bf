"""LogLimiter: the first of each key logged, repeats counted, one summary a minute."""

from __future__ import annotations

import logging
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from core.log_limit import LogLimiter

LOGGER = "tests.log_limit"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(interval_s: float = 60.0) -> tuple[LogLimiter, Clock]:
    clock = Clock()
    return LogLimiter(logging.getLogger(LOGGER), interval_s, clock), clock


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_first_logged_repeats_summarised_with_their_count_and_the_last(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    limit, clock = limiter()
    for n in range(10_000):
        limit.warning("garbage", "unusable line %d", n)
        clock.now += 0.001
    assert lines(caplog) == ["unusable line 0"]
    clock.now += 60
    limit.flush()
    assert lines(caplog) == ["unusable line 0", "9999 more in 70 s, the last: unusable line 9999"]
    assert caplog.records[-1].levelno == logging.WARNING


def test_a_steady_flood_gives_one_summary_a_minute_without_flushes(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    limit, clock = limiter()
    for _ in range(600):  # one a second for ten minutes
        limit.error("port", "cannot open")
        clock.now += 1
    assert len(lines(caplog)) == 1 + 9
    assert all(line.startswith("60 more in 60 s") for line in lines(caplog)[1:])
    assert {r.levelno for r in caplog.records} == {logging.ERROR}


def test_keys_are_apart_and_a_quiet_key_is_news_again(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    limit, clock = limiter()
    limit.warning("a", "a once")
    limit.warning("b", "b once")
    limit.warning("a", "a again")
    clock.now += 30
    limit.flush()  # not due yet
    assert lines(caplog) == ["a once", "b once"]
    clock.now += 30
    limit.flush()
    assert lines(caplog)[2:] == ["1 more in 60 s, the last: a again"]
    clock.now += 61
    limit.flush()
    limit.warning("a", "a after a quiet minute")
    assert lines(caplog)[-1] == "a after a quiet minute"


def test_force_flush_summarises_what_is_pending_at_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    limit, clock = limiter()
    limit.warning("k", "x")
    limit.warning("k", "y %s", "z")
    clock.now += 2
    limit.flush(force=True)
    assert lines(caplog) == ["x", "1 more in 2 s, the last: y z"]
    limit.flush(force=True)
    assert len(lines(caplog)) == 2


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 90)), max_size=200))
@settings(max_examples=200, deadline=None)
def test_every_occurrence_is_logged_or_counted_and_the_lines_stay_few(events) -> None:
    records: list[logging.LogRecord] = []
    log = logging.getLogger(f"{LOGGER}.property")
    log.propagate, log.level = False, logging.INFO
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log.handlers = [handler]
    clock = Clock()
    limit = LogLimiter(log, 60.0, clock)
    started = clock.now
    for key, wait in events:
        clock.now += wait
        limit.warning(key, "event %s", key)
    limit.flush(force=True)
    counted = 0
    for record in records:
        match = re.match(r"(\d+) more in", record.getMessage())
        counted += int(match.group(1)) if match else 1
    assert counted == len(events)
    minutes = (clock.now - started) / 60
    assert len(records) <= 3 * 2 * (minutes + 2)
