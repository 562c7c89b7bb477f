"""The HTML explorer in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Skipped when Chromium or the playwright package is missing (`make test` installs both).
"""

from __future__ import annotations

import io
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_explorer import CASE_GT, CASE_PRED, OH, OW, write_instance_report

from masklab.data.classes import ClassInfo, ClassTable
from masklab.explore import ExplorerSample, write_explorer

CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "circle", (230, 25, 75)),
                      ClassInfo(2, "square", (60, 180, 75))))
W, H = 120, 90  # larger than the 80 px thumbnails, so a loaded full-resolution file is recognisable by its width
# mIoU per sample: s07 is the worst; four samples (s02 s04 s07 s09) are below 0.5.
MIOU = [0.9, 0.8, 0.45, 0.7, 0.3, 0.95, 0.6, 0.05, 0.85, 0.4, 0.75, 0.65]
RUN_ID = "0123456789abcdef0123456789abcdef"


def _sample_arrays(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    image = np.stack([(xx * 2 + 9 * k) % 256, yy * 2, np.full_like(xx, 60 + 10 * k)], -1).astype(np.uint8)
    gt = np.zeros((H, W), np.uint8)
    gt[(yy - 45) ** 2 + (xx - 35) ** 2 < 400] = 1  # every sample has a circle ...
    if k % 3 == 0:
        gt[10:40, 75:110] = 2  # ... and s00 s03 s06 s09 a square
    pred = gt.copy()
    pred[:, : 6 * k] = 0  # the prediction misses a growing left part
    pred[70:85, 90:115] = 1  # and hallucinates a circle patch
    return image, gt, pred


def write_sample_files(root: Path, k: int) -> tuple[Path, Path, Path]:
    """Sample k's image, ground truth and prediction as ``root/s<k>.png``, ``_gt.png``, ``_pred.png``."""
    paths = tuple(root / f"s{k:02d}{suffix}.png" for suffix in ("", "_gt", "_pred"))
    for array, path in zip(_sample_arrays(k), paths):
        Image.fromarray(array).save(path)
    return paths


def build(root: Path, with_pred: bool = True, with_table: bool = True) -> Path:
    """12 samples (s00..s11, s11's image file missing), a table without s10 and with an unknown id."""
    root.mkdir(parents=True, exist_ok=True)
    samples, rows = [], []
    for k in range(12):
        sid = f"s{k:02d}"
        image, gt, pred = write_sample_files(root, k)
        samples.append(ExplorerSample(sid, "val" if k < 8 else "test", image, gt, pred if with_pred else None))
        if k != 10:
            rows.append({"id": sid, "mIoU": MIOU[k], "boundary_mIoU": MIOU[k] / 2, "iou/circle": MIOU[k],
                         "iou/square": MIOU[k] if k % 3 == 0 else np.nan, "missed/circle": k > 8,
                         "note": f"n{k}"})
    samples[11].image = root / "does_not_exist.png"
    rows.append({"id": "ghost", "mIoU": 0.5})
    summary = {
        "headline": {"mIoU": 0.61, "mBoundaryIoU": 0.33},
        "per_class": [{"class": "background", "IoU": 0.9, "Dice": 0.95, "BoundaryIoU": 0.5},
                      {"class": "circle", "IoU": 0.6, "Dice": 0.75, "BoundaryIoU": 0.3},
                      {"class": "square", "IoU": 0.2, "Dice": 0.33, "BoundaryIoU": float("nan")}],
        "confusion": {"labels": ["background", "circle", "square"],
                      "matrix": [[0.9, 0.05, 0.05], [0.3, 0.7, 0.0], [0.5, 0.1, 0.4]]},
        "curves": {"val/mIoU": [[0, 0.2], [1, 0.4], [2, 0.55]], "train/loss_epoch": [[0, 1.2], [1, 0.8], [2, 0.5]]},
        "changed": [{"id": "s03", "delta_mIoU": -0.2, "mIoU": 0.7}],
        "problems": ["a note from the caller"],
    }
    table = pd.DataFrame(rows) if with_table else None
    return write_explorer(root / "out", CLASSES, samples, table, summary, "explorer <test>",
                          {"run_id": RUN_ID, "path": "report"})


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("explorer"))


