"""Dataset format v2: extra keys kept, instance objects (RLE and PNG), pool/status/fold, their checks,
and the importer for "a folder per image, one mask file per object" (the dsb2018 nuclei layout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from masklab.data.check import Problem, check_dataset, format_problems
from masklab.data.classes import ClassTable
from masklab.data.edits import record_mask_edits
from masklab.data.errors import DatasetFormatError
from masklab.data.images import read_mask
from masklab.data.import_folder import ImportProblems
from masklab.data.import_instances import import_instance_folders
from masklab.data.manifest import Sample, load_dataset, manifest_text, summary, write_manifest
from masklab.data.objects import ObjectError, read_objects
from masklab.data.sample_files import file_sha256
from masklab.data.synth import synthesize
from masklab.data.writer import DatasetWriter

from conftest import SHARED_DATASETS

DSB = SHARED_DATASETS / "dsb2018_nuclei_256" / "stage1_train"
CLASSES = ClassTable.from_dict({"classes": [
    {"id": 0, "name": "bg"}, {"id": 1, "name": "cell", "thing": True}, {"id": 2, "name": "blob", "thing": True},
]})
W, H = 20, 16


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """(H, W) bool rectangle [y0, y1) x [x0, x1)."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def two_objects() -> list[dict]:
    """Two overlapping objects (rows 4..7, columns 6..9 are in both), with an extra key on one."""
    return [
        {"class_id": 1, "mask": box(2, 8, 3, 10), "iscrowd": 0, "annotator": {"name": "ann", "pass": 2}},
        {"class_id": 2, "mask": box(4, 12, 6, 15), "iscrowd": 1},
    ]


def union_mask(objects: list[dict]) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    for o in objects:
        out[o["mask"]] = o["class_id"]
    return out


def read_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]


def write_rows(root: Path, rows: list[dict]) -> None:
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def issues(root: Path) -> list[Problem]:
    """check_dataset without the 'empty split' notes that one-split test datasets always get."""
    return [p for p in check_dataset(root) if p.kind != "empty split"]


def found(problems: list[Problem], file: str, kind: str, severity: str = "error") -> Problem:
    hits = [p for p in problems if p.file == file and p.kind == kind and p.severity == severity]
    assert hits, f"no {severity} '{kind}' for {file} in:\n{format_problems(problems)}"
    return hits[0]


# ----------------------------------------------------------------------------- v1 and extra keys


def test_v1_dataset_loads_and_writes_back_byte_for_byte(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "synth", count=4, size=32).root
    manifest, classes = (root / "manifest.jsonl").read_bytes(), (root / "classes.yaml").read_bytes()
    ds = load_dataset(root)
    assert (root / "manifest.jsonl").read_bytes() == manifest  # loading never rewrites
    assert ds.manifest_hash == file_sha256(root / "manifest.jsonl")
    assert manifest_text(ds.samples).encode() == manifest  # and a rewrite of unchanged rows is identical
    assert b"thing" not in classes and all(not c.thing for c in ds.class_table.classes)
    s = ds.samples[0]
    assert s.instances and s.objects is None and s.extra == {} and s.labeled and s.has_target
    # read_objects serves v1 instance maps too: one object per instance id, with its class.
    objs = read_objects(root, s)
    inst = np.asarray(Image.open(root / s.instances)).astype(np.int64)
    ids = sorted(set(np.unique(inst).tolist()) - {0})
    assert objs.masks.shape == (len(ids), 32, 32) and objs.masks.dtype == bool
    assert [int(c) for c in objs.class_ids] == [s.instance_classes[str(i)] for i in ids]
    for k, i in enumerate(ids):
        assert np.array_equal(objs.masks[k], inst == i)
    assert check_dataset(root) == []


