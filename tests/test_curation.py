"""Curation at scale: fingerprints, embeddings (cached by embedder and data version), exact and near duplicates,
leaks across splits (and `data check`'s warning), uniqueness, representativeness, clusters and the 2-D map.

Real faiss and UMAP on small arrays; real Kvasir-SEG images (../shared, skipped when absent) with planted
copies: an exact copy, a resized one, a JPEG re-encoding and a crop of 1% per side.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masklab.curation import similarity
from masklab.curation.embeddings import embed_dataset, read_embeddings
from masklab.data.classes import ClassInfo, ClassTable
from masklab.data.duplicates import DuplicateRules, duplicate_pairs, nearest_neighbours
from masklab.data.fingerprints import fingerprint, hamming
from masklab.data.manifest import load_dataset
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError
from masklab.inference.embeddings import ThumbnailEmbedder

from conftest import SHARED_DATASETS, exits_as_user_error

KVASIR = SHARED_DATASETS / "kvasir_seg" / "images"
ORIGINALS = 24
CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "polyp", (230, 25, 75))))
# copy id -> (original index, kind, split of the copy); originals 0..15 train, 16..19 val, 20..23 test
PLANTED = {"copy-exact": (0, "exact", "train"), "copy-resized": (1, "resized", "test"),
           "copy-jpeg": (2, "jpeg", "val"), "copy-crop": (3, "crop", "train")}


def _split(k: int) -> str:
    return "train" if k < 16 else "val" if k < 20 else "test"


def _copy(image: Image.Image, kind: str) -> np.ndarray:
    if kind == "resized":
        return np.asarray(image.resize((image.width // 2, image.height // 2), Image.BILINEAR))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=70)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    if kind == "crop":
        dx, dy = image.width // 100, image.height // 100
        return np.asarray(image.crop((dx, dy, image.width - dx, image.height - dy)))
    return np.asarray(image)  # exact: the same pixels, written as PNG (the bytes differ from the JPEG original)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """24 Kvasir-SEG images (train/val/test) plus the four PLANTED copies."""
    if not KVASIR.is_dir():
        pytest.skip(f"{KVASIR} not found (../shared datasets)")
    files = sorted(KVASIR.glob("*.jpg"))[:ORIGINALS]
    root = tmp_path_factory.mktemp("curation") / "kvasir_dups"
    with DatasetWriter(root, CLASSES) as writer:
        for k, path in enumerate(files):
            with Image.open(path) as im:
                size = im.size
            writer.add(f"k{k:02d}", path, np.zeros(size[::-1], np.uint8), _split(k))
        for copy_id, (k, kind, split) in PLANTED.items():
            pixels = _copy(Image.open(files[k]).convert("RGB"), kind)
            writer.add(copy_id, pixels, np.zeros(pixels.shape[:2], np.uint8), split)
        writer.commit()
    return root


def _pair_set(pairs) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for p in zip(pairs["id_a"], pairs["id_b"])}


def test_planted_copies_are_found_with_their_leaks(planted: Path, tmp_path: Path) -> None:
    from masklab.workflows import find_duplicates, make_embedder

    found = find_duplicates(load_dataset(planted), make_embedder(), cache_dir=tmp_path / "cache",
                            output_dir=tmp_path / "out")
    pairs = found.pairs.set_index(found.pairs.apply(lambda r: tuple(sorted((r.id_a, r.id_b))), axis=1))
    expected = {tuple(sorted((f"k{k:02d}", copy_id))) for copy_id, (k, _, _) in PLANTED.items()}
    assert expected <= set(pairs.index), found.pairs
    assert set(pairs.index) == expected, f"pairs among unrelated images: {found.pairs}"
    exact = pairs.loc[[tuple(sorted(("k00", "copy-exact")))]].iloc[0]
    assert exact["kind"] == "exact" and "pixels" in exact["found_by"] and exact["hash_bits"] == 0
    for copy_id in ("copy-resized", "copy-jpeg", "copy-crop"):
        row = pairs.loc[[tuple(sorted((f"k{PLANTED[copy_id][0]:02d}", copy_id)))]].iloc[0]
        assert row["kind"] == "near", row
    crop = pairs.loc[[tuple(sorted(("k03", "copy-crop")))]].iloc[0]
    assert "embedding" in crop["found_by"] and crop["distance"] <= found.rules.max_distance
    # leaks: the resized copy went to test and the JPEG to val, their originals are in train
    assert _pair_set(found.leaks) == {("copy-resized", "k01"), ("copy-jpeg", "k02")}
    assert list(found.pairs["leak"][:2]) == [True, True], "leaks are listed first"
    assert found.counts() == {"exact": 1, "near": 3, "leaks": 2, "groups": 4}
    assert found.path == tmp_path / "out" / "duplicates.parquet" and found.path.is_file()


def test_without_embeddings_hashes_find_resized_and_reencoded_copies_only(planted: Path) -> None:
    from masklab.workflows import find_duplicates

    found = find_duplicates(load_dataset(planted), None)
    assert _pair_set(found.pairs) == {("copy-exact", "k00"), ("copy-resized", "k01"), ("copy-jpeg", "k02")}
    assert found.pairs["distance"].isna().all() and found.rules.max_distance is None


def test_data_check_warns_about_each_leak(planted: Path, tmp_path: Path) -> None:
    from masklab.data.check import check_dataset

    leaks = [p for p in check_dataset(planted) if p.kind == "leak across splits"]
    assert sorted(p.file for p in leaks) == ["images/copy-jpeg.png", "images/copy-resized.png"], leaks
    assert all(p.severity == "warning" for p in leaks)
    resized = next(p for p in leaks if "resized" in p.file)
    assert "test sample 'copy-resized' is a near copy" in resized.found and "train sample 'k01'" in resized.found
    # the same images without the cross-split copies: no leak warning
    clean = tmp_path / "clean"
    shutil.copytree(planted, clean)
    manifest = clean / "manifest.jsonl"
    manifest.write_text("".join(ln + "\n" for ln in manifest.read_text().splitlines()
                                if '"copy-resized"' not in ln and '"copy-jpeg"' not in ln))
    for name in ("copy-resized", "copy-jpeg"):
        for sub in ("images", "masks"):
            (clean / sub / f"{name}.png").unlink()
    assert not [p for p in check_dataset(clean) if p.kind == "leak across splits"]


def test_embeddings_are_cached_by_embedder_and_reused_for_unchanged_images(planted: Path, tmp_path: Path) -> None:
    dataset = load_dataset(planted)
    cache = tmp_path / "cache"
    first = embed_dataset(dataset, ThumbnailEmbedder(), cache)
    assert (first.computed, first.reused) == (len(dataset.samples), 0) and first.vectors.shape == (28, 768)
    again = embed_dataset(dataset, ThumbnailEmbedder(), cache)
    assert (again.computed, again.reused) == (0, 28)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.ids == first.ids and again.path == first.path
    # a new dataset version (one more image): only that image is embedded
    grown = tmp_path / "grown"
    shutil.copytree(planted, grown)
    with Image.open(next(iter(sorted(KVASIR.glob("*.jpg"))[ORIGINALS:]))) as im:
        im.convert("RGB").resize((64, 48)).save(grown / "images" / "extra.png")
    from masklab.data.manifest import Sample, read_manifest, write_manifest
    from masklab.data.sample_files import file_sha256

    rows = read_manifest(grown)
    rows.append(Sample("extra", "images/extra.png", None, "pool", 64, 48, file_sha256(grown / "images/extra.png")))
    write_manifest(grown, rows)
    third = embed_dataset(load_dataset(grown), ThumbnailEmbedder(), cache)
    assert (third.computed, third.reused) == (1, 28) and third.path != first.path
    stored = read_embeddings(third.path)
    assert stored.ids == third.ids and stored.source == "thumbnail"
    np.testing.assert_allclose(stored.vectors, third.vectors)


def test_encoder_embedders_from_weights_file_and_model(planted: Path, tmp_path: Path) -> None:
    import torch
    import torchvision

    from masklab.inference.embeddings import package_embedder, weights_embedder
    from masklab.inference.package import Package
    from masklab.inference.rule import InputRule
    from masklab.models.factory import build_model

    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(KVASIR.glob("*.jpg"))[:3]]
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # a torchvision state_dict, as users save one
    from_file = weights_embedder(weights, "resnet18", size=64, device="cpu")
    vectors = from_file.embed(images)
    assert vectors.shape == (3, 512) and np.isfinite(vectors).all()
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # other weights: another cache key
    assert weights_embedder(weights, "resnet18", size=64, device="cpu").key != from_file.key
    with pytest.raises(UserError, match="no such file"):
        weights_embedder(tmp_path / "missing.pth")
    model = build_model(2, arch="Unet", encoder="resnet18")
    package = Package(model, CLASSES, InputRule("resize", 64, 64), {"task": "semantic"})
    embedder = package_embedder(package, device="cpu")
    assert embedder.size == 64 and embedder.embed(images).shape == (3, 512)


def test_nearest_neighbours_match_a_numpy_search_and_hnsw_recall() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims, found = nearest_neighbours(x, 5)
    reference = np.argsort(-(x @ x.T), axis=1)[:, :6]
    np.testing.assert_array_equal(found[:, 0], np.arange(400))
    assert (np.sort(found, axis=1) == np.sort(reference, axis=1)).all()
    np.testing.assert_allclose(sims, np.take_along_axis(x @ x.T, reference, axis=1), atol=1e-5)
    _, approx = nearest_neighbours(x, 5, "hnsw")
    recall = np.mean([len(set(a) & set(b)) / 6 for a, b in zip(approx, reference)])
    assert recall >= 0.95


def test_exact_pairs_and_hash_distances() -> None:
    rng = np.random.default_rng(1)
    base = [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(4)]
    prints = {f"s{k}": fingerprint(im) for k, im in enumerate(base)}
    prints["same-as-s0"] = fingerprint(base[0].copy())
    grey = Image.fromarray(np.asarray(base[1].convert("L")))
    assert fingerprint(grey) == fingerprint(grey.convert("RGB")), "a grey image and its RGB copy: the same pixels"
    ids = list(prints)
    pairs = duplicate_pairs(ids, ["train", "train", "test", "test", "test"], prints, DuplicateRules())
    assert _pair_set(pairs) == {("s0", "same-as-s0")}
    row = pairs.iloc[0]
    assert (row["kind"], row["leak"], row["split_a"], row["split_b"]) == ("exact", True, "train", "test")
    assert hamming(prints["s0"].phash, prints["s1"].phash) > 4


@pytest.mark.parametrize("bad", [{"max_hash_bits": 40}, {"max_distance": 3.0}, {"neighbours": 0},
                                 {"index": "ivf"}])
def test_duplicate_rules_reject_bad_values(bad: dict) -> None:
    with pytest.raises(UserError, match=next(iter(bad))):
        DuplicateRules(**bad)


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors: a blob of 40 around one direction, one of 12 around another, an outlier, and an exact
    copy of the first blob's member 0 (54 rows); and each row's blob (0, 1, 2 = outlier)."""
    rng = np.random.default_rng(seed)
    a, b, c = np.eye(16)[0], np.eye(16)[1], np.eye(16)[2]
    rows = [a + 0.06 * rng.normal(size=16) for _ in range(40)] + [b + 0.06 * rng.normal(size=16) for _ in range(12)]
    rows += [c, rows[0]]
    x = np.array(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array([0] * 40 + [1] * 12 + [2, 0])


def test_uniqueness_clusters_and_representativeness() -> None:
    x, blob = _blobs()
    unique = similarity.uniqueness(x, k=3)
    assert unique.argmax() == 52 and unique[52] == 1.0, "the outlier is the most unique"
    assert unique[0] < np.median(unique[:40]) and unique[53] < np.median(unique[:40]), "an exact copy is not unique"
    labels, centre = similarity.clusters(x, n_clusters=3, seed=0)
    for k in (0, 1):
        assert len(set(labels[blob == k])) == 1, "each blob is one cluster"
    assert labels[0] != labels[40]
    rep = similarity.representativeness(labels, centre)
    assert rep.max() == pytest.approx(1.0) and rep[:40].max() == pytest.approx(1.0), "the big blob's centre is 1"
    assert rep[52] < 0.35 and np.median(rep[:40]) > np.median(rep[40:52]), (rep[52], rep[:52])


def test_umap_map_is_deterministic_and_keeps_blobs_apart() -> None:
    import torch

    x, blob = _blobs()
    threads = torch.get_num_threads()
    xy = similarity.project_2d(x[:52], "umap", seed=3)
    assert torch.get_num_threads() == threads, "numba's OpenMP layer must not change torch's thread count"
    np.testing.assert_array_equal(xy, similarity.project_2d(x[:52], "umap", seed=3))
    a, b = xy[blob[:52] == 0], xy[blob[:52] == 1]
    gap = np.linalg.norm(a.mean(0) - b.mean(0))
    assert gap > 3 * max(a.std(0).max(), b.std(0).max()), (gap, a.std(0), b.std(0))
    assert similarity.project_2d(x[:3], "umap").shape == (3, 2), "too few samples for UMAP: PCA"
    with pytest.raises(UserError, match="map=mds"):
        similarity.project_2d(x, "mds")


def test_describe_similarity_writes_tables_keyed_by_id(planted: Path, tmp_path: Path) -> None:
    import pandas as pd

    from masklab.workflows import describe_similarity, embed, make_embedder, write_similarity_explorer

    dataset = load_dataset(planted)
    embeddings = embed(dataset, make_embedder(), tmp_path / "cache", split="train")
    found = describe_similarity(dataset, embeddings, tmp_path / "out", map_method="pca")
    table = pd.read_parquet(tmp_path / "out" / "similarity.parquet")
    assert list(table.columns) == ["id", "split", "uniqueness", "representativeness", "cluster", "map_x", "map_y"]
    assert sorted(table["id"]) == sorted(s.id for s in dataset.split("train")) and set(table["split"]) == {"train"}
    unique = table.set_index("id")["uniqueness"]
    assert unique["copy-exact"] == unique["k00"] < unique.median(), "an exact copy of k00 in the same split"
    assert read_embeddings(tmp_path / "out" / "embeddings.parquet").ids == list(table["id"])
    extra = tmp_path / "scores.parquet"
    pd.DataFrame({"id": ["k00", "k01"], "mIoU": [0.2, 0.9]}).to_parquet(extra)
    index = write_similarity_explorer(dataset, found, tmp_path / "explorer", [extra])
    page = index.read_text()
    assert "MasklabMap" in page and '"map_x"' in page and '"mIoU"' in page
    with pytest.raises(UserError, match="expected an id column"):
        pd.DataFrame({"name": ["k00"]}).to_parquet(tmp_path / "bad.parquet")
        write_similarity_explorer(dataset, found, tmp_path / "explorer2", [tmp_path / "bad.parquet"])


def test_curate_duplicates_cli_lists_leaks_first(planted: Path, project: Path, cli, capsys) -> None:
    out = cli("curate", "duplicates", f"data.root={planted}", "top=3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "1 exact and 3 near-duplicate pair(s) in 4 group(s); 2 pair(s) across splits (leaks)" in lines[0]
    assert lines[2].startswith("yes") and lines[3].startswith("yes") and not lines[4].startswith("yes"), out.stdout
    assert lines[-1].startswith("Table: ") and Path(lines[-1][7:]).is_file()

    from masklab.commands.curate import duplicates
    from masklab.config import compose

    cfg = compose("curate_duplicates", [f"data.root={planted}", "max_distance=5"])
    err = exits_as_user_error("curate duplicates", lambda: duplicates(cfg), capsys)
    assert "max_distance=5" in err and "0..2" in err
