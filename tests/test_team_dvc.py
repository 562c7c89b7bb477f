"""The team's data: a DVC remote in an S3 bucket (moto's server on 127.0.0.1, tests/services.py). One machine
pushes the reproduced project; a fresh clone (a second machine: its own DVC cache, nothing shared on disk) pulls
it, and `dvc repro` there runs nothing. The commands are those of docs/team.md, "Data: a DVC S3 remote"."""

from __future__ import annotations

import os
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from masklab.data.sample_files import file_sha256

from conftest import free_port
from dvc_project import dvc, git, git_clone, ran_stages, reproduced_project
from services import S3_ENV, S3Server, s3_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.team

BUCKET = "masklab-dvc-team"
# No AWS config files and no instance metadata: the only credentials DVC can find are the variables a test
# passes, so a run on a developer's machine (~/.aws) or a cloud VM (an instance role) tests the same thing.
# A path that cannot exist (botocore skips a missing file, but refuses /dev/null itself as "not found").
_NO_FILE = os.path.join(os.devnull, "aws")
NO_AWS_FILES = {"AWS_SHARED_CREDENTIALS_FILE": _NO_FILE, "AWS_CONFIG_FILE": _NO_FILE,
                "AWS_EC2_METADATA_DISABLED": "true"}


def credentials(s3: S3Server) -> dict[str, str]:
    """What a team member exports: the key pair (and region) only. Not AWS_ENDPOINT_URL, which s3_server.env
    also holds: the endpoint must come from the committed DVC config."""
    return {**NO_AWS_FILES, **{k: s3.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                       "AWS_DEFAULT_REGION")}}


def output_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file of every stage output recorded in ``root``'s dvc.lock, keyed by relative path."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    out_paths = [root / out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    files = [f for p in out_paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f.relative_to(root)): file_sha256(f) for f in files}


@dataclass(frozen=True)
class Pushed:
    """The first machine's repository after `dvc push` to the S3 remote, and what the push left."""

    repo: Path
    push_output: str
    bucket_keys: list[str]


@pytest.fixture(scope="module")
def pushed(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Pushed:  # noqa: F811
    """The reproduced project with the S3 remote `team` as default, committed, then pushed."""
    repo = reproduced_project(tmp_path_factory, mlflow_template)
    s3_server.create_bucket(BUCKET)
    dvc("remote", "add", "-d", "team", f"s3://{BUCKET}/cache", cwd=repo)
    dvc("remote", "modify", "team", "endpointurl", s3_server.endpoint, cwd=repo)
    git("add", ".dvc/config", cwd=repo)
    git("commit", "-qm", "DVC remote: S3 bucket", cwd=repo)
    done = dvc("push", cwd=repo, env=credentials(s3_server))
    return Pushed(repo, done.stdout, s3_server.keys(BUCKET))


@pytest.fixture(scope="module")
def pulled(pushed: Pushed, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A fresh clone in another folder, pulled from the bucket."""
    # Not a sibling of the first repository: the project's old default remote (../../masklab-dvc-remote from
    # .dvc/) resolves elsewhere, so no byte can arrive through the file system.
    clone = git_clone(pushed.repo, tmp_path_factory.mktemp("machine2") / "project")
    cache = Path(dvc("cache", "dir", cwd=clone).stdout.strip())
    assert cache == clone / ".dvc" / "cache" and not cache.exists()  # its own, empty cache
    assert not (clone / "pipeline/train/model.ckpt").exists()  # DVC's outputs are not in git
    dvc("pull", cwd=clone, env=credentials(s3_server))
    return clone


def test_push_fills_the_bucket_and_git_holds_no_secret(pushed: Pushed, s3_server: S3Server) -> None:  # noqa: F811
    """Every object of the local cache is in the bucket, under the remote's prefix; the committed config names
    the bucket and the endpoint, never a credential."""
    repo = pushed.repo
    local = {str(f.relative_to(repo / ".dvc" / "cache")) for f in (repo / ".dvc/cache/files").rglob("*")
             if f.is_file()}
    assert local and {f"cache/{key}" for key in local} == set(pushed.bucket_keys)
    assert any(key.endswith(".dir") for key in pushed.bucket_keys)  # the directory listings travel too
    assert "pushed" in pushed.push_output
    assert not (repo.parent / "masklab-dvc-remote").exists()  # nothing went to the old local remote

    committed = git("show", "HEAD:.dvc/config", cwd=repo)
    config = ConfigParser()
    config.read_string(committed)  # DVC writes section names quoted: ['remote "team"']
    assert dict(config["'remote \"team\"'"]) == {"url": f"s3://{BUCKET}/cache", "endpointurl": s3_server.endpoint}
    assert config["core"]["remote"] == "team"
    for secret in S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"]:
        assert secret not in committed
    assert not (repo / ".dvc" / "config.local").exists()  # no secret needed a --local setting either
    assert "in sync" in dvc("status", "--cloud", cwd=repo, env=credentials(s3_server)).stdout


def test_fresh_clone_pulls_the_same_bytes_and_repro_runs_nothing(pushed: Pushed, pulled: Path) -> None:
    """After `dvc pull` on the second machine every stage output is byte-identical to the first's, and
    `dvc repro` has nothing to do."""
    mine, theirs = output_hashes(pushed.repo), output_hashes(pulled)
    assert "pipeline/train/model.ckpt" in theirs and any(p.startswith("data/synthetic/masks/") for p in theirs)
    assert theirs == mine
    assert "up to date" in dvc("status", cwd=pulled).stdout
    done = dvc("repro", cwd=pulled)
    assert ran_stages(done.stdout) == [] and "up to date" in done.stdout


def test_wrong_endpoint_or_missing_credentials_fail_the_push(pulled: Path, s3_server: S3Server) -> None:  # noqa: F811
    """What DVC says (masklab wraps neither push nor pull): a closed endpoint -> 'Could not connect to the
    endpoint URL' with the URL; no credentials -> 'Unable to locate credentials'. Neither names the remote or
    the variables to set: docs/team.md does."""
    closed = f"http://127.0.0.1:{free_port()}"
    # The wrong endpoint only in this clone's untracked config.local, as a user would try one out.
    dvc("remote", "modify", "--local", "team", "endpointurl", closed, cwd=pulled)
    try:
        # One attempt: botocore's default retries add ~8 s of back-off before the same message.
        failed = dvc("push", cwd=pulled, check=False, env={**credentials(s3_server), "AWS_MAX_ATTEMPTS": "1"})
    finally:
        (pulled / ".dvc" / "config.local").unlink()
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0 and f'Could not connect to the endpoint URL: "{closed}/' in said, said

    no_keys = {**credentials(s3_server), "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    failed = dvc("push", cwd=pulled, check=False, env=no_keys)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "Unable to locate credentials" in said, said
