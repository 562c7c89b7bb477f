"""A local SQLite MLflow store shared by several processes (two trainings and a promotion): waits and retries
instead of "database is locked".

SQLite lets one writer in at a time. A connection that finds the database locked waits ``busy_timeout`` for it,
but gives up at once where waiting could deadlock (a reader asking to write while another writer waits), and
MLflow turns either into an exception. Every masklab client call and every call of Lightning's MLflow logger goes
through :class:`RetryingClient`, which retries those calls (a failed SQLite transaction was rolled back, so a
retry writes nothing twice) with jittered exponential back-off for up to ``MASKLAB_SQLITE_RETRY_S`` seconds (120);
each connection waits ``MASKLAB_SQLITE_BUSY_TIMEOUT_S`` (30) before that. Servers (PostgreSQL) need none of it.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from masklab.console import logger
from masklab.errors import UserError
from masklab.tracking.access import access_denied

log = logger(__name__)
T = TypeVar("T")
LOCKED = "database is locked"


def retry_seconds() -> float:
    return float(os.environ.get("MASKLAB_SQLITE_RETRY_S", "120"))


@functools.cache
def install_busy_timeout() -> None:
    """Make every SQLite connection SQLAlchemy opens in this process wait for a lock (once per process)."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    milliseconds = int(float(os.environ.get("MASKLAB_SQLITE_BUSY_TIMEOUT_S", "30")) * 1000)

    @event.listens_for(Engine, "connect")
    def _busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA busy_timeout = {milliseconds}")


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is SQLite's "database is locked"."""
    while exc is not None:
        if LOCKED in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def call_with_retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried while it fails with "database is locked", up to :func:`retry_seconds`."""
    deadline = time.monotonic() + retry_seconds()
    delay, attempt = 0.05, 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_locked(exc):
                denied = access_denied(exc, getattr(fn, "__name__", "MLflow call"), _tracking_uri(fn))
                if denied is not None:
                    raise denied from exc
                raise
            if time.monotonic() >= deadline:
                raise UserError(f"the MLflow store is still locked after {retry_seconds():.0f} s of retries: another "
                                "process holds a write lock on it (a stuck `mlflow ui` or run?); try again, or set "
                                "MASKLAB_SQLITE_RETRY_S higher, or use a tracking server") from exc
            attempt += 1
            if attempt == 1:
                log.warning("MLflow store: database is locked (another process is writing); retrying %s",
                            getattr(fn, "__name__", "the call"))
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def _tracking_uri(fn: Callable) -> str | None:
    """The tracking URI of the MlflowClient that ``fn`` is a bound method of, if any (for messages)."""
    owner = getattr(fn, "__self__", None)
    return getattr(getattr(owner, "_tracking_client", None), "tracking_uri", None)


class RetryingClient:
    """An MlflowClient whose method calls retry on "database is locked"; everything else passes through."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return call_with_retry(attr, *args, **kwargs)

        return call
