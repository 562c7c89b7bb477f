"""Real team services for the `team` tests: PostgreSQL, an S3-compatible server (moto) and an MLflow server on
them, each on 127.0.0.1, started inside the test run and stopped after it.

PostgreSQL comes from Debian's packages (`make postgres`). Its server refuses to run as root, so when the tests run
as root the server runs as the `postgres` user (or `nobody`) in a folder that user owns.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import NO_JOB_RUNNER, free_port, stop, wait_http

# moto accepts any credentials; these are fixed so every process of a test signs the same way.
S3_ENV = {"AWS_ACCESS_KEY_ID": "masklab-test", "AWS_SECRET_ACCESS_KEY": "masklab-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (newest version), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


def _as_user(user: pwd.struct_passwd | None):
    """A preexec_fn that drops to ``user`` (None: stay who we are)."""
    if user is None:
        return None

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)
    return drop


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server: trust authentication for ``user`` on 127.0.0.1."""

    port: int
    user: str = "masklab"

    def url(self, database: str, driver: str = "postgresql") -> str:
        """SQLAlchemy URL of ``database`` (``driver`` e.g. ``postgresql`` or ``postgresql+psycopg2``)."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        # autocommit: CREATE DATABASE cannot run in a transaction
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _wait_postgres(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import psycopg

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            psycopg.connect(host="127.0.0.1", port=port, user="masklab", dbname="postgres").close()
            return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise TimeoutError(f"PostgreSQL did not accept connections within {timeout} s: {log.read_text()[-2000:]}")


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a PostgreSQL server in a new folder; stop it and remove the folder on exit."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("Debian's PostgreSQL server is not installed (make postgres)")
    user = _server_user()
    # Not under pytest's tmp_path: that is root-only (0700), which the server's user cannot enter.
    home = Path(tempfile.mkdtemp(prefix="masklab-pg-"))
    data, sockets, log = home / "data", home / "sockets", home / "server.log"
    sockets.mkdir()
    if user is not None:
        for path in (home, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "masklab", "-A", "trust", "--no-sync",
                    "-E", "UTF8", "--locale", "C"],
                   check=True, capture_output=True, preexec_fn=_as_user(user), cwd=home)
    port = free_port()
    with open(log, "wb") as out:
        # fsync off: a test database need not survive a power cut, and it is several times faster here.
        proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                 "-k", str(sockets), "-c", "fsync=off", "-c", "synchronous_commit=off",
                                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_as_user(user), cwd=home,
                                start_new_session=True)
    try:
        _wait_postgres(port, proc, log)
        yield Postgres(port)
    finally:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back clients, stop at once
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for this test session (one per xdist worker that asks for it)."""
    if postgres_bin() is None:
        pytest.skip("Debian's PostgreSQL server is not installed (make postgres)")
    with running_postgres() as server:
        yield server


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server (moto): its endpoint and the credentials every client must use."""

    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """Environment for MLflow, DVC and boto3 clients of this server."""
        return {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL": self.endpoint}

    def create_bucket(self, name: str) -> str:
        """Create a bucket; returns ``s3://name``. Refuses a name real S3 would refuse: moto accepts one with
        ``_``, but then fails (500) the presigned GETs MLflow's clients download large artifacts with."""
        import boto3

        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
            raise ValueError(f"not an S3 bucket name: {name!r} (3-63 of a-z, 0-9, '.', '-')")

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                     region_name=S3_ENV["AWS_DEFAULT_REGION"]).create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                          region_name=S3_ENV["AWS_DEFAULT_REGION"])
        return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])]


@contextmanager
def running_s3(home: Path) -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1 (its log in ``home``); stop it on exit."""
    port = free_port()
    with open(home / "s3-server.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **S3_ENV})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", timeout=60)
        yield S3Server(endpoint)
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 for this test session (one per xdist worker that asks for it)."""
    with running_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@dataclass(frozen=True)
class TrackingServer:
    """A running MLflow server: PostgreSQL backend store, artifacts proxied to an S3 bucket."""

    url: str
    bucket: str
    admin: tuple[str, str] | None  # (user, password) when the basic-auth app guards it


def start_tracking_server(postgres: Postgres, s3: S3Server, home: Path, name: str,
                          admin_password: str | None = None) -> tuple[TrackingServer, subprocess.Popen]:
    """Start ``mlflow server`` on a new database and bucket named ``name``; with ``admin_password``, MLflow's
    basic-auth app guards it (its user store in a second database, everyone else READ by default).
    Stop the returned process with ``conftest.stop``."""
    # psycopg2, not SQLAlchemy's default psycopg 3: with psycopg 3 the server's stage transitions that archive
    # fail on PostgreSQL ("operator does not exist: integer <> character varying", mlflow#24592).
    postgres.create_database(name)
    backend = postgres.url(name, driver="postgresql+psycopg2")
    bucket = s3.create_bucket(name.replace("_", "-"))  # a database name may hold "_", a bucket's not
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend, "--artifacts-destination", f"{bucket}/artifacts", "--workers", "1"]
    env = {**os.environ, **s3.env, "MLFLOW_DISABLE_TELEMETRY": "true", **NO_JOB_RUNNER}
    env.pop("MLFLOW_TRACKING_URI", None)
    if admin_password is not None:
        auth_ini = home / "basic_auth.ini"
        auth_ini.write_text("[mlflow]\ndefault_permission = READ\n"
                            f"database_uri = {postgres.create_database(name + '_auth')}\n"
                            "admin_username = admin\n"
                            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                            # PBKDF2 on every request is slow on 2 cores; a team server caches checked passwords
                            "auth_cache_ttl_seconds = 60\n")
        # The admin's password from the environment, as a team would pass a secret: never in a file in git.
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(auth_ini), MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
                   MLFLOW_FLASK_SERVER_SECRET_KEY=f"csrf-{name}-{port}")  # CSRF key, the same for every worker
        cmd += ["--app-name", "basic-auth"]
    log = home / f"mlflow-{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            wait_http(f"{url}/health", timeout=2)
            break
        except TimeoutError:
            if proc.poll() is not None or time.time() > deadline:
                stop(proc)
                raise RuntimeError(f"mlflow server did not start: {log.read_text()[-3000:]}") from None
    return TrackingServer(url, bucket.removeprefix("s3://"),
                          ("admin", admin_password) if admin_password is not None else None), proc
