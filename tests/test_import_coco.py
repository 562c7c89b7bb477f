"""COCO instances in and out: `data import format=coco` and `data export format=coco`.

Real files in tmp_path and real COCO JSON read back through pycocotools; shapes drawn by hand with
known pixel counts. Everything runs in this process through the import/export functions and the
workflows, except one CLI round trip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from masklab.data.check import check_dataset
from masklab.data.export_coco import export_coco
from masklab.data.images import read_mask
from masklab.data.import_coco import import_coco
from masklab.data.import_folder import ImportProblems
from masklab.data.import_instances import import_instance_folders
from masklab.data.manifest import Dataset
from masklab.data.objects import ObjectSet, read_objects
from masklab.errors import UserError

from conftest import SHARED_DATASETS, exits_as_user_error

H, W = 16, 20
CATEGORIES = [{"id": 5, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog"}]


def box(y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """A polygon ring; COCO rasterizes (1,1)-(5,5) to the 4x4 pixels rows 1..4, columns 1..4."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_image(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def write_json(path: Path, images: list, annotations: list, categories: list = CATEGORIES) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def image_entry(image_id: int, file_name: str, width: int = W, height: int = H) -> dict:
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def shapes_coco(folder: Path) -> tuple[Path, Path, dict[int, np.ndarray]]:
    """Two images with hand-made objects: (COCO file, images folder, {annotation id: expected mask}).

    a.png: a polygon square (cat, 16 px), a two-part polygon (dog, 16 + 16 px) overlapping the square,
    a crowd region as uncompressed RLE (dog, 24 px). sub/b.png: a compressed RLE (cat, 12 px)."""
    images = folder / "images"
    write_image(images / "a.png", 1)
    write_image(images / "sub" / "b.png", 2)
    expected = {
        7: box(1, 5, 1, 5),
        8: box(3, 7, 3, 7) | box(10, 14, 14, 18),
        9: box(10, 14, 2, 8),
        30: box(5, 8, 10, 14),
    }
    annotations = [
        {"id": 7, "image_id": 1, "category_id": 5, "segmentation": [square(1, 1, 5, 5)], "iscrowd": 0,
         "area": 16, "bbox": [1, 1, 4, 4]},
        {"id": 8, "image_id": 1, "category_id": 2, "segmentation": [square(3, 3, 7, 7), square(14, 10, 18, 14)]},
        {"id": 9, "image_id": 1, "category_id": 2, "segmentation": uncompressed_rle(expected[9]), "iscrowd": 1},
        {"id": 30, "image_id": 4, "category_id": 5, "segmentation": compressed_rle(expected[30]), "iscrowd": 0},
    ]
    path = write_json(folder / "instances.json", [image_entry(1, "a.png"), image_entry(4, "sub/b.png")], annotations)
    return path, images, expected


def objects_by_id(dataset: Dataset) -> dict[str, ObjectSet]:
    return {s.id: read_objects(dataset.root, s) for s in dataset.samples}


def test_hand_made_shapes_import_with_known_pixels(tmp_path: Path) -> None:
    coco_file, images, expected = shapes_coco(tmp_path)
    # pycocotools reads the same file to the same masks: the shapes mean what this test says they mean
    reference = COCO(str(coco_file))
    for ann_id, mask in expected.items():
        assert np.array_equal(reference.annToMask(reference.loadAnns(ann_id)[0]).astype(bool), mask), ann_id

    ds = import_coco(coco_file, images, tmp_path / "out", split_mode="none")
    assert [c for c in ds.class_table.to_dict()["classes"]] == [
        {"id": 0, "name": "background", "color": [0, 0, 0]},
        {"id": 1, "name": "dog", "color": [230, 25, 75], "thing": True, "coco_id": 2},  # sorted by COCO id
        {"id": 2, "name": "cat", "color": [60, 180, 75], "thing": True, "coco_id": 5, "supercategory": "animal"},
    ]
    assert [(s.id, s.split, s.extra) for s in ds.samples] == [("a", "train", {"coco_image_id": 1}),
                                                             ("sub/b", "train", {"coco_image_id": 4})]
    a, b = ds.samples
    assert (ds.root / a.image).read_bytes() == (images / "a.png").read_bytes()
    objs = objects_by_id(ds)
    assert objs["a"].class_ids.tolist() == [2, 1, 1] and objs["a"].iscrowd.tolist() == [0, 0, 1]
    assert [e["coco_id"] for e in objs["a"].extra] == [7, 8, 9]
    assert objs["a"].masks.sum(axis=(1, 2)).tolist() == [16, 32, 24]
    for k, ann_id in enumerate([7, 8, 9]):
        assert np.array_equal(objs["a"].masks[k], expected[ann_id])
    assert objs["sub/b"].class_ids.tolist() == [2] and np.array_equal(objs["sub/b"].masks[0], expected[30])
    # Semantic mask: each object's class; the cat/dog overlap (rows 3-4, cols 3-4) is ignored (255).
    semantic = read_mask(ds.root / a.mask)
    overlap = expected[7] & expected[8]
    assert overlap.sum() == 4 and (semantic[overlap] == 255).all()
    assert (semantic[expected[7] & ~overlap] == 2).all()
    assert (semantic[(expected[8] | expected[9]) & ~overlap] == 1).all()
    assert (semantic[~(expected[7] | expected[8] | expected[9])] == 0).all()
    assert not [p for p in check_dataset(ds.root) if p.severity == "error"]


