"""Accepting masks corrected by hand: record their new checksums in the manifest.

The manifest stores each mask's sha256 so that an unintended change is caught (`data check`,
`train`). A deliberate label fix is recorded with ``record_mask_edits``: it finds the masks whose
bytes changed, checks them like any mask (readable, single channel, image size, known class ids),
and only then writes the new checksums, atomically. Nothing else in the manifest changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from masklab.data.check import Problem, check_dataset
from masklab.data.format import MANIFEST_FILE, file_sha256
from masklab.files import atomic_write


class MaskEditError(ValueError):
    """Edited masks that fail the dataset check; the manifest was left as it was."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("edited masks have errors; nothing was recorded:\n" + "\n".join(map(str, problems)))


def record_mask_edits(root: Path) -> list[str]:
    """Record the new sha256 of every mask that changed on disk; returns the changed sample ids.

    Raises MaskEditError (manifest unchanged) when a changed mask fails the dataset check.
    """
    root = Path(root)
    manifest = root / MANIFEST_FILE
    original = manifest.read_text()
    rows = [json.loads(line) for line in original.splitlines() if line.strip()]
    changed: dict[str, str] = {}
    for row in rows:
        mask = row.get("mask")
        if mask and (root / mask).is_file():
            digest = file_sha256(root / mask)
            if digest != row.get("mask_sha256"):
                row["mask_sha256"] = digest
                changed[mask] = row["id"]
    if not changed:
        return []
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(manifest, lambda tmp: tmp.write_text(text))
    errors = [p for p in check_dataset(root) if p.severity == "error" and p.file in changed]
    if errors:
        atomic_write(manifest, lambda tmp: tmp.write_text(original))
        raise MaskEditError(errors)
    return list(changed.values())
