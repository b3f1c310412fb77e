"""A store in one SQLite file (``sqlite:///abs/path.db``), over the standard library's
:mod:`sqlite3`. See :mod:`allm.stores.base` for the semantics every store shares.

Durability. The file is in WAL mode. With ``synchronous="NORMAL"`` (the default) a write
whose call returned is in the write-ahead log in the operating system's file cache: it
survives the process being killed (``kill -9``, a crash) but not a power loss or a kernel
crash, which can lose the last transactions (never corrupt the file). With
``synchronous="FULL"`` every write is flushed to the disk (``fsync``) before the call returns
and survives a power loss too, at the cost of one flush per write.

Concurrency. One store may be used from many threads: each thread gets its own connection
(reads run in parallel), writes in one process take a lock and then ``BEGIN IMMEDIATE``,
which also orders them against other processes using the same file. A write waits up to
``timeout`` seconds for another process's write to finish, then raises
``StoreError(unavailable)``. A conditional write (``expect=``) reads and writes in one
transaction, so it is atomic across threads and processes. After ``fork()`` the child opens
its own connections (the parent's are never used or closed in the child). The file must be
on a local file system (WAL needs shared memory between the processes; not NFS).

Async twins call the sync methods (:class:`~allm.stores.base.SyncBacked`): the operations are
local and short (a thread hop would cost more), but a write that must wait for another
process's write blocks the event loop for that wait.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError
from . import _util
from .base import Record, SyncBacked

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the files this module writes."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS records (
        namespace TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
        updated_at REAL NOT NULL, value BLOB NOT NULL, PRIMARY KEY (namespace, key))""",
    "CREATE INDEX IF NOT EXISTS records_by_age ON records (namespace, updated_at, key)",
    """CREATE TABLE IF NOT EXISTS log_items (
        namespace TEXT NOT NULL, key TEXT NOT NULL, idx INTEGER NOT NULL, item BLOB NOT NULL,
        PRIMARY KEY (namespace, key, idx))""",
)

_LENGTH = "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_items WHERE namespace = ? AND key = ?"
_READ_FROM = "SELECT item FROM log_items WHERE namespace = ? AND key = ? AND idx >= ? ORDER BY idx"
_READ_RANGE = "SELECT item FROM log_items WHERE namespace = ? AND key = ? AND idx >= ? AND idx < ? ORDER BY idx"

