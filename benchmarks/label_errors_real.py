"""Real label errors: the top suspects of unplanted datasets, for a person to judge in the explorer.

    python benchmarks/label_errors_real.py [--datasets kvasir_seg dsb2018_semantic] [--top 20] [--score learned]
                                           [--workdir DIR] [--screenshots DIR]

Per dataset (imported as benchmarks/label_errors.py imports it, its own clean masks): 3-fold ``cv`` on train + val
with the label-error benchmark's settings (the preset, its size and epochs), ``find_label_errors`` with
``--score``, the explorer's "likely label errors" view of the ``--top`` suspects, and with ``--screenshots`` a
full-page PNG of that view in headless Chromium (Debian's /usr/bin/chromium through Playwright, the dev extra).
With ``--screenshots`` also contact sheets of the suspects, five per JPEG (image; mask; out-of-fold prediction;
the five most probable regions boxed), at a size a person can judge. Nothing here says which suspects are real
errors: that is the person's count, reported in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from label_errors import PRESETS, import_source, per_dataset
from scratch import REPO, enter_scratch_project

SIZES = ["membrane=128", "kvasir_seg=96", "dsb2018_semantic=128", "synthetic=96"]
EPOCHS = ["membrane=40", "kvasir_seg=8", "dsb2018_semantic=12", "synthetic=12"]


def suspects(name: str, a: argparse.Namespace) -> Path:
    """Cross-validate ``name`` (once; reused when its out-of-fold folder exists), rank it, write the explorer of
    the top suspects; the explorer's index.html."""
    from masklab.config import compose
    from masklab.data.manifest import load_dataset
    from masklab.workflows import cross_validate, find_label_errors, write_label_error_explorer

    if not (Path("data") / name).is_dir():
        import_source(name)
    runs = Path("runs") / name
    oof = runs / "cv" / "out_of_fold"
    if not oof.is_dir():
        cross_validate(compose("cv", [f"experiment={PRESETS[name]}", f"data.image_size={per_dataset(SIZES, name)}",
                                      f"trainer.max_epochs={per_dataset(EPOCHS, name)}", f"data.name={name}",
                                      "cv.folds=3", "cv.splits=[train,val]", "trainer.enable_progress_bar=false",
                                      f"experiment_name=bench-label-errors-real-{name}", "seed=0"]), runs / "cv")
    dataset = load_dataset(Path("data") / name)
    found = find_label_errors(oof, dataset, runs / f"label_errors_{a.score}", score=a.score)
    index = write_label_error_explorer(found, dataset, oof, a.top)
    print(found.samples.head(a.top)[["rank", "id", "suspicion", "kind"]].to_string(index=False))
    if a.screenshots:
        contact_sheets(found, dataset, oof, a.top, a.screenshots.resolve() / name)
    return index


def contact_sheets(found, dataset, oof_folder: Path, top: int, prefix: Path, width: int = 220) -> None:
    """``<prefix>_<k>.jpg``: five suspects each, a row per suspect (image, mask, out-of-fold prediction, each
    ``width`` px wide, the mask and prediction overlaid in red and the five most probable regions boxed)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from masklab.curation.label_errors import region_order
    from masklab.curation.out_of_fold import OutOfFold
    from masklab.data.images import read_mask

    oof = OutOfFold(oof_folder)
    by_id = {s.id: s for s in dataset.samples}
    order = region_order(found.issues)
    rows = []
    for r in found.samples.head(top).itertuples():
        sample = by_id[r.id]
        image = Image.open(dataset.root / sample.image).convert("RGB")
        w, h = image.size
        size = (width, round(width * h / w))
        pred = Image.fromarray(oof.get(r.id).array.astype(np.float32).argmax(0).astype(np.uint8))
        boxes = found.issues[found.issues["sample_id"] == r.id].sort_values(order, ascending=False).head(5)

        def overlay(classes: np.ndarray, image=image, w=w, boxes=boxes) -> Image.Image:
            pixels = np.asarray(image).copy()
            on = classes > 0
            pixels[on] = (0.5 * pixels[on] + [127, 0, 40]).astype(np.uint8)
            out = Image.fromarray(pixels)
            draw = ImageDraw.Draw(out)
            for box in boxes.itertuples():
                draw.rectangle(list(box.bbox), outline=(255, 255, 0), width=max(2, w // 150))
            return out

        tiles = [image, overlay(read_mask(dataset.root / sample.mask)),
                 overlay(np.asarray(pred.resize((w, h), Image.NEAREST)))]
        row = Image.new("RGB", (3 * width + 10, size[1] + 16), "white")
        for k, tile in enumerate(tiles):
            row.paste(tile.resize(size), (k * (width + 5), 16))
        probability = f" p={r.error_probability:.2f}" if hasattr(r, "error_probability") else ""
        ImageDraw.Draw(row).text((2, 2), f"#{r.rank} {r.kind}{probability} {r.id}", fill="black")
        rows.append(row)
    for k in range(0, len(rows), 5):
        chunk = rows[k:k + 5]
        sheet = Image.new("RGB", (max(c.width for c in chunk), sum(c.height for c in chunk)), "white")
        y = 0
        for c in chunk:
            sheet.paste(c, (0, y))
            y += c.height
        prefix.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(f"{prefix}_{k // 5 + 1}.jpg", quality=80)


def screenshot(index: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(index.resolve().as_uri())
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["kvasir_seg", "dsb2018_semantic"], choices=list(PRESETS))
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--score", default="learned")
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-label-errors-real")
    p.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG of each explorer view")
    a = p.parse_args()
    shots = a.screenshots.resolve() if a.screenshots else None
    enter_scratch_project(a.workdir)
    for name in a.datasets:
        index = suspects(name, a)
        print(f"{name}: {index}", flush=True)
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
            screenshot(index, shots / f"label_errors_{name}.png")


if __name__ == "__main__":
    main()
