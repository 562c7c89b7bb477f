"""Images without labels into split `pool` from the CLI (the first step of the active-learning loop):
`data import ... unlabeled=<dir>` with a new import of any format, or alone to add new images to an existing
dataset in place; all or nothing, repeatable, and what `al select` then reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masklab.data.check import check_dataset
from masklab.data.import_folder import ImportProblems
from masklab.data.manifest import POOL_SPLIT, load_dataset
from masklab.errors import UserError


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def labelled(root: Path, count: int = 4) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    for k in range(count):
        write_image(images / f"l{k}.png", k)
        masks.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.arange(24 * 32).reshape(24, 32) % 2).astype(np.uint8)).save(masks / f"l{k}.png")
    return images, masks


def import_(project: Path, *overrides: str):
    from masklab import workflows
    from masklab.config import compose

    return workflows.import_dataset(compose("data_import", ["name=cells", *overrides]))


def manifest_rows(root: Path) -> list[str]:
    return [line for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]


def test_a_new_import_takes_unlabeled_images_into_pool_and_a_later_one_adds_more(project: Path):
    images, masks = labelled(project / "raw")
    pool = project / "raw" / "unlabelled"
    write_image(pool / "u0.png", 10)
    write_image(pool / "sub" / "u1.jpg", 11)
    done = import_(project, f"images={images}", f"masks={masks}", "split_mode=none", f"unlabeled={pool}")
    ds = done.dataset
    assert sorted(s.id for s in ds.samples if s.split == POOL_SPLIT) == ["sub/u1", "u0"]
    assert all(not s.labeled and s.mask is None for s in ds.samples if s.split == POOL_SPLIT)
    assert sorted(s.id for s in ds.labeled("train")) == ["l0", "l1", "l2", "l3"]
    assert any("added 2 unlabelled image(s)" in n for n in done.notes) and not done.added_to_existing
    assert [p for p in check_dataset(ds.root) if p.severity == "error"] == []
    before = manifest_rows(ds.root)

    # Later: new images for the pool, some already there (same bytes: skipped), into the existing dataset.
    write_image(pool / "u2.png", 12)
    later = import_(project, f"unlabeled={pool}")
    assert later.added_to_existing and any("added 1 unlabelled image(s)" in n and "2 already there" in n
                                           for n in later.notes), later.notes
    after = manifest_rows(ds.root)
    assert after[:len(before)] == before  # the rows there before are kept byte for byte
    assert json.loads(after[-1])["id"] == "u2" and json.loads(after[-1])["split"] == POOL_SPLIT
    assert (ds.root / json.loads(after[-1])["image"]).read_bytes() == (pool / "u2.png").read_bytes()
    assert [p for p in check_dataset(ds.root) if p.severity == "error"] == []


def test_every_problem_is_listed_and_nothing_is_written(project: Path):
    images, masks = labelled(project / "raw")
    done = import_(project, f"images={images}", f"masks={masks}", "split_mode=none")
    root = done.dataset.root
    before = (root / "manifest.jsonl").read_bytes()
    files_before = sorted(p.name for p in (root / "images").iterdir())
    pool = project / "more"
    write_image(pool / "fine.png", 20)
    (pool / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_image(pool / "l0.png", 99)  # the id of a labelled sample, other bytes
    with pytest.raises(ImportProblems) as err:
        import_(project, f"unlabeled={pool}")
    kinds = {(Path(p.file).name, p.kind) for p in err.value.problems}
    assert kinds == {("broken.png", "unreadable image"), ("l0.png", "id taken")}, kinds
    assert "nothing was written" in str(err.value)
    assert (root / "manifest.jsonl").read_bytes() == before
    assert sorted(p.name for p in (root / "images").iterdir()) == files_before

    # A new import whose unlabelled folder has a problem writes nothing at all: one found only once the labelled
    # images are in (an unlabelled image named as a labelled one, with other bytes) included.
    with pytest.raises(ImportProblems):
        import_(project, "name=other", f"images={images}", f"masks={masks}", "split_mode=none",
                f"unlabeled={pool}")
    (pool / "broken.png").unlink()
    with pytest.raises(ImportProblems, match="id taken"):
        import_(project, "name=other", f"images={images}", f"masks={masks}", "split_mode=none",
                f"unlabeled={pool}")
    assert not [p.name for p in (project / "data").iterdir() if "other" in p.name]  # no dataset, no leftovers
    with pytest.raises(UserError, match=r"without images=: adds images to an existing dataset, and .*nowhere holds "
                                        r"none"):
        import_(project, "name=nowhere", f"unlabeled={pool}")


def test_coco_import_takes_a_pool_too(project: Path):
    """The COCO importer has no `pool` split of its own: unlabeled= gives it one."""
    images = project / "coco"
    write_image(images / "a.png", 1)
    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16,
                            "bbox": [2, 2, 4, 4], "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]}],
           "categories": [{"id": 1, "name": "cell"}]}
    (project / "ann.json").write_text(json.dumps(ann))
    write_image(project / "pool" / "p.png", 2)
    done = import_(project, "format=coco", f"images={images}", f"annotations={project / 'ann.json'}",
                   "split_mode=none", f"unlabeled={project / 'pool'}")
    assert [(s.id, s.split) for s in load_dataset(done.dataset.root).samples if not s.labeled] == [("p", "pool")]


def test_the_cli_adds_to_an_existing_dataset_as_a_new_data_version(project: Path, cli):
    images, masks = labelled(project / "raw")
    assert cli("data", "import", "name=cells", f"images={images}", f"masks={masks}", "split_mode=none").returncode == 0
    write_image(project / "pool" / "p.png", 3)
    done = cli("data", "import", "name=cells", f"unlabeled={project / 'pool'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("Updated ") and "pool 1" in done.stdout, done.stdout
    assert "dvc add" in done.stderr  # not tracked by DVC here: says how to record this data version