def test_unknown_keys_survive_load_and_every_rewrite(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetWriter(root, CLASSES) as w:
        w.add("a", image(0), union_mask(two_objects()), "train", extra={"source": {"url": "x", "n": [1, 2]}})
        w.add("b", image(1), union_mask(two_objects()), "val", objects=two_objects(), fold=3, status="needs_review")
        w.commit()
    rows = read_rows(root)
    assert rows[0]["source"] == {"url": "x", "n": [1, 2]} and rows[1]["fold"] == 3
    # Keys written by other tools, including one called "extra" and a null value.
    rows[0].update({"reviewer": None, "extra": "hand-added", "scores": {"iou": 0.5}})
    rows[1]["tags"] = ["blurry"]
    write_rows(root, rows)
    before = (root / "manifest.jsonl").read_text()

    ds = load_dataset(root)
    assert ds.samples[0].extra == {"source": {"url": "x", "n": [1, 2]}, "reviewer": None, "extra": "hand-added",
                                   "scores": {"iou": 0.5}}
    assert (ds.samples[1].fold, ds.samples[1].status) == (3, "needs_review")
    assert [Sample.from_row(r).to_row() for r in rows] == rows  # same keys, same values, same order
    write_manifest(root, ds.samples)
    assert (root / "manifest.jsonl").read_text() == before

    # Hand edits: a mask and an objects file change; record_mask_edits updates only their checksums, and an
    # edited sample that was marked needs_review is now fixed (the review loop's last step).
    edited = union_mask(two_objects())
    edited[0, 0] = 2
    Image.fromarray(edited).save(root / "masks/a.png")
    objects_file = root / "objects/b.json"
    entries = json.loads(objects_file.read_text())
    entries[1]["note"] = "checked"
    objects_file.write_text(json.dumps(entries))
    assert record_mask_edits(root) == ["a", "b"]
    after = read_rows(root)
    assert after[0]["mask_sha256"] == file_sha256(root / "masks/a.png")
    assert after[1]["objects_sha256"] == file_sha256(objects_file)
    assert after[1]["status"] == "fixed"
    rows[1]["status"] = "fixed"
    for old, new in zip(rows, after):
        assert {k: v for k, v in new.items() if not k.endswith("sha256")} == {
            k: v for k, v in old.items() if not k.endswith("sha256")
        }
    assert read_objects(root, load_dataset(root).samples[1]).extra[1] == {"note": "checked"}
    assert check_dataset(root) == []


def test_class_table_thing_round_trip() -> None:
    raw = CLASSES.to_dict()
    assert [c.get("thing", False) for c in raw["classes"]] == [False, True, True]
    assert ClassTable.from_dict(raw) == CLASSES and CLASSES.thing_ids == [1, 2]
    raw["classes"][1]["thing"] = "yes"
    with pytest.raises(DatasetFormatError, match="thing is 'yes'"):
        ClassTable.from_dict(raw, "x/classes.yaml")


# ----------------------------------------------------------------------------- objects


def test_overlapping_objects_round_trip_through_rle(tmp_path: Path) -> None:
    objects = two_objects()
    assert (objects[0]["mask"] & objects[1]["mask"]).sum() == 16
    with DatasetWriter(tmp_path / "ds", CLASSES) as w:
        w.add("dir/a", image(0), union_mask(objects), "train", objects=objects)
        ds = w.commit()
    s = ds.samples[0]
    assert s.objects == "objects/dir__a.json" and s.objects_sha256 == file_sha256(ds.root / s.objects)
    stored = json.loads((ds.root / s.objects).read_text())
    assert stored[0]["annotator"] == {"name": "ann", "pass": 2}
    for entry, obj in zip(stored, objects):
        rle = entry["mask"]["rle"]
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        # pycocotools itself (not our reader) decodes it to the very same pixels.
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), obj["mask"])

    got = read_objects(ds.root, s)
    assert got.masks.shape == (2, H, W) and got.masks.dtype == bool and len(got) == 2
    assert got.class_ids.dtype == np.int64 and got.class_ids.tolist() == [1, 2]
    assert got.iscrowd.tolist() == [0, 1]
    assert np.array_equal(got.masks[0], objects[0]["mask"]) and np.array_equal(got.masks[1], objects[1]["mask"])
    assert got.extra == [{"annotator": {"name": "ann", "pass": 2}}, {}]
    assert issues(ds.root) == []


def test_png_objects(tmp_path: Path) -> None:
    objects = two_objects()
    with DatasetWriter(tmp_path / "ds", CLASSES) as w:
        w.add("a", image(0), None, "train", objects=objects, object_storage="png")
        ds = w.commit()
    stored = json.loads((ds.root / "objects/a.json").read_text())
    assert [e["mask"] for e in stored] == [{"png": "objects/a/0.png"}, {"png": "objects/a/1.png"}]
    got = read_objects(ds.root, ds.samples[0])
    for k in range(2):
        assert np.array_equal(got.masks[k], objects[k]["mask"])
        assert np.array_equal(np.asarray(Image.open(ds.root / f"objects/a/{k}.png")) != 0, objects[k]["mask"])
    assert issues(ds.root) == []  # objects without a semantic mask are a target
    Image.fromarray(np.zeros((H, W), np.uint8)).save(ds.root / "objects/a/stray.png")
    assert [(p.kind, p.file) for p in issues(ds.root)] == [("unreferenced file", "objects/a/stray.png")]

    # A PNG object of the wrong size is an error of read_objects too, naming the file.
    Image.fromarray(np.ones((H, W + 2), np.uint8)).save(ds.root / "objects/a/1.png")
    with pytest.raises(ObjectError, match=r"objects/a/1.png: size mismatch: found object 1: 22x16; expected 20x16"):
        read_objects(ds.root, ds.samples[0])


