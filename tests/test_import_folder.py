"""Tests for masklab.data.import_folder on tiny synthetic folders (plus real data when present)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from masklab.data.check import check_dataset
from masklab.data.classes import default_color
from masklab.data.images import read_mask
from masklab.data.import_folder import ImportProblems, import_folder
from masklab.data.manifest import load_dataset
from masklab.data.sample_files import file_sha256
from masklab.errors import UserError

# Same location rule as the rest of the suite: $MASKLAB_SHARED or the folder next to the repository.
SHARED = Path(os.environ.get("MASKLAB_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "datasets"
MEMBRANE = SHARED / "membrane"
KVASIR = SHARED / "kvasir_seg"
THREE = [{"id": 0, "name": "bg"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
RED, GREEN = (230, 25, 75), (60, 180, 75)


# ----------------------------------------------------------------------------- helpers


def save_image(path: Path, size: tuple[int, int] = (16, 12), seed: int = 0, fmt: str | None = None) -> Path:
    """Random RGB image of size (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def save_mask(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr)).save(path, **kw)
    return path


def blocks(values: list[int], size: tuple[int, int] = (16, 12), seed: int = 0) -> np.ndarray:
    """(H, W) uint8 mask made of vertical bands, one per value, in a seeded order."""
    order = np.random.default_rng(seed).permutation(values)
    band = np.array_split(np.arange(size[0]), len(order))
    out = np.zeros((size[1], size[0]), dtype=np.uint8)
    for v, cols in zip(order, band):
        out[:, cols] = v
    return out


