"""The HTML explorer's files and inline data, without a browser (see test_explorer_browser.py for that)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from masklab.data.classes import ClassInfo, ClassTable
from masklab.explore.rendering import error_map
from masklab.explore.samples import ExplorerSample
from masklab.explore.static_files import THUMB_SIDE
from masklab.explore.static_page import MAX_CHANGED, MAX_CURVE_POINTS, write_explorer

CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "car", (230, 25, 75)),
                      ClassInfo(2, "road", (60, 180, 75))))
KINDS = ("image", "gt", "pred", "error")


def make_files(root: Path, name: str, w: int = 160, h: int = 120, seed: int = 0, noise: float = 0.0):
    """An RGB image with a car (1) and road (2) mask, a prediction that shifts them, on disk; returns the paths."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 40 * seed % 256)], -1).astype(float)
    image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8) if noise else \
        image.astype(np.uint8)
    gt = np.zeros((h, w), np.uint8)
    gt[h // 2:, :] = 2
    gt[h // 4: h // 2, w // 4: w // 2] = 1
    gt[:3, :3] = CLASSES.ignore_index
    pred = np.roll(gt, w // 10, axis=1)
    pred[:3, :3] = 0
    paths = (root / f"{name}.png", root / f"{name}_gt.png", root / f"{name}_pred.png")
    for arr, path in zip((image, gt, pred), paths):
        Image.fromarray(arr).save(path)
    return paths, image, gt, pred


def embedded(index: Path) -> dict:
    match = re.search(r'<script type="application/json" id="masklab-data">(.*?)</script>', index.read_text(), re.S)
    assert match, "no inline data"
    return json.loads(match.group(1))


def decode_uri(uri: str, kind: str) -> Image.Image:
    prefix = f"data:image/{kind};base64,"
    assert uri.startswith(prefix), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):])))


@pytest.fixture
def three(tmp_path):
    """Samples a, b, c with images, masks and predictions, and a table row each."""
    samples = []
    for k, sid in enumerate("abc"):
        (image, gt, pred), *_ = make_files(tmp_path, sid, seed=k)
        samples.append(ExplorerSample(sid, "val", image, gt, pred))
    table = pd.DataFrame({"id": list("abc"), "mIoU": [0.5, 0.25, np.nan]})
    return tmp_path, samples, table


def test_writes_page_and_full_resolution_files(three):
    root, samples, table = three
    index = write_explorer(root / "out", CLASSES, samples, table, {"headline": {"mIoU": 0.375}}, "run x",
                           {"run_id": "r1", "path": "report"})
    assert index == root / "out" / "index.html" and index.stat().st_size > 10_000
    full = sorted(p.name for p in (root / "out" / "full").iterdir())
    assert full == sorted(f"{sid}_{kind}.png" for sid in "abc" for kind in KINDS)
    _, image, gt, pred = make_files(root, "again", seed=0)
    assert np.array_equal(np.asarray(Image.open(root / "out" / "full" / "a_image.png").convert("RGB")), image)
    # Prediction and ground truth PNGs keep the class ids as pixel values, coloured by the class table.
    with Image.open(root / "out" / "full" / "a_gt.png") as im:
        assert im.mode == "P" and np.array_equal(np.asarray(im), gt)
        assert im.getpalette()[3:9] == [230, 25, 75, 60, 180, 75]
    with Image.open(root / "out" / "full" / "a_error.png") as im:
        assert np.array_equal(np.asarray(im), error_map(gt, pred, CLASSES))
    data = embedded(index)
    assert data["mlflow"] == {"run_id": "r1", "path": "report"}
    assert data["samples"]["files"] == ["igpe"] * 3
    assert data["summary"]["headline"] == {"mIoU": 0.375}
    assert data["problems"] == []  # (the page's list of what went wrong)
    assert "<title>run x</title>" in index.read_text()
    # Writing again with fewer samples leaves no stale files behind.
    write_explorer(root / "out", CLASSES, samples[:1], None, {}, "again")
    assert sorted(p.name for p in (root / "out" / "full").iterdir()) == [f"a_{k}.png" for k in sorted(KINDS)]