def test_writer_refuses_what_check_would_reject(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "ds", CLASSES) as w:
        m = union_mask(two_objects())
        with pytest.raises(DatasetFormatError, match="not a valid name"):
            w.add("a", image(0), m, "my split")
        with pytest.raises(DatasetFormatError, match="status 'done' is not one of"):
            w.add("a", image(0), m, "train", status="done")
        with pytest.raises(DatasetFormatError, match="fold True is not an integer"):
            w.add("a", image(0), m, "train", fold=True)
        with pytest.raises(DatasetFormatError, match="unlabeled but has a mask"):
            w.add("a", image(0), m, "pool")
        with pytest.raises(DatasetFormatError, match="labeled but has no mask"):
            w.add("a", image(0), None, "train")
        with pytest.raises(DatasetFormatError, match="object 0: mask is empty"):
            w.add("a", image(0), None, "train", objects=[{"class_id": 1, "mask": np.zeros((H, W), bool)}])
        with pytest.raises(DatasetFormatError, match=r"extra keys \['fold'\] are manifest fields"):
            w.add("a", image(0), m, "train", extra={"fold": 1})
        w.add("a", image(0), m, "holdout_2", fold=0)
        w.add("p", image(1), None, "pool")
        w.add("u", image(2), None, "train", status="unlabeled")
        ds = w.commit()
    assert [s.split for s in ds.samples] == ["holdout_2", "pool", "train"]
    assert [s.labeled for s in ds.samples] == [True, False, False] and ds.samples[0].fold == 0
    assert "holdout_2 1, pool 1" in summary(ds) and "train 1" in summary(ds)
    assert ds.split_names == ["train", "holdout_2", "pool"]


# ----------------------------------------------------------------------------- data check