# Connections inherited through fork() are kept here, never used or closed in the child.
_INHERITED: list[object] = []


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (None: no bound)."""
    chars = list(prefix)
    while chars:
        c = ord(chars.pop()) + 1
        if c == 0xD800:
            c = 0xE000  # surrogates are not text; the next code point encodable in UTF-8
        if c <= 0x10FFFF:
            return "".join(chars) + chr(c)
    return None


class SQLiteStore(SyncBacked):
    """The :class:`~allm.stores.base.Store` interface over one SQLite file.

    ``path``: the database file (created if absent; its directory must exist).
    ``synchronous``: ``"NORMAL"`` (survives a killed process) or ``"FULL"`` (survives a power
    loss too); see the module docstring. ``timeout``: seconds a write waits for another
    process's write (then ``StoreError(unavailable)``). ``clock``: the time source for
    ``updated_at`` and ``prune(max_age=...)`` (seconds since the epoch).

    Raises ``StoreError``: ``unavailable`` (the file cannot be opened or created, or is
    locked longer than ``timeout``), ``corrupt`` (not an SQLite file, or written by a newer
    schema).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        sync = synchronous.upper()
        if sync not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.path = os.fspath(path)
        self.synchronous = sync
        self.timeout = float(timeout)
        self._clock = clock
        self._closed = False
        self._reset()
        with self._guard(), self._write() as conn:
            self._migrate(conn)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._conns: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._registry = threading.Lock()
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r})"

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise _util.closed()
        if os.getpid() != self._pid:
            _INHERITED.append(self._conns)
            self._reset()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            with self._registry:
                if self._closed:
                    conn.close()
                    raise _util.closed()
                for ident, (thread, old) in list(self._conns.items()):
                    if not thread.is_alive():
                        del self._conns[ident]
                        old.close()
                self._conns[threading.get_ident()] = (threading.current_thread(), conn)
            self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError as exc:  # another process is switching it
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: the file system does not support WAL mode", reason="unavailable")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer allm (schema {version}, this one reads {SCHEMA_VERSION})",
                reason="corrupt",
            )
        if version < SCHEMA_VERSION:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite's errors as ``StoreError``."""
        try:
            yield
        except sqlite3.ProgrammingError as exc:
            if self._closed:
                raise _util.closed() from None
            raise StoreError(f"{self.path}: {exc}", reason="unknown") from exc
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: {exc}", reason="unavailable") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}", reason="corrupt") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: this process's writers one at a time, then ``BEGIN
        IMMEDIATE`` (the file's write lock, waiting up to ``timeout`` for other processes)."""
        conn = self._conn()
        if not self._write_lock.acquire(timeout=self.timeout):
            raise StoreError(f"{self.path}: another writer held the lock for {self.timeout} s", reason="unavailable")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            self._write_lock.release()

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._guard():
            return self._conn().execute(sql, args).fetchall()

    # ------------------------------------------------------------------ records

    def get(self, namespace: str, key: str) -> Record | None:
        _util.check_name(namespace, key)
        rows = self._query(
            "SELECT value, version, updated_at FROM records WHERE namespace = ? AND key = ?", (namespace, key)
        )
        return Record(bytes(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def put(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int:
        _util.check_name(namespace, key)
        _util.check_expect(expect)
        value = _util.check_bytes(value)
        with self._guard(), self._write() as conn:
            row = conn.execute(
                "SELECT version FROM records WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
            have = row[0] if row else 0
            if expect is not None and expect != have:
                raise _util.conflict(namespace, key, expect, have)
            conn.execute(
                "INSERT OR REPLACE INTO records (namespace, key, version, updated_at, value) VALUES (?, ?, ?, ?, ?)",
                (namespace, key, have + 1, self._clock(), value),
            )
            return int(have + 1)

    def delete(self, namespace: str, key: str) -> bool:
        _util.check_name(namespace, key)
        with self._guard(), self._write() as conn:
            n = conn.execute("DELETE FROM records WHERE namespace = ? AND key = ?", (namespace, key)).rowcount
            n += conn.execute("DELETE FROM log_items WHERE namespace = ? AND key = ?", (namespace, key)).rowcount
            return n > 0

    def keys(self, namespace: str, *, prefix: str = "") -> list[str]:
        _util.check_name(namespace, prefix)
        end = _prefix_end(prefix)
        if end is None:
            rows = self._query(
                "SELECT key FROM records WHERE namespace = ? AND key >= ? ORDER BY key", (namespace, prefix)
            )
        else:
            rows = self._query(
                "SELECT key FROM records WHERE namespace = ? AND key >= ? AND key < ? ORDER BY key",
                (namespace, prefix, end),
            )
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ logs

    def append(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
        _util.check_name(namespace, key)
        values = _util.check_items(items)
        if not values:
            return self.length(namespace, key)
        with self._guard(), self._write() as conn:
            n = int(conn.execute(_LENGTH, (namespace, key)).fetchone()[0])
            conn.executemany(
                "INSERT INTO log_items (namespace, key, idx, item) VALUES (?, ?, ?, ?)",
                [(namespace, key, n + i, v) for i, v in enumerate(values)],
            )
            return n + len(values)

    def read(self, namespace: str, key: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        _util.check_name(namespace, key)
        with self._guard():
            conn = self._conn()
            if start >= 0 and (stop is None or stop >= 0):
                if stop is None:
                    rows = conn.execute(_READ_FROM, (namespace, key, start)).fetchall()
                else:
                    rows = conn.execute(_READ_RANGE, (namespace, key, start, stop)).fetchall()
            else:  # counted from the end: the length and the items from one snapshot
                conn.execute("BEGIN")
                try:
                    length = int(conn.execute(_LENGTH, (namespace, key)).fetchone()[0])
                    first, end = _util.slice_bounds(start, stop, length)
                    rows = conn.execute(_READ_RANGE, (namespace, key, first, end)).fetchall()
                finally:
                    conn.execute("COMMIT")
        return [bytes(r[0]) for r in rows]

    def length(self, namespace: str, key: str) -> int:
        _util.check_name(namespace, key)
        return int(self._query(_LENGTH, (namespace, key))[0][0])

    # ------------------------------------------------------------------ retention

    def prune(self, namespace: str, *, max_age: float | None = None, max_count: int | None = None) -> list[str]:
        _util.check_name(namespace, "")
        _util.check_prune(max_age, max_count)
        with self._guard(), self._write() as conn:
            drop: set[str] = set()
            if max_age is not None:
                cutoff = self._clock() - max_age
                drop.update(
                    r[0]
                    for r in conn.execute(
                        "SELECT key FROM records WHERE namespace = ? AND updated_at < ?", (namespace, cutoff)
                    )
                )
            if max_count is not None:
                drop.update(
                    r[0]
                    for r in conn.execute(
                        "SELECT key FROM records WHERE namespace = ? ORDER BY updated_at DESC, key DESC "
                        "LIMIT -1 OFFSET ?",
                        (namespace, max_count),
                    )
                )
            pairs = [(namespace, k) for k in drop]
            conn.executemany("DELETE FROM records WHERE namespace = ? AND key = ?", pairs)
            conn.executemany("DELETE FROM log_items WHERE namespace = ? AND key = ?", pairs)
            return sorted(drop)

    def close(self) -> None:
        with self._registry:
            self._closed = True
            conns, self._conns = self._conns, {}
        if os.getpid() != self._pid:
            _INHERITED.append(conns)
            return
        for _, conn in conns.values():
            conn.close()
