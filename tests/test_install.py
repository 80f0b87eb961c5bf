"""deploy/install.sh's answers to bad input (the install itself: `make test-pi`).

These runs stop before anything is touched: the options are checked first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "install.sh"


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("args", "why"), [
    (["--bogus"], "unknown option: --bogus"),
    (["--purge"], "--purge goes with --uninstall"),
    (["--uninstall", "--no-train"], "--no-train goes with an install"),
])
def test_bad_options_get_one_line_and_exit_2(args: list[str], why: str) -> None:
    result = install(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (f"install.sh: {why} (usage: install.sh [--no-train] | "
                             "--uninstall [--purge])\n")


def test_help_tells_the_layout() -> None:
    result = install("--help")
    assert result.returncode == 0
    for where in ("/opt/wdn-gateway", "/etc/wdn-gateway/site.toml", "/var/lib/wdn-gateway",
                  "wdn-gateway.service", "--uninstall [--purge]"):
        assert where in result.stdout


def test_the_installer_installs_what_the_unit_runs() -> None:
    # The unit starts the venv and config the installer writes, as the user it creates.
    unit = (ROOT / "deploy" / "wdn-gateway.service").read_text()
    script = INSTALL.read_text()
    assert ("ExecStart=/opt/wdn-gateway/.venv/bin/python supervisor.py "
            "--config /etc/wdn-gateway/site.toml") in unit
    assert "WorkingDirectory=/opt/wdn-gateway" in unit and "User=wdn" in unit
    assert "PREFIX=/opt/wdn-gateway" in script and "CONF_DIR=/etc/wdn-gateway" in script
    assert "USER_NAME=wdn" in script and 'cp "$PREFIX/conf/pi.toml" "$CONF_DIR/site.toml"' in script