def test_inline_thumbnails_are_small_data_uris_of_class_codes(three):
    root, samples, table = three
    data = embedded(write_explorer(root / "out", CLASSES, samples, table, {}, "t"))
    s = data["samples"]
    _, image, gt, pred = make_files(root, "again", seed=0)
    thumb = decode_uri(s["img"][0], "jpeg")
    assert thumb.format == "JPEG" and thumb.size == (THUMB_SIDE, THUMB_SIDE * 120 // 160)
    assert len(s["img"][0]) < 3000
    for key, mask in (("gt", gt), ("pred", pred)):
        small = decode_uri(s[key][0], "png")
        assert small.size == thumb.size and small.mode == "P"
        codes = np.asarray(small)
        palette = np.array(small.getpalette()[: 3 * 4]).reshape(-1, 3)
        assert (palette == np.arange(4)[:, None]).all()  # grey (i, i, i): the canvas's red channel is the code
        expected = mask[(np.arange(60) * 2 + 1)[:, None], (np.arange(80) * 2 + 1)[None, :]]
        expected = np.where(expected == CLASSES.ignore_index, CLASSES.num_classes, expected)
        assert np.array_equal(codes, expected)
        assert len(s[key][0]) < 600
    assert s["gtc"][0] == [0, 1, 2] and s["pc"][0] == [0, 1, 2]
    assert (s["w"][0], s["h"][0], s["ok"][0]) == (160, 120, 1)
    assert data["columns"] == [{"name": "mIoU", "type": "num", "values": [0.5, 0.25, None]}]


def test_bad_input_becomes_problems_and_placeholders(tmp_path):
    (img, gt, pred), *_ = make_files(tmp_path, "good")
    garbage, small_gt, odd = tmp_path / "garbage.png", tmp_path / "small_gt.png", tmp_path / "odd_values.png"
    garbage.write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small_gt)
    Image.fromarray(np.full((120, 160), 7, np.uint8)).save(odd)
    samples = [
        ExplorerSample("good", "val", img, gt, pred),
        ExplorerSample("missing", "val", tmp_path / "nope.png", gt, pred),
        ExplorerSample("garbage", "val", garbage, gt, None),
        ExplorerSample("small-mask", "val", img, small_gt, pred),
        ExplorerSample("no-pred-file", "val", img, gt, tmp_path / "gone.png"),
        ExplorerSample("odd", "train", img, odd, None),
    ]
    table = pd.DataFrame({"id": ["good", "missing", "ghost", "ghost", "odd", "no-pred-file", "garbage"],
                          "mIoU": [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7]})
    index = write_explorer(tmp_path / "out", CLASSES, samples, table, {"problems": ["earlier"]}, "bad")
    data = embedded(index)
    problems = data["problems"]  # what the page lists: the summary's, then those found
    text = "\n".join(problems)
    assert problems[0] == "earlier"
    assert "sample missing: image" in text and "is missing" in text
    assert "sample garbage: image" in text and "cannot be read" in text
    assert "sample small-mask: ground truth" in text and "10x10 but the image is 160x120" in text
    assert "sample no-pred-file: prediction" in text
    assert "sample odd: ground truth" in text and "[7]" in text
    assert "repeating an id" in text and "not a sample: ghost" in text
    assert "1 sample without a row in the per-sample table: small-mask" in text
    s = data["samples"]
    assert s["ok"] == [1, 0, 0, 1, 1, 1]
    assert s["img"][1] == "" and s["files"][1] == ""  # placeholder card, no full files
    assert s["files"] == ["igpe", "", "", "ip", "ig", "ig"]
    full = {p.name for p in (tmp_path / "out" / "full").iterdir()}
    assert not any(name.startswith(("missing", "garbage")) for name in full)
    # A table without an id column is reported and left out, also when the summary has no problems to begin with.
    data = embedded(write_explorer(tmp_path / "out2", CLASSES, samples[:1], pd.DataFrame({"x": [1]}), {}, "t"))
    assert len(data["problems"]) == 1 and "no 'id' column" in data["problems"][0] and data["columns"] == []


