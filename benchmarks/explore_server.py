"""`masklab explore` on a 100,000-sample evaluation, measured in a real headless Chromium (Playwright).

The evaluation: a manifest of N samples and a per-sample Parquet table with the columns of a 3-class semantic
evaluation (37 columns). To keep disk and time sane, only 2,000 distinct 256x192 JPEG images (with their PNG mask
and prediction) are written; sample k's manifest row points at file k % 2000 and its prediction
``pred/<id>.png`` is a hard link to prediction k % 2000. Every id is still its own URL and its own thumbnail
request; the server's thumbnail cache is emptied before each timed action, so no figure is helped by the sharing.

Figures (times in ms, medians of ``--rounds``):
- server start: manifest read + DuckDB join, in Python;
- open: from navigation to every thumbnail of the first screen (image + prediction overlay) loaded;
- sort / filter: from the control's change event to the grid showing the new first rows ("grid"), and to their
  thumbnails loaded ("thumbs");
- the server's own query time for the same requests.

- with ``--map``: the rows also carry an embeddings map (map_x, map_y, cluster, uniqueness: 20 Gaussian blobs,
  a table joined by id as `masklab curate similarity` writes it): "open" then also waits for the map's 100,000
  points, and a box selection on the map is timed from the mouse release to the grid showing the selection.

    python benchmarks/explore_server.py [--samples 100000] [--rounds 5] [--map] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from explorer import CLASSES, per_sample_table  # benchmarks/explorer.py: run as a script, its folder is on the path
from PIL import Image

from masklab.data.manifest import Sample, write_manifest
from masklab.data.sample_files import file_sha256, safe_name
from masklab.explore import ExploreApp
from masklab.files import atomic_write

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
DISTINCT = 2000
W, H = 256, 192
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Explorer server: 100,000 samples"


def build(root: Path, n: int) -> tuple[Path, Path, Path]:
    """(dataset folder, predictions folder, per-sample table) of an n-sample evaluation (see the module doc)."""
    data, pred = root / "data", root / "pred"
    for sub in (data / "images", data / "masks", pred, root / "distinct_pred"):
        sub.mkdir(parents=True)
    (data / "classes.yaml").write_text(yaml.safe_dump(CLASSES.to_dict(), sort_keys=False))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    shas = []
    for k in range(DISTINCT):
        image = np.stack([(xx + 3 * k) % 256, (yy * 2 + k) % 256, np.full_like(xx, (37 * k) % 256)], -1)
        image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
        gt = np.zeros((H, W), np.uint8)
        gt[H // 2:, :] = 2
        cy, cx = 30 + k % 60, 40 + (7 * k) % 150
        gt[cy: cy + 40, cx: cx + 50] = 1
        Image.fromarray(image).save(data / "images" / f"f{k:04d}.jpg", quality=85)
        Image.fromarray(gt).save(data / "masks" / f"f{k:04d}.png")
        Image.fromarray(np.roll(gt, 3 + k % 9, axis=1)).save(root / "distinct_pred" / f"f{k:04d}.png")
        shas.append(file_sha256(data / "images" / f"f{k:04d}.jpg"))
    ids = [f"val/{i:06d}" for i in range(n)]
    samples = [Sample(sid, f"images/f{i % DISTINCT:04d}.jpg", f"masks/f{i % DISTINCT:04d}.png",
                      "test" if i % 5 == 0 else "val", W, H, shas[i % DISTINCT]) for i, sid in enumerate(ids)]
    write_manifest(data, samples)
    for i, sid in enumerate(ids):
        os.link(root / "distinct_pred" / f"f{i % DISTINCT:04d}.png", pred / f"{safe_name(sid)}.png")
    frame = per_sample_table(ids)  # the static explorer benchmark's 3-class semantic evaluation columns
    frame.insert(1, "split", [s.split for s in samples])
    table = root / "val_per_sample.parquet"
    frame.to_parquet(table, index=False)
    return data, pred, table


# In-page timing: performance.now() is ms since navigation start; the action and the wait run in the page, so
# no Playwright round trip is counted.
ALL_THUMBS = ("() => { const im = [...document.querySelectorAll('.card img')];"
              " return im.length > 0 && im.every(i => i.dataset.loaded); }")
TIMED_ACTION = """async ([kind, a, b, c]) => {
  const loaded = () => { const im = [...document.querySelectorAll('.card img')];
                         return im.length > 0 && im.every(i => i.dataset.loaded); };
  const t0 = performance.now();
  if (kind === 'sort') {
    const col = document.querySelector('#sort-col'), dir = document.querySelector('#sort-dir');
    dir.value = b; col.value = a; col.dispatchEvent(new Event('change'));
  } else {
    document.querySelector('#filter-col').value = a;
    document.querySelector('#filter-col').dispatchEvent(new Event('change'));
    document.querySelector('#filter-op').value = b;
    document.querySelector('#filter-value').value = c;
    document.querySelector('#filter-add').click();
  }
  const r = await window.masklabExplore.whenRendered();
  const t1 = performance.now();
  while (!loaded()) await new Promise(res => requestAnimationFrame(res));
  return {grid: t1 - t0, thumbs: performance.now() - t0, matched: r.matched, first: r.first,
          cards: document.querySelectorAll('.card').length};
}"""


def write_map(root: Path, n: int) -> Path:
    """A similarity table for n samples: 20 Gaussian blobs on the map, cluster = blob, uniqueness uniform."""
    rng = np.random.default_rng(1)
    blob = rng.integers(0, 20, n)
    centres = rng.uniform(-20, 20, (20, 2))
    xy = centres[blob] + rng.normal(size=(n, 2))
    path = root / "similarity.parquet"
    pd.DataFrame({"id": [f"val/{k:06d}" for k in range(n)], "map_x": xy[:, 0], "map_y": xy[:, 1], "cluster": blob,
                  "uniqueness": rng.uniform(0, 1, n)}).to_parquet(path, index=False)
    return path


def measure_map(app: ExploreApp, rounds: int) -> dict:
    """Open (thumbnails and map drawn) and a box selection on the map (mouse release to grid updated), ms."""
    from playwright.sync_api import sync_playwright

    out: dict = {"map_open_ms": [], "map_select_ms": [], "map_selected": None}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        for r in range(rounds):
            app.renderer.clear_cache()
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app.url)
            page.wait_for_function(ALL_THUMBS, polling=10, timeout=60_000)
            page.wait_for_function("() => /points/.test((document.querySelector('#map-info') || {}).textContent)")
            out["map_open_ms"].append(page.evaluate("() => performance.now()"))
            page.select_option("#map-mode", "box")
            page.evaluate("() => document.querySelector('#map-canvas').addEventListener('pointerup', "
                          "() => { window.__t0 = performance.now(); }, { capture: true })")
            box = page.locator("#map-canvas").bounding_box()
            f0, f1 = 0.1 + 0.05 * r, 0.5 + 0.05 * r
            page.mouse.move(box["x"] + box["width"] * f0, box["y"] + box["height"] * f0)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * f1, box["y"] + box["height"] * f1, steps=3)
            page.mouse.up()
            done = page.evaluate("async () => { const r = await window.masklabExplore.whenRendered();"
                                 " return {ms: performance.now() - window.__t0, matched: r.matched}; }")
            out["map_select_ms"].append(done["ms"])
            out["map_selected"] = done["matched"]
            page.close()
        browser.close()
    return out


def measure(app: ExploreApp, rounds: int) -> dict:
    from playwright.sync_api import sync_playwright

    def cold() -> None:
        app.renderer.clear_cache()

    out: dict = {"open_ms": [], "sort_grid_ms": [], "sort_thumbs_ms": [], "filter_grid_ms": [],
                 "filter_thumbs_ms": [], "cards": None}
    # Sorts by columns other than mIoU, so that the filter on mIoU that follows shows mostly other samples (about
    # a tenth of a sorted page passes mIoU < 0.1): its thumbnails are not already in the browser's cache.
    sorts = [("mDice", "asc"), ("boundary_mIoU", "desc"), ("pixel_acc", "asc"), ("iou/car", "desc"),
             ("conf_low_fraction", "asc"), ("mDice", "desc"), ("dice/road", "asc")]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        for r in range(rounds):
            cold()
            page = browser.new_page(viewport={"width": 1280, "height": 900})  # a new context: empty HTTP cache
            page.goto(app.url)
            page.wait_for_function(ALL_THUMBS, polling=10, timeout=60_000)
            out["open_ms"].append(page.evaluate("() => performance.now()"))
            out["cards"] = page.locator(".card").count()
            column, direction = sorts[r % len(sorts)]
            cold()
            done = page.evaluate(TIMED_ACTION, ["sort", column, direction, ""])
            out["sort_grid_ms"].append(done["grid"])
            out["sort_thumbs_ms"].append(done["thumbs"])
            cold()
            done = page.evaluate(TIMED_ACTION, ["filter", "mIoU", "<", str(round(0.1 - 0.01 * r, 3))])
            out["filter_grid_ms"].append(done["grid"])
            out["filter_thumbs_ms"].append(done["thumbs"])
            out["filter_matched"] = done["matched"]
            page.close()
        browser.close()
    return out


def server_query_ms(app: ExploreApp, rounds: int) -> dict:
    """The DuckDB side alone: a sorted first page, and a filtered, sorted first page with its count."""
    sort, filt = [], []
    for r in range(rounds):
        t = time.perf_counter()
        app.rows.rows(sort="mDice", direction="desc" if r % 2 else "asc", limit=120, columns=["split", "mDice"])
        sort.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        app.rows.rows(filters=[{"column": "mIoU", "op": "<", "value": 0.3 - 0.02 * r},
                               {"column": "split", "op": "=", "value": "test"}], sort="mIoU", limit=120)
        filt.append(1000 * (time.perf_counter() - t))
    return {"sort": statistics.median(sort), "filter": statistics.median(filt)}


def write_docs(figures: dict, command: str) -> None:
    f = figures
    text = f"""{SECTION}

