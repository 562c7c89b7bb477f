"""A dataset replaced by DatasetWriter (an import with overwrite=true, `data synth` again) is never lost: a writer
killed (SIGKILL) at any step of its commit leaves the previous dataset or the new one under the dataset's name,
whole, and the next writer works. Each kill is a real one, of a forked copy of this process (no interpreter to
start per step)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import masklab.files as files
from masklab.data.check import check_dataset
from masklab.data.classes import ClassTable
from masklab.data.manifest import load_dataset
from masklab.data.writer import DatasetWriter

CLASSES = ClassTable.from_dict({"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "a"}]})
# Every call a commit makes that changes the file system; the writer is killed before the n-th of them.
STEPS = [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree"), (files, "_exchange"),
         (Path, "write_text"), (Path, "mkdir")]


def write(root: Path, prefix: str, count: int, overwrite: bool = False) -> DatasetWriter:
    """A writer of ``count`` samples ``<prefix>0..``, everything added, not committed."""
    rng = np.random.default_rng(len(prefix))
    writer = DatasetWriter(root, CLASSES, overwrite=overwrite)
    for i in range(count):
        writer.add(f"{prefix}{i}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                   (rng.random((8, 8)) > 0.5).astype(np.uint8), "train")
    return writer


def commit_killed_at(root: Path, step: int, swap: bool) -> int:
    """Fork; the child replaces the dataset at ``root`` with new0..new2 and is SIGKILLed just before the
    ``step``-th file-system change of its commit (0: never). Returns the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            writer = write(root, "new", 3, overwrite=True)
            if not swap:
                files._exchange = lambda a, b: False  # an OS without the one-step swap: two renames
            count = 0

            def deadly(fn):
                def call(*args, **kwargs):
                    nonlocal count
                    count += 1
                    if count == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return fn(*args, **kwargs)
                return call

            for owner, name in STEPS:
                setattr(owner, name, deadly(getattr(owner, name)))
            writer.commit()
            os._exit(min(count, 250))  # the number of steps, for the parent to know when to stop
        except BaseException:
            os._exit(255)
    return os.waitpid(pid, 0)[1]


@pytest.mark.parametrize("swap", [True, False], ids=["one-step swap", "two renames"])
def test_a_writer_killed_at_any_step_leaves_the_old_or_the_new_dataset(tmp_path, swap):
    if swap and not files._exchange(*(Path(p) for p in _two_folders(tmp_path))):
        pytest.skip("this OS or file system cannot swap two names in one step")
    seen = set()
    step = 1
    while True:
        root = tmp_path / f"step{step}" / "ds"
        write(root, "old", 2).commit()
        status = commit_killed_at(root, step, swap)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert killed or (os.WIFEXITED(status) and os.WEXITSTATUS(status) < 255), status
        if swap:  # the name never goes missing, not even for a moment
            assert root.is_dir(), (step, sorted(p.name for p in root.parent.iterdir()))
        ids = sorted(s.id for s in load_dataset(root).samples)  # (two renames: the reader puts the old one back)
        assert ids in (["old0", "old1"], ["new0", "new1", "new2"]), (step, ids)
        assert not [p for p in check_dataset(root) if p.severity == "error"], step
        seen.add(ids[0][:3])
        write(root, "next", 1, overwrite=True).commit()  # the next writer works, whatever was left
        assert [s.id for s in load_dataset(root).samples] == ["next0"]
        assert not [p.name for p in root.parent.iterdir() if p.name.startswith((".ds.old", ".ds.trash"))]
        if not killed:
            break
        step += 1
    assert seen == {"old", "new"} and step > 3, (seen, step)  # killed before and after the switch


def _two_folders(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "probe_a", tmp_path / "probe_b"
    a.mkdir()
    b.mkdir()
    return a, b


def test_a_reader_restores_the_old_dataset_a_cut_replacement_left_beside_it(tmp_path, caplog):
    """Without the one-step swap, a crash between the two renames leaves the dataset only as `.<name>.old`:
    load_dataset (every reader) and the next writer move it back, and say so."""
    root = tmp_path / "ds"
    write(root, "old", 2).commit()
    os.replace(root, tmp_path / ".ds.old")
    with caplog.at_level("WARNING", logger="masklab"):
        assert [s.id for s in load_dataset(root).samples] == ["old0", "old1"]
    assert "restored the previous version from .ds.old" in caplog.text
    os.replace(root, tmp_path / ".ds.old")
    with pytest.raises(Exception, match="dataset already exists; pass overwrite=true"):
        write(root, "new", 1)  # recovered first, so it is not silently replaced
