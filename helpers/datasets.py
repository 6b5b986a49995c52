"""The article's three scenarios as importable code, so that ``spawn`` and ``forkserver`` workers
(which start a fresh Python and import what they unpickle) can load them."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from .system import MIB

__all__ = [
    "ArrayDataset",
    "CudaDataset",
    "FaultyDataset",
    "ObjectListDataset",
    "SleepDataset",
    "stack_collate",
]


class SleepDataset(Dataset):
    """Scenario 1: every item takes ``delay`` seconds to "load" (as a file read would), and is a
    tensor filled with its own index, so a batch shows which items it holds. Items listed in
    ``slow_items`` take ``slow_factor`` times longer.

    >>> SleepDataset(size=4, delay=0.0, shape=(2,))[3]
    tensor([3., 3.])
    """

    def __init__(
        self,
        size: int = 10,
        delay: float = 0.1,
        shape: tuple[int, ...] = (3, 32, 32),
        slow_items: tuple[int, ...] = (),
        slow_factor: float = 5.0,
    ) -> None:
        self.size = size
        self.delay = delay
        self.shape = shape
        self.slow_items = frozenset(slow_items)
        self.slow_factor = slow_factor

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        time.sleep(self.delay * (self.slow_factor if index in self.slow_items else 1.0))
        return torch.full(self.shape, float(index))

    def __repr__(self) -> str:
        slow = f", slow_items={tuple(sorted(self.slow_items))}" if self.slow_items else ""
        return f"SleepDataset(size={self.size}, delay={self.delay}, shape={self.shape}{slow})"


class ArrayDataset(Dataset):
    """Scenario 2: a dataset that builds a large NumPy array in the main process when it is
    constructed (before any ``DataLoader`` exists). Item ``i`` reads the ``i``-th block of rows and
    returns their mean, so one pass over the dataset reads every byte of the array, while the
    tensors sent back to the main process stay small.

    >>> ArrayDataset.of_mib(8)
    ArrayDataset(size=16, rows=256, cols=4096, 8 MiB)
    >>> ArrayDataset.of_mib(8)[0].shape  # the mean of item 0's 16 rows
    torch.Size([4096])
    """

    def __init__(self, size: int = 16, rows: int = 1000, cols: int = 1000, delay: float = 0.0) -> None:
        if not 1 <= size <= rows:
            raise ValueError(f"size must be between 1 and rows={rows}, got {size}")
        self.size = size
        self.delay = delay
        self.data = np.random.default_rng(0).random((rows, cols))

    @classmethod
    def of_mib(cls, mib: float, size: int = 16, cols: int = 4096, delay: float = 0.0) -> ArrayDataset:
        """A dataset whose array takes about ``mib`` MiB (float64, ``cols`` columns)."""
        rows = max(size, round(mib * MIB / (8 * cols)))
        return cls(size=size, rows=rows, cols=cols, delay=delay)

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
        rows = len(self.data)
        block = self.data[index * rows // self.size : (index + 1) * rows // self.size]
        return torch.from_numpy(block.mean(axis=0))

    def __repr__(self) -> str:
        rows, cols = self.data.shape
        return f"ArrayDataset(size={self.size}, rows={rows}, cols={cols}, {self.nbytes / MIB:.0f} MiB)"


class ObjectListDataset(Dataset):
    """The same kind of data as :class:`ArrayDataset`, held as a Python list of float objects.
    Reading an object updates its reference count, which writes to the page it lives on: a
    forked worker that reads the list gets private copies of those pages ("copy-on-read").

    >>> ObjectListDataset.of_mib(4)
    ObjectListDataset(size=16, values=131072, 4 MiB)
    """

    def __init__(self, size: int = 16, values: int = 1_000_000) -> None:
        if not 1 <= size <= values:
            raise ValueError(f"size must be between 1 and values={values}, got {size}")
        self.size = size
        rng = np.random.default_rng(0)
        self.values = [float(v) for v in rng.random(values)]

    @classmethod
    def of_mib(cls, mib: float, size: int = 16) -> ObjectListDataset:
        """A list whose float objects and pointers take about ``mib`` MiB (32 bytes a value)."""
        return cls(size=size, values=max(size, round(mib * MIB / 32)))

    @property
    def nbytes(self) -> int:
        """Bytes of the float objects and the list's pointers."""
        return len(self.values) * (sys.getsizeof(0.0) + 8)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        n = len(self.values)
        block = self.values[index * n // self.size : (index + 1) * n // self.size]
        return torch.tensor(sum(block) / len(block))

    def __repr__(self) -> str:
        return f"ObjectListDataset(size={self.size}, values={len(self.values)}, {self.nbytes / MIB:.0f} MiB)"


class FaultyDataset(SleepDataset):
    """A :class:`SleepDataset` whose items in ``fail_on`` raise ``ValueError`` and whose items in
    ``kill_on`` make the worker process loading them die of SIGKILL (as the out-of-memory killer
    would). ``kill_on`` never kills the main process: there it raises instead.

    >>> FaultyDataset(size=4, delay=0.0, fail_on=(1,))[1]
    Traceback (most recent call last):
    ...
    ValueError: item 1 is corrupt
    """

    def __init__(
        self,
        size: int = 8,
        delay: float = 0.02,
        fail_on: tuple[int, ...] = (),
        kill_on: tuple[int, ...] = (),
        shape: tuple[int, ...] = (3, 32, 32),
    ) -> None:
        super().__init__(size=size, delay=delay, shape=shape)
        self.fail_on = frozenset(fail_on)
        self.kill_on = frozenset(kill_on)

    def __getitem__(self, index: int) -> torch.Tensor:
        item = super().__getitem__(index)
        if index in self.kill_on:
            if torch.utils.data.get_worker_info() is None:
                raise RuntimeError(
                    f"item {index} would kill its worker, but it is loading in the main process"
                )
            os.kill(os.getpid(), signal.SIGKILL)
        if index in self.fail_on:
            raise ValueError(f"item {index} is corrupt")
        return item

    def __repr__(self) -> str:
        return (
            f"FaultyDataset(size={self.size}, fail_on={sorted(self.fail_on)}, kill_on={sorted(self.kill_on)})"
        )


class CudaDataset(Dataset):
    """Items computed on the GPU: a worker that touches CUDA (for the CUDA-and-fork experiment)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return (torch.ones(1, device="cuda") * index).cpu()


def stack_collate(items: list[torch.Tensor]) -> torch.Tensor:
    """Scenario 3: a custom ``collate_fn`` that stacks the items into one tensor.

    >>> stack_collate([torch.tensor(1.0), torch.tensor(2.0)])
    tensor([1., 2.])
    """
    return torch.stack(items)
