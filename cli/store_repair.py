"""``check-store`` and ``recover-store``: the operator's way out of a damaged store.

``check-store`` prints one line per problem and exits 0 (sound) or 1
(damaged). ``recover-store`` copies every record that can still be read into
a fresh store, keeps the damaged one aside and prints what it kept and
dropped: exit 0 when the store is in order afterwards (or was sound), 1 when
the recovery failed and nothing was changed. Both exit 2 with one line when
there is no store to work on or the service holds it: they hold the service
lock while they run, so the service cannot start under them either.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from storage.check import check_store, recover_store
from storage.lock import LockHeld, ServiceLock
from storage.store import StoreError

COMMANDS = ("check-store", "recover-store")
EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2


def damaged_advice(error: object, config_source: str) -> str:
    """The one line for a damaged store: what is wrong, then what the operator can do."""
    return (f"{error}; run `python supervisor.py --config {config_source} check-store` to see "
            "every problem, then `recover-store` to keep what can still be read")


def run(command: str, config: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    path = Path(config.storage.path)
    if not (path / "data.mdb").is_file():
        print(f"{command}: no store at {path} (no data.mdb there): check storage.path",
              file=sys.stderr)
        return EXIT_USAGE
    lock = ServiceLock(path)
    try:
        lock.acquire(command)
    except LockHeld as exc:
        print(f"{command}: {exc.holder} is using the store at {path}; stop it first "
              "(systemctl stop wdn-gateway)", file=sys.stderr)
        return EXIT_USAGE
    with lock:
        if command == "check-store":
            return check(path, out)
        return recover(path, config, out)


def check(path: Path, out: TextIO) -> int:
    report = check_store(path)
    for line in report.lines():
        print(line, file=out)
    kept = sum(db.kept for db in report.databases.values())
    if report.sound:
        print(f"store at {path}: sound ({kept} records)", file=out)
        return EXIT_OK
    print(f"store at {path}: DAMAGED, {len(report.lines())} problems above; "
          "`recover-store` keeps what can still be read", file=out)
    return EXIT_DAMAGED


def recover(path: Path, config: Any, out: TextIO) -> int:
    if check_store(path).sound:
        print(f"store at {path}: sound, nothing to recover", file=out)
        return EXIT_OK
    try:
        recovery = recover_store(path, map_max_mb=config.storage.map_max_mb)
    except (StoreError, OSError) as exc:
        print(f"recover-store: failed, the store at {path} is as it was: {exc}", file=sys.stderr)
        return EXIT_DAMAGED
    report = recovery.report
    for line in report.file_problems:
        print(line, file=out)
    for db in report.databases.values():
        dropped = db.undecodable + db.lost
        print(f"{db.name}: {db.kept} records kept" + (
            f", {dropped} dropped ({db.undecodable} undecodable, {db.lost} in damaged pages)"
            if dropped or db.problems else "") + (
            f"; {db.found_elsewhere} more found on pages outside the damaged tree"
            if db.found_elsewhere else ""), file=out)
    print(f"store at {path}: recovered; the damaged store is kept at {recovery.damaged_copy}",
          file=out)
    return EXIT_OK
