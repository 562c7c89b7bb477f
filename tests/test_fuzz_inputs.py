"""Fuzzed inputs (hypothesis): damaged image, mask and object files, edited manifests, random COCO JSON.

Every case runs the real code in this process: ``check_dataset`` and the ``masklab data check`` command
function on a dataset written by :class:`DatasetWriter` and then damaged (cut or flipped bytes of any file,
random manifest edits, random objects files, a damaged check cache); ``workflows.import_dataset`` (formats
folder, instance_folders, instance_png, coco) on sources with damaged files, random instance-class tables and
random or edited COCO JSON. The contract under test (#14, "never losing work"):

- ``data check`` answers with problems, among them an error naming each damaged PNG, image, mask or objects
  file and each malformed manifest row, exits 1 exactly when there is an error, and never raises;
- an import either writes a complete dataset that ``data check`` finds clean, or raises a UserError naming
  what is wrong, and then leaves nothing behind: no dataset folder (or the old one byte for byte), no
  staging folder.

Each ``@example`` is a case that once failed (a traceback, or damage found clean). Runs are derandomized and
use no example database, so CI sees the same cases every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from omegaconf import DictConfig
from PIL import Image

from masklab.data.check import Problem, check_dataset, format_problems
from masklab.data.classes import CLASSES_FILE, ClassTable
from masklab.data.errors import DatasetFormatError
from masklab.data.manifest import MANIFEST_FILE, load_dataset
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError


def fuzz(examples: int) -> settings:
    """``examples`` fixed cases per property (the same on every run: derandomized, no database), sized so the
    module takes well under 40 s on two busy cores; MASKLAB_FUZZ_EXAMPLES=2000 fuzzes deeper on a developer's
    machine."""
    return settings(max_examples=int(os.environ.get("MASKLAB_FUZZ_EXAMPLES", examples)), deadline=None,
                    derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


FUZZ = fuzz(40)  # imports: a few ms a case
FUZZ_CHECK = fuzz(30)  # data check runs twice a case (the function, then the command)

H, W = 12, 16
CLASSES = ClassTable.from_dict({"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "a", "thing": True},
                                            {"id": 2, "name": "b", "thing": True}]})


# ----------------------------------------------------------------------------- damage


def noise(seed: int, shape: tuple[int, ...] = (H, W, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def labels(seed: int, top: int = 3) -> np.ndarray:
    """(H, W) values 0..top-1 in blocks, each value covering several pixels."""
    m = np.zeros((H, W), np.uint8)
    rng = np.random.default_rng(seed)
    for v in range(1, top):
        y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
        m[y:y + 4, x:x + 4] = v
    return m


# Any JSON value, NaN and infinities included (Python's json reads and writes them).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 40), 1 << 40) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)

# A damage: (file, cut: keep this many bytes (mod the size) or None, flips: (position mod size, xor mask)).
Damage = tuple[str, int | None, tuple[tuple[int, int], ...]]


def damages(files: list[str]) -> st.SearchStrategy[Damage]:
    """A cut, byte flips, or both, of one of ``files``."""
    file, cut = st.sampled_from(files), st.integers(0, 1 << 20)
    flips = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=3).map(tuple)
    return st.tuples(file, cut, st.just(())) | st.tuples(file, st.none() | cut, flips)


def damage_file(path: Path, cut: int | None, flips: tuple[tuple[int, int], ...]) -> bool:
    """Truncate and flip bytes of ``path`` in place; whether its content changed."""
    before = path.read_bytes()
    data = bytearray(before)
    if cut is not None:
        del data[cut % len(data):]
    for pos, xor in flips:
        if data:
            data[pos % len(data)] ^= xor
    path.write_bytes(bytes(data))
    return bytes(data) != before


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (empty when it does not exist)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def staging_leftovers(parent: Path, name: str) -> list[str]:
    """DatasetWriter stages in ``<parent>/.<name>.*``: after an import nothing of that may stay."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")) if parent.is_dir() else []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for the module; each example works in a fresh folder inside it."""
    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:  # compose looks for a project's conf/ from the working directory
        mp.chdir(root)
        mp.delenv("MASKLAB_ROOT", raising=False)
        yield root


def scratch(workdir: Path) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(dir=workdir)


# ----------------------------------------------------------------------------- data check

# s0: PNG image, RLE objects; s1: JPEG image (bytes copied), objects as PNGs; s2 (val): PNG image, RLE objects.
CHECKED_FILES = ["images/s0.png", "images/s1.jpg", "images/s2.png", "masks/s0.png", "masks/s1.png", "masks/s2.png",
                 "objects/s0.json", "objects/s1.json", "objects/s1/0.png", "objects/s1/1.png", "objects/s2.json"]
CHECKSUMS = ("image_sha256", "mask_sha256", "objects_sha256")


@pytest.fixture(scope="module")
def clean_dataset(workdir: Path) -> Path:
    root = workdir / "clean"
    jpeg = workdir / "s1.jpg"
    Image.fromarray(noise(1)).save(jpeg, quality=90)
    with DatasetWriter(root, CLASSES) as writer:
        for k, split in enumerate(["train", "train", "val"]):
            m = labels(k)
            objects = [{"class_id": c, "mask": m == c} for c in (1, 2)]
            writer.add(f"s{k}", jpeg if k == 1 else noise(k), m, split, objects=objects,
                       object_storage="png" if k == 1 else "rle")
        writer.commit()
    assert sorted(tree(root)) == sorted([*CHECKED_FILES, CLASSES_FILE, MANIFEST_FILE])
    assert check_dataset(root) == []
    return root


@pytest.fixture(scope="module")
def check_cfg(workdir: Path) -> DictConfig:
    from masklab.config import compose

    return compose("data_check", [f"data.root={workdir / 'none'}", f"paths.cache_dir={workdir / 'cache'}"])


def check_command(cfg: DictConfig, root: Path, problems: list[Problem]) -> None:
    """``masklab data check`` in this process lists ``problems`` and exits 1 exactly when one is an error, even
    when the dataset does not load; nothing else may come out of it."""
    from masklab.commands.data import check

    cfg.data.root = str(root)
    errors = any(p.severity == "error" for p in problems)
    try:
        check(cfg)
    except SystemExit as exc:
        assert exc.code == 1 and errors
    else:
        assert not errors


def checked(root: Path) -> list[Problem]:
    """check_dataset's problems; any exception fails the test."""
    problems = check_dataset(root)
    assert all(isinstance(p, Problem) for p in problems)
    format_problems(problems)  # renders whatever was found
    return problems


