"""A dataset cannot point outside itself: manifest paths (and objects files' mask PNGs) that are absolute, hold a
``..`` or are symlinks leading out of the dataset folder are refused when the dataset is loaded, by every reader
(load_dataset, `data check`, training, the explore server), with the row and the value named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_check import read_rows, write_rows

from masklab.data.check import check_dataset
from masklab.data.classes import ClassTable
from masklab.data.errors import DatasetFormatError, short_repr
from masklab.data.manifest import load_dataset
from masklab.data.objects import ObjectError, read_objects
from masklab.data.paths import path_problem
from masklab.data.writer import DatasetWriter

CLASSES = ClassTable.from_dict({"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "a"}]})
H, W = 32, 32


def make_dataset(root: Path) -> Path:
    """Four samples (train, train, val, test) written by DatasetWriter, as any importer writes them."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, CLASSES) as w:
        for i, split in enumerate(["train", "train", "val", "test"]):
            w.add(f"s{i}", rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                  (rng.random((H, W)) > 0.5).astype(np.uint8), split)
        w.commit()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable PNG outside every dataset folder: what a crafted manifest would try to read."""
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(secret)
    return secret


def crafted(tmp_path: Path, outside: Path, how: str) -> tuple[Path, str, str]:
    """A dataset whose second row (line 2) points outside it in the way ``how`` names: (root, field, value)."""
    root = make_dataset(tmp_path / "ds")
    table = read_rows(root)
    row = table[1]
    if how == "absolute":
        row["image"] = str(outside)
    elif how == "dotdot":
        row["mask"] = "masks/../../private/secret.png"
    elif how == "windows":
        row["image"] = "C:\\Users\\me\\secret.png"
    elif how == "backslash_dotdot":
        row["mask"] = "..\\private\\secret.png"
    elif how == "file_link":
        target = root / row["image"]
        target.unlink()
        target.symlink_to(outside)
    elif how == "folder_link":
        moved = tmp_path / "elsewhere"
        (root / "masks").rename(moved)
        (root / "masks").symlink_to(moved, target_is_directory=True)
    write_rows(root, table)
    field = {"absolute": "image", "windows": "image", "file_link": "image"}.get(how, "mask")
    return root, field, row[field]


HOW = ["absolute", "dotdot", "windows", "backslash_dotdot", "file_link", "folder_link"]


@pytest.mark.parametrize("how", HOW)
def test_load_refuses_a_path_that_leaves_the_dataset(tmp_path, outside, how):
    root, field, value = crafted(tmp_path, outside, how)
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(root)
    message = str(err.value)
    line, value = (1, "masks/s0.png") if how == "folder_link" else (2, value)  # the first row under the folder
    assert f"manifest.jsonl:{line}: bad manifest row: found {field} {short_repr(value)}" in message, message
    assert "relative to the dataset folder" in message
    if how in ("file_link", "folder_link"):
        assert "symlink" in message and str(tmp_path) in message  # where it leads


@pytest.mark.parametrize("how", ["absolute", "file_link", "folder_link"])
def test_data_check_lists_the_row_that_leaves_the_dataset(tmp_path, outside, how):
    root, field, value = crafted(tmp_path, outside, how)
    problems = check_dataset(root)
    hits = [p for p in problems if p.file == "manifest.jsonl:2" and p.kind == "bad manifest row"]
    assert hits and f"{field} {short_repr(value)}" in hits[0].found, problems
    if how == "folder_link":  # each row under the linked folder is named, not only the first
        named = {p.file for p in problems if p.kind == "bad manifest row"}
        assert named == {f"manifest.jsonl:{n}" for n in (1, 2, 3, 4)}, named
    # and nothing of the file outside was read: its "image" is not checked as one of the dataset's
    assert not [p for p in problems if str(outside) in p.file]


def test_training_and_the_explore_server_refuse_it(tmp_path, outside, project, cli):
    """Every reader gets its samples from load_dataset: training and `masklab explore` (whose thumbnail endpoint
    would otherwise serve the file) stop with the row named, as a user mistake (exit 2, no traceback)."""
    root, field, value = crafted(tmp_path, outside, "absolute")
    for args in (["train", f"data.root={root}", "check_data=false", "trainer.max_epochs=1"],
                 ["explore", f"dataset_root={root}", "port=0"]):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert f"found {field} {short_repr(value)}" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_links_inside_the_dataset_or_into_the_dvc_cache_are_kept(tmp_path):
    """A symlink that stays in the dataset folder loads; so does DVC's `cache.type symlink` checkout, whose files
    are links into the project's .dvc/cache."""
    project = tmp_path / "proj"
    root = make_dataset(project / "data" / "ds")
    table = read_rows(root)
    (root / "images" / "copy.png").symlink_to(root / table[0]["image"])
    table[0]["image"] = "images/copy.png"
    cached = project / ".dvc" / "cache" / "files" / "md5" / "ab" / "cdef"
    cached.parent.mkdir(parents=True)
    (root / table[1]["mask"]).rename(cached)
    (root / table[1]["mask"]).symlink_to(cached)
    write_rows(root, table)
    assert [s.id for s in load_dataset(root).samples] == ["s0", "s1", "s2", "s3"]
    assert not [p for p in check_dataset(root) if p.severity == "error"]


def test_an_objects_files_mask_png_cannot_leave_the_dataset(tmp_path, outside):
    root = make_dataset(tmp_path / "ds")
    (root / "objects").mkdir()
    Image.fromarray(np.ones((H, W), np.uint8)).save(root / "objects" / "inside.png")
    (root / "objects" / "link.png").symlink_to(outside)
    sample = load_dataset(root).samples[0]
    for png, why in (("objects/inside.png", None), ("objects/link.png", "symlink"), (str(outside), "absolute")):
        (root / "objects" / "s0.json").write_text(json.dumps([{"class_id": 1, "mask": {"png": png}}]))
        sample.objects = "objects/s0.json"
        if why is None:
            assert len(read_objects(root, sample)) == 1
            continue
        with pytest.raises(ObjectError) as err:
            read_objects(root, sample)
        assert why in str(err.value) and "objects/s0.json" in str(err.value)


@pytest.mark.parametrize("value, problem", [
    ("images/a.png", None), ("a.png", None), ("images/./a.png", None), ("images/a..b.png", None),
    ("", "an empty path"), ("/etc/passwd", "an absolute path"), ("\\\\host\\share\\a.png", "an absolute path"),
    ("D:a.png", "an absolute path"), ("images/../../x.png", "a '..' component"), ("..", "a '..' component"),
    ("images\\..\\..\\x.png", "a '..' component"),
])
def test_path_problem_is_lexical(value, problem):
    assert path_problem(value) == problem


def test_a_large_manifest_loads_without_a_realpath_per_file(tmp_path, monkeypatch):
    """The link check resolves each folder once, not each file (a 100 000-row manifest stays quick to load)."""
    root = make_dataset(tmp_path / "ds")
    calls: list[str] = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: calls.append(str(p)) or real(p, *a, **k))
    load_dataset(root)
    assert len(calls) <= 4, calls  # the dataset folder and its two folders (images/, masks/)
