"""Images without labels into a dataset's ``pool`` split: the first step of the active-learning loop.

``masklab data import ... unlabeled=<dir>`` adds every image of ``<dir>`` (subfolders too) as a sample of split
``pool`` (no mask; status unlabeled): with ``images=`` to a new import, or alone to add new images to an existing
dataset, in place, as a new data version. An image is named by its path stem under ``<dir>`` (``a/b.png`` ->
``a/b``), as format=folder names its samples. Adding is all or nothing and can be repeated: an image already in
the dataset with the same bytes is skipped, one whose id is taken by other bytes is a problem, every unreadable
image is listed, and nothing is written while there is a problem.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from masklab.data.check import ProblemList
from masklab.data.import_folder import ImportProblems, scan_images
from masklab.data.import_instances import checked_image_size
from masklab.data.manifest import POOL_SPLIT, Sample, load_dataset, write_manifest
from masklab.data.sample_files import MAX_FILE_NAME_BYTES, file_sha256, safe_name
from masklab.errors import UserError


@dataclass
class PoolImage:
    """One image to add: its sample id, the file, its size (px) and sha256."""

    id: str
    path: Path
    width: int
    height: int
    sha256: str


def scan_unlabeled(folder: str | Path, taken: dict[str, str] | None = None) -> tuple[list[PoolImage], list[str]]:
    """The images of ``folder`` to add (sorted by id) and the ids skipped because ``taken`` ({sample id: image
    sha256} of the dataset) holds them with the same bytes. Raises ImportProblems listing every unreadable image,
    duplicate stem, id taken by other bytes or file name too long; UserError when ``folder`` is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"unlabeled={folder}: folder does not exist")
    problems = ProblemList()
    found = scan_images(folder, True, problems)
    taken = taken or {}
    images: list[PoolImage] = []
    skipped: list[str] = []
    for stem, path in sorted(found.items()):
        if path is None:  # a duplicate stem: reported by the scan
            continue
        sha = file_sha256(path)
        if stem in taken:
            if taken[stem] == sha:
                skipped.append(stem)
            else:
                problems.error(path, "id taken", f"sample '{stem}' is in the dataset with other bytes",
                             "a new stem, or the same image")
            continue
        if len(f"{safe_name(stem)}{path.suffix.lower()}".encode()) > MAX_FILE_NAME_BYTES:
            problems.error(path, "file name too long", f"'{stem}'", f"a stem of at most {MAX_FILE_NAME_BYTES} bytes")
            continue
        try:
            width, height = checked_image_size(path)
        except Exception as exc:
            problems.error(path, "unreadable image", f"{type(exc).__name__}: {exc}", "a readable image")
            continue
        images.append(PoolImage(stem, path, width, height, sha))
    if problems:
        raise ImportProblems(list(problems), str(folder))
    return images, skipped


@dataclass
class PoolAdded:
    """What :func:`add_unlabeled` did: the ids added to split ``pool`` and those already there."""

    added: list[str]
    skipped: list[str]


def add_unlabeled(root: str | Path, folder: str | Path) -> PoolAdded:
    """Add the images of ``folder`` to the dataset at ``root`` as split ``pool``, in place: the image files are
    copied under ``images/`` first (under names no sample uses), then the manifest is replaced atomically, so a
    crash leaves the dataset as it was (perhaps with unreferenced new files) or with every image added."""
    root = Path(root)
    dataset = load_dataset(root)
    images, skipped = scan_unlabeled(folder, {s.id: s.image_sha256 for s in dataset.samples})
    files = {f"images/{safe_name(i.id)}{i.path.suffix.lower()}": i for i in images}
    used = {Path(s.image).name for s in dataset.samples}
    problems = ProblemList()
    for rel, image in files.items():  # every name is checked before anything is copied
        orphan = (root / rel).is_file() and file_sha256(root / rel) == image.sha256  # left by a cut add: reused
        if Path(rel).name in used or ((root / rel).exists() and not orphan):
            problems.error(image.path, "file name taken", f"{root / rel} exists", "a stem no file of the dataset uses")
    if problems:
        raise ImportProblems(list(problems), str(folder))
    rows = list(dataset.samples)
    for rel, image in files.items():
        tmp = root / f"{rel}.part"
        shutil.copyfile(image.path, tmp)
        os.replace(tmp, root / rel)
        rows.append(Sample(id=image.id, image=rel, mask=None, split=POOL_SPLIT, width=image.width,
                           height=image.height, image_sha256=image.sha256))
    if images:
        write_manifest(root, rows)
    return PoolAdded([i.id for i in images], skipped)
