"""Realistic datasets for notebook 09 (trace your own loader): images decoded from PNG files and
augmented on load, as a training pipeline does, as a map-style dataset and as a stream sharded
by worker. They live in a module so that ``spawn`` and ``forkserver`` workers can import them.

Files are named ``<number>_class<label>.png``; an item is ``(image, label, number)``: a float
tensor of shape ``(3, crop, crop)`` in [0, 1], its class, and which file it came from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

__all__ = ["DecodedImages", "ShardedImageStream", "image_files"]

Item = tuple[torch.Tensor, int, int]


def image_files(folder: str | Path) -> list[Path]:
    """The PNG files in ``folder``, in order of their number."""
    return sorted(Path(folder).glob("*_class*.png"))


def _load(path: Path, crop: int, rng: np.random.Generator) -> Item:
    """Decode ``path`` and augment it: a random ``crop`` x ``crop`` window, flipped half the time."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    height, width, _ = pixels.shape
    top, left = rng.integers(0, height - crop + 1), rng.integers(0, width - crop + 1)
    window = pixels[top : top + crop, left : left + crop]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    number, label = path.stem.split("_class")
    return torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1))), int(label), int(number)


def _worker_delay(delays: Mapping[int, float]) -> float:
    """The extra seconds per item for the worker running this (0 outside workers)."""
    info = get_worker_info()
    return delays.get(info.id, 0.0) if info is not None else 0.0


class DecodedImages(Dataset[Item]):
    """The images in ``folder``, decoded and augmented when loaded (map-style).

    ``slow_workers`` maps a worker id to extra seconds per item, as if that worker's disk (or
    CPU share) were slower. Augmentation is random but repeatable: it depends on ``seed`` and the
    index only.

    >>> DecodedImages("/nonexistent").files
    []
    """

    def __init__(
        self,
        folder: str | Path,
        crop: int = 48,
        seed: int = 0,
        slow_workers: Mapping[int, float] | None = None,
    ) -> None:
        self.files = image_files(folder)
        self.crop = crop
        self.seed = seed
        self.slow_workers = dict(slow_workers or {})

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Item:
        delay = _worker_delay(self.slow_workers)
        if delay:
            time.sleep(delay)
        return _load(self.files[index], self.crop, np.random.default_rng((self.seed, index)))

    def __repr__(self) -> str:
        slow = f", slow_workers={self.slow_workers}" if self.slow_workers else ""
        return f"DecodedImages({len(self.files)} files, crop={self.crop}{slow})"


class ShardedImageStream(IterableDataset[Item]):
    """The images in ``folder`` as a stream (iterable-style): each worker reads its own shard,
    every ``num_workers``-th file from its id on, so no file is read twice."""

    def __init__(self, folder: str | Path, crop: int = 48, seed: int = 0) -> None:
        self.files = image_files(folder)
        self.crop = crop
        self.seed = seed

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        shard = self.files if info is None else self.files[info.id :: info.num_workers]
        for path in shard:
            yield _load(path, self.crop, np.random.default_rng((self.seed, int(path.stem.split("_")[0]))))

    def __repr__(self) -> str:
        return f"ShardedImageStream({len(self.files)} files, crop={self.crop})"
