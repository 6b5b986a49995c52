"""The tracer the series does *not* use: each worker sends its events to the main process through a
``multiprocessing.Queue``, as a first design said. Kept so a notebook can measure why not.

A ``Queue.put`` pickles the event and hands it to a feeder thread in the worker, which writes it
to a pipe later; the main process needs a thread of its own to read the pipe, or the workers
block when it fills. That costs every item a pickle, a lock and a pipe write, and it costs the
main process (the one the training loop runs in) a reader. And a worker killed before its
feeder thread wrote its last events takes them with it. :class:`~helpers.events.EventLog`
writes each event straight into shared memory instead.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Self

import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from .internals import shut_down

__all__ = ["QueueEvent", "QueueTracedDataset", "QueueTracedLoader"]


@dataclass(frozen=True)
class QueueEvent:
    """One item loaded in a worker, as it arrived through the queue (times in ns)."""

    pid: int
    index: int
    start: int
    end: int


class QueueTracedDataset(Dataset):
    """Wraps a map-style dataset: each item's load is ``put`` on ``events`` as it ends."""

    def __init__(self, dataset: Dataset, events: Any) -> None:
        self.dataset = dataset
        self.events = events

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        start = perf_counter_ns()
        item = self.dataset[index]
        self.events.put((os.getpid(), index, start, perf_counter_ns()))
        return item


@dataclass
class QueueTracedLoader:
    """A ``DataLoader`` over ``dataset`` whose workers send their events through a queue, with a
    thread in this process that receives them. Use as a context manager; after it, ``events``
    holds what arrived.

    >>> from helpers.datasets import SleepDataset
    >>> with QueueTracedLoader(SleepDataset(4, delay=0.0), batch_size=2) as loader:
    ...     batches = list(loader)
    >>> sorted(e.index for e in loader.events)
    [0, 1, 2, 3]
    """

    dataset: Dataset
    batch_size: int = 1
    num_workers: int = 0
    start_method: str | None = None
    events: list[QueueEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        context = mp.get_context(self.start_method)
        self._queue = context.Queue()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._receive, name="queue-log-reader", daemon=True)
        self.loader = DataLoader(
            QueueTracedDataset(self.dataset, self._queue),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            multiprocessing_context=context if self.num_workers else None,
        )
        self._iterators: list[Any] = []

    def _receive(self) -> None:
        # Poll rather than wait for an end marker: a worker killed while its feeder thread held the
        # queue's write lock leaves it held for good, and a marker sent after that never arrives.
        while True:
            try:
                self.events.append(QueueEvent(*self._queue.get(timeout=0.05)))
            except queue.Empty:
                if self._stop.is_set():
                    return

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.loader)
        self._iterators.append(iterator)
        yield from iterator

    def __enter__(self) -> Self:
        self._reader.start()
        return self

    def __exit__(self, *_: object) -> None:
        for iterator in self._iterators:
            shut_down(iterator)  # live workers flush their queue buffers as they exit
        self._iterators.clear()
        self._stop.set()  # the reader drains what reached the pipe, then ends
        self._reader.join()
        self._queue.close()
