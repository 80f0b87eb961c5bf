"""One service per store: a second one is refused, a lock left by ``kill -9`` is not.

Real services (``supervisor.py`` child processes) on one store: the second
exits 2 with one line naming the first one's PID and never opens the store,
while the operator's commands go on working beside the first. A service
killed with ``kill -9`` leaves its lock file behind; the kernel released the
lock, so the next start takes it over.
"""

from __future__ import annotations

import os
import shutil

import pytest

from storage.lock import LockHeld, ServiceLock, holder, lock_path
from tests.harness import Service, run_cli


def test_a_lock_is_exclusive_and_names_its_holder(tmp_path) -> None:
    store = tmp_path / "store.lmdb"
    with ServiceLock(store) as first:
        first.acquire("service")
        assert holder(store) == f"the service (pid {os.getpid()})"
        with pytest.raises(LockHeld) as refused:
            ServiceLock(store).acquire("recover-store")
        assert refused.value.holder == f"the service (pid {os.getpid()})"
    assert holder(store) is None
    with ServiceLock(store) as again:
        again.acquire("recover-store")
        assert lock_path(store).read_text() == f"{os.getpid()} recover-store\n"


@pytest.mark.slow
def test_a_second_service_on_the_same_store_is_refused(make_site, tmp_path) -> None:
    site = make_site()
    site.start()
    lock = lock_path(site.store_path)
    assert lock.read_text() == f"{site.pid} service\n"

    second_config = tmp_path / "second.toml"  # its own log file
    shutil.copy(site.config, second_config)
    second = Service(second_config).start()
    assert second.process.wait(timeout=30) == 2
    refusal = [line for line in second.log().splitlines() if "already runs" in line]
    assert len(refusal) == 1, second.log()
    assert f"the service (pid {site.pid}) already runs on the store at {site.store_path}" \
        in refusal[0]
    assert "started" not in second.log() and "Traceback" not in second.log()
    assert not site.exited() and lock.read_text() == f"{site.pid} service\n"

    # The operator's commands work beside the running service.
    assert "sensors:" in site.status()
    # (No sensor has readings yet: `train` opens the store for writing beside the
    # service all the same; a sensor named that has none is a usage error, exit 2.)
    trained = run_cli(site.config, "train")
    assert trained.returncode == 0, trained.stderr
    assert f"the service (pid {site.pid}) runs on this store" in trained.stdout
    assert site.stop() == 0


@pytest.mark.slow
def test_a_lock_left_by_kill_9_blocks_nothing(make_site) -> None:
    site = make_site()
    site.start()
    killed = site.pid
    site.kill()
    lock = lock_path(site.store_path)
    assert lock.read_text() == f"{killed} service\n", "the file stays behind"
    site.start()
    assert site.pid != killed and lock.read_text() == f"{site.pid} service\n"
    assert site.stop() == 0
