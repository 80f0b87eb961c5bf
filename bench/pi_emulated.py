"""The Raspberry Pi install, proven in an emulated Debian bookworm root (``make test-pi``).

Builds (or reuses, cached under ``.cache/pi/``) a Debian bookworm root for the
Pi's architecture with ``debootstrap`` and runs it under ``qemu-user-static``
(binfmt_misc): arm64 (64-bit Raspberry Pi OS) or armhf (32-bit). In a fresh copy
of it, as a user would on a Pi: the checkout goes to ``/root/wdn-gateway`` and
``deploy/install.sh --no-train`` runs (then again, as an upgrade in place); the
unit is checked with ``systemd-analyze verify``; the gateway runs, as the
service user through the installed ``wdn-gateway`` command, on the simulator for
``--days`` simulated days as fast as it reads, frames to a file; the frames
(checksums, sequence), ``status``, ``export`` and a clean stop (SIGTERM, exit 0)
are checked. On armhf the pure-logic and store tests also run there, against
Debian's numpy, lmdb and msgpack. Last, ``--uninstall`` and ``--purge``.

Host needs (installed with apt when missing): debootstrap, qemu-user-static,
binfmt-support. Run as root. The figures are emulated: they show that the
gateway works on ARM, not how fast a Pi is. Last line: JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import frames  # noqa: E402
from core.simulator import Simulator, SimulatorSettings  # noqa: E402
from tests.faults.helpers import rss_mb  # noqa: E402
from tests.harness import TZ, wait_for  # noqa: E402

CACHE = ROOT / ".cache" / "pi"
DEBIAN_ARCH = {"aarch64": "arm64", "armhf": "armhf"}
QEMU = {"aarch64": "qemu-aarch64", "armhf": "qemu-arm"}
MIRROR = "http://deb.debian.org/debian"
# What a Raspberry Pi OS Lite image has that debootstrap's minbase lacks.
BASE_PACKAGES = "systemd,systemd-sysv,python3,ca-certificates"
HOST_PACKAGES = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static",
                 "update-binfmts": "binfmt-support"}
CHECKOUT = "/root/wdn-gateway"
TEST_CONFIG = "/etc/wdn-gateway/emulated.toml"
MAP_MAX_ASKED_MB = 4096
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8"}
# The store and logic tests run in the armhf root against Debian's packages (the
# rest need sockets, ptys or TensorFlow and take long emulated), but not the two
# that time themselves against a PC's budget (`-k "not fast"`).
ARMHF_TESTS = ("tests/test_frames.py", "tests/test_store.py", "tests/test_criteria.py",
               "tests/test_detection.py", "tests/test_night_flow.py", "tests/test_messages.py",
               "tests/test_server_report.py", "tests/test_forecast.py", "tests/test_localtime.py",
               "tests/test_simulator.py", "tests/test_config.py")


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def ensure_host_tools(arch: str) -> None:
    """debootstrap, qemu-user-static and binfmt_misc registered for ``arch``."""
    missing = sorted({pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        print(f"installing on the host: {' '.join(missing)}", flush=True)
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *missing],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
    if not (binfmt / QEMU[arch]).exists():
        run(["update-binfmts", "--enable", QEMU[arch]])
    flags = (binfmt / QEMU[arch]).read_text()
    # F: the interpreter is opened at registration, so it works inside the root.
    if "enabled" not in flags or "flags: " not in flags or "F" not in flags.split("flags: ")[1]:
        raise SystemExit(f"binfmt_misc {QEMU[arch]} is not enabled with the F flag:\n{flags}")


def base_root(arch: str) -> Path:
    """The cached, pristine debootstrap root (built once: a few minutes emulated)."""
    deb = DEBIAN_ARCH[arch]
    base, stamp = CACHE / f"bookworm-{deb}", CACHE / f"bookworm-{deb}.ok"
    if stamp.exists():
        return base
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(base, ignore_errors=True)
    print(f"debootstrap bookworm {deb} into {base} (log: {base}.log)", flush=True)
    with open(f"{base}.log", "w") as log:
        run(["nice", "-n", "10", "debootstrap", f"--arch={deb}", "--variant=minbase",
             f"--include={BASE_PACKAGES}", "bookworm", str(base), MIRROR],
            stdout=log, stderr=subprocess.STDOUT)
    stamp.touch()
    return base


def fresh_root(arch: str) -> Path:
    """A copy of the base root with the checkout in it, as a Pi the user just set up."""
    base = base_root(arch)
    target = CACHE / f"run-{DEBIAN_ARCH[arch]}"
    if target.exists():
        run(["rm", "-rf", "--one-file-system", str(target)])
    run(["cp", "-a", "--reflink=auto", str(base), str(target)])
    for name in ("etc/resolv.conf", "etc/ssl/certs/ca-certificates.crt"):
        (target / name).unlink(missing_ok=True)
        shutil.copy(f"/{name}", target / name)
    # The working tree as a checkout (what git tracks or would: no .venv, .cache, data).
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    listed = b"\0".join(f for f in files if f and (ROOT / f.decode()).is_file())
    checkout = target / CHECKOUT.lstrip("/")
    checkout.mkdir(parents=True)
    pack = subprocess.Popen(["tar", "-C", str(ROOT), "--null", "-T", "-", "-cf", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    unpack = subprocess.Popen(["tar", "-C", str(checkout), "-xf", "-"], stdin=pack.stdout)
    assert pack.stdin is not None and pack.stdout is not None
    pack.stdin.write(listed)
    pack.stdin.close()
    pack.stdout.close()
    if pack.wait() or unpack.wait():
        raise SystemExit("copying the checkout into the root failed")
    return target


@contextmanager
def mounted(root: Path) -> Iterator[None]:
    mounts = [(["-t", "proc", "proc"], "proc"), (["-t", "sysfs", "sysfs"], "sys"),
              (["--bind", "/dev"], "dev"), (["--bind", "/dev/pts"], "dev/pts")]
    done: list[Path] = []
    try:
        for args, where in mounts:
            run(["mount", *args, str(root / where)])
            done.append(root / where)
        yield
    finally:
        for where in reversed(done):
            subprocess.run(["umount", "-l", str(where)], check=False)


def chroot(root: Path, *cmd: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    pipes: dict = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run(["chroot", str(root), *cmd], text=True, env=ENV, **pipes)


def must(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise SystemExit(f"{what} failed (exit {result.returncode}):\n"
                         f"{result.stdout}\n{result.stderr}")
    return result.stdout


def install(root: Path) -> tuple[float, str]:
    """``deploy/install.sh --no-train`` as a user runs it; then once more (an upgrade)."""
    began = time.monotonic()
    first = chroot(root, f"{CHECKOUT}/deploy/install.sh", "--no-train", stderr=subprocess.STDOUT)
    install_s = time.monotonic() - began
    print(first.stdout, end="", flush=True)
    must(first, "install.sh --no-train")
    assert "installed wdn-gateway 0." in first.stdout and "next: " in first.stdout, first.stdout
    unit = root / "etc/systemd/system/wdn-gateway.service"
    assert unit.is_file()
    wants = root / "etc/systemd/system/multi-user.target.wants/wdn-gateway.service"
    assert wants.is_symlink(), "the unit is not enabled"
    config = root / "etc/wdn-gateway/site.toml"
    config.write_text(config.read_text().replace('name = "pi-site"', 'name = "cabinet-7"'))
    again = chroot(root, f"{CHECKOUT}/deploy/install.sh", "--no-train", stderr=subprocess.STDOUT)
    must(again, "install.sh --no-train, run again")
    assert "upgraded /opt/wdn-gateway" in again.stdout and "kept /etc/wdn-gateway/site.toml" \
        in again.stdout, again.stdout
    assert 'name = "cabinet-7"' in config.read_text(), "the upgrade overwrote the configuration"
    return install_s, first.stdout


def verify_unit(root: Path) -> None:
    verify = chroot(root, "systemd-analyze", "verify", "/etc/systemd/system/wdn-gateway.service")
    # Outside a booted system it may note the absent manager; any line about our unit fails.
    problems = [line for line in (verify.stdout + verify.stderr).splitlines()
                if "wdn-gateway" in line]
    if verify.returncode != 0 or problems:
        raise SystemExit(f"systemd-analyze verify: exit {verify.returncode}\n"
                         f"{verify.stdout}{verify.stderr}")
    must(chroot(root, "wdn-gateway", "--check-config"), "wdn-gateway --check-config (site.toml)")


def write_test_config(root: Path, url: str) -> None:
    (root / TEST_CONFIG.lstrip("/")).write_text(
        '[site]\nname = "emulated"\n\n'
        f'[serial]\nport = "{url}"\n\n'
        '[upstream]\nport = "-"\n\n'
        # More than a 32-bit process can map: armhf must hold it to 1 GB and say so.
        '[storage]\npath = "/var/lib/wdn-gateway/emulated.lmdb"\n'
        f'map_max_mb = {MAP_MAX_ASKED_MB}\n\n'
        '[criteria]\ninitial_data = "/opt/wdn-gateway/conf/initial_data.csv"\n\n'
        '[train]\nmin_days = 3650\n')


def service_pid(root: Path) -> int:
    """The gateway's own process (the interpreter under qemu), not its launchers."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"supervisor.py" in cmdline and TEST_CONFIG.encode() in cmdline \
                and any(b"python" in arg for arg in cmdline[:3]) \
                and os.readlink(proc / "root") == str(root):
            return int(proc.name)
    raise LookupError("the gateway process is not running")


