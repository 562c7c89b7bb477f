"""A local SQLite MLflow store shared by several processes (two trainings and a promotion): waits and retries
instead of "database is locked".

SQLite lets one writer in at a time. A connection that finds the database locked waits ``busy_timeout`` for it,
but gives up at once where waiting could deadlock (a reader asking to write while another writer waits), and
MLflow turns either into an exception. Every masklab client call and every call of Lightning's MLflow logger goes
through :class:`RetryingClient`, which retries those calls with masklab's one retry for a locked SQLite database
(:func:`masklab.files.call_with_retry`: jittered back-off for up to ``MASKLAB_SQLITE_RETRY_S`` seconds, 120);
each connection waits ``MASKLAB_SQLITE_BUSY_TIMEOUT_S`` (30) before that. What this module adds is MLflow's: the
busy timeout of SQLAlchemy's connections and a server's refusal (401/403) as a one-line error. Servers
(PostgreSQL) need none of it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from masklab.files import Retrying, StillLocked, call_with_retry
from masklab.tracking.access import access_denied

T = TypeVar("T")


@functools.cache
def wait_on_locked_sqlite() -> None:
    """Make every SQLite connection SQLAlchemy opens in this process wait for a lock (once per process)."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    milliseconds = int(float(os.environ.get("MASKLAB_SQLITE_BUSY_TIMEOUT_S", "30")) * 1000)

    @event.listens_for(Engine, "connect")
    def _busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA busy_timeout = {milliseconds}")


def call_mlflow(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` under :func:`masklab.files.call_with_retry`; an MLflow server's refusal of the
    credentials or the permission comes out as a one-line :class:`~masklab.tracking.access.AccessDenied`."""
    try:
        return call_with_retry(fn, *args, **kwargs)
    except StillLocked:
        raise
    except Exception as exc:
        denied = access_denied(exc, getattr(fn, "__name__", "MLflow call"), _tracking_uri(fn))
        if denied is not None:
            raise denied from exc
        raise


def _tracking_uri(fn: Callable) -> str | None:
    """The tracking URI of the MlflowClient that ``fn`` is a bound method of, if any (for messages)."""
    owner = getattr(fn, "__self__", None)
    return getattr(getattr(owner, "_tracking_client", None), "tracking_uri", None)


class RetryingClient(Retrying):
    """An MlflowClient whose method calls retry on "database is locked"; everything else passes through."""

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call_mlflow(fn, *args, **kwargs)