def without_checksums(root: Path) -> None:
    """Blank the manifest's sha256s (as a hand-made dataset might), so only decoding can find damage."""
    rows = [json.loads(line) for line in (root / MANIFEST_FILE).read_text().splitlines()]
    for row in rows:
        row.update({k: "" for k in CHECKSUMS if k in row})
    (root / MANIFEST_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


@FUZZ_CHECK
@given(damage=damages(CHECKED_FILES + [CLASSES_FILE, MANIFEST_FILE]), checksums=st.booleans())
@example(damage=(CLASSES_FILE, None, ((0, 128),)), checksums=True)  # not UTF-8: was a UnicodeDecodeError
@example(damage=(MANIFEST_FILE, None, ((0, 128),)), checksums=True)  # the same
@example(damage=("objects/s1/0.png", 69, ()), checksums=True)  # cut after its pixels (no IEND): was found clean
def test_damaged_files_are_named_by_data_check(workdir: Path, clean_dataset: Path, check_cfg: DictConfig,
                                               damage: Damage, checksums: bool) -> None:
    file, cut, flips = damage
    with scratch(workdir) as tmp:
        root = Path(tmp) / "ds"
        shutil.copytree(clean_dataset, root)
        if not checksums:
            without_checksums(root)
        assume(damage_file(root / file, cut, flips))
        problems = checked(root)
        # With checksums every damaged data file is caught; without, a PNG's CRCs and length still are. A flipped
        # JPEG can decode to other pixels, a flipped JSON digit to another valid value, so those prove nothing.
        if file.endswith(".png") or (checksums and file not in (CLASSES_FILE, MANIFEST_FILE)):
            assert [p for p in problems if p.file == file and p.severity == "error"], format_problems(problems)
        check_command(check_cfg, root, problems)
        try:
            load_dataset(root)
        except DatasetFormatError:
            pass


@fuzz(15)  # two checks a case
@given(content=st.binary(max_size=60) | (json_values | st.fixed_dictionaries(
           {"key": st.text(max_size=3), "problems": json_values})).map(lambda v: json.dumps(v).encode()),
       damage=st.none() | st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)))
@example(content=b"\x80", damage=None)  # not UTF-8: was a UnicodeDecodeError out of check_cached
@example(content=b"null", damage=None)  # JSON, not an object: was an AttributeError
def test_a_damaged_check_cache_is_a_miss(workdir: Path, clean_dataset: Path, content: bytes,
                                         damage: tuple[int, int] | None) -> None:
    """The cached result of `data check` (what training reads before it starts) replaced by garbage, or a real
    one with a flipped byte: the check runs again and gives the right answer."""
    from masklab.data.check import check_cached

    with scratch(workdir) as tmp:
        cache = Path(tmp) / "cache"
        assert check_cached(clean_dataset, cache) == []
        (cache_file,) = cache.iterdir()
        if damage is None:
            cache_file.write_bytes(content)
        else:
            damage_file(cache_file, None, (damage,))
        assert check_cached(clean_dataset, cache) == []