def test_every_bad_input_is_named_with_file_and_value(tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    for name in ("ok.png", "dup1.png", "dup2.png"):
        write_image(images / name, 0)
    write_image(images / "small.png", 0, size=(H - 2, W))
    one_pixel = np.zeros((H, W), bool)
    one_pixel[3, 4] = True
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 5, "segmentation": [square(1, 1, 5, 5)]},  # fine
        {"id": 2, "image_id": 1, "category_id": 5, "segmentation": [square(0, 0, W + 0.5, 3)]},  # within 1 px: fine
        {"id": 3, "image_id": 1, "category_id": 5, "segmentation": [[1, 1, 30.5, 2, 5, 5, 2, -4]]},
        {"id": 4, "image_id": 1, "category_id": 5, "segmentation": [[1, 1, 5, 5]]},
        {"id": 5, "image_id": 1, "category_id": 5, "segmentation": uncompressed_rle(np.zeros((H + 1, W), bool))},
        {"id": 6, "image_id": 1, "category_id": 5, "segmentation": compressed_rle(box(0, 2, 0, 2, (H, W + 3)))},
        {"id": 7, "image_id": 1, "category_id": 99, "segmentation": [square(1, 1, 5, 5)]},
        {"id": 8, "image_id": 1, "category_id": 2, "segmentation": compressed_rle(np.zeros((H, W), bool))},
        {"id": 9, "image_id": 1, "category_id": 2, "segmentation": uncompressed_rle(one_pixel)},
        {"id": 9, "image_id": 1, "category_id": 2, "segmentation": [square(8, 8, 12, 12)]},
        {"id": 10, "image_id": 42, "category_id": 2, "segmentation": [square(1, 1, 5, 5)]},
        {"id": 11, "image_id": 1, "category_id": 2, "segmentation": {"size": [H, W], "counts": [5, 3]}},
    ]
    coco_file = write_json(tmp_path / "bad.json", [
        image_entry(1, "ok.png"), image_entry(2, "dup1.png"), image_entry(2, "dup2.png"),
        image_entry(3, "missing.png"), image_entry(4, "small.png"),
    ], annotations)
    with pytest.raises(ImportProblems) as info:
        import_coco(coco_file, images, tmp_path / "out")
    got = {(Path(p.file).name, p.kind, p.found) for p in info.value.problems}
    assert got == {
        ("bad.json", "polygon outside image", "annotation 3 (image 1) polygon 0: point 1 (30.5, 2), point 3 (2, -4)"),
        ("bad.json", "polygon with fewer than 3 points", "annotation 4 (image 1) polygon 0: 2 point(s) [1, 1, 5, 5]"),
        ("bad.json", "RLE size mismatch", f"annotation 5 (image 1): size [{H + 1}, {W}]"),
        ("bad.json", "RLE size mismatch", f"annotation 6 (image 1): size [{H}, {W + 3}]"),
        ("bad.json", "unknown category id", "annotation 7 (image 1): category_id 99"),
        ("bad.json", "empty object", "annotation 8 (image 1): 0 px after decoding"),
        ("bad.json", "one-pixel object", "annotation 9 (image 1): 1 px after decoding"),
        ("bad.json", "duplicate annotation id", "id 9"),
        ("bad.json", "unknown image id", "annotation 10 (image 42): image_id 42"),
        ("bad.json", "bad RLE", "annotation 11 (image 1): run lengths add up to 8"),
        ("bad.json", "duplicate image id", "id 2 for 2 images (dup1.png, dup2.png)"),
        ("missing.png", "missing image file", "no such file"),
        ("small.png", "image size mismatch", f"{W}x{H - 2} (file)"),
    }
    by_kind = {p.kind: p for p in info.value.problems}
    assert by_kind["polygon outside image"].expected == (
        f"x in 0..{W}, y in 0..{H} (+-1 px) for image 1 (ok.png, {W}x{H})")
    assert by_kind["RLE size mismatch"].expected == f"[{H}, {W}] ([height, width] of image 1 (ok.png, {W}x{H}))"
    assert by_kind["unknown category id"].expected == "one of the categories' ids [2, 5]"
    assert by_kind["image size mismatch"].expected == f"{W}x{H} (image 4 (small.png, {W}x{H}) in {coco_file})"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    # The CLI's error path: every problem listed, exit 2, no traceback.
    err = exits_as_user_error("data import", lambda: import_coco(coco_file, images, tmp_path / "out"), capsys,
                              one_line=False)
    assert "13 problem(s) importing" in err and "nothing was written" in err


