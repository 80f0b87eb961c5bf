"""LMDB's data file read without mapping it (storage/datafile.py), against LMDB itself.

Real LMDB environments in temp dirs are written with py-lmdb, then read back
both ways. Property tests damage copies of them (truncation, pages of zeros,
any bytes at all): the reader never raises, never invents a record, and a
sound file is never called damaged however LMDB laid out its pages.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.datafile import Damage, DataFile, check_length

NAMES = ("alpha", "beta", "gamma")
# Values below and above a page: inline nodes and overflow pages both.
SIZES = (0, 8, 50, 300, 3000, 9000)


def write_env(path: Path, transactions: list[list[tuple[str, bytes, int]]]) -> lmdb.Environment:
    """An environment after ``transactions``; each op puts a value of that size (-1: deletes)."""
    env = lmdb.open(str(path), max_dbs=8, map_size=64 << 20)
    dbs = {name: env.open_db(name.encode()) for name in NAMES}
    for ops in transactions:
        with env.begin(write=True) as txn:
            for name, key, size in ops:
                if size < 0:
                    txn.delete(key, db=dbs[name])
                else:
                    txn.put(key, bytes([len(key) % 251]) * size, db=dbs[name])
    return env


def lmdb_records(env: lmdb.Environment) -> dict[str, list[tuple[bytes, bytes]]]:
    out = {}
    for name in NAMES:
        db = env.open_db(name.encode())
        with env.begin() as txn:
            out[name] = list(txn.cursor(db))
    return out


def read_all(path: Path) -> tuple[set[tuple[str, bytes, bytes]], list[Damage]]:
    """Every record the reader finds (database, key, value) and every damage it reports."""
    found: set[tuple[str, bytes, bytes]] = set()
    with DataFile(path / "data.mdb") as data:
        if data.meta is None:
            return found, []
        named, damage = data.databases()
        for name, record in named.items():
            for item in data.records(record, name):
                if isinstance(item, Damage):
                    damage.append(item)
                else:
                    found.add((name, *item))
    return found, damage


def random_transactions(seed: int, count: int = 60) -> list[list[tuple[str, bytes, int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ops = []
        for _ in range(rng.randint(1, 80)):
            key = rng.randbytes(rng.randint(1, 12))
            ops.append((rng.choice(NAMES), key, rng.choice(SIZES) if rng.random() < 0.9 else -1))
        out.append(ops)
    return out


class Template:
    """A store of a few hundred records, some on overflow pages, and what LMDB reads in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        env = write_env(path, random_transactions(7))
        self.records = {(name, k, v) for name, items in lmdb_records(env).items()
                        for k, v in items}
        env.close()

    def copy(self, to: Path) -> Path:
        shutil.rmtree(to, ignore_errors=True)
        shutil.copytree(self.path, to)
        return to

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Template({self.path})"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:
    return Template(tmp_path_factory.mktemp("template") / "env")


def test_meta_pages_say_what_lmdb_says(tmp_path: Path) -> None:
    env = write_env(tmp_path / "env", random_transactions(1, 20))
    info, psize = env.info(), env.stat()["psize"]
    env.close()
    with DataFile(tmp_path / "env" / "data.mdb") as data:
        assert data.meta_problems() == []
        assert data.meta is not None
        assert (data.meta.page_size, data.meta.last_page, data.meta.txnid) == (
            psize, info["last_pgno"], info["last_txnid"])


def test_every_database_reads_as_lmdb_reads_it(tmp_path: Path) -> None:
    env = write_env(tmp_path / "env", random_transactions(2))
    expected = lmdb_records(env)
    env.close()
    with DataFile(tmp_path / "env" / "data.mdb") as data:
        named, damage = data.databases()
        assert damage == [] and set(named) == set(NAMES)
        for name in NAMES:
            assert list(data.records(named[name], name)) == expected[name], name
            assert named[name].entries == len(expected[name])
    assert any(len(v) > 4096 for items in expected.values() for _, v in items), "no overflow"


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32))
def test_a_sound_file_is_never_called_damaged(tmp_path_factory, seed: int) -> None:
    """LMDB leaves a file shorter than its last page when the last pages are free: no alarm."""
    path = tmp_path_factory.mktemp("sound") / "env"
    env = lmdb.open(str(path), max_dbs=8, map_size=64 << 20)
    try:
        for ops in random_transactions(seed, 40):
            with env.begin(write=True) as txn:
                for name, key, size in ops:
                    db = env.open_db(name.encode(), txn=txn)
                    if size < 0:
                        txn.delete(key, db=db)
                    else:
                        txn.put(key, b"v" * size, db=db)
            assert check_length(path / "data.mdb") == []
    finally:
        env.close()
    found, damage = read_all(path)
    assert damage == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 400))
def test_a_truncated_file_is_found_and_no_record_is_invented(tmp_path, template, cut: int) -> None:
    records = template.records
    path = template.copy(tmp_path / "cut")
    data = path / "data.mdb"
    os.truncate(data, max(0, data.stat().st_size - cut * 4096))
    problems = check_length(data)
    found, damage = read_all(path)
    assert found <= records
    if not problems:
        # Whatever the check lets LMDB map, every page in use is there.
        assert damage == [] and found == records


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages=st.sets(st.integers(2, 400), max_size=4))
def test_pages_of_zeros_lose_only_what_they_held(tmp_path, template, pages: set[int]) -> None:
    """Pages after the meta pages (those are the next test's)."""
    records = template.records
    path = template.copy(tmp_path / "zeros")
    with open(path / "data.mdb", "r+b") as f:
        for page in pages:
            f.seek(page * 4096)
            f.write(bytes(4096))
    found, damage = read_all(path)
    # The pages after an overflow value's first carry no header: zeros there change the
    # value's bytes (LMDB would read them too; the store's decoders judge the value).
    sizes = {(name, key): len(value) for name, key, value in records}
    assert all(sizes.get((name, key)) == len(value) for name, key, value in found)
    if not damage:
        assert {(name, key) for name, key, _ in found} == set(sizes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20_000), st.sampled_from([b"", b"\0" * 16]))
def test_any_bytes_get_a_reason_not_an_exception(tmp_path_factory, raw: bytes, prefix: bytes) -> None:
    path = tmp_path_factory.mktemp("junk") / "data.mdb"
    path.write_bytes(prefix + raw)
    problems = check_length(path)
    assert problems and all(isinstance(p, str) and "\n" not in p for p in problems)


def test_a_garbled_meta_page_is_named_and_the_other_one_still_reads(tmp_path: Path) -> None:
    env = write_env(tmp_path / "env", random_transactions(3, 10))
    before = {(name, k, v) for name, items in lmdb_records(env).items() for k, v in items}
    write_env_marker = [("alpha", b"\xff marker", 8)]
    env.close()
    env = write_env(tmp_path / "env", [write_env_marker])
    newest = env.info()["last_txnid"] % 2  # LMDB writes transaction n into meta page n % 2
    psize = env.stat()["psize"]
    env.close()
    data = tmp_path / "env" / "data.mdb"
    with open(data, "r+b") as f:
        f.seek(newest * psize)
        f.write(b"\xff" * 64)  # the header and magic number of the newer meta page
    assert check_length(data) == [
        f"meta page {newest} is not an LMDB meta page (no magic number)"]
    found, damage = read_all(tmp_path / "env")
    # The older meta page's snapshot is intact (LMDB reuses no page of it): all but the
    # last transaction's marker.
    assert damage == [] and found == before
