"""Accepting labels corrected by hand: record their new checksums in the manifest.

The manifest stores the sha256 of each mask and objects file so that an unintended change is
caught (`data check`, `train`). A deliberate label fix is recorded with ``record_mask_edits``: it
finds the mask and objects files whose bytes changed, checks them like any label (readable, image
size, known class ids, objects that decode), and only then writes the new checksums, atomically.
Nothing else in the manifest changes: rows are read and written through :class:`Sample`, which
keeps every key it does not know verbatim.
"""

from __future__ import annotations

from pathlib import Path

from masklab.data.check import Problem, check_dataset
from masklab.data.manifest import MANIFEST_FILE, POOL_SPLIT, read_manifest, write_manifest
from masklab.data.objects import OBJECTS_DIR
from masklab.data.sample_files import file_sha256, safe_name
from masklab.errors import UserError
from masklab.files import atomic_write

# (file field, checksum field) of the label files a person may edit.
_LABEL_FILES = (("mask", "mask_sha256"), ("objects", "objects_sha256"))


class MaskEditError(UserError):
    """Edited labels that fail the dataset check; the manifest was left as it was."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("edited masks have errors; nothing was recorded:\n" + "\n".join(map(str, problems)))


def record_mask_edits(root: Path, labelled_split: str = "train") -> list[str]:
    """Record the new sha256 of every mask or objects file that changed on disk; returns the changed
    sample ids (each once, in manifest order). A changed sample marked ``needs_review`` becomes ``fixed``.

    An unlabelled sample (split ``pool`` or status ``unlabeled``) whose label file now exists at the dataset's
    own path for it (``masks/<safe id>.png``, or ``objects/<safe id>.json``) is labelled: the file is recorded,
    a pool sample moves to ``labelled_split`` and its status becomes ``labeled`` (the active-learning loop's
    last step: label the selected images, then record them).

    Raises MaskEditError (manifest unchanged) when a changed file fails the dataset check. Per-object
    PNGs have no checksum of their own; their problems count when their objects file changed.
    """
    root = Path(root)
    manifest = root / MANIFEST_FILE
    original = manifest.read_bytes()
    samples = read_manifest(root)
    changed: dict[str, str] = {}  # changed file -> sample id
    for s in samples:
        if not s.labeled and not s.has_target:
            for file_field, sha_field, rel in (("mask", "mask_sha256", f"masks/{safe_name(s.id)}.png"),
                                               ("objects", "objects_sha256", f"{OBJECTS_DIR}/{safe_name(s.id)}.json")):
                if (root / rel).is_file():
                    setattr(s, file_field, rel)
                    setattr(s, sha_field, file_sha256(root / rel))
                    changed[rel] = s.id
            if s.has_target:
                s.split = labelled_split if s.split == POOL_SPLIT else s.split
                s.status = "labeled"
            continue
        for file_field, sha_field in _LABEL_FILES:
            rel = getattr(s, file_field)
            if rel and (root / rel).is_file():
                digest = file_sha256(root / rel)
                if digest != getattr(s, sha_field):
                    setattr(s, sha_field, digest)
                    changed[rel] = s.id
                    if s.status == "needs_review":
                        s.status = "fixed"  # reviewed and corrected: the review loop's last step
    if not changed:
        return []
    write_manifest(root, samples)
    # Per-object PNGs of an objects file objects/<id>.json live in objects/<id>/.
    folders = tuple(rel[: -len(".json")] + "/" for rel in changed if rel.endswith(".json"))
    errors = [
        p
        for p in check_dataset(root)
        if p.severity == "error" and (p.file in changed or (folders and p.file.startswith(folders)))
    ]
    if errors:
        atomic_write(manifest, lambda tmp: tmp.write_bytes(original))
        raise MaskEditError(errors)
    return list(dict.fromkeys(changed.values()))


def mark_status(root: Path, ids: list[str], status: str) -> list[str]:
    """Set the manifest ``status`` of the samples ``ids`` (atomically; every other key kept); returns the ids
    whose status changed. Unknown ids or statuses are a UserError and nothing is written."""
    from masklab.data.manifest import STATUSES

    if status not in STATUSES:
        raise UserError(f"status={status}: expected one of {list(STATUSES)}")
    samples = read_manifest(root)
    known = {s.id for s in samples}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise UserError(f"{Path(root) / MANIFEST_FILE}: no sample {unknown[:5]}" + (" ..." if len(unknown) > 5 else ""))
    wanted = set(ids)
    changed = [s.id for s in samples if s.id in wanted and s.status != status]
    for s in samples:
        if s.id in wanted:
            s.status = status
    if changed:
        write_manifest(root, samples)
    return changed
