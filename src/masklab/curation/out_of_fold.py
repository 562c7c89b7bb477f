"""Out-of-fold predictions on disk: one ``.npy`` per sample and an index table, read one sample at a time.

Layout of a folder written by :class:`OutOfFoldWriter`::

    index.parquet     id, fold, file, height, width, classes (C), resolution ("model" / "original")
    <safe id>.npy     the task's out-of-fold array, e.g. (C, h, w) float16 class probabilities

One file per sample keeps memory independent of the dataset's size (nothing holds N x C x H x W)
and lets a reader take any subset; ``.npy`` because numpy maps it without a decoder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masklab.data.sample_files import safe_name
from masklab.errors import UserError
from masklab.files import atomic_write

INDEX_FILE = "index.parquet"
COLUMNS = ("id", "fold", "file", "height", "width", "classes", "resolution")


class OutOfFoldWriter:
    """Adds samples' arrays to ``folder`` (created); :meth:`close` writes the index atomically."""

    def __init__(self, folder: Path, resolution: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.resolution = resolution
        self.rows: list[dict] = []

    def add(self, sample_id: str, fold: int, array: np.ndarray) -> Path:
        """Write ``array`` (C, h, w) of ``sample_id`` held out in ``fold``."""
        name = f"{safe_name(sample_id)}.npy"
        def save(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a file object: np.save would add ".npy" to the temporary's name
                np.save(f, array)

        path = atomic_write(self.folder / name, save)
        self.rows.append({"id": sample_id, "fold": int(fold), "file": name, "height": int(array.shape[-2]),
                          "width": int(array.shape[-1]), "classes": int(array.shape[0]),
                          "resolution": self.resolution})
        return path

    def close(self) -> Path:
        import pandas as pd

        table = pd.DataFrame(self.rows, columns=list(COLUMNS)).sort_values("id", kind="stable")
        return atomic_write(self.folder / INDEX_FILE, lambda tmp: table.to_parquet(tmp, index=False))


@dataclass(frozen=True)
class OutOfFoldSample:
    """One sample's out-of-fold prediction: ``array`` (C, h, w) as written."""

    id: str
    fold: int
    resolution: str
    array: np.ndarray


class OutOfFold:
    """A folder of out-of-fold predictions (see the module docstring)."""

    def __init__(self, folder: Path):
        import pandas as pd

        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if not index.is_file():
            raise UserError(f"{index} does not exist: no out-of-fold predictions there (write them with "
                            f"`masklab cv`)")
        self.index = pd.read_parquet(index)
        self._row = {sample_id: i for i, sample_id in enumerate(self.index["id"])}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ids(self) -> list[str]:
        return list(self.index["id"])

    def fold_of(self, sample_id: str) -> int:
        """The fold that held ``sample_id`` out (without reading its array)."""
        return int(self.index["fold"].iloc[self._row[sample_id]])

    def get(self, sample_id: str) -> OutOfFoldSample:
        """The prediction of ``sample_id`` (KeyError names it when it has none)."""
        if sample_id not in self._row:
            raise KeyError(f"sample '{sample_id}' has no out-of-fold prediction in {self.folder}")
        row = self.index.iloc[self._row[sample_id]]
        return OutOfFoldSample(sample_id, int(row["fold"]), str(row["resolution"]),
                               np.load(self.folder / row["file"]))

    def __iter__(self) -> Iterator[OutOfFoldSample]:
        """Every sample in id order, one array in memory at a time."""
        for sample_id in self.ids:
            yield self.get(sample_id)
