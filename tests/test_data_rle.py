"""Compressed COCO RLE (masklab.data.rle): the Python run-length parser that checks strings and pycocotools, which
decodes them, read the same masks; strings are checked where they enter (data check, the COCO import) and only
decoded on every later read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from masklab.data import rle as rle_module
from masklab.data.check import check_dataset
from masklab.data.classes import ClassTable
from masklab.data.manifest import load_dataset
from masklab.data.objects import ObjectError, read_objects
from masklab.data.rle import check_rle, decode_rle, encode_rle, rle_run_lengths
from masklab.data.writer import DatasetWriter

# (H, W): a single pixel, one row, one column, odd and prime sizes, and one with runs far beyond 2**15 px.
SIZES = [(1, 1), (1, 7), (9, 1), (3, 5), (13, 17), (31, 29), (64, 48), (257, 333)]


def mask_of_runs(runs: list[int], size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool from run lengths: alternating background/object, column-major, as COCO RLE defines them."""
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    assert flat.size == size[0] * size[1]
    return flat.reshape(size[1], size[0]).T


def sample_masks(rng: np.random.Generator) -> list[np.ndarray]:
    """Empty, full and random masks (salt and pepper of several densities, a blob, a one-pixel object) of every size."""
    masks = []
    for h, w in SIZES:
        masks += [np.zeros((h, w), bool), np.ones((h, w), bool)]
        masks += [rng.random((h, w)) < p for p in (0.02, 0.5, 0.98)]
        yy, xx = np.mgrid[:h, :w]
        masks.append((yy - rng.integers(h)) ** 2 + (xx - rng.integers(w)) ** 2 < (max(h, w) / 3) ** 2)
        one = np.zeros((h, w), bool)
        one[rng.integers(h), rng.integers(w)] = True
        masks.append(one)
    return masks


def test_the_checking_parser_and_pycocotools_read_the_same_masks() -> None:
    masks = sample_masks(np.random.default_rng(0))
    assert len(masks) == 7 * len(SIZES)
    for mask in masks:
        rle = encode_rle(mask)
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        runs = rle_run_lengths(rle["counts"])
        assert sum(runs) == mask.size and min(runs) >= 0
        assert np.array_equal(mask_of_runs(runs, mask.shape), mask)  # the parser reads what was encoded
        check_rle(rle)
        for check in (False, True):
            decoded = decode_rle(rle, check=check)  # pycocotools' parser and decoder
            assert decoded.dtype == bool and decoded.shape == mask.shape
            assert np.array_equal(decoded, mask)


def test_strings_of_any_run_lengths_parse_alike() -> None:
    """Run lists the encoder never writes (a zero first run, zero runs inside, runs that shrink and grow by
    thousands: negative and multi-character differences), compressed by pycocotools itself."""
    rng = np.random.default_rng(1)
    compared = 0
    for h, w in SIZES[3:]:
        for _ in range(20):
            cuts = np.sort(rng.integers(0, h * w + 1, size=int(rng.integers(1, 40))))
            runs = np.diff(np.concatenate([[0], cuts, [h * w]])).tolist()
            compressed = coco_mask.frPyObjects({"size": [h, w], "counts": runs}, h, w)
            rle = {"size": [h, w], "counts": compressed["counts"].decode("ascii")}
            assert rle_run_lengths(rle["counts"]) == runs
            assert np.array_equal(decode_rle(rle), mask_of_runs(runs, (h, w)))
            compared += 1
    assert compared == 100


@pytest.mark.parametrize(("rle", "message"), [
    ({"size": [16, 20], "counts": "3"}, "run lengths add up to 3 (smallest 3); H*W is 320"),
    ({"size": [2, 2], "counts": "0g"}, "string ends inside a run length"),
    ({"size": [2, 2], "counts": "1 3"}, "character ' ' at 1 is outside '0'..'o'"),
    ({"size": [2, 2], "counts": "5O"}, "run lengths add up to 4 (smallest -1); H*W is 4"),  # 5 and -1 px
    ({"size": [2, 0], "counts": ""}, "size [2, 0] is not [H, W] of positive ints"),
    ({"size": [2, 2], "counts": [4]}, "counts is list; expected a compressed RLE string"),
    ({"counts": "4"}, "{'counts': '4'} is not {'size': [H, W], 'counts': str}"),
])
def test_check_rle_names_what_is_wrong(rle: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_rle(rle)
    assert str(caught.value) == message
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        decode_rle(rle, check=True)


def test_runs_are_checked_by_data_check_not_on_every_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = ClassTable.from_dict({"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "cell", "thing": True}]})
    mask = np.zeros((12, 10), bool)
    mask[2:7, 3:9] = True
    with DatasetWriter(tmp_path / "ds", table) as writer:
        writer.add("a", np.zeros((12, 10, 3), np.uint8), mask.astype(np.uint8), "train",
                   objects=[{"class_id": 1, "mask": mask}])
        dataset = writer.commit()
    sample = dataset.samples[0]
    parsed: list[str] = []
    original = rle_module.rle_run_lengths
    monkeypatch.setattr(rle_module, "rle_run_lengths", lambda counts: parsed.append(counts) or original(counts))

    assert np.array_equal(read_objects(dataset.root, sample).masks[0], mask)
    assert parsed == []  # a read decodes with pycocotools only
    assert np.array_equal(read_objects(dataset.root, sample, check=True).masks[0], mask)
    assert len(parsed) == 1
    assert [p.kind for p in check_dataset(dataset.root) if p.severity == "error"] == []
    assert len(parsed) == 2  # data check parsed the string

    objects_file = dataset.root / sample.objects
    entries = json.loads(objects_file.read_text())
    entries[0]["mask"]["rle"]["counts"] = "3"  # runs that cover 3 px of 120: pycocotools alone would not notice
    objects_file.write_text(json.dumps(entries))
    (problem,) = [p for p in check_dataset(dataset.root) if p.kind == "bad RLE"]
    assert (problem.file, problem.found) == ("objects/a.json", "object 0: run lengths add up to 3 (smallest 3); "
                                                               "H*W is 120")
    with pytest.raises(ObjectError, match="bad RLE: found object 0: run lengths add up to 3"):
        read_objects(dataset.root, load_dataset(dataset.root).samples[0], check=True)