def test_dataset_browse_without_table_or_predictions(three):
    root, samples, _ = three
    for s in samples:
        s.pred = None
    data = embedded(write_explorer(root / "out", CLASSES, samples, None, {}, "browse"))
    assert data["columns"] == [] and data["problems"] == [] and data["mlflow"] is None
    assert data["samples"]["pred"] == ["", "", ""] and data["samples"]["files"] == ["ig"] * 3
    assert sorted(p.name for p in (root / "out" / "full").iterdir()) == sorted(
        f"{sid}_{kind}.png" for sid in "abc" for kind in ("image", "gt"))
    samples[0].mask = None
    data = embedded(write_explorer(root / "out", CLASSES, samples[:1], None, {}, "images only"))
    assert data["samples"]["gt"] == [""] and data["samples"]["files"] == ["i"]


def test_page_is_self_contained_and_text_is_escaped(three):
    root, samples, table = three
    samples[0].id = "weird/</script><b>x</b> & 'é'"
    samples[1].id = "weird/</script><b>x</b> & 'é'!"  # the same safe stem; the names still differ
    table.loc[0, "id"] = samples[0].id
    index = write_explorer(root / "out", CLASSES, samples, table, {"problems": ["<img src=x onerror=alert(1)>"]},
                           "<script>alert(1)</script>")
    page = index.read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "</script><b>" not in page and "<img src=x" not in page
    # No network: no external scripts, styles, fonts or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"<script[^>]+src=|<link[^>]+stylesheet|@import|url\(\s*['\"]?https?:", page)
    data = embedded(index)
    assert data["samples"]["id"][:2] == [samples[0].id, samples[1].id]
    names = data["samples"]["name"]
    assert len(set(names)) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]+", n) for n in names)
    assert {f"{names[0]}_image.png", f"{names[1]}_image.png"} <= {p.name for p in (root / "out" / "full").iterdir()}
    assert data["columns"][0]["values"][:1] == [0.5]  # the table row joined to the odd id


def test_table_columns_keep_their_types(three):
    root, samples, _ = three
    table = pd.DataFrame({
        "id": ["c", "a", "b"],  # any order: rows are joined by id
        "split": ["x", "x", "x"],  # the samples' own split wins
        "mIoU": [0.123456, 1 / 3, np.nan],
        "tp/car": [10, 20_000_000, 3],
        "missed/car": [True, False, True],
        "hallucinated/road": pd.array([True, None, False], dtype="boolean"),
        "note": ["x", None, "z"],
        "inf": [np.inf, 1.0, -np.inf],
    })
    cols = {c["name"]: c for c in embedded(write_explorer(root / "out", CLASSES, samples, table, {}, "t"))["columns"]}
    assert "split" not in cols and "id" not in cols
    assert cols["mIoU"] == {"name": "mIoU", "type": "num", "values": [0.3333, None, 0.1235]}
    assert cols["tp/car"]["values"] == [20_000_000, 3, 10]
    assert cols["missed/car"] == {"name": "missed/car", "type": "bool", "values": [False, True, True]}
    assert cols["hallucinated/road"]["type"] == "bool" and cols["hallucinated/road"]["values"] == [None, False, True]
    assert cols["note"] == {"name": "note", "type": "str", "values": [None, "z", "x"]}
    assert cols["inf"]["values"] == [1, None, None]


def test_summary_is_made_json_safe_and_bounded(three):
    root, samples, table = three
    summary = {"headline": {"mIoU": np.float32(0.5), "nan": float("nan")},
               "curves": {"val/mIoU": [[i, i / 1000] for i in range(5000)]},
               "changed": [{"id": "a", "delta_mIoU": -0.1}] * 1000,
               "confusion": {"labels": ["a", "b"], "matrix": np.eye(2)}}
    data = embedded(write_explorer(root / "out", CLASSES, samples, table, summary, "t"))["summary"]
    assert data["headline"] == {"mIoU": 0.5, "nan": None}
    # Thinned to MAX_CURVE_POINTS evenly spaced points, first and last kept; the first MAX_CHANGED rows kept.
    kept = np.linspace(0, 4999, MAX_CURVE_POINTS).round().astype(int)
    assert data["curves"]["val/mIoU"] == [[int(i), int(i) / 1000] for i in kept]
    assert len(kept) == len(set(kept)) == 400 and kept[0] == 0 and kept[-1] == 4999
    assert data["changed"] == [{"id": "a", "delta_mIoU": -0.1}] * MAX_CHANGED and MAX_CHANGED == 200
    assert data["confusion"]["matrix"] == [[1.0, 0.0], [0.0, 1.0]]


