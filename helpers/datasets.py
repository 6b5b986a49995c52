"""The article's three scenarios as importable code, so that ``spawn`` and ``forkserver`` workers
(which start a fresh Python and import what they unpickle) can load them."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "SleepDataset", "stack_collate"]


class SleepDataset(Dataset):
    """Scenario 1: every item takes ``delay`` seconds to "load" (as a file read would), and is a
    tensor filled with its own index, so a batch shows which items it holds."""

    def __init__(self, size: int = 10, delay: float = 0.1, shape: tuple[int, ...] = (3, 32, 32)) -> None:
        self.size = size
        self.delay = delay
        self.shape = shape

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        time.sleep(self.delay)
        return torch.full(self.shape, float(index))

    def __repr__(self) -> str:
        return f"SleepDataset(size={self.size}, delay={self.delay}, shape={self.shape})"


class ArrayDataset(Dataset):
    """Scenario 2: a dataset that builds a large NumPy array in the main process when it is
    constructed (before any ``DataLoader`` exists) and serves its rows."""

    def __init__(self, size: int = 20, rows: int = 1000, cols: int = 1000, delay: float = 0.0) -> None:
        self.size = size
        self.delay = delay
        self.data = np.random.default_rng(0).random((rows, cols))

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        if self.delay:
            time.sleep(self.delay)
        return torch.from_numpy(self.data[index % len(self.data)].copy())

    def __repr__(self) -> str:
        rows, cols = self.data.shape
        return f"ArrayDataset(size={self.size}, rows={rows}, cols={cols}, {self.nbytes / 2**20:.0f} MiB)"


def stack_collate(items: list[torch.Tensor]) -> torch.Tensor:
    """Scenario 3: a custom ``collate_fn`` that stacks the items into one tensor."""
    return torch.stack(items)