def alert_count(path: Path) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"$ALR,")


def run_gateway(root: Path, arch: str, days: int) -> dict[str, float]:
    """The gateway on ``days`` simulated days (3 sensors); checks frames, CLI and stop."""
    first_day = (dt.datetime.now(TZ) - dt.timedelta(days=days)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    url = f"sim://?sensors=3&speed=0&seed=1&start={first_day:%Y%m%d}&tz=Asia/Seoul"
    write_test_config(root, url)
    sim = Simulator(SimulatorSettings.from_url(url))
    now = int(time.time())
    expected = sum(1 for _ in sim.readings(sim.start, (now - sim.start) // 60))
    frames_path, log_path = CACHE / f"frames-{arch}.txt", CACHE / f"gateway-{arch}.log"
    with open(frames_path, "wb") as out, open(log_path, "wb") as err:
        service = subprocess.Popen(
            ["chroot", str(root), "wdn-gateway", "--config", TEST_CONFIG],
            stdout=out, stderr=err, env=ENV)
    try:
        t_first = wait_for(lambda: alert_count(frames_path) and time.monotonic(), timeout=300,
                           interval=0.2, what="the first $ALR")
        n_first = alert_count(frames_path)
        wait_for(lambda: alert_count(frames_path) >= expected, timeout=days * 600,
                 interval=0.5, what=f"$ALR for the {expected} simulated readings")
        readings_per_s = (expected - n_first) / (time.monotonic() - t_first)
        # At rest in real time after a housekeeping round (the store's pages leave RSS).
        time.sleep(12)
        rss = rss_mb(service_pid(root))
        status = must(chroot(root, "wdn-gateway", "--config", TEST_CONFIG, "status"), "status")
        print(status, end="")
        export = must(chroot(root, "wdn-gateway", "--config", TEST_CONFIG, "export", "readings",
                             "--sensor", "002"), "export readings")
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            code = service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.kill()
            code = service.wait()
    log = log_path.read_text(errors="replace")
    if code != 0 or "stopped (exit 0)" not in log:
        raise SystemExit(f"the gateway did not stop cleanly (exit {code}):\n{log[-3000:]}")

    decoded = [frames.decode(line, TZ) for line in frames_path.read_bytes().split(b"\r\n") if line]
    bad = [f for f in decoded if isinstance(f, frames.Reject)]
    assert not bad, f"undecodable frames: {bad[:3]}"
    assert [f.seq for f in decoded] == list(range(1, len(decoded) + 1)), "sequence gaps"
    kinds = {type(f).__name__ for f in decoded}
    # $ALR per reading, $SRV lines every 10 minutes, $FCD once a day has a forecast
    # ($HLT comes every health_interval_s of real time: maybe not in this run).
    assert {"AlertFrame", "ServerReportLine", "DailyForecastLine"} <= kinds, kinds
    for sensor in ("001", "002", "003"):
        assert f"{sensor}:" in status, status
    limit = 1024 if arch == "armhf" else MAP_MAX_ASKED_MB
    assert f"% used of {limit} MB" in status and f"map up to {limit} MB" in log, status
    held = f"cannot map {MAP_MAX_ASKED_MB} MB: map_max_mb held to 1024 MB" in log
    assert held == (arch == "armhf"), log[:3000]
    rows = export.splitlines()
    assert rows[0] == "sensor,time,flow,pressure,status", rows[:2]
    assert len(rows) - 1 >= expected // 3, (len(rows), expected)
    return {"readings_per_s": round(readings_per_s, 1), "rss_mb": round(rss, 1),
            "readings": expected, "frames": len(decoded)}


def uninstall(root: Path) -> None:
    """``--uninstall`` keeps the store and the config; ``--purge`` takes them too."""
    store = root / "var/lib/wdn-gateway/emulated.lmdb/data.mdb"
    out = must(chroot(root, f"{CHECKOUT}/deploy/install.sh", "--uninstall"), "--uninstall")
    print(out, end="")
    assert not (root / "opt/wdn-gateway").exists() and not (root / "usr/local/bin/wdn-gateway") \
        .exists() and not (root / "etc/systemd/system/wdn-gateway.service").exists(), out
    assert store.is_file() and (root / "etc/wdn-gateway/site.toml").is_file(), out
    out = must(chroot(root, f"{CHECKOUT}/deploy/install.sh", "--uninstall", "--purge"), "--purge")
    print(out, end="")
    assert not store.exists() and not (root / "etc/wdn-gateway").exists(), out
    assert "wdn:" not in (root / "etc/passwd").read_text(), out


def run_tests(root: Path) -> str:
    """The store and logic tests against the root's Debian numpy, lmdb, msgpack."""
    venv = "/opt/wdn-gateway/.venv/bin"
    must(chroot(root, f"{venv}/pip", "install", "-q", "--target", "/root/test-tools",
                "pytest", "hypothesis", "pytest-timeout"), "pip install the test tools")
    versions = must(chroot(root, f"{venv}/python", "-c",
                           "import importlib.metadata as m, numpy; print(numpy.__file__, *(f'{p} "
                           "{m.version(p)}' for p in ('numpy', 'lmdb', 'msgpack', 'pyserial', "
                           "'pykka')))"), "versions")
    print(versions, end="", flush=True)
    assert "/usr/lib/python3/dist-packages/numpy" in versions, versions
    result = chroot(root, "sh", "-c", f"cd {CHECKOUT} && PYTHONPATH={CHECKOUT}:/root/test-tools "
                    f"{venv}/python -m pytest -q -p no:cacheprovider -k 'not fast' "
                    + " ".join(ARMHF_TESTS),
                    stderr=subprocess.STDOUT)
    print(result.stdout[-1500:], end="", flush=True)
    must(result, "the tests in the armhf root")
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(DEBIAN_ARCH), default="aarch64")
    parser.add_argument("--days", type=int, default=7, help="simulated days the gateway runs")
    parser.add_argument("--no-tests", action="store_true", help="armhf: skip the test suite")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("pi_emulated.py needs root (debootstrap, chroot, mount)")
    ensure_host_tools(args.arch)
    root = fresh_root(args.arch)
    with mounted(root):
        install_s, _ = install(root)
        verify_unit(root)
        figures = run_gateway(root, args.arch, args.days)
        tests = run_tests(root) if args.arch == "armhf" and not args.no_tests else None
        uninstall(root)
    result = {"bench": "pi_emulated", "arch": args.arch, "install_s": round(install_s, 1),
              "readings_per_s": figures["readings_per_s"], "rss_mb": figures["rss_mb"],
              "simulated_days": args.days, "readings": figures["readings"],
              "frames": figures["frames"]}
    if tests:
        result["tests"] = tests
    print(json.dumps(result))


if __name__ == "__main__":
    main()