def test_error_map_codes():
    gt = np.array([[0, 1, 1, 2, 255]], np.uint8)
    pred = np.array([[1, 0, 2, 2, 1]], np.uint8)
    # false positive, false negative, wrong class, correct, ignored
    assert error_map(gt, pred, CLASSES).tolist() == [[1, 2, 3, 0, 0]]


def test_page_weight_per_sample(tmp_path, capsys):
    """1,000 samples (four image files reused, 96x80 px with noise so thumbnails are full size) with a realistic
    per-sample table for 3 classes: the page must stay under 3 KB per sample (it grows linearly; 5,000 samples
    weigh 9.7 MB, docs/benchmarks.md)."""
    n, files = 1000, []
    for k in range(4):
        paths, *_ = make_files(tmp_path, f"f{k}", w=96, h=80, seed=k, noise=12)
        files.append(paths)
    samples = [ExplorerSample(f"val/{i:05d}", "val", *files[i % 4]) for i in range(n)]
    rng = np.random.default_rng(0)
    cols: dict = {"id": [s.id for s in samples]}
    for name in ("mIoU", "mDice", "boundary_mIoU", "pixel_acc", "conf_mean_max_prob", "conf_mean_entropy",
                 "conf_low_fraction"):
        cols[name] = rng.random(n)
    for cls in CLASSES.names:
        for metric in ("iou", "dice", "boundary_iou"):
            cols[f"{metric}/{cls}"] = rng.random(n)
        for metric in ("tp", "fp", "fn", "true_area", "pred_area"):
            cols[f"{metric}/{cls}"] = rng.integers(0, 8000, n)
        for metric in ("missed", "hallucinated"):
            cols[f"{metric}/{cls}"] = rng.random(n) < 0.1
    # How long writing takes is measured in benchmarks/explorer.py, not here.
    index = write_explorer(tmp_path / "out", CLASSES, samples, pd.DataFrame(cols), {}, "weight", None)
    size = index.stat().st_size
    with capsys.disabled():
        print(f"\nexplorer page weight: {n} samples -> index.html {size / 1e6:.2f} MB "
              f"({size / n:.0f} bytes per sample, {len(cols) - 1} table columns)")
    assert size < n * 3 * 1024
    assert len(list((tmp_path / "out" / "full").iterdir())) == 4 * n


# ---------------------------------------------------------------------------------------------------------------
# Instance samples: objects outlined by outcome (TP / FP / FN / crowd), from a dataset with objects, 16-bit id maps
# and a per-sample table made by InstanceMetrics, as `masklab report` gets them from an instance evaluation.

OBJ_CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "cell", (230, 25, 75), thing=True),
                          ClassInfo(2, "blob", (60, 180, 75), thing=True)))
OH, OW = 48, 64


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((OH, OW), bool)
    mask[y0:y1, x0:x1] = True
    return mask


# Ground truth (class, mask, iscrowd): g0 is found by prediction 0, g1 is missed, g2 is a crowd region of blobs.
# Predictions (class, mask, score), most confident first: p1 is a cell where there is none, p2 a blob on the crowd
# region, p3 below the 0.5 score threshold (left out of the matches).
CASE_GT = [(1, box(4, 20, 4, 20), 0), (1, box(26, 42, 40, 56), 0), (2, box(30, 46, 2, 21), 1)]
CASE_PRED = [(1, box(5, 20, 4, 20), 0.9), (1, box(2, 10, 44, 60), 0.8), (2, box(32, 44, 4, 17), 0.7),
             (1, box(20, 24, 25, 31), 0.2)]
TP_IOU = 240 / 256  # p0 covers 15 of g0's 16 rows