object_entries = st.lists(
    st.fixed_dictionaries({}, optional={
        "class_id": st.integers(-1, 4) | json_values,
        "iscrowd": st.sampled_from([0, 1]) | json_values,
        "mask": st.fixed_dictionaries({}, optional={
            "rle": st.fixed_dictionaries({}, optional={"size": st.just([H, W]) | json_values,
                                                     "counts": st.text(max_size=10) | json_values}) | json_values,
            "png": st.sampled_from(["objects/s1/0.png", "objects/s1", "../clean/masks/s0.png", "/etc/hostname",
                                    "x" * 300, "a\x00b", ""]) | json_values,
        }) | json_values,
    }) | json_values,
    max_size=3,
) | json_values


@FUZZ_CHECK
@given(entries=object_entries)
@example(entries=[{"class_id": 1, "mask": {"png": "x" * 300}}])  # too long a name: was an OSError
def test_random_objects_files_get_named_problems(workdir: Path, clean_dataset: Path, check_cfg: DictConfig,
                                                 entries: Any) -> None:
    """objects/s0.json (its checksum blanked) holding random entries: data check names it (or the PNG an entry
    points at) when anything in it is wrong, and never raises."""
    from masklab.data.objects import read_objects

    with scratch(workdir) as tmp:
        root = Path(tmp) / "ds"
        shutil.copytree(clean_dataset, root)
        without_checksums(root)
        (root / "objects/s0.json").write_text(json.dumps(entries))
        problems = checked(root)
        if not isinstance(entries, list) or entries:  # [] is a sample without objects: fine
            pngs = {e["mask"]["png"] for e in entries if isinstance(e, dict) and isinstance(e.get("mask"), dict)
                    and isinstance(e["mask"].get("png"), str)} if isinstance(entries, list) else set()
            named = [p for p in problems if p.severity == "error" and p.file in {"objects/s0.json", *pngs}]
            sample = load_dataset(root).samples[0]
            try:
                read_objects(root, sample)
            except DatasetFormatError:
                assert named, format_problems(problems)
        check_command(check_cfg, root, problems)


# ----------------------------------------------------------------------------- manifest edits

ROW_KEYS = ("id", "image", "mask", "split", "width", "height", "image_sha256", "mask_sha256", "objects",
            "objects_sha256", "instances", "instance_classes", "fold", "status", "note")
REQUIRED = ("id", "image", "split", "width", "height", "image_sha256")
STRINGS = ("id", "image", "split", "image_sha256")
OPTIONAL_STRINGS = ("mask", "mask_sha256", "objects", "objects_sha256", "instances")

row_index = st.integers(0, 7)
manifest_edits = st.lists(st.one_of(
    st.tuples(st.just("delete"), row_index, st.sampled_from(ROW_KEYS)),
    st.tuples(st.just("set"), row_index, st.sampled_from(ROW_KEYS),
              json_values | st.sampled_from(["x" * 300, "images", "/etc/hostname", "../clean/images/s0.png"])),
    st.tuples(st.just("insert text"), row_index, st.text(max_size=12)),
    st.tuples(st.just("insert bytes"), row_index, st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("insert json"), row_index, json_values),
    st.tuples(st.just("duplicate"), row_index),
    st.tuples(st.just("copy id"), row_index, row_index),
    st.tuples(st.just("cut"), row_index, st.integers(0, 300)),
), min_size=1, max_size=4)


