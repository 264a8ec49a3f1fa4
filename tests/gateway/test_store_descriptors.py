"""A closed store leaves no descriptor of its database open, whichever threads used it.

The API answers from worker threads, each with its own connection (gateway/store.py
thread_connection). Before, a finished thread's connection waited for the garbage
collector, and SQLite keeps a closed connection's descriptor while any other connection
to the file is open: the suite ran out of select()'s 1024 descriptors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from gateway.store import StateStore


def open_on(database: Path) -> int:
    """This process's descriptors on the database and its -wal and -shm files."""
    names = {str(database), f"{database}-wal", f"{database}-shm"}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") in names
        except OSError:  # the listing's own descriptor, closed meanwhile
            continue
    return count


def test_closing_a_store_closes_the_connections_of_threads_that_used_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)  # the calling thread's connection makes the schema
    workers = [threading.Thread(target=store.alerts_live) for _ in range(5)]  # five API requests, one thread each
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert open_on(path) >= 1
    store.close()
    assert open_on(path) == 0


def test_threads_one_after_another_leave_one_connection_open_not_one_each(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.close()
    for _ in range(20):  # twenty requests, each on a thread that ends (as the API's worker threads do)
        worker = threading.Thread(target=store.alerts_live)
        worker.start()
        worker.join()
    # Each opening closes the ended threads' connections: the last thread's stays open (its
    # database and -wal files, and the -shm all connections share), plus at most one database
    # descriptor SQLite parks instead of closing while another connection holds a lock on the
    # file (and reuses for the next opening): 2 + 1 + 1 = 4, where one connection per thread
    # left to the garbage collector held 20 x 2 + 1 = 41.
    assert open_on(path) <= 4
    store.close()
    assert open_on(path) == 0