def write_instance_report(root: Path, cases: dict[str, tuple[list, list]], split: str = "val"):
    """A dataset with objects, the id maps of the predictions (id k + 1 = prediction k, the most confident on top)
    and the per-sample table InstanceMetrics makes of them (matches as JSON, as the evaluation stores it)."""
    from masklab.data.writer import DatasetWriter
    from masklab.metrics.instance import InstanceMetrics

    writer = DatasetWriter(root / "data", OBJ_CLASSES)
    metrics = InstanceMetrics([1, 2])
    pred_dir = root / f"{split}_pred"
    pred_dir.mkdir(parents=True)
    yy, xx = np.mgrid[:OH, :OW]
    rows = []
    for k, (sid, (gt, pred)) in enumerate(cases.items()):
        image = np.stack([xx * 4, yy * 5, np.full_like(xx, 30 * k)], -1).astype(np.uint8)
        objects = [{"class_id": c, "mask": m, "iscrowd": crowd} for c, m, crowd in gt]
        writer.add(sid, image, None, split, objects=objects)
        ids = np.zeros((OH, OW), np.uint16)
        for d in reversed(range(len(pred))):
            ids[pred[d][1]] = d + 1
        Image.fromarray(ids).save(pred_dir / f"{sid}.png")
        row = metrics.update(sid, _stack(gt), np.array([o[0] for o in gt]), np.array([o[2] for o in gt]),
                             _stack(pred), np.array([o[0] for o in pred], int), np.array([o[2] for o in pred], float))
        row = {"id": row.pop("sample_id"), "split": split, **row}
        row["matches"] = json.dumps(row["matches"])
        rows.append(row)
    return writer.commit(), pd.DataFrame(rows), pred_dir


def _stack(objects: list) -> np.ndarray:
    return np.stack([o[1] for o in objects]) if objects else np.zeros((0, OH, OW), bool)


def rim_colour(overlay: Path, y: int, x: int) -> tuple[int, ...]:
    with Image.open(overlay) as im:
        return tuple(int(v) for v in np.asarray(im.convert("RGBA"))[y, x])


def test_instance_objects_are_outlined_by_outcome(tmp_path):
    from masklab.explore import explorer_samples, split_matches
    from masklab.explore.objects import FILL_ALPHA, OBJECT_STATUS

    dataset, table, pred_dir = write_instance_report(tmp_path, {"a": (CASE_GT, CASE_PRED)})
    assert "matches" in table.columns
    shown, matches, problems = split_matches(table)
    assert problems == [] and "matches" not in shown.columns and len(matches["a"]) == 4
    samples = explorer_samples(dataset, "val", pred_dir, objects=True, matches=matches)
    index = write_explorer(tmp_path / "out", dataset.class_table, samples, shown, {}, "instances")
    data = embedded(index)
    assert data["problems"] == []
    s = data["samples"]
    assert s["files"] == ["igpe"] and s["gt"] == [""] and s["pred"] == [""]  # no class masks: objects instead
    gt, pred = s["obj"][0]["g"], s["obj"][0]["p"]
    # [code, class, IoU, score, matched index, area, x, y, w, h, rings]; 1 TP, 2 FP, 3 FN, 4 crowd, 5 not counted
    assert [e[0] for e in gt] == [1, 3, 4] and [e[0] for e in pred] == [1, 2, 4, 5]
    assert gt[0][:5] == pred[0][:5] == [1, 1, pytest.approx(TP_IOU, abs=1e-4), 0.9, 0]
    assert pred[1][:5] == [2, 1, 0.0, 0.8, None] and pred[3][:5] == [5, -1, None, None, None]
    assert gt[0][5:10] == [256, 4, 4, 16, 16] and pred[0][5:10] == [240, 4, 5, 16, 15]
    assert gt[0][10] == "4,4,4,19,19,19,19,4"  # the square's corner pixels
    assert s["gtc"] == [[1, 2]] and s["pc"] == [[1, 2]]
    # The grid gets the table's numbers, sortable (count_error, mask_AP), and not the long matches JSON.
    columns = {c["name"]: c for c in data["columns"]}
    assert "matches" not in columns
    assert columns["count_error"] == {"name": "count_error", "type": "num", "values": [0]}  # 3 counted - 3 gt
    assert columns["mask_AP"]["type"] == "num" and 0 < columns["mask_AP"]["values"][0] < 1
    names = {k: v["name"] for k, v in data["object_status"].items()}
    assert names == {"1": "TP", "2": "FP", "3": "FN", "4": "crowd", "5": "not counted"}
    # Full-resolution overlays: outlines opaque in the outcome's colour, the inside filled lightly.
    full = tmp_path / "out" / "full"
    colour = {name: (*rgb, 255) for name, _, rgb in OBJECT_STATUS.values()}
    assert rim_colour(full / "a_gt.png", 4, 10) == colour["TP"]
    assert rim_colour(full / "a_gt.png", 12, 12)[3] == FILL_ALPHA
    assert rim_colour(full / "a_gt.png", 26, 48) == colour["FN"]
    assert rim_colour(full / "a_gt.png", 45, 10) == colour["crowd"]
    assert rim_colour(full / "a_pred.png", 5, 10) == colour["TP"]
    assert rim_colour(full / "a_pred.png", 2, 50) == colour["FP"]
    assert rim_colour(full / "a_pred.png", 20, 27) == colour["not counted"]
    assert rim_colour(full / "a_pred.png", 26, 48)[3] == 0  # the missed cell is not a prediction ...
    assert rim_colour(full / "a_error.png", 26, 48) == colour["FN"]  # ... but the matches view shows it
    assert rim_colour(full / "a_error.png", 2, 50) == colour["FP"]
    assert rim_colour(full / "a_error.png", 5, 10) == colour["TP"]


