"""Read a masklab checkpoint's metadata and model weights as numpy arrays, without importing torch.

Registering a model only copies weights into a safetensors file; importing torch for that costs
2.5-7 s on a 2-core machine, more than the rest of registering. A checkpoint written by
``torch.save`` is a zip: ``<root>/data.pkl`` (a pickle whose tensors refer to storages) and
``<root>/data/<key>`` (each storage's raw bytes). This reader unpickles ``data.pkl`` allowing only
what a weights-only checkpoint holds (dicts, OrderedDict, tensors of plain dtypes) and reads a
storage's bytes only when one of its tensors is asked for, so optimizer state is never read.
Anything else raises :class:`UnsupportedCheckpoint`; callers then fall back to ``torch.load``.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# torch's legacy typed-storage classes (what torch.save writes into the pickle) -> numpy dtypes.
# bfloat16 has no numpy dtype: such a checkpoint takes the torch path.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsupportedCheckpoint(Exception):
    """The file holds something this reader does not handle (read it with torch instead)."""


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


class _Storage:
    """One storage of the archive, read on first use."""

    def __init__(self, archive: zipfile.ZipFile, name: str, dtype: Any):
        self._archive, self._name, self.dtype = archive, name, np.dtype(dtype)
        self._data: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._data is None:
            self._data = np.frombuffer(self._archive.read(self._name), dtype=self.dtype)
        return self._data


@dataclass(frozen=True)
class LazyTensor:
    """A tensor of the checkpoint: ``numpy()`` reads its storage and returns a contiguous copy."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def numpy(self) -> np.ndarray:
        data = self.storage.array()
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.shape,
                                               strides=tuple(s * itemsize for s in self.stride))
        return np.array(view, order="C")  # a copy; ascontiguousarray would turn a 0-d tensor into shape (1,)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    requires_grad: bool, backward_hooks: Any, metadata: Any = None) -> LazyTensor:
    # The signature of torch._utils._rebuild_tensor_v2; gradients and hooks do not matter for weights.
    return LazyTensor(storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._archive, self._root = archive, root
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise UnsupportedCheckpoint(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, location, number of elements), as torch.save writes it
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsupportedCheckpoint(f"persistent id {pid!r}")
        key = str(pid[2])
        if key not in self._storages:
            self._storages[key] = _Storage(self._archive, f"{self._root}/data/{key}", pid[1].dtype)
        return self._storages[key]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's object tree with tensors as :class:`LazyTensor`; UnsupportedCheckpoint when the
    file is not a zip-format ``torch.save`` file of plain values and tensors (little-endian)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsupportedCheckpoint(f"{path}: not a zip-format torch checkpoint ({exc})") from exc
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise UnsupportedCheckpoint(f"{path}: expected one <root>/data.pkl, found {pickles}")
    root = pickles[0].split("/")[0]
    byteorder = f"{root}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).decode().strip() != "little":
        raise UnsupportedCheckpoint(f"{path}: big-endian storages")
    with archive.open(pickles[0]) as fh:
        return _Unpickler(fh, archive, root).load()


def model_weights(checkpoint: dict[str, Any], prefix: str = "model.") -> dict[str, np.ndarray]:
    """The Lightning ``state_dict`` entries under ``prefix`` (prefix removed), as contiguous arrays."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise UnsupportedCheckpoint("no state_dict")
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    odd = [k for k, v in weights.items() if not isinstance(v, LazyTensor)]
    if odd:
        raise UnsupportedCheckpoint(f"state_dict entries that are not tensors: {odd[:3]}")
    return {k: v.numpy() for k, v in weights.items()}