def edit_manifest(root: Path, edits: list[tuple]) -> bytes:
    """Apply ``edits`` to the manifest's rows (a row stays a dict until it is cut or replaced); the new bytes."""
    lines: list[dict | bytes] = [json.loads(line) for line in (root / MANIFEST_FILE).read_text().splitlines()]
    for op, k, *args in edits:
        k %= len(lines) + (op.startswith("insert"))
        row = lines[k] if k < len(lines) else None
        if op == "delete" and isinstance(row, dict):
            row.pop(args[0], None)
        elif op == "set" and isinstance(row, dict):
            row[args[0]] = args[1]
        elif op == "insert text":
            lines.insert(k, args[0].encode("utf-8", "surrogatepass"))
        elif op == "insert bytes":
            lines.insert(k, args[0])
        elif op == "insert json":
            lines.insert(k, json.dumps(args[0]).encode())
        elif op == "duplicate" and row is not None:
            lines.insert(k, json.loads(json.dumps(row)) if isinstance(row, dict) else row)
        elif op == "copy id" and isinstance(row, dict) and isinstance(lines[args[0] % len(lines)], dict):
            row["id"] = lines[args[0] % len(lines)].get("id")
        elif op == "cut" and row is not None:
            text = json.dumps(row).encode() if isinstance(row, dict) else row
            lines[k] = text[: args[0] % max(len(text), 1)]
    data = b"".join((json.dumps(r).encode() if isinstance(r, dict) else r) + b"\n" for r in lines)
    (root / MANIFEST_FILE).write_bytes(data)
    return data


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def malformed_rows(data: bytes) -> bool:
    """Whether the manifest has a row ``data check`` must call an error: not UTF-8, not a JSON object, a
    required field missing, a field of the wrong type, or an id used twice."""
    ids = []
    for raw in data.split(b"\n"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return True
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return True
        if not isinstance(row, dict) or any(k not in row for k in REQUIRED):
            return True
        if not all(isinstance(row[k], str) for k in STRINGS) or not all(is_int(row[k]) for k in ("width", "height")):
            return True
        if any(row.get(k) is not None and not isinstance(row[k], str) for k in OPTIONAL_STRINGS):
            return True
        classes = row.get("instance_classes", {})
        if not isinstance(classes, dict) or not all(is_int(v) for v in classes.values()):
            return True
        ids.append(row["id"])
    return len(ids) != len(set(ids))


@FUZZ_CHECK
@given(edits=manifest_edits)
@example(edits=[("set", 0, "id", [])])  # an unhashable id: was a TypeError out of data check
@example(edits=[("set", 0, "image", None)])  # a path that is no string: the same
@example(edits=[("set", 1, "mask", "x" * 300)])  # too long a name: was an OSError
def test_edited_manifests_get_named_problems(workdir: Path, clean_dataset: Path, check_cfg: DictConfig,
                                             edits: list[tuple]) -> None:
    with scratch(workdir) as tmp:
        root = Path(tmp) / "ds"
        shutil.copytree(clean_dataset, root)
        data = edit_manifest(root, edits)
        problems = checked(root)
        if malformed_rows(data):
            assert [p for p in problems if p.file.startswith(MANIFEST_FILE) and p.severity == "error"], \
                format_problems(problems)
        check_command(check_cfg, root, problems)
        try:
            load_dataset(root)
        except DatasetFormatError:
            pass


def test_data_check_lists_a_row_that_stops_loading(workdir: Path, clean_dataset: Path, check_cfg: DictConfig,
                                                   capsys: pytest.CaptureFixture) -> None:
    """load_dataset refuses a row of the wrong type; `data check` still lists it with every other problem."""
    with scratch(workdir) as tmp:
        root = Path(tmp) / "ds"
        shutil.copytree(clean_dataset, root)
        edit_manifest(root, [("set", 0, "id", ["s0"]), ("set", 2, "width", "16")])
        (root / "masks/s1.png").write_bytes(b"")
        with pytest.raises(DatasetFormatError, match=r"manifest.jsonl:1: bad manifest row: found id \['s0'\]; "
                                                     "expected id a string"):
            load_dataset(root)
        capsys.readouterr()
        problems = checked(root)
        check_command(check_cfg, root, problems)
        listed = capsys.readouterr().out
        assert "manifest.jsonl:1" in listed and "manifest.jsonl:3" in listed and "width '16'" in listed
        assert "masks/s1.png" in listed and "unreadable mask" in listed


# ----------------------------------------------------------------------------- importers


@pytest.fixture(scope="module")
def import_cfg(workdir: Path) -> DictConfig:
    from masklab.config import compose

    return compose("data_import", ["name=fuzzed", f"images={workdir}", "split_mode=none", "write_conf=false"])


def note(outcome: str) -> None:
    """Count an outcome in hypothesis' statistics (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(outcome)


def run_import(cfg: DictConfig, out: Path, old: dict[str, str], **settings: Any) -> tuple[Any, str | None]:
    """``workflows.import_dataset`` with ``settings``: (result, None) or (None, the UserError's message). On
    failure, ``out`` must be as before (absent, or the old dataset byte for byte) and nothing staged may stay."""
    from masklab import workflows

    cfg = cfg.copy()
    for key, value in {"out": str(out), "overwrite": bool(old), **settings}.items():
        cfg[key] = value
    try:
        done = workflows.import_dataset(cfg)
    except UserError as exc:
        problems = getattr(exc, "problems", None)
        note(f"{cfg.format}: refused ({problems[0].kind if problems else type(exc).__name__})")
        message = str(exc)
        assert message.strip()
        assert tree(out) == old, "a failed import changed the dataset folder"
        assert staging_leftovers(out.parent, out.name) == []
        return None, message
    assert staging_leftovers(out.parent, out.name) == []
    note(f"{cfg.format}: imported")
    errors = [p for p in done.problems if p.severity == "error"]
    assert not errors, format_problems(errors)
    return done, None


def previous_dataset(out: Path, existing: bool) -> dict[str, str]:
    """With ``existing``, put a small dataset at ``out`` for an overwrite import to replace (or keep)."""
    if existing:
        with DatasetWriter(out, CLASSES) as writer:
            writer.add("old", noise(7), labels(7), "train")
            writer.commit()
    return tree(out)


FOLDER_FILES = ["images/a.png", "images/b.jpg", "images/c.png", "masks/a.png", "masks/b.png", "masks/c.png",
                "lists/train.txt", "lists/val.txt"]


@pytest.fixture(scope="module")
def folder_source(workdir: Path) -> Path:
    """images/ + masks/ (class ids 0..2) of three samples, one image a JPEG, and split lists of their stems."""
    src = workdir / "folder_src"
    for sub in ("images", "masks", "lists"):
        (src / sub).mkdir(parents=True)
    for k, stem in enumerate("abc"):
        Image.fromarray(noise(k)).save(src / "images" / f"{stem}{'.jpg' if stem == 'b' else '.png'}")
        Image.fromarray(labels(k)).save(src / "masks" / f"{stem}.png")
    (src / "lists" / "train.txt").write_text("# training stems\na\nb.jpg\n")
    (src / "lists" / "val.txt").write_text("c\n")
    return src


@FUZZ
@given(damage=damages(FOLDER_FILES), existing=st.booleans(), mask_mode=st.sampled_from(["index", "auto"]),
       split_mode=st.sampled_from(["none", "lists"]))
@example(damage=("lists/train.txt", None, ((0, 128),)), existing=False, mask_mode="index",
         split_mode="lists")  # a split list that is not UTF-8: was a UnicodeDecodeError
def test_folder_import_of_damaged_files(workdir: Path, folder_source: Path, import_cfg: DictConfig, damage: Damage,
                                        existing: bool, mask_mode: str, split_mode: str) -> None:
    file, cut, flips = damage
    with scratch(workdir) as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(folder_source, src)
        assume(damage_file(src / file, cut, flips))
        out = Path(tmp) / "data" / "fuzzed"
        old = previous_dataset(out, existing)
        lists = {"train": str(src / "lists/train.txt"), "val": str(src / "lists/val.txt")}
        done, message = run_import(import_cfg, out, old, format="folder", images=str(src / "images"),
                                   masks=str(src / "masks"), mask_mode=mask_mode, split_mode=split_mode,
                                   split_lists=lists if split_mode == "lists" else None)
        if message is not None and not file.startswith("lists/"):  # a changed list may name the stems it moved
            assert str(src / file) in message, message
        elif message is None:
            assert file == "images/b.jpg" or file.startswith("lists/"), "a damaged PNG was imported"
            assert [s.id for s in done.dataset.samples] == ["a", "b", "c"]


INSTANCE_FILES = ["images/a.png", "images/b.png", "masks/a.png", "masks/b.png", "classes.yaml"]


@pytest.fixture(scope="module")
def instance_png_source(workdir: Path) -> Path:
    """images/ + 16-bit instance-id PNGs of two samples, and an instance-class table."""
    src = workdir / "instance_src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for k, stem in enumerate("ab"):
        Image.fromarray(noise(k)).save(src / "images" / f"{stem}.png")
        Image.fromarray(labels(k).astype(np.uint16) * 300).save(src / "masks" / f"{stem}.png")
    (src / "classes.yaml").write_text("a: {300: 1, 600: 2}\nb: {300: 2, 600: 2}\n")
    return src


@FUZZ
@given(damage=damages(INSTANCE_FILES), existing=st.booleans())
@example(damage=("masks/b.png", 9793, ()), existing=False)  # cut inside the IEND chunk: was imported
def test_instance_png_import_of_damaged_files(workdir: Path, instance_png_source: Path, import_cfg: DictConfig,
                                              damage: Damage, existing: bool) -> None:
    file, cut, flips = damage
    with scratch(workdir) as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(instance_png_source, src)
        assume(damage_file(src / file, cut, flips))
        out = Path(tmp) / "data" / "fuzzed"
        old = previous_dataset(out, existing)
        done, message = run_import(import_cfg, out, old, format="instance_png", images=str(src / "images"),
                                   masks=str(src / "masks"), instance_classes=str(src / "classes.yaml"))
        if message is not None:
            assert str(src / file) in message, message
        else:
            assert file == "classes.yaml", "a damaged PNG was imported"
            assert [s.id for s in done.dataset.samples] == ["a", "b"]


INSTANCE_FOLDER_FILES = ["n1/images/n1.png", "n1/masks/0.png", "n1/masks/1.png", "n2/images/n2.jpg", "n2/masks/0.png"]


@pytest.fixture(scope="module")
def instance_folders_source(workdir: Path) -> Path:
    """The DSB 2018 layout: <id>/images/<id>.png and <id>/masks/<one PNG per object>, one image a JPEG."""
    src = workdir / "instance_folders_src"
    for k, file in enumerate(INSTANCE_FOLDER_FILES):
        (src / file).parent.mkdir(parents=True, exist_ok=True)
        if "/images/" in file:
            Image.fromarray(noise(k)).save(src / file)
        else:
            Image.fromarray((labels(k) == 1).astype(np.uint8) * 255).save(src / file)
    return src


@FUZZ
@given(damage=damages(INSTANCE_FOLDER_FILES), existing=st.booleans())
def test_instance_folders_import_of_damaged_files(workdir: Path, instance_folders_source: Path,
                                                  import_cfg: DictConfig, damage: Damage, existing: bool) -> None:
    file, cut, flips = damage
    with scratch(workdir) as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(instance_folders_source, src)
        assume(damage_file(src / file, cut, flips))
        out = Path(tmp) / "data" / "fuzzed"
        done, message = run_import(import_cfg, out, previous_dataset(out, existing), format="instance_folders",
                                   images=str(src))
        if message is not None:
            assert str(src / file) in message, message
        else:
            assert file.endswith(".jpg"), "a damaged PNG was imported"
            assert [s.id for s in done.dataset.samples] == ["n1", "n2"]


small_ints = st.integers(-2, 700) | st.integers(-(1 << 70), 1 << 70)
class_tables = st.dictionaries(
    st.sampled_from(["a", "b", "c"]) | st.text(max_size=3) | small_ints,
    st.dictionaries(st.sampled_from([300, 600, "300", 0]) | small_ints | st.none() | st.booleans() | st.floats()
                    | st.text(max_size=3), small_ints | json_values, max_size=3) | json_values,
    max_size=3,
) | json_values


@FUZZ
@given(table=class_tables, named=st.booleans())
@example(table={"a": {"300": 1, "600": "2"}, "b": {300: 2, 600: 2}}, named=True)  # fine: imports
@example(table={"a": {300: 1, 600: 300}, "b": {300: 2, 600: 2}}, named=False)  # 300: no 8-bit class id
@example(table={"a": {300: 1, 600: 1 << 40}, "b": {300: 2, 600: 2}}, named=False)  # 2^40 classes
def test_instance_png_import_of_random_class_tables(workdir: Path, instance_png_source: Path, import_cfg: DictConfig,
                                                    table: Any, named: bool) -> None:
    """The instance-class table file (``instance_classes=``) with random content, with and without ``classes``."""
    import yaml

    with scratch(workdir) as tmp:
        table_file = Path(tmp) / "classes.yaml"
        table_file.write_text(yaml.safe_dump(table))
        classes = [{"id": 0, "name": "bg"}, {"id": 1, "name": "x"}, {"id": 2, "name": "y"}] if named else None
        done, message = run_import(import_cfg, Path(tmp) / "data" / "fuzzed", {}, format="instance_png",
                                   images=str(instance_png_source / "images"),
                                   masks=str(instance_png_source / "masks"), instance_classes=str(table_file),
                                   classes=classes)
        if message is None:
            assert [s.id for s in done.dataset.samples] == ["a", "b"]
            assert max(done.dataset.class_table.ids) < done.dataset.class_table.ignore_index


# ----------------------------------------------------------------------------- COCO


def polygon_square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def coco_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def valid_coco() -> dict:
    """Two images (a.png, sub/b.png) with a polygon, a two-part polygon, an uncompressed and a compressed RLE."""
    crowd = np.zeros((H, W), np.uint8)
    crowd[6:10, 2:8] = 1
    runs = np.diff(np.concatenate([[0], np.flatnonzero(np.diff(crowd.flatten(order="F"))) + 1, [H * W]])).tolist()
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                   {"id": 4, "file_name": "sub/b.png", "width": W, "height": H}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 5, "segmentation": [polygon_square(1, 1, 5, 5)], "iscrowd": 0,
             "area": 16, "bbox": [1, 1, 4, 4]},
            {"id": 8, "image_id": 1, "category_id": 2,
             "segmentation": [polygon_square(3, 3, 7, 7), polygon_square(10, 2, 14, 6)]},
            {"id": 9, "image_id": 1, "category_id": 2, "segmentation": {"size": [H, W], "counts": runs},
             "iscrowd": 1},
            {"id": 30, "image_id": 4, "category_id": 5, "segmentation": coco_rle(crowd), "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog"}],
    }


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a JSON value (the root excluded)."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        out.append((*prefix, key))
        out += json_paths(child, (*prefix, key))
    return out


COCO_PATHS = json_paths(valid_coco())
# Images besides a.png and sub/b.png: legal, odd names a file_name edit can point at.
# The last one: each folder a legal name, the sample's flattened file name (d..d__e..e.png) too long for one.
ODD_IMAGE_FILES = ["é.png", "a b.png", "A.PNG", "sub/a.png", "deep/er/c.jpg", f"{'d' * 130}/{'e' * 130}.png"]
NASTY_FILE_NAMES = ["", ".", "..", "/", "a.png/", "../a.png", "sub/../a.png", "/no/such/a.png", "a\x00.png",
                    "sub", "a.PNG", ".png", " a.png", "a.png\n", "é.png", "x" * 300 + ".png"]
numbers = st.integers(-5, 40) | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(1 << 70), 1 << 70)
ODD_NAMES = ["\ud800", "background", "", " ", "a\nb", "é", "\x00", "null", "~", "- a", "{}", "'", '"', "a/b", "..",
             "x" * 300]
breaking_edits = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, len(COCO_PATHS) - 1)),
    st.tuples(st.just("set"), st.integers(0, len(COCO_PATHS) - 1), json_values),
    st.tuples(st.just("number"), st.integers(0, len(COCO_PATHS) - 1), numbers),
    st.tuples(st.just("polygon"), st.integers(0, 3), st.lists(st.lists(numbers, max_size=10), max_size=3)),
    st.tuples(st.just("rle"), st.integers(0, 3),
              st.fixed_dictionaries({"size": st.lists(numbers, max_size=3) | json_values,
                                     "counts": st.text(max_size=12) | st.lists(numbers, max_size=8)})),
    st.tuples(st.just("append"), st.sampled_from(["images", "annotations", "categories"]), json_values),
)
# Edits a valid file may well survive: odd but legal names, ids and extra keys.
odd_edits = st.one_of(
    st.tuples(st.just("file_name"), st.integers(0, 1),
              st.sampled_from(NASTY_FILE_NAMES + ODD_IMAGE_FILES) | st.text(max_size=8)),
    st.tuples(st.just("renumber"), st.sampled_from(["images", "annotations", "categories"]), st.integers(0, 3),
              st.integers(-(1 << 70), 1 << 70)),
    st.tuples(st.just("name"), st.integers(0, 1), st.sampled_from(["name", "supercategory"]),
              st.sampled_from(ODD_NAMES) | st.text(max_size=6)),
    st.tuples(st.just("extra"), st.sampled_from(["images", "annotations", "categories"]), st.integers(0, 3),
              st.text(max_size=4), json_values),
)
coco_edits = st.lists(odd_edits | breaking_edits, min_size=1, max_size=3)
# What refers to the ids of each section.
_REFERENCES = {"images": "image_id", "categories": "category_id", "annotations": None}


def edited_coco(edits: list[tuple]) -> dict:
    doc = valid_coco()
    for edit in edits:
        try:
            apply_coco_edit(doc, *edit)
        except (KeyError, IndexError, TypeError, AttributeError, ZeroDivisionError):
            pass  # an earlier edit removed or replaced what this one changes
    return doc


def apply_coco_edit(doc: dict, op: str, k: Any, *args: Any) -> None:
    """One edit of ``coco_edits`` in place; raises when what it changes is gone."""
    if op in ("delete", "set", "number"):
        *parents, last = COCO_PATHS[k]
        node: Any = doc
        for key in parents:
            if not (isinstance(node, dict) and key in node or isinstance(node, list) and key < len(node)):
                break
            node = node[key]
        else:
            if isinstance(node, dict) and last in node or isinstance(node, list) and last < len(node):
                if op == "delete":
                    del node[last]
                else:
                    node[last] = args[0]
    elif op in ("polygon", "rle"):
        ann = doc["annotations"][k]
        ann["segmentation"] = args[0]
    elif op == "file_name":
        doc["images"][k]["file_name"] = args[0]
    elif op == "append":
        doc[k].append(args[0])
    elif op == "renumber":  # every reference too: the file stays consistent
        entry = doc[k][args[0] % len(doc[k])]
        old, entry["id"] = entry.get("id"), args[1]
        for ann in doc["annotations"] if _REFERENCES[k] else []:
            if isinstance(ann, dict) and ann.get(_REFERENCES[k]) == old:
                ann[_REFERENCES[k]] = args[1]
    elif op == "name":
        doc["categories"][k][args[0]] = args[1]
    elif op == "extra":
        doc[k][args[0] % len(doc[k])][f"x_{args[1]}"] = args[2]


@pytest.fixture(scope="module")
def coco_images(workdir: Path) -> Path:
    images = workdir / "coco_images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(noise(1)).save(images / "a.png")
    Image.fromarray(noise(2)).save(images / "sub" / "b.png")
    for k, name in enumerate(ODD_IMAGE_FILES):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noise(10 + k)).save(images / name, format="JPEG" if name.endswith(".jpg") else "PNG")
    return images


def import_coco_doc(cfg: DictConfig, workdir: Path, images: Path, doc: Any = None, raw: bytes | None = None,
                    existing: bool = False) -> tuple[Any, str | None]:
    with scratch(workdir) as tmp:
        annotations = Path(tmp) / "instances.json"
        annotations.write_bytes(raw if raw is not None else json.dumps(doc).encode())
        out = Path(tmp) / "data" / "fuzzed"
        old = previous_dataset(out, existing)
        return run_import(cfg, out, old, format="coco", images=str(images), annotations=str(annotations))


@FUZZ
@given(edits=coco_edits, existing=st.booleans())
@example(edits=[("file_name", 0, ".")], existing=False)  # no file name: was a ValueError from Path.with_suffix
@example(edits=[("file_name", 0, "x" * 300 + ".png")], existing=False)  # too long a name: was an OSError
@example(edits=[("file_name", 1, ODD_IMAGE_FILES[-1])], existing=True)  # flattened id too long: was an OSError
def test_coco_import_of_edited_files(workdir: Path, coco_images: Path, import_cfg: DictConfig, edits: list[tuple],
                                     existing: bool) -> None:
    doc = edited_coco(edits)
    done, message = import_coco_doc(import_cfg, workdir, coco_images, doc, existing=existing)
    if message is None:  # every images entry is a sample (a bad one would have refused the import)
        assert len(done.dataset.samples) == len(doc["images"])


coco_shaped = st.fixed_dictionaries({
    "images": st.lists(st.dictionaries(st.sampled_from(["id", "file_name", "width", "height"]),
                                       json_values | numbers | st.sampled_from(NASTY_FILE_NAMES)), max_size=3),
    "annotations": st.lists(st.dictionaries(
        st.sampled_from(["id", "image_id", "category_id", "segmentation", "iscrowd", "bbox"]),
        json_values | numbers), max_size=3),
    "categories": st.lists(st.dictionaries(st.sampled_from(["id", "name", "supercategory"]), json_values | numbers),
                           max_size=3),
})


@FUZZ
@given(doc=json_values | coco_shaped, raw=st.none() | st.binary(max_size=40))
def test_coco_import_of_random_json(workdir: Path, coco_images: Path, import_cfg: DictConfig, doc: Any,
                                    raw: bytes | None) -> None:
    done, message = import_coco_doc(import_cfg, workdir, coco_images, doc, raw)
    if message is None:
        assert done.dataset.samples and isinstance(doc, dict) and raw is None


def test_the_fuzzed_sources_import_cleanly(workdir: Path, folder_source: Path, instance_png_source: Path,
                                           instance_folders_source: Path, coco_images: Path,
                                           import_cfg: DictConfig) -> None:
    """The undamaged inputs import: every failure above is the damage's doing."""
    with scratch(workdir) as tmp:
        done, message = run_import(import_cfg, Path(tmp) / "f", {}, format="folder",
                                   images=str(folder_source / "images"), masks=str(folder_source / "masks"))
        assert message is None and len(done.dataset.samples) == 3
        done, message = run_import(import_cfg, Path(tmp) / "i", {}, format="instance_png",
                                   images=str(instance_png_source / "images"),
                                   masks=str(instance_png_source / "masks"),
                                   instance_classes=str(instance_png_source / "classes.yaml"))
        assert message is None and len(done.dataset.samples) == 2
        done, message = run_import(import_cfg, Path(tmp) / "n", {}, format="instance_folders",
                                   images=str(instance_folders_source))
        assert message is None and len(done.dataset.samples) == 2
    done, message = import_coco_doc(import_cfg, workdir, coco_images, valid_coco())
    assert message is None and [s.id for s in done.dataset.samples] == ["a", "sub/b"]