def test_instance_browse_and_bad_matches(tmp_path):
    from masklab.explore import explorer_samples, split_matches
    from masklab.explore.objects import OBJECT_PALETTE
    from masklab.report.overlay import distinct_colors

    dataset, table, pred_dir = write_instance_report(tmp_path, {"a": (CASE_GT, CASE_PRED), "b": (CASE_GT[:1], [])})
    # A dataset browse: objects in distinct colours (no outcome), filled with their class colour.
    samples = explorer_samples(dataset, "val", None)
    data = embedded(write_explorer(tmp_path / "browse", dataset.class_table, samples, None, {}, "browse"))
    assert data["samples"]["files"] == ["ig", "ig"]
    assert [e[0] for e in data["samples"]["obj"][0]["g"]] == [0, 0, 0] and data["samples"]["obj"][0]["p"] is None
    colours = distinct_colors(OBJECT_PALETTE)
    assert data["object_colors"] == colours.tolist()
    gt_png = tmp_path / "browse" / "full" / "a_gt.png"
    assert rim_colour(gt_png, 4, 10) == (*colours[0], 255) and rim_colour(gt_png, 26, 48) == (*colours[1], 255)
    assert rim_colour(gt_png, 12, 12) == (230, 25, 75, rim_colour(gt_png, 12, 12)[3])  # class colour inside
    # Matches that name objects the image does not have (a table from another evaluation) are reported.
    table.loc[0, "matches"] = json.dumps([{"gt": 7, "pred": 0, "class_id": 1, "status": "TP", "iou": 1.0,
                                           "score": 0.9}])
    table.loc[1, "matches"] = "not json"
    shown, matches, problems = split_matches(table)
    assert "b" not in matches and "not a JSON list (b)" in problems[0]
    data = embedded(write_explorer(tmp_path / "bad", dataset.class_table,
                                   explorer_samples(dataset, "val", pred_dir, objects=True, matches=matches), shown,
                                   {"problems": []}, "bad"))
    assert any("sample a: 1 per-object match entry point at no object" in p for p in data["problems"]), data
    # An unreadable id map is one problem of that sample; the page still has its ground truth.
    (pred_dir / "b.png").write_bytes(b"garbage")
    data = embedded(write_explorer(tmp_path / "bad2", dataset.class_table,
                                   explorer_samples(dataset, "val", pred_dir, objects=True, matches=matches), shown,
                                   {}, "bad"))
    assert any("sample b: objects cannot be read" in p for p in data["problems"]), data["problems"]
    assert data["samples"]["files"][1] == "i" and data["samples"]["ok"][1] == 1


def test_data_preview_draws_each_object_in_its_own_colour(tmp_path):
    """`data preview` of a dataset with objects and no class masks: the objects go through the augmentation
    with the image and are outlined in distinct colours."""
    from masklab.report.overlay import distinct_colors
    from masklab.report.preview import CELL, LABEL_HEIGHT, preview_grid
    from masklab.tasks.instance_data import InstanceSplit

    dataset, _, _ = write_instance_report(tmp_path, {"a": (CASE_GT, [])})
    grid = np.asarray(preview_grid(InstanceSplit(dataset, dataset.samples, None), dataset.class_table, 1, 1, 1))
    tile = grid[LABEL_HEIGHT:, :CELL]
    scale = CELL / OW, CELL / OH
    colours = distinct_colors(3)
    for k, (y, x) in enumerate([(4, 10), (26, 48), (45, 10)]):  # a rim pixel of each object
        assert tuple(tile[int((y + 0.5) * scale[1]), int((x + 0.5) * scale[0])]) == tuple(colours[k])


