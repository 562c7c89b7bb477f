"""Files that several processes share: one tool for each way they meet (#25).

- :func:`atomic_write`: a reader (another process, or this one after a crash) sees the old file or the new one,
  never half of one.
- :func:`file_lock`: an exclusive lock on a file, held for a block, released when the holder's process dies
  (``filelock``: ``flock`` on Unix, ``msvcrt.locking`` on Windows). The sweep's study lock and the registry's
  promotion lock.
- :func:`call_with_retry` (and :class:`Retrying`, an object whose method calls use it): waits out SQLite's
  "database is locked" with jittered back-off until a deadline (``MASKLAB_SQLITE_RETRY_S``, 120 s), for the MLflow
  store and the Optuna storage alike. A SQLite database is a file several processes share, hence here.

A base module: it imports nothing from masklab but :mod:`masklab.errors`, and nothing heavy (no MLflow, Optuna,
SQLAlchemy) at all.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from masklab.errors import UserError

log = logging.getLogger(__name__)  # "masklab.files": under masklab's root logger, as masklab.console names them
T = TypeVar("T")


# -- atomic writes ---------------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a new temporary file beside ``path``, then move it into place; returns ``path``.

    The temporary has a unique name (two writers of one target do not share it) in the target's folder (so the
    rename stays on one file system); it is flushed to disk before the rename and the folder after it, so a
    crash or power cut leaves the old file or the new one. If ``write`` raises, the old file is untouched and the
    temporary removed. ``write`` gets an existing empty file with the permissions a new file would get.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    tmp = Path(name)
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600: the file gets the mode any new file would
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    return path


def _fsync_file(path: Path) -> None:
    # The writer closed its handle; a new one reaches the same file. (Windows flushes only a handle open for writing.)
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable. Skipped where a folder cannot be opened (Windows) or synced (some file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


_umask_lock = threading.Lock()


def _umask() -> int:
    """This process's umask; read from /proc where there is one (``os.umask`` can only read it by setting it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


# -- one lock ----------------------------------------------------------------------------------------------------
class LockTimeout(UserError):
    """Another process held a :func:`file_lock` longer than the caller would wait."""


@contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for the block, against every other process (and every other
    ``file_lock`` of this process) on the same file; wait ``timeout`` seconds for it (-1: as long as it takes,
    else :class:`LockTimeout`).

    The file is created and left in place (waiters must share one file). The operating system releases the lock
    when the holder's process ends, also by kill -9: a dead holder never blocks the next one. On a file system
    without ``flock`` this raises instead of falling back to a lock file that a dead holder would leave behind.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(path, timeout=timeout, fallback_to_soft=False)
    except TypeError:  # filelock < 4 has no soft fallback to refuse
        lock = FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise LockTimeout(f"{path}: another process holds this lock; gave up after {timeout:g} s") from None
    try:
        yield
    finally:
        lock.release()


# -- one retry for SQLite's "database is locked" -----------------------------------------------------------------
LOCKED = ("database is locked", "database table is locked")
RETRY_ENV = "MASKLAB_SQLITE_RETRY_S"
# Set on callables that already retry (a Retrying object's methods): call_with_retry calls them once.
_RETRIES = "__masklab_retries_locked__"


class StillLocked(UserError):
    """The database was still locked when the retry deadline passed. Not "locked" to :func:`is_locked`: a retry
    around one that gave up must not start waiting again."""


def retry_seconds() -> float:
    return float(os.environ.get(RETRY_ENV, "120"))


def is_locked(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from or while handling) is SQLite's "database is locked"."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StillLocked):
            return False
        seen.add(id(exc))
        text = str(exc).lower()
        if any(marker in text for marker in LOCKED):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def call_with_retry(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, called again while it fails with "database is locked", with jittered exponential
    back-off (50 ms doubling to 2 s), until :func:`retry_seconds` have passed: then :class:`StillLocked`. Any other
    error is raised at once. A failed SQLite transaction was rolled back, so a retry writes nothing twice.

    The only such retry in masklab: a callable that retries already (a :class:`Retrying` object's method) is
    called once, and a :class:`StillLocked` from a retry inside ``fn`` is not retried again.
    """
    if getattr(fn, _RETRIES, False):
        return fn(*args, **kwargs)
    deadline = time.monotonic() + retry_seconds()
    delay, attempt = 0.05, 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_locked(exc):
                raise
            left = deadline - time.monotonic()
            what = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "the call"
            if left <= 0:
                raise StillLocked(f"{what}: the SQLite database is still locked after {retry_seconds():.0f} s of "
                                  "retries: another process holds a write lock on it (a stuck `mlflow ui`, run or "
                                  f"sweep?); try again, or set {RETRY_ENV} higher, or use a database server") from exc
            attempt += 1
            if attempt == 1:
                log.warning("SQLite database is locked (another process is writing); retrying %s", what)
            time.sleep(min(delay * (0.5 + random.random()), left))
            delay = min(delay * 2, 2.0)


class Retrying:
    """``inner`` whose method calls go through :func:`call_with_retry`; other attributes pass through."""

    def __init__(self, inner: Any):
        self._inner = inner

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call_with_retry(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr, *args, **kwargs)

        setattr(call, _RETRIES, True)
        return call
