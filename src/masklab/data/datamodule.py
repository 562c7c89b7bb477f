"""Torch datasets and the Lightning DataModule over a masklab dataset folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from masklab.data.images import read_image, read_mask
from masklab.data.manifest import Dataset, Sample


class EpochShuffle(DistributedSampler):
    """The training order: a permutation that depends only on (seed, epoch), so a training resumed from a checkpoint
    sees the epochs an uninterrupted one would (a DataLoader's own shuffle draws from a generator whose state a
    checkpoint does not keep). Lightning calls ``set_epoch`` before each epoch. Yields ``(epoch, index)`` so the
    split seeds each item's augmentation from the same three numbers (:func:`item_index`).

    Sharded over ``num_replicas`` ranks by striding: rank r takes ``perm[r::num_replicas]``, so with per-rank batch b
    step k of all ranks together covers ``perm[k W b:(k + 1) W b]``, the very samples of one process's step k with
    batch W b. The permutation is cut to a multiple of W first (every rank gets as many samples, or DDP would hang
    waiting for a rank with one batch fewer): an epoch leaves out ``len % W`` samples, as ``DistributedSampler``'s
    ``drop_last`` does. A DistributedSampler, so Lightning keeps it rather than wrapping it in a second shuffle."""

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.size = size

    def __iter__(self):
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(item_seed(self.seed, self.epoch)))
        share = order[self.rank:self.num_samples * self.num_replicas:self.num_replicas]
        return iter([(self.epoch, i) for i in share.tolist()])


def item_seed(*numbers: int) -> int:
    """A 32-bit seed from a few non-negative integers (numpy's SeedSequence: well mixed, platform-independent)."""
    return int(np.random.SeedSequence([int(n) & 0xFFFFFFFF for n in numbers]).generate_state(1)[0])


def item_index(key: int | tuple[int, int], transform: A.Compose | None, seed: int) -> int:
    """The sample index of a DataLoader key: an index, or ``(epoch, index)`` from :class:`EpochShuffle`, for which
    the augmentation is first reseeded from (seed, epoch, index): the same item gets the same augmentation in a
    resumed training, in any worker process."""
    if isinstance(key, tuple | list):
        epoch, index = int(key[0]), int(key[1])
        if transform is not None:
            transform.set_random_seed(item_seed(seed, epoch, index))
        return index
    return int(key)


class SegmentationSplit(torch.utils.data.Dataset):
    """Samples of one split. Item: ``image`` (3, H, W) uint8, ``mask`` (H, W) int64, ``id`` str. ``seed``: of the
    per-item augmentation when keys come from :class:`EpochShuffle`."""

    def __init__(self, dataset: Dataset, samples: Sequence[Sample], transform: A.Compose | None, seed: int = 0):
        self.root = dataset.root
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed pair: image (H, W, 3) uint8 and mask (H, W) uint8."""
        s = self.samples[index]
        return read_image(self.root / s.image), read_mask(self.root / s.mask)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = item_index(key, self.transform, self.seed)
        image, mask = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "id": self.samples[index].id,
        }


class SegmentationDataModule(pl.LightningDataModule):
    """Train/val/test loaders of a masklab dataset; the train loader shuffles with a seeded generator.

    ``split_class(dataset, samples, transform, seed=)`` makes a split's torch Dataset and ``collate_fn``
    batches its items: a task that holds other targets than a semantic mask passes its own."""

    def __init__(
        self,
        dataset: Dataset,
        train_transform: A.Compose | None,
        eval_transform: A.Compose | None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        split_class: Callable[..., torch.utils.data.Dataset] = SegmentationSplit,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ):
        super().__init__()
        self.split_class = split_class
        self.collate_fn = collate_fn
        self.dataset = dataset
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def split(self, name: str, train: bool = False) -> torch.utils.data.Dataset:
        transform = self.train_transform if train else self.eval_transform
        return self.split_class(self.dataset, self.dataset.labeled(name), transform, seed=self.seed)

    def replicas(self) -> tuple[int, int]:
        """(world size, global rank) of the Trainer this data module serves; (1, 0) outside one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def loader(self, name: str, train: bool = False) -> DataLoader:
        """The loader of split ``name``: ``batch_size`` items per step and process (Lightning's convention)."""
        from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

        gen = torch.Generator().manual_seed(self.seed)
        split = self.split(name, train)
        world, rank = self.replicas()
        sampler: torch.utils.data.Sampler | None = None
        if train:
            sampler = EpochShuffle(len(split), self.seed, num_replicas=world, rank=rank)
        elif world > 1:
            # Lightning's default DistributedSampler pads the shards to equal length with repeated samples, which
            # validation would count twice; this one strides without padding (ranks may differ by one batch, which
            # evaluation under no_grad allows), so the metrics reduced over ranks are those of the whole split.
            sampler = UnrepeatedDistributedSampler(split, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            split,
            batch_size=self.batch_size,
            sampler=sampler,
            # (as one process with the global batch: keep a last partial batch only when there is no full one)
            drop_last=train and len(sampler) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=gen,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
