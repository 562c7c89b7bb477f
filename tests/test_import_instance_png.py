"""`data import format=instance_png`: images plus instance-id PNGs (8- or 16-bit, 0 = background)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from masklab.data.check import check_dataset
from masklab.data.export_coco import export_coco
from masklab.data.images import read_mask
from masklab.data.import_coco import import_coco
from masklab.data.import_folder import ImportProblems
from masklab.data.import_instance_png import import_instance_pngs
from masklab.data.objects import read_objects
from masklab.errors import UserError

H, W = 12, 16


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def write_ids(path: Path, ids: np.ndarray) -> None:
    """16-bit PNG when an id needs it, else 8-bit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint16 if ids.max() > 255 else np.uint8)).save(path)


def id_map(*objects: tuple[int, int, int, int, int]) -> np.ndarray:
    """(H, W) ids from (id, y0, y1, x0, x1) rectangles, later ones painted over earlier ones."""
    ids = np.zeros((H, W), np.int64)
    for value, y0, y1, x0, x1 in objects:
        ids[y0:y1, x0:x1] = value
    return ids


def test_import_with_a_class_table_and_export_to_coco(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    maps = {"a": id_map((1, 0, 4, 0, 4), (300, 5, 9, 5, 12)), "b": id_map((7, 2, 5, 2, 5)), "c": id_map()}
    for k, (stem, ids) in enumerate(maps.items()):
        write_image(images / f"{stem}.png", k)
        write_ids(masks / f"{stem}.png", ids)
    assert Image.open(masks / "a.png").mode.startswith("I;16") and Image.open(masks / "b.png").mode == "L"
    table = tmp_path / "classes.json"
    table.write_text(json.dumps({"a": {"1": 2, "300": 1}, "b": {"7": 2}}))
    ds = import_instance_pngs(images, masks, tmp_path / "out", instance_classes=table, split_mode="none",
                              classes=[{"id": 0, "name": "background"}, {"id": 1, "name": "cell"},
                                       {"id": 2, "name": "debris"}])
    assert ds.class_table.names == ["background", "cell", "debris"] and ds.class_table.thing_ids == [1, 2]
    objs = {s.id: read_objects(ds.root, s) for s in ds.samples}
    assert objs["a"].class_ids.tolist() == [2, 1] and [e["instance_id"] for e in objs["a"].extra] == [1, 300]
    assert objs["a"].masks.sum(axis=(1, 2)).tolist() == [16, 28]
    assert np.array_equal(objs["a"].masks[1], maps["a"] == 300)
    assert len(objs["c"]) == 0  # an image without objects is a labeled negative
    a = next(s for s in ds.samples if s.id == "a")
    assert np.array_equal(read_mask(ds.root / a.mask), np.where(maps["a"] == 1, 2, np.where(maps["a"] == 300, 1, 0)))
    assert not [p for p in check_dataset(ds.root) if p.severity == "error"]

    # Export: no COCO origin, so categories are the class ids and images/annotations are numbered 1..N.
    export_coco(ds.root, tmp_path / "out.json")
    coco = COCO(str(tmp_path / "out.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cell", "debris"] and coco.getCatIds() == [1, 2]
    assert sorted(coco.getAnnIds()) == [1, 2, 3] and sorted(coco.getImgIds()) == [1, 2, 3]
    again = import_coco(tmp_path / "out.json", ds.root / "images", tmp_path / "again", split_mode="none")
    assert again.class_table.names == ds.class_table.names
    for s1, s2 in zip(ds.samples, again.samples):
        o1, o2 = read_objects(ds.root, s1), read_objects(again.root, s2)
        assert np.array_equal(o1.masks, o2.masks) and np.array_equal(o1.class_ids, o2.class_ids)


def test_one_default_class_and_random_splits(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for k in range(5):
        write_image(images / f"s{k}.png", k)
        write_ids(masks / f"s{k}.png", id_map((k + 1, 1, 4, 1, 4), (9, 6, 9, 6, 9)))
    ds = import_instance_pngs(images, masks, tmp_path / "out", class_name="nucleus",
                              fractions={"train": 0.6, "val": 0.4}, seed=1)
    assert ds.class_table.names == ["background", "nucleus"] and ds.class_table.thing_ids == [1]
    assert sorted(s.split for s in ds.samples) == ["train", "train", "train", "val", "val"]
    assert all(read_objects(ds.root, s).class_ids.tolist() == [1, 1] for s in ds.samples)


def test_every_bad_input_is_named(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem in ("good", "wrongsize", "rgb", "noclass", "onepixel", "nomask"):
        write_image(images / f"{stem}.png")
    write_ids(masks / "good.png", id_map((1, 0, 3, 0, 3)))
    write_ids(masks / "wrongsize.png", np.ones((H + 1, W), np.uint8))
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(masks / "rgb.png")
    write_ids(masks / "noclass.png", id_map((1, 0, 3, 0, 3), (4, 5, 8, 5, 8), (5, 9, 11, 9, 11)))
    write_ids(masks / "onepixel.png", id_map((2, 0, 3, 0, 3), (3, 5, 6, 5, 6)))
    write_ids(masks / "noimage.png", id_map((1, 0, 3, 0, 3)))
    table = tmp_path / "classes.yaml"
    table.write_text("good: {1: 1}\nnoclass: {1: 1}\nonepixel: {2: 1, 3: 1}\nghost: {1: 1}\n")
    with pytest.raises(ImportProblems) as info:
        import_instance_pngs(images, masks, tmp_path / "out", instance_classes=table, split_mode="none")
    got = {(Path(p.file).name, p.kind, p.found) for p in info.value.problems}
    assert got == {
        ("wrongsize.png", "size mismatch", f"{W}x{H + 1}"),
        ("rgb.png", "colour instance mask", "mode RGB"),
        ("noclass.png", "instance id without a class", "ids [4, 5]"),
        ("onepixel.png", "one-pixel object", "instance id 3: 1 px"),
        ("nomask.png", "missing mask", "no mask with this stem"),
        ("noimage.png", "missing image", "no image with this stem"),
        ("classes.yaml", "unknown stem", "'ghost'"),
    }
    noclass = next(p for p in info.value.problems if p.kind == "instance id without a class")
    assert noclass.expected == f"a class for each id under 'noclass' in {table}"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    table.write_text("good: {1: 0}\n")
    with pytest.raises(UserError, match="class id >= 1"):
        import_instance_pngs(images, masks, tmp_path / "out", instance_classes=table)
    with pytest.raises(UserError, match=r"classes= names 0 object classes \(ids \[\]\) and no instance_classes= table"):
        import_instance_pngs(images, masks, tmp_path / "out", classes=[{"id": 0, "name": "bg"}])


def test_a_class_list_naming_the_one_object_class_needs_no_table(project: Path) -> None:
    """`classes=[{id: 0, name: background}, {id: 1, name: person}]` without instance_classes: every object is a
    person; a list of two object classes still needs the table, and says so."""
    from masklab import workflows
    from masklab.config import compose

    images, masks = project / "raw" / "images", project / "raw" / "labels"
    for k in range(2):
        write_image(images / f"s{k}.png", k)
        write_ids(masks / f"s{k}.png", id_map((1, 1, 4, 1, 4), (2, 6, 9, 6, 9)))
    base = ["format=instance_png", f"images={images}", f"masks={masks}", "split_mode=none"]
    done = workflows.import_dataset(compose("data_import", [
        *base, "name=people", "classes=[{id: 0, name: background}, {id: 1, name: person}]"]))
    table = done.dataset.class_table
    assert table.names == ["background", "person"] and table.thing_ids == [1]
    assert [read_objects(done.dataset.root, s).class_ids.tolist() for s in done.dataset.samples] == [[1, 1]] * 2
    with pytest.raises(UserError, match=r"names 2 object classes \(ids \[1, 2\]\).*instance_classes="):
        workflows.import_dataset(compose("data_import", [
            *base, "name=two", "classes=[{id: 0, name: bg}, {id: 1, name: a}, {id: 2, name: b}]"]))


def test_through_the_import_workflow(project: Path) -> None:
    from masklab import workflows
    from masklab.config import compose

    images, masks = project / "raw" / "images", project / "raw" / "labels"
    for k in range(2):
        write_image(images / f"s{k}.png", k)
        write_ids(masks / f"s{k}.png", id_map((1, 1, 4, 1, 4), (2, 6, 9, 6, 9)))
    (project / "raw" / "classes.yaml").write_text("s0: {1: 1, 2: 2}\ns1: {1: 2, 2: 2}\n")
    done = workflows.import_dataset(compose("data_import", [
        "format=instance_png", "name=cells", f"images={images}", f"masks={masks}", "split_mode=none",
        "instance_classes=raw/classes.yaml"]))
    assert done.dataset.class_table.names == ["background", "class_1", "class_2"]
    assert [read_objects(done.dataset.root, s).class_ids.tolist() for s in done.dataset.samples] == [[1, 2], [2, 2]]
    assert not [p for p in done.problems if p.severity == "error"]