`{command}` ({f['date']}, {f['cpus']} CPU cores, Chromium headless; {f['note']})

{f['samples']:,} samples, 37 per-sample columns; 2,000 distinct 256x192 JPEGs (rows point at file k % 2000,
predictions are hard links), every id its own thumbnail request, the server's thumbnail cache emptied before each
timed action. Medians of {f['rounds']} rounds, ms:

| figure | goal | measured |
|---|---|---|
| server start (manifest + DuckDB join) | | {f['start_ms']:.0f} |
| open: navigation to the first screen's {f['cards']} cards' thumbnails (image + prediction) loaded | < 3,000 | \
{f['open_ms']:.0f} |
| sort: change to grid updated | < 300 | {f['sort_grid_ms']:.0f} |
| sort: change to its thumbnails loaded | | {f['sort_thumbs_ms']:.0f} |
| filter (`mIoU < x`, x = 0.1, 0.09, ...; sorted as before): add to grid updated | < 300 | {f['filter_grid_ms']:.0f} |
| filter: add to its thumbnails loaded | | {f['filter_thumbs_ms']:.0f} |
| DuckDB alone: sorted page / filtered + sorted page with count | | {f['server_sort_ms']:.1f} / \
{f['server_filter_ms']:.1f} |

Each round's figures: open {_list(f['rounds_open_ms'])}; sort {_list(f['rounds_sort_grid_ms'])}; filter
{_list(f['rounds_filter_grid_ms'])}.
"""
    if "map_open_ms" in f:
        text += f"""
