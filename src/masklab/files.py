"""Files that several processes share: one tool for each way they meet (#25).

- :func:`atomic_write`: a reader (another process, or this one after a crash) sees the old file or the new one,
  never half of one.
- :func:`replace_folder`: the same for a folder (a dataset): the old one or the new one under its name, never
  neither; :func:`recover_folder` finishes what a crash cut where the OS cannot swap two names at once.
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
import shutil
import sys
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


# -- atomic folder replacement -------------------------------------------------------------------------------------
def replace_folder(staged: Path, target: Path) -> None:
    """Put the complete folder ``staged`` in place of ``target`` (existing or not) so that a crash at any moment
    leaves the old folder or the new one under ``target``'s name; ``staged`` is gone afterwards.

    Where the OS can swap two names in one step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
    ``renamex_np(RENAME_SWAP)``), that swap is the only change to ``target``'s name; the old folder, now at
    ``staged``, is removed after it. Elsewhere (Windows, file systems without the swap) the old folder is moved
    to ``.<name>.old`` first: a crash between the two renames leaves it there, and :func:`recover_folder`
    (called by every reader and writer of a dataset) moves it back.
    """
    staged, target = Path(staged), Path(target)
    for litter in target.parent.glob(f".{target.name}.trash-*"):  # what a crash left half removed
        shutil.rmtree(litter, ignore_errors=True)
    if target.exists() and _old_name(target).exists():  # a replacement cut after its second rename
        _discard(_old_name(target), target)
    if not target.exists():
        os.replace(staged, target)
    elif _exchange(staged, target):
        _discard(staged, target)  # the old folder, now under the staged name
    else:
        old = _old_name(target)
        os.replace(target, old)
        os.replace(staged, target)
        _discard(old, target)
    _fsync_folder(target.parent)


def _discard(folder: Path, target: Path) -> None:
    """Remove ``folder`` under a trash name first, so that a crash while removing it never leaves a half folder
    under a name :func:`recover_folder` would restore."""
    trash = target.with_name(f".{target.name}.trash-{os.getpid()}-{time.time_ns()}")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def recover_folder(target: Path) -> bool:
    """Move ``.<name>.old`` back to ``target`` when a :func:`replace_folder` without the OS's swap was cut
    between its two renames (``target`` missing, the old folder beside it); True when it did."""
    target = Path(target)
    old = _old_name(target)
    if target.exists() or not old.is_dir():
        return False
    try:
        os.replace(old, target)
    except OSError:  # another process recovered it first, or the folder is read-only: the caller reports what is
        return False
    log.warning("%s: restored the previous version from %s (a replacement was interrupted)", target, old.name)
    return True


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one step; False where the OS or the file system cannot.

    By hand (ctypes) because the standard library exposes neither call and no maintained package wraps them."""
    import ctypes

    if not sys.platform.startswith(("linux", "darwin")):  # (Windows has no C library to load by None)
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        done = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        done = libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap)
    else:
        return False
    if done == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):  # no swap here: two renames
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


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
