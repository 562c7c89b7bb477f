"""Tests for masklab.data.check: every corruption of a dataset on disk is found and listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masklab.data.check import Problem, check_cached, check_dataset, format_problems
from masklab.data.classes import ClassTable
from masklab.data.writer import DatasetWriter

CLASSES = ClassTable.from_dict({"classes": [{"id": i, "name": n} for i, n in enumerate(["bg", "a", "b"])]})
W, H = 16, 12


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def mask(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, (H, W), dtype=np.uint8)


def make_dataset(root: Path, splits: list[str]) -> Path:
    """Samples s0.. in the given splits, written through DatasetWriter like any importer."""
    with DatasetWriter(root, CLASSES) as w:
        for i, split in enumerate(splits):
            w.add(f"s{i}", image(i), mask(i), split)
        w.commit()
    return root


def read_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]


def write_rows(root: Path, rows: list[dict]) -> None:
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def found(problems: list[Problem], file: str, kind: str, severity: str = "error") -> Problem:
    hits = [p for p in problems if p.file == file and p.kind == kind and p.severity == severity]
    assert hits, f"no {severity} '{kind}' for {file} in:\n{format_problems(problems)}"
    return hits[0]


def test_clean_dataset_has_no_problems(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["train", "train", "val", "test"])
    assert check_dataset(root) == []
    assert format_problems([]) == "no problems found"


def test_every_corruption_is_listed(tmp_path: Path) -> None:
    splits = ["train"] * 14 + ["val", "test"]
    root = tmp_path / "ds"
    exif_jpeg = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(image(99)).save(exif_jpeg, exif=exif)
    with DatasetWriter(root, CLASSES) as w:
        for i, split in enumerate(splits):
            w.add(f"s{i}", image(i), mask(i), split)
        w.add("exif", exif_jpeg, mask(99), "train")
        w.commit()

    # s0: truncated image PNG.
    data = (root / "images/s0.png").read_bytes()
    (root / "images/s0.png").write_bytes(data[: len(data) // 2])
    # s1: mask holding a value that is no class.
    bad = mask(1)
    bad[:2, :4] = 7
    Image.fromarray(bad).save(root / "masks/s1.png")
    # s2: RGBA image, s3: 16-bit image, s4: palette image (same size, so only the mode is odd).
    Image.fromarray(image(2)).convert("RGBA").save(root / "images/s2.png")
    Image.fromarray(image(3)[..., 0].astype(np.uint16) * 257).save(root / "images/s3.png")
    Image.fromarray(image(4)).convert("P").save(root / "images/s4.png")
    # s5: mask file deleted; s6: image file deleted.
    (root / "masks/s5.png").unlink()
    (root / "images/s6.png").unlink()
    # s7: RGB mask; s8: 16-bit mask; s9: mask of another size.
    Image.fromarray(np.repeat(mask(7)[..., None], 3, axis=2)).save(root / "masks/s7.png")
    Image.fromarray(mask(8).astype(np.uint16)).save(root / "masks/s8.png")
    Image.fromarray(np.zeros((H + 1, W), dtype=np.uint8)).save(root / "masks/s9.png")
    # s10: same pixels, different bytes: only the checksum changes.
    Image.fromarray(mask(10)).save(root / "masks/s10.png", compress_level=0)
    # Manifest edits: s11 loses its mask, s12 has a wrong width, a duplicate row, a broken row.
    rows = read_rows(root)
    del rows[11]["mask"]
    rows[12]["width"] = W + 4
    rows.append(dict(rows[13]))
    write_rows(root, rows)
    with open(root / "manifest.jsonl", "a") as fh:
        fh.write("{not json\n")
    # An image nobody references.
    Image.fromarray(image(50)).save(root / "images/orphan.png")

    problems = check_dataset(root)
    found(problems, "images/s0.png", "unreadable image")
    found(problems, "images/s0.png", "checksum mismatch")
    p = found(problems, "masks/s1.png", "unknown mask values")
    assert p.found == "7 (8 px)" and "[0, 1, 2]" in p.expected and "255" in p.expected
    found(problems, "images/s2.png", "alpha channel", "warning")
    found(problems, "images/s3.png", "high bit depth", "warning")
    found(problems, "images/s4.png", "palette image", "warning")
    assert "rotated" in found(problems, "images/exif.jpg", "EXIF orientation", "warning").expected
    assert found(problems, "images/exif.jpg", "EXIF orientation", "warning").found == "orientation tag 6"
    found(problems, "masks/s5.png", "missing file")
    found(problems, "images/s6.png", "missing file")
    found(problems, "masks/s7.png", "mask not single-channel")
    found(problems, "masks/s8.png", "mask bit depth")
    assert found(problems, "masks/s9.png", "size mismatch").found == f"{W}x{H + 1}"
    found(problems, "masks/s10.png", "checksum mismatch")
    assert not [p for p in problems if p.file == "masks/s10.png" and p.kind != "checksum mismatch"]
    found(problems, "sample 's11'", "no mask")
    assert found(problems, "images/s12.png", "size mismatch").expected == f"{W + 4}x{H} (manifest)"
    assert "'s13' 2 times" in found(problems, "manifest.jsonl", "duplicate id").found
    found(problems, "manifest.jsonl:19", "bad manifest row")
    found(problems, "images/orphan.png", "unreferenced file", "warning")
    found(problems, "masks/s11.png", "unreferenced file", "warning")
    # The files left alone are clean.
    assert not [p for p in problems if p.file in ("images/s14.png", "masks/s14.png", "masks/exif.png")]

    text = format_problems(problems)
    lines = text.splitlines()
    first_warning = next(i for i, line in enumerate(lines) if line.startswith("warning"))
    assert not any(line.startswith("error") for line in lines[first_warning:])
    n_err = sum(p.severity == "error" for p in problems)
    assert f"{n_err} errors, {len(problems) - n_err} warnings" in lines[-1]


def test_empty_splits(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["test", "test"])
    problems = check_dataset(root)
    assert found(problems, "manifest.jsonl", "empty split").found == "no 'train' samples"
    assert found(problems, "manifest.jsonl", "empty split", "warning").found == "no 'val' samples"
    assert len(problems) == 2


def test_missing_dataset_and_broken_classes(tmp_path: Path) -> None:
    assert check_dataset(tmp_path / "nope")[0].kind == "missing dataset"
    root = make_dataset(tmp_path / "ds", ["train", "val"])
    (root / "classes.yaml").write_text("classes:\n  - {id: 0, name: bg}\n  - {id: 2, name: gap}\n")
    problems = check_dataset(root)
    assert [p.kind for p in problems] == ["bad classes file"]  # pixel checks still ran, nothing else is wrong
    (root / "manifest.jsonl").unlink()
    kinds = {p.kind for p in check_dataset(root)}
    assert {"missing file", "bad classes file", "empty split"} <= kinds


def test_check_cached_reuses_result_until_files_change(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["train", "train", "test"])
    cache = tmp_path / "cache"
    first = check_cached(root, cache)
    assert [p.kind for p in first] == ["empty split"]
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    assert check_cached(root, cache) == first
    assert list(cache.glob("*")) == files  # one file per dataset, no temp files left

    # The stored result is what a hit returns: plant a marker with the same key and get it back.
    stored = json.loads(files[0].read_text())
    marker = {"severity": "warning", "file": "x", "kind": "from cache", "found": "-", "expected": "-"}
    files[0].write_text(json.dumps({**stored, "problems": [marker]}))
    assert check_cached(root, cache) == [Problem(**marker)]

    # A changed manifest invalidates the cache.
    rows = read_rows(root)
    rows[2]["split"] = "val"
    write_rows(root, rows)
    assert check_cached(root, cache) == []
    assert json.loads(files[0].read_text())["key"] != stored["key"]

    # So does a changed mask file (size/mtime), even with the manifest untouched.
    bad = mask(0)
    bad[0, 0] = 9
    Image.fromarray(bad).save(root / "masks/s0.png")
    kinds = {p.kind for p in check_cached(root, cache)}
    assert kinds == {"unknown mask values", "checksum mismatch"}


def test_check_cached_survives_a_corrupt_cache_file(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["train", "val"])
    cache = tmp_path / "cache"
    check_cached(root, cache)
    (cache_file,) = cache.glob("*.json")
    cache_file.write_text("{oops")
    assert check_cached(root, cache) == []
    assert json.loads(cache_file.read_text())["problems"] == []


def test_problem_str_and_table() -> None:
    problems = [
        Problem("warning", "images/a.png", "alpha channel", "mode RGBA", "RGB"),
        Problem("error", "masks/b.png", "unknown mask values", "7 (3 px)", "class ids [0, 1]"),
        Problem("error", "masks/c.png", "unknown mask values", "9 (1 px)", "class ids [0, 1]"),
    ]
    assert str(problems[1]) == "ERROR masks/b.png: unknown mask values: found 7 (3 px); expected class ids [0, 1]"
    text = format_problems(problems)
    lines = text.splitlines()
    assert lines[0].split() == ["severity", "file", "kind", "found", "expected"]
    assert [line.split()[0] for line in lines[2:5]] == ["error", "error", "warning"]
    assert lines[-1] == "2 errors, 1 warning (unknown mask values x2, alpha channel x1)"


@pytest.mark.parametrize("corrupt", ["truncate", "garbage"])
def test_unreadable_mask(tmp_path: Path, corrupt: str) -> None:
    root = make_dataset(tmp_path / "ds", ["train", "val"])
    path = root / "masks/s0.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20] if corrupt == "truncate" else b"nonsense")
    found(check_dataset(root), "masks/s0.png", "unreadable mask")


def test_object_statistics_per_split_and_class(tmp_path: Path) -> None:
    from masklab.data.check import ObjectStats
    from masklab.data.classes import ClassInfo

    table = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "cell", (230, 25, 75), thing=True)))
    blob = np.zeros((H, W), bool)
    blob[2:6, 2:6] = True
    writer = DatasetWriter(tmp_path / "ds", table)
    for k, (split, n) in enumerate([("train", 1), ("train", 3), ("train", 2), ("val", 0)]):
        objects = [{"class_id": 1, "mask": np.roll(blob, 4 * j, axis=1), "iscrowd": int(j == 2)} for j in range(n)]
        writer.add(f"s{k}", image(k), None, split, objects=objects)
    instances = np.zeros((H, W), np.uint16)
    instances[1:4, 1:4], instances[8:12, 8:12] = 1, 2  # a v1 instance map counts too
    writer.add("v1", image(9), None, "val", instances=instances, instance_classes={1: 1, 2: 1})
    root = writer.commit().root
    stats = ObjectStats()
    assert check_dataset(root, stats) == []
    assert stats.per_image == {"train": [1, 3, 2], "val": [0, 2]}
    assert stats.lines(table) == [
        "objects in train: 3 images with objects, 6 objects, 2.0 per image (min 1, median 2, max 3), 1 crowd region",
        "objects in val: 2 images with objects, 2 objects, 1.0 per image (min 0, median 1, max 2)",
        "objects per class: cell 8",
    ]
    assert ObjectStats().lines(table) == []  # a semantic dataset: nothing to say
