"""Write a dataset's instance objects as a COCO instances JSON that pycocotools' ``COCO()`` loads.

- images: one entry per labeled sample (split ``pool`` and status ``unlabeled`` are left out), with
  ``file_name`` relative to ``<dataset>/images`` (import it back with ``images=<dataset>/images``) or,
  with ``absolute_paths``, the absolute path of the image; width and height from the manifest.
- annotations: one per object, segmentation as compressed RLE, ``area`` its pixel count, ``bbox``
  [x, y, width, height] of the mask (pycocotools' ``toBbox``), ``iscrowd`` as stored.
- categories: every class but background (id 0), with its name and supercategory when known.

COCO ids are restored when the dataset came from a COCO import: category ids from the classes'
``coco_id``, image ids from the samples' ``coco_image_id``, annotation ids from the objects'
``coco_id``, each only when every entry has one and they are distinct; otherwise that kind is
numbered 1..N (category ids: the class ids) in dataset order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.console import progress
from masklab.data.manifest import Dataset, load_dataset
from masklab.data.objects import read_objects
from masklab.data.rle import encode_rle
from masklab.errors import UserError
from masklab.files import atomic_write


@dataclass
class CocoExport:
    """Where the COCO file went and how many entries of each kind it holds."""

    path: Path
    images: int
    annotations: int
    categories: int


def _ids_or_numbers(known: Sequence[Any]) -> list[int]:
    """``known`` when all are distinct ints, else 1..N: a partial or clashing set of ids is not kept."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in known) and len(set(known)) == len(known):
        return list(known)
    return list(range(1, len(known) + 1))


def coco_document(dataset: Dataset, split: str | None = None, absolute_paths: bool = False) -> dict[str, Any]:
    """The COCO instances document of ``dataset`` (labeled samples of ``split``, or of every split)."""
    from pycocotools import mask as coco_mask

    samples = [s for s in dataset.samples if s.labeled and (split is None or s.split == split)]
    if not samples:
        where = f"split '{split}'" if split else "any split"
        raise UserError(f"dataset {dataset.root}: no labeled samples in {where}; splits: {dataset.split_names}")
    classes = [c for c in dataset.class_table.classes if c.id != 0]
    # Class ids other than 0 are 1..K, so numbering them gives a category id = its class id.
    category_ids = dict(zip([c.id for c in classes], _ids_or_numbers([c.coco_id for c in classes])))
    categories = [{"id": category_ids[c.id], "name": c.name,
                   **({"supercategory": c.supercategory} if c.supercategory is not None else {})} for c in classes]
    image_ids = _ids_or_numbers([s.extra.get("coco_image_id") for s in samples])
    images, annotations, object_ids, bad = [], [], [], []
    has_objects = False
    for sample, image_id in zip(progress(samples, f"Exporting {dataset.name}"), image_ids):
        path = (dataset.root / sample.image).resolve()
        file_name = str(path) if absolute_paths else os.path.relpath(path, (dataset.root / "images").resolve())
        images.append({"id": image_id, "file_name": Path(file_name).as_posix(), "width": sample.width,
                       "height": sample.height})
        has_objects = has_objects or bool(sample.objects or sample.instances)
        objects = read_objects(dataset.root, sample)
        for k in range(len(objects)):
            class_id = int(objects.class_ids[k])
            if class_id not in category_ids:
                bad.append(f"{sample.objects or sample.instances} object {k}: class_id {class_id}")
                continue
            rle = encode_rle(objects.masks[k])
            bbox = coco_mask.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
            annotations.append({"id": None, "image_id": image_id, "category_id": category_ids[class_id],
                                "segmentation": rle, "area": int(objects.masks[k].sum()),
                                "bbox": [float(v) for v in bbox], "iscrowd": int(objects.iscrowd[k])})
            object_ids.append(objects.extra[k].get("coco_id"))
    if bad:
        raise UserError(f"dataset {dataset.root}: {len(bad)} object(s) of no exportable class: {'; '.join(bad[:5])}"
                        f"; expected class ids {sorted(category_ids)} (0 is background)")
    if not has_objects:
        raise UserError(f"dataset {dataset.root} has no instance objects (semantic masks only); a COCO export "
                        "needs objects (import with format=instance_folders, instance_png or coco)")
    for ann, ann_id in zip(annotations, _ids_or_numbers(object_ids)):
        ann["id"] = ann_id
    return {"info": {"description": f"masklab dataset {dataset.name}", "masklab_dataset": str(dataset.root),
                     "split": split or "all"},
            "images": images, "annotations": annotations, "categories": categories}


def export_coco(root: str | Path, out: str | Path, *, split: str | None = None, absolute_paths: bool = False,
                overwrite: bool = False) -> CocoExport:
    """Write the COCO JSON of the dataset at ``root`` to ``out`` atomically (see the module docstring).

    An existing ``out`` is replaced only with ``overwrite``; nothing is written when a sample's
    objects cannot be read or belong to no class.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"out={out} already exists; pass overwrite=true to replace it")
    if out.is_dir():
        raise UserError(f"out={out} is a folder; expected a file name such as {out / 'annotations.json'}")
    doc = coco_document(load_dataset(root), split, absolute_paths)
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(doc)))
    return CocoExport(out, len(doc["images"]), len(doc["annotations"]), len(doc["categories"]))