def open_page(browser, url: str):
    """A fresh page at ``url`` once the explorer is ready, and the list its console errors go to."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    return page, errors


def card(page, sid: str):
    return page.locator(f'.card[data-id="{sid}"]')


def wait_drawn(page, sid: str, mode: str) -> None:
    page.wait_for_function(
        "([sid, mode]) => { const c = document.querySelector(`.card[data-id='${sid}'] canvas`);"
        " return c && (c.dataset.drawn || '').startsWith(mode + '|'); }", arg=[sid, mode])


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_grid_summary_and_problems(browser, index):
    page, errors = open_page(browser, index.as_uri())
    assert page.inner_text("#count") == "12 of 12 samples"
    assert page.locator(".card").count() == 12
    assert page.locator('.card[data-id="s11"] .placeholder').count() == 1  # missing image: placeholder card
    wait_drawn(page, "s00", "pred")
    page.click("#tab-summary")
    problems = page.locator("#problems li").all_inner_texts()
    assert any("s11" in p and "missing" in p for p in problems), problems
    assert any("ghost" in p for p in problems) and any("s10" in p for p in problems), problems
    assert "a note from the caller" in problems
    # Per-class bars: IoU, BoundaryIoU and Dice for each of the 3 classes, as wide as their values.
    bars = page.locator("#per-class .bar")
    assert bars.count() == 9
    circle_iou = page.locator('#per-class .barset[data-class="circle"] .bar').first
    track = page.locator('#per-class .barset[data-class="circle"] .bar-track').first
    assert circle_iou.get_attribute("data-value") == "0.6"
    assert circle_iou.bounding_box()["width"] / track.bounding_box()["width"] == pytest.approx(0.6, abs=0.01)
    assert page.locator("#confusion td").count() == 9
    assert page.locator("#curves polyline").count() == 2
    assert page.locator("#headline .metric").count() == 2
    assert page.locator("#changed a.sample-link").inner_text() == "s03"
    assert not errors, errors


def test_sort_and_filter(browser, index):
    page, errors = open_page(browser, index.as_uri())
    page.select_option("#sort-col", "mIoU")
    assert page.locator(".card").first.get_attribute("data-id") == "s07"  # the worst sample first
    page.select_option("#sort-dir", "desc")
    assert page.locator(".card").first.get_attribute("data-id") == "s05"
    assert page.locator(".card").last.get_attribute("data-id") == "s10"  # no table row: missing values go last

    def count(expression: str) -> str:
        page.fill("#filter", expression)
        page.press("#filter", "Enter")
        return page.inner_text("#count")

    assert count("mIoU < 0.5") == "4 of 12 samples"
    assert sorted(page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)")) == ["s02", "s04", "s07",
                                                                                               "s09"]
    assert count("contains square") == "4 of 12 samples"
    assert count("contains square and mIoU < 0.5") == "1 of 12 samples"
    assert count("split = test") == "4 of 12 samples"
    assert count("split = test and iou/circle >= 0.65") == "2 of 12 samples"  # s08 0.85, s11 0.65
    assert count("missed/circle == 1") == "2 of 12 samples"
    assert count("note = n3 or mIoU > 0.9") == "2 of 12 samples"
    assert count("nonsense >> 1") == "2 of 12 samples"  # a bad expression keeps the last result ...
    assert page.inner_text("#filter-error")  # ... and says why
    assert count("") == "12 of 12 samples"
    assert not errors, errors


def test_overlays_change_thumbnail_pixels(browser, index):
    page, errors = open_page(browser, index.as_uri())
    canvas = card(page, "s04").locator("canvas")
    page.select_option("#overlay", "none")
    wait_drawn(page, "s04", "none")
    plain = pixels(canvas.screenshot())
    page.select_option("#overlay", "pred")
    wait_drawn(page, "s04", "pred")
    pred = pixels(canvas.screenshot())
    changed = np.abs(pred - plain).sum(axis=2) > 30
    assert changed.mean() > 0.03, changed.mean()
    # Turning the circle class off removes the only predicted class: back to the plain image.
    page.locator('.class-toggle input[data-c="1"]').uncheck()
    page.wait_for_function("document.querySelector(`.card[data-id='s04'] canvas`).dataset.drawn.endsWith('|0011')")
    no_circle = pixels(canvas.screenshot())
    assert np.abs(no_circle - plain).max() <= 3
    page.locator('.class-toggle input[data-c="1"]').check()
    # The error map paints false negatives blue and false positives red.
    page.select_option("#overlay", "error")
    wait_drawn(page, "s04", "error")
    err = pixels(canvas.screenshot())
    blue = (err[..., 2] > err[..., 0] + 60).mean()
    red = (err[..., 0] > err[..., 2] + 60).mean()
    assert blue > 0.005 and red > 0.005, (blue, red)
    assert page.is_visible("#error-legend")
    assert not errors, errors


def test_detail_view_shows_four_full_resolution_images(browser, index):
    page, errors = open_page(browser, index.as_uri())
    card(page, "s04").click()
    assert page.is_visible("#detail")
    assert page.inner_text("#detail-title") == "s04"
    panels = page.locator("#detail .panel")
    assert panels.count() == 4
    assert [p.get_attribute("data-kind") for p in panels.all()] == ["image", "gt", "pred", "error"]
    page.wait_for_function("Array.from(document.querySelectorAll('#detail .panel img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    widths = page.locator("#detail .panel img").evaluate_all("ims => ims.map(i => i.naturalWidth)")
    assert widths == [W] * 7  # the image under each overlay, plus 3 overlays, all at full resolution
    srcs = page.locator("#detail .panel img.over").evaluate_all("ims => ims.map(i => i.getAttribute('src'))")
    assert srcs == ["full/s04_gt.png", "full/s04_pred.png", "full/s04_error.png"]
    per_class = page.locator("#detail-numbers table.per-class")
    assert per_class.locator("tr").count() == 3  # header, circle, square
    assert "0.3000" in per_class.inner_text() and "missed" in per_class.inner_text()
    assert "0.1500" in page.inner_text("#detail-numbers table.kv")  # boundary_mIoU of s04
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#detail-title") == "s05"
    page.keyboard.press("Escape")
    assert page.is_hidden("#detail")
    assert not errors, errors


def test_detail_falls_back_to_thumbnails_without_full_files(browser, index, tmp_path):
    shutil.copy(index, tmp_path / "index.html")  # no full/ folder next to it
    page, errors = open_page(browser, (tmp_path / "index.html").as_uri())
    card(page, "s01").click()
    page.wait_for_selector("#detail .note")
    assert page.locator("#detail .panel").count() == 4
    page.wait_for_function("document.querySelectorAll('#detail .panel canvas').length === 4")
    assert "thumbnail" in page.locator("#detail .note").first.inner_text()
    # The only errors are the browser's own notes about the absent files.
    assert errors and all("ERR_FILE_NOT_FOUND" in e for e in errors), errors


class _MlflowLike(BaseHTTPRequestHandler):
    """Serves what the MLflow UI does for this page: a parent page that fetches the HTML artifact and shows it
    in a sandboxed iframe (a blob: URL, as MLflow 3 does, or srcdoc), and ``get-artifact?path=&run_uuid=``."""

    out: Path
    mode: str

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/mlflow/":
            show = ("f.src = URL.createObjectURL(new Blob([html], {type: 'text/html'}));" if self.mode == "blob"
                    else "f.srcdoc = html;")
            body = ('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<iframe id="f" sandbox="allow-scripts" style="width:1200px;height:850px"></iframe><script>'
                    f"fetch('get-artifact?path=report%2Findex.html&run_uuid={RUN_ID}').then(r => r.text())"
                    ".then(html => { const f = document.getElementById('f'); " + show + " });"
                    "</script></body></html>").encode()
            ctype = "text/html"
        elif url.path == "/mlflow/get-artifact" and query.get("run_uuid") == [RUN_ID] \
                and query.get("path", [""])[0].startswith("report/"):
            file = self.out / query["path"][0].removeprefix("report/")
            if not file.is_file() or ".." in query["path"][0]:
                self.send_error(404)
                return
            body, ctype = file.read_bytes(), "text/html" if file.suffix == ".html" else "image/png"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("mode", ["blob", "srcdoc"])
def test_inside_mlflow_sandboxed_iframe(browser, index, mode):
    handler = type("Handler", (_MlflowLike,), {"out": index.parent, "mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.goto(f"{origin}/mlflow/")
        frame_el = page.wait_for_selector("#f")
        page.frame_locator("#f").locator("body[data-ready]").wait_for()
        frame = frame_el.content_frame()
        # Thumbnails decode and draw in the opaque-origin sandbox (data: URIs do not taint the canvas) ...
        frame.wait_for_function("(document.querySelector(`.card[data-id='s04'] canvas`).dataset.drawn || '')"
                                ".startsWith('pred|')")
        # ... and the detail view takes full-resolution files from MLflow's artifact endpoint.
        frame.locator('.card[data-id="s04"]').click()
        frame.wait_for_function("Array.from(document.querySelectorAll('#detail .panel img'))"
                                ".every(i => i.complete && i.naturalWidth > 0)")
        srcs = frame.locator("#detail .panel img").evaluate_all("ims => ims.map(i => [i.src, i.naturalWidth])")
        assert len(srcs) == 7
        assert srcs[0] == [f"{origin}/mlflow/get-artifact?path=report%2Ffull%2Fs04_image.png&run_uuid={RUN_ID}", W]
        assert all(src.startswith(f"{origin}/mlflow/get-artifact?") and width == W for src, width in srcs)
        assert frame.locator("#detail .note").count() == 0
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()


def test_cards_are_paged_and_drawn_only_when_visible(browser, index, tmp_path):
    # 300 samples that reuse the module's files: 120 cards at first, thumbnails drawn only near the viewport.
    source = index.parent.parent
    samples = [ExplorerSample(f"x{i:03d}", "val", source / f"s{i % 10:02d}.png", source / f"s{i % 10:02d}_gt.png",
                              source / f"s{i % 10:02d}_pred.png") for i in range(300)]
    lazy = write_explorer(tmp_path / "out", CLASSES, samples, None, {}, "lazy")
    page, errors = open_page(browser, lazy.as_uri())
    assert page.inner_text("#count") == "300 of 300 samples"
    wait_drawn(page, "x000", "pred")
    drawn = "document.querySelectorAll('.card canvas[data-drawn]').length"
    assert page.locator(".card").count() == 120
    assert 0 < page.evaluate(drawn) < 100
    for _ in range(30):
        page.mouse.wheel(0, 4000)
        page.wait_for_timeout(50)
        if page.locator(".card").count() == 300:
            break
    assert page.locator(".card").count() == 300
    card(page, "x299").scroll_into_view_if_needed()
    wait_drawn(page, "x299", "pred")
    assert page.evaluate(drawn) < 300  # cards scrolled past quickly may stay undrawn: nothing decodes off screen
    assert not errors, errors


def test_dataset_browse_without_table_or_predictions(browser, tmp_path):
    index = build(tmp_path, with_pred=False, with_table=False)
    page, errors = open_page(browser, index.as_uri())
    options = page.locator("#overlay option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["none", "gt"]
    assert "mIoU" not in page.locator("#sort-col option").all_inner_texts()
    wait_drawn(page, "s00", "gt")
    card(page, "s03").click()
    assert [p.get_attribute("data-kind") for p in page.locator("#detail .panel").all()] == ["image", "gt"]
    page.keyboard.press("Escape")
    page.fill("#filter", "contains square")
    page.press("#filter", "Enter")
    assert page.inner_text("#count") == "4 of 12 samples"
    page.click("#tab-summary")
    assert page.locator("#per-class .bar").count() == 9  # the summary passed in still shows
    assert not errors, errors


# ---------------------------------------------------------------------------------------------------------------
# Instance samples (see test_explorer.py for the hand-made case): outlines by outcome, hover, count_error sorting.

INSTANCE_CASES = {  # count_error: a 0, b -1, c +2 (without the crowd region the blob is a false positive), d -2
    "a": (CASE_GT, CASE_PRED), "b": (CASE_GT, CASE_PRED[:1]), "c": (CASE_GT[:1], CASE_PRED), "d": (CASE_GT[:2], [])}


@pytest.fixture(scope="module")
def instance_index(tmp_path_factory) -> Path:
    from masklab.explore import explorer_samples, split_matches

    root = tmp_path_factory.mktemp("instances")
    dataset, table, pred_dir = write_instance_report(root, INSTANCE_CASES)
    shown, matches, _ = split_matches(table)
    samples = explorer_samples(dataset, "val", pred_dir, objects=True, matches=matches)
    return write_explorer(root / "out", dataset.class_table, samples, shown, {}, "instances",
                          {"run_id": RUN_ID, "path": "report"})


def hover(page, panel: str, x: float, y: float) -> str:
    """Move the pointer over image pixel (x, y) of a detail panel; the tooltip's text, '' when hidden."""
    target = page.locator(f'#detail .panel[data-kind="{panel}"] canvas.hit')
    b = target.bounding_box()
    page.mouse.move(b["x"] + (x + 0.5) * b["width"] / OW, b["y"] + (y + 0.5) * b["height"] / OH)
    return "" if page.is_hidden("#object-tip") else page.inner_text("#object-tip")