def test_page_weight_of_instance_samples(tmp_path, capsys):
    """100 samples of 128x128 px with 25 nucleus-like discs each in ground truth and prediction (four sets of
    files reused): the inline outline polygons and outcomes must stay under 120 bytes per object."""
    import cv2

    from masklab.explore import ExplorerObjects

    n, k_obj, side = 100, 25, 128
    loaders, images = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        gt = np.zeros((k_obj, side, side), np.uint8)
        for k in range(k_obj):
            cx, cy, r = (*rng.integers(10, side - 10, 2), int(rng.integers(4, 9)))
            cv2.circle(gt[k], (int(cx), int(cy)), r, 1, -1)
        ids = np.zeros((side, side), np.uint16)
        for k in reversed(range(k_obj)):
            ids[np.roll(gt[k], 1, axis=1).astype(bool)] = k + 1
        matches = [{"gt": k, "pred": k, "class_id": 1, "status": "TP", "iou": 0.8, "score": 0.9} for k in range(k_obj)]
        objects = ExplorerObjects(gt.astype(bool), np.ones(k_obj, int), np.zeros(k_obj, bool), ids, matches)
        loaders.append(lambda objects=objects: objects)
        images.append(tmp_path / f"img{seed}.png")
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(images[-1])
    samples = [ExplorerSample(f"val/{i:04d}", "val", images[i % 4], objects=loaders[i % 4]) for i in range(n)]
    index = write_explorer(tmp_path / "out", OBJ_CLASSES, samples, None, {}, "weight", None)
    inline = len(json.dumps(embedded(index)["samples"]["obj"], separators=(",", ":")))
    per_object = inline / (n * 2 * k_obj)
    with capsys.disabled():
        print(f"\ninstance explorer page weight: {n} samples x {2 * k_obj} objects -> index.html "
              f"{index.stat().st_size / 1e6:.2f} MB, {per_object:.0f} bytes per object inline")
    assert per_object < 120
    assert len(list((tmp_path / "out" / "full").iterdir())) == 4 * n


def test_report_of_an_instance_evaluation_run(project, seed_store):
    """`masklab report` of a run whose evaluation has a matches column: objects from the dataset and the id maps,
    outcomes from the matches, the matches kept out of the grid's columns."""
    from mlflow.tracking import MlflowClient

    from masklab.workflows import report

    seed_store(project)
    uri = f"sqlite:///{project}/experiments/mlflow.db"
    dataset, table, pred_dir = write_instance_report(project / "eval", {"a": (CASE_GT, CASE_PRED),
                                                                       "b": (CASE_GT[:1], [])})
    table.to_parquet(project / "eval" / "val_per_sample.parquet", index=False)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("instances"),
                               tags={"masklab.dataset_root": str(dataset.root)}).info.run_id
    client.log_metric(run_id, "eval/val/mask_AP", 0.5)
    client.log_artifact(run_id, str(project / "eval" / "val_per_sample.parquet"), "evaluation")
    client.log_artifacts(run_id, str(pred_dir), "evaluation/val_pred")
    done = report(run_id, project / "out", uri, "val")
    assert done.problems == []
    data = embedded(done.index)
    s = data["samples"]
    assert s["files"] == ["igpe", "igpe"]
    assert [e[0] for e in s["obj"][0]["p"]] == [1, 2, 4, 5] and [e[0] for e in s["obj"][1]["g"]] == [3]
    assert "matches" not in {c["name"] for c in data["columns"]} and "count_error" in {c["name"] for c in
                                                                                         data["columns"]}
    assert data["summary"]["headline"] == {"mask_AP": 0.5}
    logged = {f.path for f in client.list_artifacts(run_id, "report/full")}
    assert "report/full/a_error.png" in logged
