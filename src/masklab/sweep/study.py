"""Optuna objects of a sweep: the storage (any SQLAlchemy URL), sampler, pruner and study.

The default storage is a SQLite file under experiments/; several local processes may share it (a busy
timeout makes them wait for the file lock instead of failing). Any other URL (``postgresql://...``,
``mysql://...``) goes to Optuna's RDB storage unchanged: several machines can work on one study.
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from masklab.errors import UserError
from masklab.files import call_with_retry, file_lock

SQLITE_BUSY_TIMEOUT_S = 120
# A worker that dies without telling the storage leaves a RUNNING trial: heartbeats let the next
# trial of any worker mark it failed, so a resumed grid runs that point again.
HEARTBEAT_INTERVAL_S = 30
HEARTBEAT_GRACE_S = 120
SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def redact(url: str) -> str:
    """The URL without its password, for messages, tags and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: nothing to hide
        return url


def open_storage(url: str):
    """Optuna's RDB storage for ``url``; only a SQLite URL gets a busy timeout and its folder created."""
    import optuna

    if is_sqlite(url):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and not path.startswith(":memory:"):
            Path(path.split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return call_with_retry(_create_storage, url, engine_kwargs)
        except ImportError as exc:
            cause = exc.__cause__ or exc
            raise UserError(f"storage={redact(url)}: the database driver is not installed ({cause}); install it "
                            "or name one in the URL (e.g. postgresql+psycopg2://...)") from None
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"storage={redact(url)}: cannot open the Optuna storage: {first}") from None


def _create_storage(url: str, engine_kwargs: dict[str, Any]):
    """Optuna's RDBStorage; when another process creates the schema of a new database at the same moment (two
    machines starting one study), one CREATE fails on a duplicate: the schema exists now, so open it again.

    Not a second "database is locked" retry (open_storage wraps this in that one): a duplicate table is an error
    that no waiting fixes, only opening the schema the other process made."""
    import optuna

    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S)
        except Exception as exc:
            text = str(exc).lower()
            if attempt == 2 or not ("already exists" in text or "duplicate key" in text):
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _kind_and_options(node: Any, where: str, kinds: tuple[str, ...], default: str) -> tuple[str, dict[str, Any]]:
    if node is None:
        return default, {}
    if isinstance(node, str):
        node = {"type": node}
    if not isinstance(node, Mapping):
        raise UserError(f"{where}: expected {{type: {'|'.join(kinds)}, ...}}, got {node!r}")
    options = dict(node)
    kind = options.pop("type", None)
    if kind not in kinds:
        raise UserError(f"{where}: unknown type {kind!r}; expected one of {', '.join(kinds)}")
    return str(kind), options


def sampler_kind(node: Any) -> tuple[str, dict[str, Any]]:
    return _kind_and_options(node, "sweep.sampler", SAMPLERS, "tpe")


def make_sampler(node: Any, seed_offset: int = 0):
    """The preset's sampler; its seed shifted by ``seed_offset`` so workers and resumed sweeps differ.

    A grid is enqueued as fixed trials (see ``launch``), so its study only needs a sampler that is never asked.
    """
    import optuna

    kind, options = sampler_kind(node)
    if options.get("seed") is not None:
        options["seed"] = int(options["seed"]) + seed_offset
    cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
           "grid": optuna.samplers.RandomSampler}[kind]
    if kind == "grid":
        options = {"seed": options.get("seed")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return cls(**options)
        except TypeError as exc:
            raise UserError(f"sweep.sampler: {kind} does not take these options: {exc}") from None


def make_pruner(node: Any):
    import optuna

    kind, options = _kind_and_options(node, "sweep.pruner", PRUNERS, "none")
    cls = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "percentile": optuna.pruners.PercentilePruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "hyperband": optuna.pruners.HyperbandPruner}[kind]
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"sweep.pruner: {kind}: {exc}") from None


def direction_of(monitor_mode: str) -> str:
    if monitor_mode not in ("max", "min"):
        raise UserError(f"monitor_mode: expected max or min, got {monitor_mode!r}")
    return "maximize" if monitor_mode == "max" else "minimize"


def open_study(name: str, storage, direction: str | None = None, sampler=None, pruner=None):
    """Create the study or load it (``direction=None``: load only; a missing study is a UserError)."""
    import optuna

    if direction is None:
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            names = sorted(optuna.get_all_study_names(storage))
            raise UserError(f"no study '{name}' in {redact(storage.url)}; studies there: {names or 'none'}") from None
    study = call_with_retry(optuna.create_study, study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                            direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise UserError(f"study '{name}' maximizes/minimizes the other way ({study.direction.name.lower()}) "
                        f"than monitor_mode now asks ({direction}); use another study name (study=...)")
    return study


@contextmanager
def study_lock(storage, study: str) -> Iterator[None]:
    """Hold the study's lock, shared with every process on its storage (other shells, other machines).

    What a sweep decides from the study's state must not race another sweep's: which grid points to enqueue,
    which MLflow parent run to use, whether a waiting grid trial is left to take. PostgreSQL: a session advisory
    lock keyed by the study name; SQLite (processes of one machine): an exclusive lock on a file beside the
    database; MySQL: GET_LOCK. Any other storage: no lock (a warning), as before.
    """
    url = storage.url
    if is_sqlite(url):
        path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
        if not path or path.startswith(":memory:"):
            yield
            return
        with file_lock(f"{path}.{_lock_key(study) & 0xFFFFFFFF:08x}.lock"):  # released also if the process dies
            yield
        return
    from sqlalchemy import text

    dialect = storage.engine.dialect.name
    if dialect not in ("postgresql", "mysql"):
        warnings.warn(f"storage {redact(url)}: no study lock for {dialect}; two sweeps joining one grid at the "
                      "same moment may run a point twice", stacklevel=2)
        yield
        return
    with storage.engine.connect() as conn:  # one connection: both locks belong to the session holding them
        if dialect == "postgresql":
            lock, unlock = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
            key: int | str = _lock_key(study)
        else:
            lock, unlock = "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"
            key = f"masklab-study-{study}"[:64]
        conn.execute(text(lock), {"key": key})
        conn.commit()  # not idle in a transaction while the caller works
        try:
            yield
        finally:
            conn.execute(text(unlock), {"key": key})
            conn.commit()


def _lock_key(study: str) -> int:
    """A stable signed 64-bit key for ``study`` (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(f"masklab-study:{study}".encode()).digest()[:8], "big", signed=True)
