"""A PNG grid of augmented samples with mask overlays: see what an augmentation pipeline does."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw
from torch.utils.data import Dataset as ItemDataset

from masklab.console import progress
from masklab.data.classes import ClassTable
from masklab.errors import UserError
from masklab.report.overlay import distinct_colors, overlay_mask, overlay_objects

CELL = 192
LABEL_HEIGHT = 14


def preview_grid(
    split: ItemDataset, class_table: ClassTable, rows: int, cols: int, repeats: int = 2, alpha: float = 0.45
) -> Image.Image:
    """Grid of ``rows`` x ``cols`` cells; each sample appears ``repeats`` times with fresh augmentation draws.

    ``split``: items with ``image`` (3, H, W) uint8, ``id`` and either ``mask`` (H, W) class ids
    (SegmentationSplit) or ``masks`` (K, H, W) instance objects (the instance task's InstanceSplit).
    Every cell shows the augmented image with its augmented mask blended on top, or each augmented
    object tinted and outlined in its own colour, so any misalignment with the image is visible.
    """
    if len(split) == 0:
        raise UserError("the split to preview has no samples")
    n_cells = rows * cols
    grid = Image.new("RGB", (cols * CELL, rows * (CELL + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(grid)
    palette = class_table.palette()
    for cell in progress(range(n_cells), "Drawing preview"):
        index = (cell // max(repeats, 1)) % len(split)
        item = split[index]
        image = item["image"].numpy().transpose(1, 2, 0)
        if "masks" in item:
            masks = item["masks"].numpy().astype(bool)
            blended = overlay_objects(image, masks, distinct_colors(len(masks)), alpha * 0.6)
        else:
            blended = overlay_mask(image, item["mask"].numpy(), palette, class_table.ignore_index, alpha)
        tile = Image.fromarray(blended).resize((CELL, CELL), Image.NEAREST)
        x, y = (cell % cols) * CELL, (cell // cols) * (CELL + LABEL_HEIGHT)
        grid.paste(tile, (x, y + LABEL_HEIGHT))
        draw.text((x + 2, y + 1), f"{item['id']} {image.shape[1]}x{image.shape[0]}", fill="black")
    return grid


def legend(class_table: ClassTable) -> Image.Image:
    """A strip naming each class in its colour."""
    strip = Image.new("RGB", (max(160 * class_table.num_classes, 160), 18), "white")
    draw = ImageDraw.Draw(strip)
    for i, info in enumerate(class_table.classes):
        draw.rectangle([i * 160 + 2, 3, i * 160 + 14, 15], fill=tuple(info.color), outline="black")
        draw.text((i * 160 + 18, 3), f"{info.id} {info.name}", fill="black")
    return strip


def save_preview(grid: Image.Image, strip: Image.Image, path: Path) -> Path:
    """Stack the legend on top of the grid and write a PNG atomically."""
    canvas = Image.new("RGB", (max(grid.width, strip.width), grid.height + strip.height), "white")
    canvas.paste(strip, (0, 0))
    canvas.paste(grid, (0, strip.height))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    canvas.save(tmp)
    tmp.replace(path)
    return path


