"""SQLiteStore beyond the shared interface: what survives ``kill -9``, the file's modes, its
failures (bad file, missing folder, a newer schema, a lock held too long), threads and fork."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from allm.errors import StoreError
from allm.stores import SQLiteStore, open_store
from tests.stores.conftest import ROOT


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_returned_writes_survive_kill_9(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "durable.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "tests.stores.workers", str(path), synchronous],
        stdout=subprocess.PIPE, env=env, cwd=ROOT,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        confirmed = -1
        deadline = time.monotonic() + 120
        while confirmed < 300 and time.monotonic() < deadline:  # well into the loop, then kill
            line = proc.stdout.readline()
            assert line, "the writer stopped"
            confirmed = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()  # lines printed before it died
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    confirmed = max([confirmed, *(int(x) for x in rest.split())])
    assert confirmed >= 300
    store = SQLiteStore(path)
    log = store.read("durable", "log")
    for i in range(confirmed + 1):
        record = store.get("durable", f"k{i}")
        assert record is not None and record.value == f"value {i}".encode(), i
        assert log[i] == f"item {i}".encode()
    # at most the step in flight is there beyond the last confirmed one, and nothing is torn
    assert len(log) in (confirmed + 1, confirmed + 2)
    assert log == [f"item {i}".encode() for i in range(len(log))]
    store.close()


def test_file_modes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    full = SQLiteStore(tmp_path / "b.db", synchronous="full")
    with sqlite3.connect(tmp_path / "a.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    # synchronous is per connection: 1 NORMAL, 2 FULL
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 1
    assert full._conn().execute("PRAGMA synchronous").fetchone()[0] == 2
    assert "synchronous='FULL'" in repr(full)
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "c.db", synchronous="OFF")
    store.close()
    full.close()


def test_not_an_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the bytes of a database" * 100)
    with pytest.raises(StoreError) as exc:
        SQLiteStore(path)
    assert exc.value.reason == "corrupt" and str(path) in str(exc.value)
    assert path.read_bytes().startswith(b"these are not")  # left as it was


def test_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "folder" / "x.db"
    with pytest.raises(StoreError) as exc:
        SQLiteStore(path)
    assert exc.value.reason == "unavailable" and str(path) in str(exc.value)
    assert not path.parent.exists()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError) as exc:
        SQLiteStore(path)
    assert exc.value.reason == "corrupt" and "schema 99" in str(exc.value)


def test_lock_held_too_long_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, timeout=0.2)
    store.put("ns", "k", b"v")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        for write in (lambda: store.put("ns", "k", b"w"), lambda: store.append("ns", "k", [b"x"]),
                      lambda: store.delete("ns", "k"), lambda: store.prune("ns", max_count=0)):  # fmt: skip
            with pytest.raises(StoreError) as exc:
                write()
            assert exc.value.reason == "unavailable" and "locked" in str(exc.value)
        assert store.get("ns", "k").value == b"v"  # reads go on (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.put("ns", "k", b"w") == 2
    store.close()


def test_each_thread_has_a_connection_and_dead_threads_release_theirs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    seen: list[int] = []

    def use() -> None:
        store.put("ns", "k", b"v")
        seen.append(id(store._conn()))

    for _ in range(5):
        t = threading.Thread(target=use)
        t.start()
        t.join()
    assert len(store._conns) <= 2  # the main thread's and the last thread's; the others closed
    store.close()
    assert store._conns == {}


def _child_writes(store: SQLiteStore) -> None:
    store.put("ns", "child", b"from the child")
    store.append("ns", "log", [b"child"])
    store.close()


def test_a_forked_child_opens_its_own_connections(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fork.db")
    store.put("ns", "parent", b"v")
    parent_conn = store._conn()
    proc = multiprocessing.get_context("fork").Process(target=_child_writes, args=(store,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert store._conn() is parent_conn  # the parent's connection is untouched and still works
    assert store.get("ns", "child").value == b"from the child"
    assert store.read("ns", "log") == [b"child"]
    store.close()


def test_open_store_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite://{tmp_path}/abs.db")  # sqlite:// + /abs/path
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/abs.db"
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite://sub.db?synchronous=full&timeout=2.5")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == "sub.db" and relative.synchronous == "FULL" and relative.timeout == 2.5
    relative.put("ns", "k", b"v")
    assert (tmp_path / "sub.db").exists()
    absolute.close()
    relative.close()