def test_check_reports_every_v2_rule(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    one = [{"class_id": 1, "mask": box(2, 6, 2, 6)}]
    names = ["missing", "garbage", "notlist", "badrle", "rlesize", "pngsize", "empty", "onepx", "classes",
             "badentry", "split", "status", "fold", "notarget", "poolmask", "unlabeledobj", "ok"]
    with DatasetWriter(root, CLASSES) as w:
        for i, name in enumerate(names):
            w.add(name, image(i), None, "train", objects=one)
        w.add("pool_ok", image(50), None, "pool")
        w.add("waiting", image(51), None, "val", status="unlabeled")
        w.commit()

    def put(name: str, entries: object) -> None:
        (root / f"objects/{name}.json").write_text(json.dumps(entries))

    def rle(mask: np.ndarray) -> dict:
        r = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}

    (root / "objects/missing.json").unlink()
    (root / "objects/garbage.json").write_text("{not json")
    put("notlist", {"class_id": 1})
    put("badrle", [{"class_id": 1, "mask": {"rle": {"size": [H, W], "counts": "3"}}}])
    put("rlesize", [{"class_id": 1, "mask": {"rle": rle(np.ones((H + 1, W), bool))}}])
    Image.fromarray(np.full((H, W - 1), 255, np.uint8)).save(root / "objects/pngsize.png")
    put("pngsize", [{"class_id": 1, "mask": {"png": "objects/pngsize.png"}}])
    put("empty", [{"class_id": 1, "mask": {"rle": rle(np.zeros((H, W), bool))}}])
    put("onepx", [{"class_id": 1, "mask": {"rle": rle(box(3, 4, 3, 4))}}])
    put("classes", [{"class_id": 7, "mask": {"rle": rle(box(0, 3, 0, 3))}},
                    {"class_id": 0, "mask": {"rle": rle(box(5, 9, 5, 9))}}])
    put("badentry", [{"class_id": "1", "mask": {"rle": rle(box(0, 3, 0, 3))}}])
    rows = {r["id"]: r for r in read_rows(root)}
    rows["split"]["split"] = "hold out"
    rows["status"]["status"] = "done"
    rows["fold"]["fold"] = "2"
    for key in ("objects", "objects_sha256"):
        del rows["notarget"][key]
    rows["poolmask"]["split"] = "pool"
    rows["unlabeledobj"]["status"] = "unlabeled"
    write_rows(root, list(rows.values()))
    line = {name: n for n, name in enumerate(rows, start=1)}

    problems = check_dataset(root)
    assert "objects of sample 'missing'" in found(problems, "objects/missing.json", "missing file").expected
    assert "JSONDecodeError" in found(problems, "objects/garbage.json", "unreadable objects").found
    assert found(problems, "objects/garbage.json", "checksum mismatch")
    assert found(problems, "objects/notlist.json", "unreadable objects").found == "a JSON dict"
    p = found(problems, "objects/badrle.json", "bad RLE")
    assert p.found.startswith("object 0: run lengths add up to 3") and "H*W is 320" in p.found
    p = found(problems, "objects/rlesize.json", "size mismatch")
    assert (p.found, p.expected) == (f"object 0: {W}x{H + 1}", f"{W}x{H} (image)")
    assert found(problems, "objects/pngsize.png", "size mismatch").found == f"object 0: {W - 1}x{H}"
    assert found(problems, "objects/empty.json", "empty object").found == "object 0: 0 px"
    assert found(problems, "objects/onepx.json", "one-pixel object", "warning").found == "object 0: 1 px"
    p = found(problems, "objects/classes.json", "unknown object class")
    assert (p.found, p.expected) == ("object 0: class_id 7", "class ids [0, 1, 2]")
    assert found(problems, "objects/classes.json", "background object class", "warning").found == "object 1: class_id 0"
    assert found(problems, "objects/badentry.json", "bad object").found == "object 0: class_id '1'"
    p = found(problems, f"manifest.jsonl:{line['split']}", "invalid split name")
    assert p.found == "'hold out'" and "letter" in p.expected
    p = found(problems, f"manifest.jsonl:{line['status']}", "unknown status")
    assert p.found == "'done'" and "needs_review" in p.expected
    assert found(problems, f"manifest.jsonl:{line['fold']}", "bad fold").found == "'2'"
    assert "no mask and no objects" in found(problems, "sample 'notarget'", "no mask").found
    assert found(problems, "objects/notarget.json", "unreferenced file", "warning")
    assert "split 'pool'" in found(problems, "sample 'poolmask'", "target on unlabeled sample").found
    assert "status 'unlabeled'" in found(problems, "sample 'unlabeledobj'", "target on unlabeled sample").found
    # The clean, pool and unlabeled samples have no problems; nothing else was reported.
    clean = ("ok", "pool_ok", "waiting")
    assert not [p for p in problems if any(f"/{n}." in p.file or f"'{n}'" in p.file for n in clean)]
    rewritten = {f"objects/{n}.json" for n in names[1:10]}
    assert {p.file for p in problems if p.kind == "checksum mismatch"} == rewritten
    assert len([p for p in problems if p.kind != "checksum mismatch"]) == 18, format_problems(problems)


# ----------------------------------------------------------------------------- instance-folder import


def plant_folder(src: Path, image_id: str, objects: list[np.ndarray], seed: int = 0, size: tuple[int, int] = (H, W)):
    """src/<image_id>/images/<image_id>.png (RGBA, like dsb2018) and one {0,255} mask file per object."""
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    (src / image_id / "images").mkdir(parents=True)
    (src / image_id / "masks").mkdir()
    Image.fromarray(rgb).convert("RGBA").save(src / image_id / "images" / f"{image_id}.png")
    for k, m in enumerate(objects):
        Image.fromarray(m.astype(np.uint8) * 255).save(src / image_id / "masks" / f"m{k:02d}.png")


def test_import_instance_folders(tmp_path: Path) -> None:
    src = tmp_path / "stage1_train"
    plant_folder(src, "img_a", [m["mask"] for m in two_objects()], seed=1)
    plant_folder(src, "img_b", [box(0, 3, 0, 3)], seed=2)
    (src / "README.txt").write_text("not an image folder; ignored")
    ds = import_instance_folders(src, tmp_path / "out", class_name="cell", split_mode="none")
    assert [s.id for s in ds.samples] == ["img_a", "img_b"] and {s.split for s in ds.samples} == {"train"}
    assert ds.class_table.to_dict()["classes"][1] == {"id": 1, "name": "cell", "color": [230, 25, 75], "thing": True}
    a = ds.samples[0]
    assert (ds.root / a.image).read_bytes() == (src / "img_a/images/img_a.png").read_bytes()
    objs = read_objects(ds.root, a)
    assert objs.class_ids.tolist() == [1, 1]
    assert [e["source_file"] for e in objs.extra] == ["masks/m00.png", "masks/m01.png"]
    for k, obj in enumerate(two_objects()):
        assert np.array_equal(objs.masks[k], obj["mask"])  # the overlap is in both objects
    assert np.array_equal(read_mask(ds.root / a.mask), objs.masks.any(axis=0).astype(np.uint8))
    problems = check_dataset(ds.root)
    assert {p.kind for p in problems} == {"alpha channel", "empty split"}  # RGBA copied as is; no val split
    assert not [p for p in problems if p.severity == "error"]