def test_instance_report_outlines_hover_and_count_error(browser, instance_index):
    page, errors = open_page(browser, instance_index.as_uri())
    assert page.inner_text("#count") == "4 of 4 samples"
    assert "matches" not in page.locator("#sort-col option").all_inner_texts()
    # Thumbnails: the prediction overlay outlines the matched cell in green and the false positive in red.
    wait_drawn(page, "a", "pred")
    rgb = page.evaluate("([x, y]) => Array.from(document.querySelector(`.card[data-id='a'] canvas`)"
                        ".getContext('2d').getImageData(x, y, 1, 1).data)", [10, 5])
    assert rgb[1] > rgb[0] + 60 and rgb[1] > rgb[2] + 60, rgb
    rgb = page.evaluate("([x, y]) => Array.from(document.querySelector(`.card[data-id='a'] canvas`)"
                        ".getContext('2d').getImageData(x, y, 1, 1).data)", [52, 2])
    assert rgb[0] > rgb[1] + 60 and rgb[0] > rgb[2] + 60, rgb
    assert page.is_visible("#object-legend") and "FN" in page.inner_text("#object-legend")
    # Sorting and filtering by the table's count_error.
    page.select_option("#sort-col", "count_error")
    assert page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)") == ["d", "b", "a", "c"]
    page.select_option("#sort-dir", "desc")
    assert page.locator(".card").first.get_attribute("data-id") == "c"
    page.fill("#filter", "count_error != 0 and mask_AP < 1")
    page.press("#filter", "Enter")
    assert page.inner_text("#count") == "3 of 4 samples"
    page.fill("#filter", "")
    page.press("#filter", "Enter")
    # The detail view: full-resolution overlays, and each object's numbers on hover.
    card(page, "a").click()
    kinds = [p.get_attribute("data-kind") for p in page.locator("#detail .panel").all()]
    assert kinds == ["image", "gt", "pred", "error"]
    page.wait_for_function("Array.from(document.querySelectorAll('#detail .panel img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    tip = hover(page, "pred", 12, 12)
    assert "prediction 0" in tip and "TP" in tip and "IoU 0.9375" in tip and "score 0.9000" in tip, tip
    assert "matches ground truth 0" in tip
    tip = hover(page, "gt", 48, 34)
    assert "ground truth 1" in tip and "FN" in tip and "cell" in tip, tip
    tip = hover(page, "error", 52, 6)
    assert "prediction 1" in tip and "FP" in tip, tip
    assert "crowd" in hover(page, "gt", 10, 44)
    assert hover(page, "pred", 34, 14) == ""  # nothing there
    rows = page.locator("#detail-numbers table.objects tr")
    outcomes = rows.evaluate_all("rs => rs.slice(1).map(r => r.dataset.outcome)")
    assert outcomes == ["TP", "FP", "crowd", "not counted", "FN"]
    assert not errors, errors


def test_instance_hover_inside_mlflow_sandboxed_iframe(browser, instance_index):
    handler = type("Handler", (_MlflowLike,), {"out": instance_index.parent, "mode": "blob"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/mlflow/")
        frame = page.wait_for_selector("#f").content_frame()
        page.frame_locator("#f").locator("body[data-ready]").wait_for()
        frame.locator('.card[data-id="a"]').click()
        frame.wait_for_function("Array.from(document.querySelectorAll('#detail .panel img'))"
                                ".every(i => i.complete && i.naturalWidth > 0)")
        # The overlays come from get-artifact (cross-origin to the sandbox); hit-testing needs none of their pixels.
        b = frame.locator('#detail .panel[data-kind="pred"] canvas.hit').bounding_box()
        page.mouse.move(b["x"] + 12.5 * b["width"] / OW, b["y"] + 12.5 * b["height"] / OH)
        frame.wait_for_selector("#object-tip:not([hidden])")
        assert "IoU 0.9375" in frame.inner_text("#object-tip")
        assert not errors, errors
    finally:
        server.shutdown()
        server.server_close()


def test_instance_dataset_browse(browser, tmp_path):
    from masklab.explore import explorer_samples

    dataset, _, _ = write_instance_report(tmp_path, {"a": (CASE_GT, [])})
    index = write_explorer(tmp_path / "browse", dataset.class_table, explorer_samples(dataset, "val", None), None, {},
                           "browse")
    page, errors = open_page(browser, index.as_uri())
    assert page.locator("#overlay option").evaluate_all("os => os.map(o => o.value)") == ["none", "gt"]
    wait_drawn(page, "a", "gt")
    page.fill("#filter", "gt_objects == 3 and contains blob")
    page.press("#filter", "Enter")
    assert page.inner_text("#count") == "1 of 1 samples"
    card(page, "a").click()
    assert [p.get_attribute("data-kind") for p in page.locator("#detail .panel").all()] == ["image", "gt"]
    page.wait_for_function("Array.from(document.querySelectorAll('#detail .panel img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    tip = hover(page, "gt", 48, 34)
    assert "ground truth 1" in tip and "cell" in tip and "256 px" in tip and "IoU" not in tip, tip
    assert not errors, errors


def test_likely_label_errors_view_outlines_regions_and_exports_marks_for_data_mark(browser, tmp_path):
    """The "likely label errors" view of find_label_errors: opens sorted by rank with the sample whose mask lost an
    object first, its disputed region outlined on the thumbnail and over image, mask and prediction (in the
    image's pixels); a sample marked in the page (key m) downloads as review.csv, which `masklab data mark`
    turns into needs_review in the manifest."""
    from test_label_errors import erased_object_case

    from masklab.commands.data import mark
    from masklab.config import compose
    from masklab.data.manifest import read_manifest
    from masklab.workflows import find_label_errors, write_label_error_explorer

    dataset, victim, _, erased = erased_object_case(tmp_path / "synthetic", tmp_path / "oof", count=10, seed=3, folds=2)
    found = find_label_errors(tmp_path / "oof", dataset, tmp_path / "label_errors")
    index = write_label_error_explorer(found, dataset, tmp_path / "oof", top=6)
    x0, y0, x1, y1 = found.issues[found.issues["sample_id"] == victim.id].sort_values("evidence").iloc[-1]["bbox"]
    assert erased[y0:y1, x0:x1].any()

    page, errors = open_page(browser, index.as_uri())
    assert page.inner_text("#count") == "6 of 6 samples" and page.input_value("#sort-col") == "rank"
    assert page.locator(".card").first.get_attribute("data-id") == victim.id
    assert "Likely label errors" in page.inner_text("#view-note")
    wait_drawn(page, victim.id, "gt")  # the view opens on the masks in question

    def outline(sid: str) -> int:  # pixels of the regions' yellow (#ffd400) on a thumbnail
        thumb = pixels(card(page, sid).locator("canvas").screenshot())
        return int(((thumb[..., 0] >= 250) & (np.abs(thumb[..., 1] - 212) <= 4) & (thumb[..., 2] <= 4)).sum())

    other = page.locator(".card").nth(1).get_attribute("data-id")
    wait_drawn(page, other, "gt")
    assert outline(victim.id) > 10 and outline(other) == 0

    card(page, victim.id).click()
    panels = page.locator("#detail-panels figure")
    assert panels.evaluate_all("fs => fs.map(f => f.dataset.kind)")[:3] == ["image", "gt", "pred"]
    for kind in ("image", "gt", "pred"):
        rect = page.locator(f'#detail-panels figure[data-kind="{kind}"] svg.regions rect').first
        assert [int(float(rect.get_attribute(a))) for a in ("x", "y", "width", "height")] == [x0, y0, x1 - x0, y1 - y0]
    box = page.locator('#detail-panels figure[data-kind="pred"] svg.regions rect').first.bounding_box()
    stack = page.locator('#detail-panels figure[data-kind="pred"] .stack').bounding_box()
    assert box["x"] - stack["x"] == pytest.approx(x0 * stack["width"] / victim.width, abs=1.5)  # drawn where it is
    page.keyboard.press("m")
    assert page.get_attribute("#detail-mark", "aria-pressed") == "true"
    page.keyboard.press("Escape")
    assert card(page, victim.id).get_attribute("class").split().count("marked") == 1
    assert page.inner_text("#review-count") == "1"
    assert f"data.root={dataset.root}" in page.inner_text("#review-command")
    with page.expect_download() as download:
        page.click("#review-export")
    review = tmp_path / "review.csv"
    download.value.save_as(review)
    assert review.read_text() == f"id\n{victim.id}\n"
    assert not errors, errors

    mark(compose("data_mark", [f"data.root={dataset.root}", f"ids={review}"]))
    status = {s.id: s.status for s in read_manifest(dataset.root)}
    assert status[victim.id] == "needs_review" and list(status.values()).count("needs_review") == 1


def _drag(page, box: dict, points: list[tuple[float, float]]) -> None:
    """Press at the first point (fractions of the canvas' box), move through the others, release."""
    at = [(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()


def test_embeddings_map_colours_by_column_and_lasso_or_box_filters_the_grid(browser, tmp_path):
    """s00-s05 lie near (0, 0) on the map (bottom left), s06-s11 near (10, 10) (top right)."""
    root = tmp_path / "map"
    root.mkdir()
    samples, rows = [], []
    for k in range(12):
        sid = f"s{k:02d}"
        image, gt, _ = write_sample_files(root, k)
        samples.append(ExplorerSample(sid, "val" if k % 2 else "test", image, gt))
        far = k >= 6
        rows.append({"id": sid, "map_x": 10.0 * far + 0.1 * (k % 3), "map_y": 10.0 * far + 0.1 * (k % 2),
                     "cluster": int(far), "uniqueness": k / 11})
    index = write_explorer(root / "out", CLASSES, samples, pd.DataFrame(rows), {}, "map", None,
                           view={"name": "Embeddings map", "map_color": "cluster"})
    page, errors = open_page(browser, index.as_uri())
    assert page.is_visible("#map-canvas") and page.inner_text("#map-info") == "12 points: drag to select"
    assert page.locator("#map-color").input_value() == "cluster"
    assert page.locator("#map-legend .map-chip").all_inner_texts() == ["0", "1"], "integer ids: categories"
    box = page.locator("#map-canvas").bounding_box()
    # lasso around the bottom-left group
    _drag(page, box, [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0), (0.0, 0.55)])
    assert page.inner_text("#count") == "6 of 12 samples (map selection)"
    assert sorted(page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)")) == \
        [f"s{k:02d}" for k in range(6)]
    assert page.inner_text("#map-info") == "6 of 12 points selected"
    # the text filter narrows the selection further
    page.fill("#filter", "split = val")
    page.press("#filter", "Enter")
    assert page.inner_text("#count") == "3 of 12 samples (map selection)"
    page.fill("#filter", "")
    page.press("#filter", "Enter")
    # colour by a text column: one legend chip per value; by a number: a ramp
    page.select_option("#map-color", "split")
    assert page.locator("#map-legend .map-chip").all_inner_texts() == ["test", "val"]
    page.select_option("#map-color", "uniqueness")
    assert page.locator("#map-legend .map-ramp").count() == 1
    # a box around the top-right group replaces the selection
    page.select_option("#map-mode", "box")
    _drag(page, box, [(0.55, 0.0), (1.0, 0.45)])
    assert sorted(page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)")) == \
        [f"s{k:02d}" for k in range(6, 12)]
    page.click("#map-clear")
    assert page.inner_text("#count") == "12 of 12 samples"
    # a selection around nothing clears too
    _drag(page, box, [(0.55, 0.0), (1.0, 0.45)])
    _drag(page, box, [(0.4, 0.4), (0.6, 0.6)])
    assert page.inner_text("#count") == "12 of 12 samples"
    assert not errors, errors