def test_bad_files_and_categories(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_image(images / "a.png", 0)
    not_json = tmp_path / "broken.json"
    not_json.write_text("{not json")
    with pytest.raises(ImportProblems, match="unreadable COCO JSON"):
        import_coco(not_json, images, tmp_path / "out")
    cats = [{"id": 1, "name": "cell"}, {"id": 1, "name": "cell again"}, {"id": 3, "name": "background"}, {"id": "x"}]
    with pytest.raises(ImportProblems) as info:
        import_coco(write_json(tmp_path / "cats.json", [image_entry(1, "a.png")], [], cats), images, tmp_path / "out")
    assert {(p.kind, p.found) for p in info.value.problems} == {
        ("duplicate category id", "id 1 ('cell' and 'cell again')"),
        ("bad category", "categories[3]: {'id': 'x'}"),
    }
    with pytest.raises(ImportProblems) as info:
        import_coco(write_json(tmp_path / "bg.json", [image_entry(1, "a.png")], [], [{"id": 3, "name": "background"}]),
                    images, tmp_path / "out")
    assert [(p.kind, p.found) for p in info.value.problems] == [("duplicate class name", "['background']")]
    with pytest.raises(UserError, match="does not exist"):
        import_coco(tmp_path / "nope.json", images, tmp_path / "out")


def test_splits_random_none_and_one_file_per_split(tmp_path: Path) -> None:
    images = tmp_path / "images"
    entries = []
    for i in range(10):
        write_image(images / f"im{i}.png", i)
        entries.append(image_entry(i + 1, f"im{i}.png"))
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 2, "segmentation": [square(1, 1, 5, 5)]} for i in range(10)]
    all_file = write_json(tmp_path / "all.json", entries, anns)
    ds = import_coco(all_file, images, tmp_path / "random", fractions={"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assert sorted(s.split for s in ds.samples).count("train") == 6 and {s.split for s in ds.samples} == {
        "train", "val", "test"}
    again = import_coco(all_file, images, tmp_path / "random2", fractions={"train": 0.6, "val": 0.2, "test": 0.2},
                        seed=3)
    assert [(s.id, s.split) for s in again.samples] == [(s.id, s.split) for s in ds.samples]  # seeded
    assert {s.split for s in import_coco(all_file, images, tmp_path / "none", split_mode="none").samples} == {"train"}

    train = write_json(tmp_path / "train.json", entries[:7], anns[:7])
    val = write_json(tmp_path / "val.json", entries[7:], anns[7:])
    ds = import_coco({"train": train, "val": val}, images, tmp_path / "files", split_mode="files")
    assert {s.id: s.split for s in ds.samples} == {f"im{i}": "train" if i < 7 else "val" for i in range(10)}
    with pytest.raises(UserError, match="split_mode=files"):
        import_coco({"train": train, "val": val}, images, tmp_path / "x")
    with pytest.raises(UserError, match="split_mode=files needs"):
        import_coco(train, images, tmp_path / "x", split_mode="files")
    with pytest.raises(UserError, match="not 'pool'"):
        import_coco({"pool": train}, images, tmp_path / "x", split_mode="files")
    # Files must agree on categories; an image listed in two files is one sample too many.
    other = write_json(tmp_path / "other.json", entries[6:], anns[6:], [{"id": 2, "name": "mouse"}])
    with pytest.raises(ImportProblems) as info:
        import_coco({"train": train, "val": other}, images, tmp_path / "x", split_mode="files")
    assert {(Path(p.file).name, p.kind) for p in info.value.problems} == {
        ("other.json", "categories differ"), ("other.json", "duplicate image file name")}


def test_import_export_import_round_trip(project: Path) -> None:
    """Through the workflows as the CLI runs them: import -> export (pycocotools loads it) -> import again."""
    from masklab import workflows
    from masklab.config import compose

    coco_file, images, expected = shapes_coco(project / "raw")
    first = workflows.import_dataset(compose("data_import", [
        "format=coco", "name=shapes", f"annotations={coco_file}", f"images={images}", "split_mode=none"])).dataset
    source = yaml.safe_load((project / "conf/source/shapes.yaml").read_text())
    assert source["annotations"] == "raw/instances.json" and source["format"] == "coco"  # portable paths

    out = project / "shapes.json"
    done = workflows.export_dataset(compose("data_export", ["data=shapes", f"out={out}"]))
    assert (done.images, done.annotations, done.categories) == (2, 4, 2)
    exported = COCO(str(out))
    assert sorted(exported.getCatIds()) == [2, 5] and exported.loadCats(5)[0] == {
        "id": 5, "name": "cat", "supercategory": "animal"}
    assert sorted(exported.getImgIds()) == [1, 4] and exported.loadImgs(4)[0]["file_name"] == "sub__b.png"
    for ann_id, mask in expected.items():
        ann = exported.loadAnns(ann_id)[0]
        assert np.array_equal(exported.annToMask(ann).astype(bool), mask), ann_id
        ys, xs = np.nonzero(mask)
        assert ann["area"] == mask.sum() and ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
        assert isinstance(ann["segmentation"]["counts"], str)  # compressed RLE
    assert exported.loadAnns(9)[0]["iscrowd"] == 1 and exported.loadAnns(8)[0]["category_id"] == 2

    # Never overwrite unless asked; the file is unchanged by the refused export.
    before = out.read_bytes()
    with pytest.raises(UserError, match="already exists; pass overwrite=true"):
        workflows.export_dataset(compose("data_export", ["data=shapes", f"out={out}"]))
    assert out.read_bytes() == before
    workflows.export_dataset(compose("data_export", ["data=shapes", f"out={out}", "overwrite=true"]))
    assert out.read_bytes() == before  # deterministic

    second = import_coco(out, first.root / "images", project / "again", split_mode="none")
    assert second.class_table == first.class_table
    assert [(s.id, s.extra) for s in second.samples] == [("a", {"coco_image_id": 1}), ("sub__b", {"coco_image_id": 4})]
    for s1, s2 in zip(first.samples, second.samples):
        o1, o2 = read_objects(first.root, s1), read_objects(second.root, s2)
        assert np.array_equal(o1.masks, o2.masks) and np.array_equal(o1.class_ids, o2.class_ids)
        assert np.array_equal(o1.iscrowd, o2.iscrowd) and o1.extra == o2.extra
        assert (first.root / s1.image).read_bytes() == (second.root / s2.image).read_bytes()

    # absolute_paths: file_name points at the dataset's image, wherever the JSON goes
    workflows.export_dataset(compose("data_export", ["data=shapes", f"out={project / 'abs.json'}",
                                                     "absolute_paths=true", "split=train"]))
    (entry, *_) = json.loads((project / "abs.json").read_text())["images"]
    assert Path(entry["file_name"]) == (first.root / "images" / "a.png").resolve()


def test_export_refuses_what_coco_cannot_hold(tmp_path: Path) -> None:
    from masklab.data.import_folder import import_folder

    images, masks = tmp_path / "i", tmp_path / "m"
    write_image(images / "a.png", 0)
    masks.mkdir()
    Image.fromarray(box(2, 6, 2, 6).astype(np.uint8)).save(masks / "a.png")
    semantic = import_folder(images, masks, tmp_path / "semantic", classes=None, split_mode="none")
    with pytest.raises(UserError, match="no instance objects"):
        export_coco(semantic.root, tmp_path / "x.json")
    with pytest.raises(UserError, match="no labeled samples in split 'val'"):
        export_coco(semantic.root, tmp_path / "x.json", split="val")
    assert not (tmp_path / "x.json").exists()


def test_cli_import_and_export(project: Path, capsys, cli) -> None:
    from masklab.commands.data import export
    from masklab.config import compose

    coco_file, images, expected = shapes_coco(project / "raw")
    done = cli("data", "import", "format=coco", "name=shapes", f"annotations={coco_file}", f"images={images}",
               "split_mode=none")
    assert done.returncode == 0, done.stderr
    assert "Imported" in done.stdout and "2 samples" in done.stdout
    done = cli("data", "export", "format=coco", "data=shapes", "out=shapes.json")
    assert done.returncode == 0, done.stderr
    assert "Wrote shapes.json: 2 images, 4 annotations, 2 categories" in done.stdout
    assert len(COCO(str(project / "shapes.json")).getAnnIds()) == 4
    # The command function on its composed config, through the CLI's error path: one line, exit 2.
    err = exits_as_user_error("data export", lambda: export(compose("data_export", ["data=shapes", "out=shapes.json"])),
                              capsys)
    assert err == "masklab data export: error: out=shapes.json already exists; pass overwrite=true to replace it"


DSB = SHARED_DATASETS / "dsb2018_nuclei_256" / "stage1_train"


def test_dsb2018_subset_through_coco(tmp_path: Path) -> None:
    """A few real nuclei images: per-object import -> COCO export -> format=coco import, pixel for pixel."""
    if not DSB.is_dir():
        pytest.skip(f"{DSB} not present (set MASKLAB_SHARED)")
    src = tmp_path / "stage1_train"
    src.mkdir()
    for folder in sorted(DSB.iterdir())[:4]:
        (src / folder.name).symlink_to(folder, target_is_directory=True)
    first = import_instance_folders(src, tmp_path / "nuclei", split_mode="none")
    export_coco(first.root, tmp_path / "nuclei.json")
    second = import_coco(tmp_path / "nuclei.json", first.root / "images", tmp_path / "again", split_mode="none")
    assert [s.id for s in second.samples] == [s.id for s in first.samples]
    assert second.class_table.names == first.class_table.names == ["background", "nucleus"]
    for s1, s2 in zip(first.samples, second.samples):
        o1, o2 = read_objects(first.root, s1), read_objects(second.root, s2)
        assert len(o1) > 0 and np.array_equal(o1.masks, o2.masks) and np.array_equal(o1.class_ids, o2.class_ids)
        assert np.array_equal(read_mask(first.root / s1.mask), read_mask(second.root / s2.mask))
    shutil.rmtree(tmp_path / "again")


def test_workflow_with_one_file_per_split(project: Path) -> None:
    """annotations={train: ..., val: ...} from the command line: splits from the files, paths kept portable."""
    from masklab import workflows
    from masklab.config import compose

    images = project / "raw" / "images"
    entries, anns = [], []
    for i in range(3):
        write_image(images / f"im{i}.png", i)
        entries.append(image_entry(i + 1, f"im{i}.png"))
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 2, "segmentation": [square(1, 1, 5, 5)]})
    train = write_json(project / "raw" / "train.json", entries[:2], anns[:2])
    val = write_json(project / "raw" / "val.json", entries[2:], anns[2:])
    base = ["format=coco", "name=cells", f"images={images}", f"annotations={{train: {train}, val: {val}}}"]
    with pytest.raises(UserError, match="pass split_mode=files"):
        workflows.import_dataset(compose("data_import", base))
    done = workflows.import_dataset(compose("data_import", [*base, "split_mode=files"]))
    assert {s.id: s.split for s in done.dataset.samples} == {"im0": "train", "im1": "train", "im2": "val"}
    source = yaml.safe_load((project / "conf/source/cells.yaml").read_text())
    assert source["annotations"] == {"train": "raw/train.json", "val": "raw/val.json"}
    with pytest.raises(UserError, match="format=coco needs annotations="):
        workflows.import_dataset(compose("data_import", ["format=coco", "name=other", f"images={images}"]))