def blobs(n: int, size: tuple[int, int] = (32, 24), seed: int = 0) -> np.ndarray:
    """(H, W) mask with discs of ids 1..n-1 on 0; curved edges so JPEG really adds noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[1], : size[0]]
    out = np.zeros((size[1], size[0]), dtype=np.uint8)
    for k in range(1, n):
        cx, cy, r = rng.uniform(6, size[0] - 6), rng.uniform(6, size[1] - 6), rng.uniform(4, 8)
        out[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = k
    return out


def make_folder(root: Path, n: int, values: list[int], ext: str = ".png") -> tuple[Path, Path]:
    """n image/mask pairs s00..; masks are bands of `values`."""
    for i in range(n):
        save_image(root / "images" / f"s{i:02d}.png", seed=i)
        save_mask(root / "masks" / f"s{i:02d}{ext}", blocks(values, seed=i))
    return root / "images", root / "masks"


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- mask modes


def test_index_masks_copied_and_converted(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 5, [0, 1, 2])
    ds = import_folder(images, masks, tmp_path / "out", classes=THREE, split_mode="none")
    assert [s.id for s in ds.samples] == [f"s{i:02d}" for i in range(5)]
    assert ds.class_table.names == ["bg", "a", "b"]
    assert all(s.split == "train" for s in ds.samples)
    for s in ds.samples:
        # Images are copied byte for byte, masks stored as class-index PNG.
        assert file_sha256(ds.root / s.image) == file_sha256(images / f"{s.id}.png")
        np.testing.assert_array_equal(read_mask(ds.root / s.mask), np.asarray(Image.open(masks / f"{s.id}.png")))
        assert (s.width, s.height) == (16, 12)
    assert [p for p in check_dataset(ds.root) if p.severity == "error"] == []
    assert not leftovers(tmp_path)


def test_derived_classes_from_index_values(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 3, [0, 3])
    ds = import_folder(images, masks, tmp_path / "out", classes=None, split_mode="none")
    assert ds.class_table.names == ["background", "class_1", "class_2", "class_3"]
    assert [c.color for c in ds.class_table.classes] == [default_color(i) for i in range(4)]
    assert ds.class_table.ignore_index == 255


@pytest.mark.parametrize("fg", [255, 1])
def test_binary_masks(tmp_path: Path, fg: int) -> None:
    images, masks = make_folder(tmp_path / "src", 3, [0, fg])
    ds = import_folder(images, masks, tmp_path / "out", classes=None, mask_mode="binary", split_mode="none")
    assert ds.class_table.num_classes == 2
    for s in ds.samples:
        expected = (np.asarray(Image.open(masks / f"{s.id}.png")) > 0).astype(np.uint8)
        np.testing.assert_array_equal(read_mask(ds.root / s.mask), expected)


def test_auto_detects_binary_and_index(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "bin", 3, [0, 255])
    ds = import_folder(images, masks, tmp_path / "o1", classes=None, mask_mode="auto", split_mode="none")
    assert set(np.unique(read_mask(ds.root / ds.samples[0].mask))) == {0, 1}
    images, masks = make_folder(tmp_path / "idx", 3, [0, 1, 2])
    ds = import_folder(images, masks, tmp_path / "o2", classes=None, mask_mode="auto", split_mode="none")
    assert ds.class_table.num_classes == 3


def rgb_mask(ids: np.ndarray, colors: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = np.zeros(ids.shape + (3,), dtype=np.uint8)
    for k, c in colors.items():
        out[ids == k] = c
    return out


def test_rgb_masks_with_colors(tmp_path: Path) -> None:
    colors = {0: (0, 0, 0), 1: RED, 2: GREEN}
    for i in range(3):
        save_image(tmp_path / "images" / f"s{i}.png", seed=i)
        save_mask(tmp_path / "masks" / f"s{i}.png", rgb_mask(blocks([0, 1, 2], seed=i), colors))
    # String keys as they come from YAML/CLI are accepted.
    ds = import_folder(
        tmp_path / "images",
        tmp_path / "masks",
        tmp_path / "out",
        classes=None,
        mask_mode="rgb",
        colors={str(k): list(v) for k, v in colors.items()},
        split_mode="none",
    )
    assert [c.color for c in ds.class_table.classes] == [colors[0], RED, GREEN]
    for i, s in enumerate(ds.samples):
        np.testing.assert_array_equal(read_mask(ds.root / s.mask), blocks([0, 1, 2], seed=i))


def import_rgb(tmp_path: Path, colors: dict, **options):
    """Import tmp_path/images + tmp_path/masks as RGB colour masks into tmp_path/out, no split."""
    return import_folder(tmp_path / "images", tmp_path / "masks", tmp_path / "out", classes=None, mask_mode="rgb",
                         colors=colors, split_mode="none", **options)


def test_rgb_unknown_colour_is_an_error(tmp_path: Path) -> None:
    ids = blocks([0, 1, 2])
    save_image(tmp_path / "images" / "s.png")
    save_mask(tmp_path / "masks" / "s.png", rgb_mask(ids, {0: (0, 0, 0), 1: RED, 2: (1, 2, 3)}))
    with pytest.raises(ImportProblems) as err:
        import_rgb(tmp_path, {0: [0, 0, 0], 1: list(RED)})
    assert "(1, 2, 3)" in str(err.value) and "unknown mask colour" in str(err.value)
    assert not (tmp_path / "out").exists()


def jpeg_bytes_roundtrip(arr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def test_jpeg_binary_masks_need_threshold(tmp_path: Path) -> None:
    size = (32, 24)
    truth = {}
    for i in range(3):
        ids = blobs(2, size=size, seed=i)
        truth[f"s{i}"] = ids
        save_image(tmp_path / "images" / f"s{i}.png", size=size, seed=i)
        # Grey JPEG saved as RGB like Kvasir's masks.
        save_mask(tmp_path / "masks" / f"s{i}.jpg", np.repeat(ids[..., None] * 255, 3, axis=2), quality=70)
    noisy = np.asarray(Image.open(tmp_path / "masks" / "s0.jpg"))
    assert len(np.unique(noisy)) > 2  # the fixture really has JPEG noise
    args = (tmp_path / "images", tmp_path / "masks")
    with pytest.raises(ImportProblems) as err:
        import_folder(*args, tmp_path / "o1", classes=None, mask_mode="binary", split_mode="none")
    assert "snap='threshold'" in str(err.value) and len(err.value.problems) == 3
    ds = import_folder(*args, tmp_path / "o2", classes=None, mask_mode="binary", snap="threshold", split_mode="none")
    for s in ds.samples:
        got = read_mask(ds.root / s.mask)
        assert set(np.unique(got)) <= {0, 1}
        assert (got == truth[s.id]).mean() > 0.98


def test_jpeg_rgb_masks_snap_to_nearest(tmp_path: Path) -> None:
    size = (32, 24)
    colors = {0: (0, 0, 0), 1: RED, 2: (0, 130, 200)}
    ids = blobs(3, size=size)
    save_image(tmp_path / "images" / "s.png", size=size)
    save_mask(tmp_path / "masks" / "s.jpg", rgb_mask(ids, colors), quality=80)
    args = (tmp_path / "images", tmp_path / "masks")
    with pytest.raises(ImportProblems, match="snap='nearest'"):
        import_folder(*args, tmp_path / "o1", classes=None, mask_mode="rgb", colors=colors, split_mode="none")
    ds = import_folder(
        *args, tmp_path / "o2", classes=None, mask_mode="rgb", colors=colors, snap="nearest", split_mode="none"
    )
    got = read_mask(ds.root / ds.samples[0].mask)
    assert set(np.unique(got)) <= {0, 1, 2}
    assert (got == ids).mean() > 0.95


def test_nearest_snap_refuses_a_missing_class_colour(tmp_path: Path) -> None:
    # GREEN is not in colors: snapping it to the nearest class would silently mislabel a whole region.
    ids = blobs(3, size=(32, 24), seed=1)
    save_image(tmp_path / "images" / "s.png", size=(32, 24))
    save_mask(tmp_path / "masks" / "s.jpg", rgb_mask(ids, {0: (0, 0, 0), 1: RED, 2: GREEN}), quality=90)
    with pytest.raises(ImportProblems, match="far from palette"):
        import_rgb(tmp_path, {0: [0, 0, 0], 1: list(RED)}, snap="nearest")


def test_remap_to_class_and_to_ignore(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "a", 2, [0, 255])
    ds = import_folder(images, masks, tmp_path / "o1", classes=None, remap={255: 1}, split_mode="none")
    assert set(np.unique(read_mask(ds.root / ds.samples[0].mask))) == {0, 1}

    images, masks = make_folder(tmp_path / "b", 2, [0, 1, 2])
    two = [{"id": 0, "name": "bg"}, {"id": 1, "name": "fg"}]
    ds = import_folder(images, masks, tmp_path / "o2", classes=two, remap={"2": "ignore"}, split_mode="none")
    got = read_mask(ds.root / ds.samples[0].mask)
    src = np.asarray(Image.open(masks / "s00.png"))
    np.testing.assert_array_equal(got, np.where(src == 2, 255, src))


def test_index_mode_refuses_0_255_masks_without_remap(tmp_path: Path) -> None:
    # Read as index, 255 would be ignore_index and every foreground pixel silently unscored.
    images, masks = make_folder(tmp_path / "src", 2, [0, 255])
    with pytest.raises(ImportProblems, match="masks look binary"):
        import_folder(images, masks, tmp_path / "out", classes=None, split_mode="none")


# ----------------------------------------------------------------------------- splits


def test_split_subfolders(tmp_path: Path) -> None:
    # "valid" is a common alias of "val"; nested folders keep their relative path in the id.
    for folder, names in (("train", ["a", "b", "sub/c"]), ("valid", ["d"]), ("test", ["e"])):
        for i, name in enumerate(names):
            save_image(tmp_path / "images" / folder / f"{name}.png", seed=i)
            save_mask(tmp_path / "masks" / folder / f"{name}.png", blocks([0, 1], seed=i))
    ds = import_folder(tmp_path / "images", tmp_path / "masks", tmp_path / "out", classes=None, split_mode="subfolders")
    assert {s.id: s.split for s in ds.samples} == {
        "a": "train",
        "b": "train",
        "sub/c": "train",
        "d": "val",
        "e": "test",
    }
    assert (ds.root / "images" / "sub__c.png").is_file()


def test_split_subfolders_problems(tmp_path: Path) -> None:
    save_image(tmp_path / "images" / "train" / "a.png")
    save_mask(tmp_path / "masks" / "val" / "a.png", blocks([0, 1]))  # mask in another split
    save_image(tmp_path / "images" / "val" / "b.png")
    save_image(tmp_path / "images" / "test" / "b.png")  # same id in two splits
    save_mask(tmp_path / "masks" / "val" / "b.png", blocks([0, 1]))
    save_mask(tmp_path / "masks" / "test" / "b.png", blocks([0, 1]))
    save_image(tmp_path / "images" / "loose.png")  # not in a split folder
    (tmp_path / "images" / "extra").mkdir()
    with pytest.raises(ImportProblems) as err:
        import_folder(tmp_path / "images", tmp_path / "masks", tmp_path / "out", classes=None, split_mode="subfolders")
    kinds = sorted(p.kind for p in err.value.problems)
    assert kinds == [
        "duplicate id",
        "file outside split folders",
        "missing image",
        "missing mask",
        "unknown split folder",
    ]


def test_split_lists(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 5, [0, 1])
    (tmp_path / "train.txt").write_text("# training stems\ns00\ns01.png\n\ns02\n")
    (tmp_path / "val.txt").write_text("s03\n")
    (tmp_path / "test.txt").write_text("s04.jpg\n")
    lists = {k: tmp_path / f"{k}.txt" for k in ("train", "val", "test")}
    ds = import_folder(images, masks, tmp_path / "out", classes=None, split_mode="lists", split_lists=lists)
    assert [s.split for s in ds.samples] == ["train", "train", "train", "val", "test"]


def test_split_lists_problems(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 4, [0, 1])
    (tmp_path / "train.txt").write_text("s00\ns01\nghost\n")
    (tmp_path / "val.txt").write_text("s01\n")
    lists = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt", "test": tmp_path / "nope.txt"}
    with pytest.raises(ImportProblems) as err:
        import_folder(images, masks, tmp_path / "out", classes=None, split_mode="lists", split_lists=lists)
    kinds = sorted(p.kind for p in err.value.problems)
    assert kinds == [
        "listed stem not found",
        "stem in no split list",
        "stem in no split list",
        "stem in two splits",
        "unreadable split list",
    ]


def splits_of(ds) -> dict[str, str]:
    return {s.id: s.split for s in ds.samples}


def test_split_random_is_seeded_and_proportional(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 20, [0, 1])
    a = import_folder(images, masks, tmp_path / "a", classes=None, seed=3)
    b = import_folder(images, masks, tmp_path / "b", classes=None, seed=3)
    c = import_folder(images, masks, tmp_path / "c", classes=None, seed=4)
    assert splits_of(a) == splits_of(b)
    assert splits_of(a) != splits_of(c)
    assert [len(a.split(s)) for s in ("train", "val", "test")] == [16, 2, 2]
    d = import_folder(images, masks, tmp_path / "d", classes=None, fractions={"train": 0.5, "val": 0.5})
    assert [len(d.split(s)) for s in ("train", "val", "test")] == [10, 10, 0]


def test_split_random_small_dataset_keeps_every_split(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 6, [0, 1])
    ds = import_folder(images, masks, tmp_path / "out", classes=None)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [4, 1, 1]


def test_split_none_puts_everything_in_train(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 4, [0, 1])
    ds = import_folder(images, masks, tmp_path / "out", classes=None, split_mode="none")
    assert {s.split for s in ds.samples} == {"train"}


# ----------------------------------------------------------------------------- refusals and problems


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path / "src", 3, [0, 1])
    import_folder(images, masks, tmp_path / "out", classes=None, split_mode="none")
    before = file_sha256(tmp_path / "out" / "manifest.jsonl")
    with pytest.raises(UserError, match=r"out: dataset already exists; pass overwrite=true to replace it$"):
        import_folder(images, masks, tmp_path / "out", classes=None, split_mode="random")
    assert file_sha256(tmp_path / "out" / "manifest.jsonl") == before
    ds = import_folder(images, masks, tmp_path / "out", classes=None, split_mode="random", overwrite=True)
    assert {s.split for s in ds.samples} != {"train"} or len(ds.samples) < 3
    assert load_dataset(tmp_path / "out").manifest_hash != before
    assert not leftovers(tmp_path)


def test_every_bad_input_listed_in_one_error(tmp_path: Path) -> None:
    img, msk = tmp_path / "images", tmp_path / "masks"
    save_image(img / "good.png")
    save_mask(msk / "good.png", blocks([0, 1]))
    save_image(img / "nomask.png")
    save_mask(msk / "noimage.png", blocks([0, 1]))
    save_image(img / "small.png", size=(8, 8))
    save_mask(msk / "small.png", blocks([0, 1]))
    (img / "garbage.png").write_bytes(b"this is not a png")
    save_mask(msk / "garbage.png", blocks([0, 1]))
    save_image(img / "trunc.png")
    save_mask(msk / "trunc.png", blocks([0, 1]))
    data = (msk / "trunc.png").read_bytes()
    (msk / "trunc.png").write_bytes(data[: len(data) // 2])
    save_image(img / "tail.png")  # cut after the pixel data: only a structural check notices
    save_mask(msk / "tail.png", blocks([0, 1]))
    data = (img / "tail.png").read_bytes()
    (img / "tail.png").write_bytes(data[:-20])
    save_image(img / "seven.png")
    save_mask(msk / "seven.png", blocks([0, 1, 7]))
    save_image(img / "dup.png")
    save_image(img / "dup.jpg", fmt="JPEG")
    save_mask(msk / "dup.png", blocks([0, 1]))
    with pytest.raises(ImportProblems) as err:
        import_folder(img, msk, tmp_path / "out", classes=THREE, split_mode="none")
    by_file = {Path(p.file).name: p for p in err.value.problems}
    assert by_file["nomask.png"].kind == "missing mask"
    assert by_file["noimage.png"].kind == "missing image"
    assert by_file["small.png"].kind == "size mismatch"
    assert by_file["small.png"].found == "16x12" and by_file["small.png"].expected.startswith("8x8")
    assert by_file["garbage.png"].kind == "unreadable image"
    assert by_file["trunc.png"].kind == "unreadable mask"
    assert by_file["seven.png"].kind == "mask value not mapped to a class"
    assert by_file["seven.png"].found.startswith("7 (")
    assert by_file["dup"].kind == "duplicate stem" and "dup.jpg" in by_file["dup"].found
    assert by_file["tail.png"].kind == "unreadable image"
    assert len(err.value.problems) == 8
    message = str(err.value)
    assert message.startswith("8 problem(s)") and message.count("\n  - ") == 8
    assert isinstance(err.value, UserError)  # the CLI shows it without a traceback
    assert not (tmp_path / "out").exists()
    assert not leftovers(tmp_path)  # the writer's temp folder was removed


def test_jpeg_index_mask_and_colour_mask_in_index_mode(tmp_path: Path) -> None:
    save_image(tmp_path / "images" / "j.png")
    save_mask(tmp_path / "masks" / "j.jpg", blocks([0, 1]) * 255)
    save_image(tmp_path / "images" / "c.png")
    save_mask(tmp_path / "masks" / "c.png", rgb_mask(blocks([0, 1]), {0: (0, 0, 0), 1: RED}))
    with pytest.raises(ImportProblems) as err:
        import_folder(tmp_path / "images", tmp_path / "masks", tmp_path / "out", classes=THREE, split_mode="none")
    assert sorted(p.kind for p in err.value.problems) == ["colour mask", "lossy mask"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_mode": "nope"}, r"^mask_mode 'nope' is not one of \['index', 'binary', 'rgb', 'auto'\]$"),
        ({"snap": "sideways"}, r"^snap 'sideways' is not one of \['none', 'threshold', 'nearest'\]$"),
        ({"snap": "threshold", "mask_mode": "index"}, r"^snap='threshold' needs mask_mode='binary', not 'index'$"),
        ({"mask_mode": "rgb"}, r"^mask_mode='rgb' needs colors \{class_id: \[r, g, b\]\}$"),
        ({"split_mode": "lists"}, r"^split_mode='lists' needs split_lists"),
        ({"fractions": {"train": 0.8, "val": 0.3}}, r"^fractions: \{'train': 0.8, 'val': 0.3\} must be non-negative "
                                                    r"and sum to 1$"),
        ({"fractions": {"train": 0.9, "holdout": 0.1}}, r"^fractions: unknown split\(s\) \['holdout'\]"),
        ({"remap": {255: "sky"}}, r"^remap: target 'sky' for 255 is neither a class id nor 'ignore'$"),
        ({"classes": [{"id": 1, "name": "gap"}]},
         r"^classes argument: class ids are \[1\]; expected 0..0 without gaps$"),
    ],
)
def test_bad_arguments_raise_before_reading(tmp_path: Path, kwargs: dict, message: str) -> None:
    images, masks = make_folder(tmp_path / "src", 1, [0, 1])
    kwargs = {"classes": None, **kwargs}
    with pytest.raises(UserError, match=message):  # the CLI shows a UserError as one line, exit 2
        import_folder(images, masks, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- real datasets (skipped if absent)


def copy_subset(src_images: Path, src_masks: Path, dst: Path, n: int) -> tuple[Path, Path]:
    names = sorted(p.name for p in src_images.iterdir() if p.is_file())[:n]
    for sub, src in (("images", src_images), ("masks", src_masks)):
        (dst / sub).mkdir(parents=True)
        for name in names:
            shutil.copyfile(src / name, dst / sub / name)
    return dst / "images", dst / "masks"


@pytest.mark.skipif(not (MEMBRANE / "train" / "label").is_dir(), reason="membrane dataset not available")
def test_real_membrane_subset(tmp_path: Path) -> None:
    images, masks = copy_subset(MEMBRANE / "train" / "image", MEMBRANE / "train" / "label", tmp_path / "src", 6)
    classes = [{"id": 0, "name": "membrane"}, {"id": 1, "name": "cell"}]
    ds = import_folder(images, masks, tmp_path / "membrane", classes=classes, remap={255: 1})
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [4, 1, 1]
    cell = []
    for s in ds.samples:
        m = read_mask(ds.root / s.mask)
        assert m.shape == (512, 512) and set(np.unique(m)) <= {0, 1}
        assert file_sha256(ds.root / s.image) == file_sha256(images / Path(s.image).name)
        cell.append(m.mean())
    # PROVENANCE: 78% of all label pixels are cell interior (255).
    assert 0.6 < float(np.mean(cell)) < 0.9
    assert yaml.safe_load((ds.root / "classes.yaml").read_text())["classes"][1]["name"] == "cell"
    assert [p for p in check_dataset(ds.root) if p.severity == "error"] == []


@pytest.mark.skipif(not (KVASIR / "masks").is_dir(), reason="kvasir_seg dataset not available")
def test_real_kvasir_subset(tmp_path: Path) -> None:
    images, masks = copy_subset(KVASIR / "images", KVASIR / "masks", tmp_path / "src", 6)
    with pytest.raises(ImportProblems):  # JPEG noise without snapping is refused, not guessed
        import_folder(images, masks, tmp_path / "raw", classes=None, mask_mode="binary")
    classes = [{"id": 0, "name": "background"}, {"id": 1, "name": "polyp"}]
    ds = import_folder(images, masks, tmp_path / "kvasir", classes=classes, mask_mode="binary", snap="threshold")
    assert len(ds.samples) == 6
    for s in ds.samples:
        m = read_mask(ds.root / s.mask)
        assert set(np.unique(m)) <= {0, 1}
        assert 0.005 <= m.mean() <= 0.81, f"{s.id}: polyp share {m.mean():.3f}"
        assert s.image.endswith(".jpg")  # images kept as the original JPEG bytes, not re-encoded
        assert file_sha256(ds.root / s.image) == file_sha256(images / Path(s.image).name)
    assert [p for p in check_dataset(ds.root) if p.severity == "error"] == []
