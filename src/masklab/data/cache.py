"""Per-sample result caches keyed by image content: the table of this dataset version, or the newest
earlier one made the same way, so unchanged images are never processed twice.

Layout: ``<cache_dir>/<kind>/<maker key>/<manifest sha256[:16]>.parquet``, each with an image_sha256
column. A cache file that cannot be read is a miss, never an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cache_file(cache_dir: str | Path, kind: str, key: str, manifest_hash: str) -> Path:
    """Where the ``kind`` results (embeddings, fingerprints) of maker ``key`` for a dataset version live."""
    return Path(cache_dir) / kind / key / f"{manifest_hash[:16]}.parquet"


def cached_table(path: Path, columns: list[str]) -> Any:
    """The pyarrow Table (``columns``, which must include image_sha256) at ``path``, else the newest earlier
    table beside it, else None."""
    import pyarrow.parquet as pq

    candidates = [path] if path.is_file() else []
    if path.parent.is_dir():
        candidates += sorted((p for p in path.parent.glob("*.parquet") if p != path),
                             key=lambda p: p.stat().st_mtime, reverse=True)[:1]
    for candidate in candidates:
        try:
            return pq.read_table(candidate, columns=columns)
        except Exception:  # noqa: BLE001 - a corrupt or foreign cache file is just a miss
            continue
    return None


def write_table(path: Path, table: Any) -> Path:
    """Write a pyarrow Table to ``path`` atomically."""
    import pyarrow.parquet as pq

    from masklab.files import atomic_write

    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
