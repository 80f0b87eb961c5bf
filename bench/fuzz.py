"""Fuzzing for longer: every parser that takes outside bytes, each for a time budget.

The targets are those of ``tests/test_fuzz.py`` (``tests/fuzz_targets.py``):
inbound frames, upstream lines, TOML configuration, command-line times and
sensor ids. Each runs in rounds of hypothesis examples (no example database:
every round draws afresh) until its ``--seconds`` are spent, or until it
fails: then its shrunk failing input is printed and it counts one crash.

Prints one line per target, and last a JSON line:
``{"bench": "fuzz", "targets": N, "inputs": M, "crashes": 0, "seconds": S}``.
Exit status 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzz_targets import TARGETS, Target, run_target  # noqa: E402

ROUND = 100  # examples per hypothesis run: the budget is checked between rounds


def fuzz(target: Target, seconds: float) -> tuple[int, int, float]:
    """(inputs checked, crashes, seconds spent) of ``target`` within ``seconds``."""
    start = time.monotonic()
    inputs = 0

    def counted(data: object) -> None:
        nonlocal inputs
        inputs += 1
        target.check(data)

    while time.monotonic() - start < seconds:
        try:
            run_target(dataclasses.replace(target, check=counted), ROUND, database=False)
        except Exception as exc:  # noqa: BLE001 - any failure of the target is the finding
            print(f"{target.name}: CRASH {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
            return inputs, 1, time.monotonic() - start
    return inputs, 0, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="time budget of each target (default 60)")
    parser.add_argument("--target", action="append", choices=[t.name for t in TARGETS],
                        help="only this target (repeatable); default all")
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if not args.target or t.name in args.target]
    total_inputs = total_crashes = 0
    began = time.monotonic()
    for target in chosen:
        inputs, crashes, spent = fuzz(target, args.seconds)
        total_inputs += inputs
        total_crashes += crashes
        print(f"{target.name}: {inputs} inputs in {spent:.1f} s ({inputs / spent:.0f}/s), "
              f"{crashes} crashes", flush=True)
    print(json.dumps({"bench": "fuzz", "targets": len(chosen), "inputs": total_inputs,
                      "crashes": total_crashes,
                      "seconds": round(time.monotonic() - began, 1)}))
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
