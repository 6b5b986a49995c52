"""The article's three scenarios in our own code, as notebooks 01-03 run them with a bare
``DataLoader`` before they measure them, and the collate functions those notebooks use.

Everything here is what worker processes must import: a ``spawn`` or ``forkserver`` worker
starts a fresh Python and unpickles the dataset and ``collate_fn`` it is given, so they have to
live in a module, not in a notebook cell. Each line is written in one piece and flushed at once,
so that a worker's line shows up when it happens, whole.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets import SleepDataset

__all__ = ["RowsDataset", "SlowCollate", "TalkingDataset", "pid_collate"]


def _say(line: str) -> None:
    """Print ``line`` in one write, flushed: lines from several processes then never run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class TalkingDataset(SleepDataset):
    """Scenario 1: a :class:`~helpers.datasets.SleepDataset` (every item sleeps ``delay`` seconds
    and is a tensor filled with its own index) that prints which process loads each item."""

    def __getitem__(self, index: int) -> torch.Tensor:
        item = super().__getitem__(index)
        _say(f"process {os.getpid()} loaded item {index}")
        return item

    def __repr__(self) -> str:
        return f"TalkingDataset(size={self.size}, delay={self.delay})"


class RowsDataset(Dataset):
    """Scenario 2: a dataset that builds a ``rows`` x ``cols`` array of float64 when it is
    created, in the process that creates it (8 MB by default), and whose item ``i`` is row
    ``i % 10`` of it, after ``delay`` seconds. With ``verbose`` it prints where the array was built
    and which process reads each item."""

    def __init__(
        self, size: int = 20, delay: float = 0.1, rows: int = 1000, cols: int = 1000, verbose: bool = True
    ) -> None:
        if rows < 10:
            raise ValueError(f"rows must be at least 10 (items read rows 0-9), got {rows}")
        self.size = size
        self.delay = delay
        self.verbose = verbose
        self.data = np.random.default_rng(0).random((rows, cols))
        if verbose:
            _say(f"process {os.getpid()} built the dataset's array: {self.nbytes / 1e6:.0f} MB")

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        time.sleep(self.delay)
        if self.verbose:
            _say(f"process {os.getpid()} read row {index % 10} for item {index}")
        return torch.from_numpy(self.data[index % 10])

    def __repr__(self) -> str:
        rows, cols = self.data.shape
        return f"RowsDataset(size={self.size}, {rows}x{cols} float64, {self.nbytes / 1e6:.0f} MB)"


def pid_collate(items: list[torch.Tensor]) -> torch.Tensor:
    """Scenario 3: a ``collate_fn`` that says which process runs it, then stacks the items."""
    _say(f"collate_fn runs in process {os.getpid()}")
    return torch.stack(items)


class SlowCollate:
    """A ``collate_fn`` that stacks the items and takes ``ms`` milliseconds more to do it (as
    padding, augmenting or decoding a batch would), so its cost can be seen and measured."""

    def __init__(self, ms: float = 20.0) -> None:
        if ms < 0:
            raise ValueError(f"ms must be >= 0, got {ms}")
        self.ms = ms

    def __call__(self, items: list[torch.Tensor]) -> torch.Tensor:
        if self.ms:
            time.sleep(self.ms / 1000)
        return torch.stack(items)

    def __repr__(self) -> str:
        return f"SlowCollate(ms={self.ms:g})"