With an embeddings map of all {f['samples']:,} samples (`--map`; the table as `curate similarity` writes it, joined
by id): open, thumbnails and every map point drawn, {f['map_open_ms']:.0f} ms (goal < 3,000); a box selection on the
map, mouse release to the grid showing the selected samples ({f['map_selected']:,} in the last round),
{f['map_select_ms']:.0f} ms (goal < 300; rounds {_list(f['rounds_map_select_ms'])}). The figures above were
measured in the same run, with the map shown.
"""
    old = DOCS.read_text(encoding="utf-8")
    if SECTION in old:
        start = old.index(SECTION)
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[nxt:] if nxt >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    atomic_write(DOCS, lambda tmp: tmp.write_text(new, encoding="utf-8"))


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--note", default="machine shared with other work: figures may be noisy")
    p.add_argument("--no-docs", action="store_true", help="print the figures only")
    p.add_argument("--map", action="store_true", help="also an embeddings map of every sample (see the module doc)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        data, pred, table = build(Path(tmp), a.samples)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        app = ExploreApp(data, table, [write_map(Path(tmp), a.samples)] if a.map else [], pred_dir=pred)
        start_ms = 1000 * (time.perf_counter() - t)
        app.start(0)
        try:
            m = measure(app, a.rounds)
            q = server_query_ms(app, a.rounds)
            if a.map:
                m.update(measure_map(app, a.rounds))
        finally:
            app.stop()
    med = statistics.median
    figures = {
        "date": date.today().isoformat(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "samples": a.samples, "rounds": a.rounds, "build_s": round(build_s, 1), "start_ms": start_ms,
        "cards": m["cards"], "open_ms": med(m["open_ms"]), "sort_grid_ms": med(m["sort_grid_ms"]),
        "sort_thumbs_ms": med(m["sort_thumbs_ms"]), "filter_grid_ms": med(m["filter_grid_ms"]),
        "filter_thumbs_ms": med(m["filter_thumbs_ms"]), "filter_matched": m["filter_matched"],
        "server_sort_ms": q["sort"], "server_filter_ms": q["filter"], "rounds_open_ms": m["open_ms"],
        "rounds_sort_grid_ms": m["sort_grid_ms"], "rounds_filter_grid_ms": m["filter_grid_ms"], "note": a.note,
    }
    if a.map:
        figures.update({"map_open_ms": med(m["map_open_ms"]), "map_select_ms": med(m["map_select_ms"]),
                        "map_selected": m["map_selected"], "rounds_map_select_ms": m["map_select_ms"]})
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}, indent=1))
    if not a.no_docs:
        write_docs(figures, "python benchmarks/explore_server.py" + (f" --samples {a.samples}"
                                                                     if a.samples != 100_000 else "")
                   + (" --map" if a.map else ""))


if __name__ == "__main__":
    main()
