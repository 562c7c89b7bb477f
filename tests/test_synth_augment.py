"""Synthetic generator determinism and albumentations alignment of image, mask and instances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from masklab.augment import build_pipeline
from masklab.data.images import read_image, read_instances, read_mask
from masklab.data.manifest import load_dataset
from masklab.data.synth import synth_sample, synthesize
from masklab.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "src" / "masklab" / "conf"


def test_sample_depends_only_on_seed_and_index():
    a = synth_sample(3, seed=7, num_shapes=3, size=48)
    b = synth_sample(3, seed=7, num_shapes=3, size=48)
    c = synth_sample(3, seed=8, num_shapes=3, size=48)
    d = synth_sample(4, seed=7, num_shapes=3, size=48)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    for other in (c, d):  # another seed or another index: another image and other shapes
        assert not np.array_equal(a[0], other[0]) and not np.array_equal(a[1], other[1])


def test_synthesize_writes_format_with_instances(tmp_path):
    ds = synthesize(tmp_path / "s", count=10, size=40, num_shapes=4, seed=1)
    again = synthesize(tmp_path / "t", count=12, size=40, num_shapes=4, seed=1)
    assert [c.name for c in ds.class_table.classes] == ["background", "circle", "rectangle", "triangle", "ellipse"]
    assert {s.split for s in ds.samples} == {"train", "val"}
    s, s2 = ds.samples[0], again.samples[0]
    assert s.image_sha256 == s2.image_sha256  # sample 0 is the same whatever the count
    image, mask = read_image(ds.root / s.image), read_mask(ds.root / s.mask)
    inst = read_instances(ds.root / s.instances)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8 and mask.shape == (40, 40)
    # Every instance pixel carries its instance's class in the semantic mask; background has no instance.
    for inst_id, cls in s.instance_classes.items():
        assert (mask[inst == int(inst_id)] == cls).all()
    assert ((inst == 0) == (mask == 0)).all()
    assert set(np.unique(mask)) <= set(range(5))
    assert load_dataset(ds.root).samples[0] == s


def test_refuses_to_overwrite(tmp_path):
    synthesize(tmp_path / "s", count=4, size=32)
    with pytest.raises(UserError, match=r"/s: dataset already exists; pass overwrite=true to replace it$"):
        synthesize(tmp_path / "s", count=4, size=32)


def test_every_augment_preset_keeps_image_and_mask_aligned():
    """Encode the mask into the image; after any geometric transform the two must still agree."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, size=(4, 4)).repeat(16, 0).repeat(16, 1).astype(np.uint8)  # 64x64, 16 px blocks
    image = np.stack([mask * 60, mask * 60, mask * 60], axis=-1).astype(np.uint8)
    for preset in ("none", "light", "strong"):
        cfg = OmegaConf.load(CONF / "augment" / f"{preset}.yaml")
        cfg = OmegaConf.merge({"data": {"image_size": 64}}, {"augment": cfg})
        # Photometric transforms would change the encoding; keep the geometric ones of each preset.
        nodes = [n for n in cfg.augment.train
                 if n._target_.split(".")[-1] not in ("ColorJitter", "GaussianBlur", "GaussNoise")]
        pipeline = build_pipeline(nodes, seed=1)
        for _ in range(10):
            out = pipeline(image=image, mask=mask)
            decoded = np.rint(out["image"][..., 0] / 60.0).astype(np.uint8)
            # Interpolation blurs block edges of the image (not of the nearest-neighbour mask); a shifted
            # or differently rotated mask would agree on far fewer pixels (~chance, 0.25-0.5).
            agree = (decoded == out["mask"]).mean()
            assert out["image"].shape[:2] == out["mask"].shape == (64, 64)
            assert agree > 0.9, (preset, agree)


def test_pipeline_is_deterministic_per_seed():
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    strong = OmegaConf.load(CONF / "augment" / "strong.yaml")
    cfg = OmegaConf.merge({"data": {"image_size": 32}}, {"augment": strong})

    def draws(seed: int) -> list[np.ndarray]:
        """Three calls of one pipeline built with ``seed``."""
        pipeline = build_pipeline(cfg.augment.train, seed=seed)
        return [pipeline(image=image, mask=mask)["image"] for _ in range(3)]

    runs = [draws(5), draws(5), draws(6)]
    for a, b in zip(runs[0], runs[1]):  # the same seed: the same three draws
        np.testing.assert_array_equal(a, b)
    # ... and not because nothing is drawn: another seed gives other images, and so does each next call.
    assert all(not np.array_equal(a, c) for a, c in zip(runs[0], runs[2]))
    assert all(not np.array_equal(runs[0][k], runs[0][k + 1]) for k in range(2))


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
def test_invented_mask_pixels_are_ignored_not_class_0(preset):
    """Rotated-in corners carry no label: every preset's transforms fill them with ignore_index."""
    preset_cfg = OmegaConf.load(CONF / "augment" / f"{preset}.yaml")
    cfg = OmegaConf.merge({"data": {"image_size": 64}}, {"augment": preset_cfg})
    mask = np.ones((64, 64), np.uint8)
    image = np.full((64, 64, 3), 128, np.uint8)
    for node in cfg.augment.train:
        transform = build_pipeline([node], seed=0, ignore_index=255).transforms[0]
        if hasattr(transform, "fill_mask"):
            assert transform.fill_mask == 255, (preset, node._target_)
    # A 45-degree turn of the strong preset's Affine, forced to happen: the corners are ignored.
    affine = [n for n in cfg.augment.train if n._target_.endswith(".Affine")]
    if preset != "strong":
        return
    node = OmegaConf.merge(affine[0], {"rotate": [45, 45], "p": 1.0})
    out = build_pipeline([node], seed=0, ignore_index=255)(image=image, mask=mask)["mask"]
    assert out[0, 0] == out[0, -1] == out[-1, 0] == out[-1, -1] == 255
    assert out[32, 32] == 1 and set(np.unique(out)) == {1, 255}
    # A fill the node sets itself is the user's choice and stays.
    kept = build_pipeline([OmegaConf.merge(node, {"fill_mask": 7})], seed=0, ignore_index=255)(image=image, mask=mask)
    assert kept["mask"][0, 0] == 7
