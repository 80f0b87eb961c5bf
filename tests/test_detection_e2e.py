"""End to end through the service: no initial data, criteria from the store's
own history once it holds min_days, then a leak raises NIGHT in $ALR and $SRV.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timedelta

from core import frames
from core.types import FLAG_NIGHT
from tests.harness import TZ, PeerServer, Service, run_cli, wait_for, write_config

LEAK_DAY = 10


# A fixed past Monday, not "today - 15 days": the same readings, weekdays and nights
# on every run, whatever day the suite runs on.
START_DAY = date(2026, 1, 5)


def test_criteria_from_own_history_then_leak_flags_night(tmp_path):
    start_day = START_DAY
    upstream = PeerServer()
    sim = (f"sim://?sensors=1&speed=0&seed=3&faults=leak&leak_day={LEAK_DAY}"
           f"&leak_fraction=0.3&start={start_day:%Y%m%d}&realtime_cap=0")
    config = write_config(
        tmp_path / "site.toml", serial_port=sim, upstream_port=upstream.url,
        store=tmp_path / "store.lmdb",
        sections={"criteria": {"min_days": 7},
                  "night": {"baseline_nights": 7, "min_baseline_nights": 3}},
    )
    service = Service(config).start()
    start = int(datetime.combine(start_day, datetime.min.time(), TZ).timestamp())
    leak_start = datetime.combine(start_day + timedelta(days=LEAK_DAY), datetime.min.time(), TZ)
    leak_start = int(leak_start.timestamp()) + 22 * 3600
    night_end = leak_start + 7 * 3600
    try:
        def alerts():
            return [f for f in (frames.decode(line, TZ) for line in upstream.lines())
                    if isinstance(f, frames.AlertFrame)]

        wait_for(lambda: any(a.time >= night_end + 2 * 86400 for a in alerts()),
                 timeout=180, what="two nights after the leak")
        received = [frames.decode(line, TZ) for line in upstream.lines()]
    finally:
        assert service.terminate() == 0, service.log()
        upstream.close()

    status = run_cli(config, "status").stdout
    assert "criteria v1 from store" in status, status
    assert "night: expected MNF from 7 clean nights" in status, status
    assert "NIGHT raised" in status, status
    # export detections says which evidence raised NIGHT: the statistic against
    # its threshold, the MNF against the expected one.
    explained = [json.loads(line) for line in run_cli(
        config, "export", "detections", "--sensor", "001").stdout.splitlines()]
    night = [d["night"] for d in explained if d.get("night")]
    assert night, "no NIGHT detection explained"
    assert night[0]["statistic"] > night[0]["threshold"] == 5.0
    assert night[0]["mnf"] > night[0]["expected"] > 0
    assert night[0]["evidence"] and night[0]["evidence"][-1]["night"] == night[0]["night"]
    exported = json.loads(run_cli(config, "export", "criteria").stdout)
    versions = exported["001"]
    assert versions[0]["source"] == "store" and versions[0]["days"] >= 7

    night_alerts = [a for a in received if isinstance(a, frames.AlertFrame)
                    and a.flow_flags & FLAG_NIGHT]
    assert night_alerts, "the leak was not flagged"
    first_night_flag = min(a.time for a in night_alerts)
    assert first_night_flag >= night_end, "NIGHT before the leak's first night ended"
    assert first_night_flag <= night_end + 86400, "not caught within 2 nights"
    assert not any(a.pressure_flags & FLAG_NIGHT for a in night_alerts)

    blocks = defaultdict(list)
    for f in received:
        if isinstance(f, frames.ServerReportLine):
            blocks[(f.sensor, f.time - f.time % 600)].append(f)
    assert len(blocks) > 100
    complete = [lines for lines in blocks.values() if len(lines) == 10]
    assert len(complete) == len(blocks), "every $SRV block has ten lines"
    later = [lines for (s, t), lines in blocks.items() if t > first_night_flag]
    assert any(line.flow_flags & FLAG_NIGHT for lines in later for line in lines)
    # The :00 line carries the forecast from the site's second week on; in its
    # first week an hour not seen a week earlier has none (an empty field). (In
    # this fast replay the Detector may run past its newest forecast's horizon:
    # later blocks need not all have one.)
    week = [lines for (s, t), lines in blocks.items() if t < start + 6 * 86400]
    based = [lines for (s, t), lines in blocks.items() if t >= start + 8 * 86400]
    assert week and all(lines[0].pred_flow is None for lines in week)
    assert any(lines[0].pred_flow is not None and lines[0].pred_flow > 0 for lines in based), \
        "the :00 line carries the forecast"
    assert all(line.pred_flow == 0 for lines in complete for line in lines[1:])

    # $FCD: a day goes out once every hour of it was seen a week earlier.
    fcd = defaultdict(list)
    for f in received:
        if isinstance(f, frames.DailyForecastLine):
            fcd[f.issued].append(f.day)
    assert fcd and all(len(days) <= 7 for days in fcd.values())
    assert all(len(days) == 7 for issued, days in fcd.items() if issued >= start + 8 * 86400)
    assert not any(days for issued, days in fcd.items() if issued < start + 86400)
