"""Datasets whose items cost a known amount of one resource, for sweeps over ``num_workers``.

:class:`~helpers.datasets.SleepDataset` items *wait* (as a read from disk or the network does):
a waiting worker needs no CPU, so more workers than CPUs still help. :class:`CpuDataset` items
*compute* (as decoding or augmenting an image in Python does): each one burns a fixed amount of
CPU time, so workers beyond the CPUs this process may use only queue for them.

They live in a module, not a notebook, so that ``spawn`` and ``forkserver`` workers can import them.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import Dataset

__all__ = ["CpuDataset", "MixedDataset", "burn_cpu"]


def burn_cpu(seconds: float) -> int:
    """Compute (pure-Python arithmetic, holding the GIL) until this thread has used ``seconds`` of
    CPU time; return the result so the work cannot be skipped.

    The budget is counted on the thread's own CPU clock (``time.thread_time``), not the wall
    clock: when more processes want CPU than there are CPUs, an item still costs the same CPU
    time but takes longer to finish, which is what happens to real CPU-bound loading.
    """
    clock = time.thread_time
    end = clock() + seconds
    x = 1
    while clock() < end:
        for _ in range(200):  # a little work between clock reads (each read is a system call)
            x = (x * 1103515245 + 12345) % 2147483648
    return x


class CpuDataset(Dataset):
    """Every item costs ``cpu_seconds`` of CPU time to "decode", and is a tensor filled with its
    own index (like :class:`~helpers.datasets.SleepDataset`, so a batch shows which items it holds).

    >>> CpuDataset(size=3, cpu_seconds=0.001)[2][0, 0, 0].item()
    2.0
    """

    def __init__(
        self, size: int = 48, cpu_seconds: float = 0.02, shape: tuple[int, ...] = (3, 32, 32)
    ) -> None:
        if cpu_seconds < 0:
            raise ValueError(f"cpu_seconds must be >= 0, got {cpu_seconds!r}")
        self.size = size
        self.cpu_seconds = cpu_seconds
        self.shape = shape

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        burn_cpu(self.cpu_seconds)
        return torch.full(self.shape, float(index))

    def __repr__(self) -> str:
        return f"CpuDataset(size={self.size}, cpu_seconds={self.cpu_seconds}, shape={self.shape})"


class MixedDataset(CpuDataset):
    """Every item first waits ``wait_seconds`` (a read), then computes for ``cpu_seconds`` of CPU
    time (a decode): the usual case, somewhere between the two pure kinds."""

    def __init__(
        self,
        size: int = 48,
        wait_seconds: float = 0.015,
        cpu_seconds: float = 0.005,
        shape: tuple[int, ...] = (3, 32, 32),
    ) -> None:
        super().__init__(size, cpu_seconds, shape)
        self.wait_seconds = wait_seconds

    def __getitem__(self, index: int) -> torch.Tensor:
        if 0 <= index < self.size:
            time.sleep(self.wait_seconds)
        return super().__getitem__(index)

    def __repr__(self) -> str:
        return (
            f"MixedDataset(size={self.size}, wait_seconds={self.wait_seconds}, "
            f"cpu_seconds={self.cpu_seconds}, shape={self.shape})"
        )
