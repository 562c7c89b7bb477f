"""masklab.files: the one atomic write, the one file lock and the one "database is locked" retry (#25)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from masklab import files
from masklab.files import LockTimeout, Retrying, StillLocked, atomic_write, call_with_retry, file_lock, is_locked


# -- atomic_write ------------------------------------------------------------------------------------------------
def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def broken(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_a_write_replaces_the_file_leaves_no_temporary_and_gives_a_new_files_mode(tmp_path: Path):
    target = tmp_path / "sub" / "manifest.jsonl"  # the folder is created
    seen = []
    assert atomic_write(target, lambda tmp: (seen.append(tmp), tmp.write_text("one"))) == target
    assert atomic_write(target, lambda tmp: (seen.append(tmp), tmp.write_text("two"))) == target
    assert target.read_text() == "two" and os.listdir(target.parent) == ["manifest.jsonl"]
    assert seen[0] != seen[1] and all(t.parent == target.parent and t.name.startswith(".manifest.jsonl.") for t in seen)
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600


def test_two_writers_of_one_target_leave_one_complete_file(tmp_path: Path):
    target = tmp_path / "weights.bin"
    halfway = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def writer(byte: bytes) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                f.write(byte * 500_000)
                f.flush()
                halfway.wait()  # both are half-way through their file at this moment
                f.write(byte * 500_000)

        try:
            atomic_write(target, write)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(b,)) for b in (b"a", b"b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    data = target.read_bytes()
    assert data in (b"a" * 1_000_000, b"b" * 1_000_000)
    assert os.listdir(tmp_path) == ["weights.bin"]


# -- file_lock -----------------------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from masklab.files import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _start_holder(lock: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_the_lock_excludes_another_process_and_a_killed_holder_releases_it(tmp_path: Path):
    lock = tmp_path / "store.db.registry.lock"
    holder = _start_holder(lock)
    try:
        start = time.monotonic()
        with pytest.raises(LockTimeout, match="another process holds this lock"):
            with file_lock(lock, timeout=0.3):
                pytest.fail("got a lock another process holds")
        assert time.monotonic() - start >= 0.3
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with file_lock(lock, timeout=5):  # the dead holder's lock went with its process
            assert lock.exists()
    finally:
        holder.kill()
        holder.wait(10)


def test_a_waiter_gets_the_lock_once_it_is_released(tmp_path: Path):
    lock = tmp_path / "x.lock"
    order: list[str] = []
    with file_lock(lock):
        waiter = threading.Thread(target=lambda: file_lock_and(lock, lambda: order.append("waiter")))
        waiter.start()
        time.sleep(0.2)
        order.append("holder")
    waiter.join(10)
    assert order == ["holder", "waiter"]


def file_lock_and(lock: Path, then) -> None:
    with file_lock(lock, timeout=10):
        then()


def test_the_sweep_study_imports_where_there_is_no_fcntl():
    code = "import sys; sys.modules['fcntl'] = None; import masklab.sweep.study, masklab.files; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


# -- call_with_retry ----------------------------------------------------------------------------------------------
class FakeClock:
    """time.monotonic and time.sleep for masklab.files: sleeping moves the clock, nothing waits."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(files, "time", fake)
    monkeypatch.setattr(files, "random", SimpleNamespace(random=lambda: 0.5))  # jitter factor 0.5 + 0.5
    monkeypatch.setenv("MASKLAB_SQLITE_RETRY_S", "10")
    return fake


def test_a_locked_database_is_retried_until_it_is_free(clock: FakeClock):
    calls = []

    def flaky():
        calls.append(clock.now)
        if len(calls) < 4:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert call_with_retry(flaky) == "ok" and len(calls) == 4
    assert clock.sleeps == [0.05, 0.1, 0.2]  # back-off doubling (the jitter factor fixed at 1)


def test_a_lock_is_retried_until_the_deadline_then_still_locked(clock: FakeClock):
    calls = []

    def locked():
        calls.append(clock.now)
        raise RuntimeError("(sqlite3.OperationalError) database is locked")

    start = clock.now
    with pytest.raises(StillLocked, match="still locked after 10 s") as info:
        call_with_retry(locked)
    assert len(calls) > 5 and calls[-1] - start >= 10 and calls[-2] - start < 10  # retried up to the deadline
    assert max(clock.sleeps) <= 2.0 * 1.5 and is_locked(info.value.__cause__)
    assert not is_locked(info.value)


def test_other_errors_are_not_retried(clock: FakeClock):
    calls = []

    def missing():
        calls.append(1)
        raise sqlite3.OperationalError("no such table: runs")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        call_with_retry(missing)
    assert calls == [1] and clock.sleeps == []


def test_a_lock_wrapped_in_another_error_is_retried(clock: FakeClock):
    calls = []

    def wrapped():
        calls.append(1)
        if len(calls) == 1:
            try:
                raise sqlite3.OperationalError("database table is locked")
            except sqlite3.OperationalError as exc:
                raise ValueError("API request failed") from exc
        return 7

    assert call_with_retry(wrapped) == 7 and len(calls) == 2


def test_retries_do_not_nest(clock: FakeClock):
    class Store:
        calls = 0

        def write(self):
            Store.calls += 1
            raise sqlite3.OperationalError("database is locked")

    store = Retrying(Store())
    with pytest.raises(StillLocked):
        call_with_retry(store.write)  # a retrying method is called once, not retried around its own retry
    inner_calls, waited = Store.calls, clock.now - 1000.0
    assert 10 <= waited < 13

    def outer():
        return store.write()  # a StillLocked from a retry inside is not retried again

    Store.calls = 0
    start = clock.now
    with pytest.raises(StillLocked):
        call_with_retry(outer)
    assert Store.calls == inner_calls and clock.now - start < 13
