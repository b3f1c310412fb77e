"""Work that survives a crash and a race, in one SQLite file shared by processes.

1. A job of four steps journals each finished step under an idempotency key
   (``put(..., expect=0)``). The first worker process dies without any clean-up
   (``os._exit``, as ``kill -9`` would) after two steps; a second one resumes and runs only
   the two steps left: every step runs exactly once.
2. Four processes each tag one stored ``allm.Session`` at the same time. Each reads the
   session, changes it and writes it back with ``expect=<the version it read>``; a process
   that lost the race reads again. No tag is lost.

Run it: ``python examples/stores_sqlite.py`` (no key, no network, no server).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import attrs

import allm
from allm.errors import StoreError
from allm.stores import open_store

STEPS = ["fetch", "summarise", "translate", "publish"]


def run_job(url: str, job: str, crash_after: str | None) -> None:
    store = open_store(url)
    for step in STEPS:
        key = f"{job}:{step}"
        if store.get("journal", key) is not None:
            continue  # finished by an earlier run
        result = f"{step}: done by process {os.getpid()}".encode()  # the step's work
        store.put("journal", key, result, expect=0)  # fails if another worker finished it first
        store.append("runs", job, [step.encode()])
        if step == crash_after:
            os._exit(3)  # no close, no flush: the process just ends
    store.close()


def tag_session(url: str, session_id: str, tag: str) -> None:
    store = open_store(url)
    conflicts = 0
    while True:
        record = store.get("sessions", session_id)
        assert record is not None
        session = allm.Session.from_json(record.value)
        tagged = attrs.evolve(session, metadata={**session.metadata, tag: True})
        try:
            store.put("sessions", session_id, tagged.to_json(), expect=record.version)
            break
        except StoreError as exc:
            assert exc.reason == "version_conflict", exc
            conflicts += 1  # another process wrote first: read again
    store.append("tag-log", session_id, [f"{tag} after {conflicts} conflicts".encode()])
    store.close()


def main() -> None:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite://{folder}/work.db"

        # 1. crash, then resume
        first = ctx.Process(target=run_job, args=(url, "job-1", "summarise"))
        first.start()
        first.join()
        assert first.exitcode == 3
        store = open_store(url)
        assert store.read("runs", "job-1") == [b"fetch", b"summarise"]
        second = ctx.Process(target=run_job, args=(url, "job-1", None))
        second.start()
        second.join()
        assert second.exitcode == 0
        assert store.read("runs", "job-1") == [s.encode() for s in STEPS]  # each step once
        journal = [store.get("journal", f"job-1:{step}") for step in STEPS]
        by = {step: r.value.decode().rsplit(" ", 1)[1] for step, r in zip(STEPS, journal, strict=True) if r}
        assert by["fetch"] == by["summarise"] == str(first.pid)
        assert by["translate"] == by["publish"] == str(second.pid)
        print("job-1 steps:", ", ".join(f"{s} (pid {p})" for s, p in by.items()))

        # 2. four processes, one session, no lost update
        session = allm.Session.new("Plan a trip to Lisbon.")
        store.put("sessions", session.id, session.to_json(), expect=0)
        tags = [f"reviewed-by-{n}" for n in range(4)]
        procs = [ctx.Process(target=tag_session, args=(url, session.id, tag)) for tag in tags]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0
        record = store.get("sessions", session.id)
        assert record is not None and record.version == 1 + len(tags)
        stored = allm.Session.from_json(record.value)
        assert all(stored.metadata[tag] for tag in tags) and stored.thread == session.thread
        for line in store.read("tag-log", session.id):
            print(" ", line.decode())
        print(f"session {session.id}: version {record.version}, tags {sorted(stored.metadata)}")
        store.close()


if __name__ == "__main__":
    main()