def test_import_instance_folders_lists_every_problem(tmp_path: Path) -> None:
    src = tmp_path / "src"
    plant_folder(src, "good", [box(1, 4, 1, 4)])
    plant_folder(src, "wrongsize", [box(1, 4, 1, 4)])
    Image.fromarray(np.full((H + 2, W), 255, np.uint8)).save(src / "wrongsize/masks/m01.png")
    plant_folder(src, "emptymask", [box(1, 4, 1, 4), np.zeros((H, W), bool)])
    one = np.zeros((H, W), bool)
    one[2, 2] = True
    plant_folder(src, "onepixel", [box(1, 4, 1, 4), one])
    plant_folder(src, "nomasks", [])
    plant_folder(src, "noimage", [box(1, 4, 1, 4)])
    (src / "noimage/images/noimage.png").unlink()
    plant_folder(src, "broken", [box(1, 4, 1, 4)])
    (src / "broken/masks/m00.png").write_bytes(b"not a png")
    plant_folder(src, "twoimages", [box(1, 4, 1, 4)])
    shutil.copy(src / "twoimages/images/twoimages.png", src / "twoimages/images/copy.png")
    Image.fromarray(image(0)).save(src / "loose.png")
    with pytest.raises(ImportProblems) as info:
        import_instance_folders(src, tmp_path / "out")
    got = {(Path(p.file).relative_to(src).as_posix(), p.kind): p for p in info.value.problems}
    assert set(got) == {
        ("wrongsize/masks/m01.png", "size mismatch"),
        ("emptymask/masks/m01.png", "empty mask"),
        ("onepixel/masks/m01.png", "one-pixel object"),
        ("nomasks/masks", "no masks"),
        ("noimage/images", "missing image"),
        ("broken/masks/m00.png", "unreadable mask"),
        ("twoimages/images", "several images"),
        ("loose.png", "file outside image folders"),
    }
    size = got[("wrongsize/masks/m01.png", "size mismatch")]
    assert (size.found, size.expected) == (f"{W}x{H + 2}", f"{W}x{H} (image)")
    assert got[("twoimages/images", "several images")].found == "copy.png, twoimages.png"
    assert "nothing was written" in str(info.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.fixture
def dsb_subset(tmp_path: Path) -> Path:
    if not DSB.is_dir():
        pytest.skip(f"{DSB} not present (set MASKLAB_SHARED)")
    src = tmp_path / "stage1_train"
    src.mkdir()
    for folder in sorted(DSB.iterdir())[:20]:
        (src / folder.name).symlink_to(folder, target_is_directory=True)
    return src


def test_import_dsb2018_nuclei(dsb_subset: Path, tmp_path: Path) -> None:
    """20 image folders of the shared dsb2018 nuclei set: one object per mask file, pixels unchanged."""
    ds = import_instance_folders(dsb_subset, tmp_path / "nuclei", seed=0)
    folders = sorted(dsb_subset.iterdir())
    assert sorted(s.id for s in ds.samples) == [f.name for f in folders]
    assert {s.split for s in ds.samples} == {"train", "val", "test"}
    assert ds.class_table.names == ["background", "nucleus"] and ds.class_table.thing_ids == [1]
    by_id = {s.id: s for s in ds.samples}
    for folder in folders:
        s = by_id[folder.name]
        mask_files = sorted((folder / "masks").glob("*.png"))
        objs = read_objects(ds.root, s)
        assert len(objs) == len(mask_files) and objs.masks.shape[1:] == (s.height, s.width)
        (original,) = (folder / "images").glob("*.png")
        assert (ds.root / s.image).read_bytes() == original.read_bytes()
    for folder in folders[:3]:  # pixel-exact against the original mask files
        s = by_id[folder.name]
        objs = read_objects(ds.root, s)
        for k, entry in enumerate(objs.extra):
            original = np.asarray(Image.open(folder / entry["source_file"]))
            assert set(np.unique(original).tolist()) <= {0, 255}
            assert np.array_equal(objs.masks[k], original > 0)
        assert np.array_equal(read_mask(ds.root / s.mask), objs.masks.any(axis=0).astype(np.uint8))
    problems = check_dataset(ds.root)
    assert not [p for p in problems if p.severity == "error"], format_problems(problems)
    assert {p.kind for p in problems} <= {"alpha channel"}  # RGBA with alpha 255, copied byte for byte
