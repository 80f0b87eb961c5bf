"""storage.path checked on the disk (storage/location.py): by --check-config and at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.location import store_path_problem
from tests.harness import run_cli, write_config


def _bad_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Case -> (storage.path, what the one line says about it)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a store\n")
    link = tmp_path / "link-to-proc"
    link.symlink_to("/proc/self")
    return {
        "proc": ("/proc", "'/proc' is on /proc, a kernel or device file system, not a disk"),
        "below proc": ("/proc/gateway/store",
                       "'/proc/gateway/store' is on /proc, a kernel or device file system"),
        "sys": ("/sys/store", "'/sys/store' is on /sys, a kernel or device file system"),
        "dev": ("/dev/shm/store", "'/dev/shm/store' is on /dev, a kernel or device file system"),
        "dev null": ("/dev/null", "'/dev/null' is a character device, not a directory"),
        "a file": (str(a_file), f"{str(a_file)!r} is a file, not a directory"),
        "below a file": (str(a_file / "store" / "x"),
                         f"{str(a_file / 'store' / 'x')!r} is below {str(a_file)!r}, "
                         "which is a file, not a directory"),
        "link into proc": (str(link / "store"), "is on /proc, a kernel or device file system"),
    }


CASES = ["proc", "below proc", "sys", "dev", "dev null", "a file", "below a file",
         "link into proc"]


@pytest.mark.parametrize("case", CASES)
def test_no_store_outside_a_writable_disk_directory(tmp_path: Path, case: str) -> None:
    path, says = _bad_paths(tmp_path)[case]
    problem = store_path_problem(path)
    assert problem is not None and says in problem


def test_a_directory_that_exists_or_can_be_made_is_fine(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "there").mkdir()
    assert store_path_problem(tmp_path / "there") is None
    assert store_path_problem(tmp_path / "not" / "yet" / "made") is None
    monkeypatch.chdir(tmp_path)
    assert store_path_problem("data/demo.lmdb") is None  # relative: the working directory
    assert not (tmp_path / "not").exists(), "checking must create nothing"


def test_a_path_too_long_is_named_not_raised(tmp_path: Path) -> None:
    path = str(tmp_path / ("x" * 5000))
    problem = store_path_problem(path)
    assert problem is not None and problem.endswith("cannot be checked: File name too long")
    assert len(problem) < 200


@pytest.mark.parametrize("case", ["proc", "dev null", "a file", "below a file"])
@pytest.mark.parametrize("start", [("--check-config",), ()], ids=["check-config", "start"])
def test_check_config_and_start_name_storage_path_and_exit_2(
        tmp_path: Path, case: str, start: tuple[str, ...]) -> None:
    path, says = _bad_paths(tmp_path)[case]
    config = write_config(tmp_path / "site.toml", serial_port="loop://", upstream_port="-",
                          store=Path(path))
    result = run_cli(config, *start)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("config error: storage.path: ") and says in line
    assert result.stdout == ""
