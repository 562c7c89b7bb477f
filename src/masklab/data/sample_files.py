"""The files of one sample: the file stem of its id, whether a file is there, its checksum."""

from __future__ import annotations

import hashlib
from pathlib import Path

# The longest file name (bytes, not characters) common file systems accept.
MAX_FILE_NAME_BYTES = 255


def safe_name(sample_id: str) -> str:
    """The file stem of a sample id: ``/`` (allowed in ids) becomes ``__`` (one rule for every per-sample file)."""
    return sample_id.replace("/", "__")


def file_exists(path: Path) -> bool:
    """Whether ``path`` is a file; False, not an OSError, for a name the file system cannot hold (too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
