"""Datasets for the benchmarks, in a module so that spawned workers can import them."""

import torch
from torch.utils.data import Dataset


class SmallTensors(Dataset):
    """``size`` small tensors (8 floats each), already in memory: loading costs next to nothing,
    so what a loader adds to each item shows in full."""

    def __init__(self, size: int) -> None:
        self.data = torch.arange(size * 8, dtype=torch.float32).reshape(size, 8)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]
