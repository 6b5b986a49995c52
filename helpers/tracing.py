"""Wrappers that record events around a user's dataset, collate function, worker init function
and batch sampler, in whichever process each of them runs."""

from __future__ import annotations

import functools
import multiprocessing.util
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter_ns
from typing import Any

from torch.utils.data import Dataset, Sampler, get_worker_info

from .events import EventLog, Kind, _Writer
from .internals import show_dataset_to_worker

__all__ = ["IndexBatch", "NumberedBatchSampler", "TracedCollate", "TracedDataset", "TracedWorkerInit"]


class IndexBatch(list):
    """The dataset indices of one batch, carrying the batch's number to the worker that loads it."""

    number: int = -1


class NumberedBatchSampler(Sampler[list[int]]):
    """Numbers the batches of ``batch_sampler`` (from 0 at each ``iter()``) and records, in the
    main process, the moment each one is handed out to be loaded."""

    def __init__(self, batch_sampler: Sampler[list[int]], log: EventLog) -> None:
        self.batch_sampler = batch_sampler
        self.log = log

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[IndexBatch]:
        for number, indices in enumerate(self.batch_sampler):
            batch = IndexBatch(indices)
            batch.number = number
            self.log.record(Kind.BATCH_REQUESTED, perf_counter_ns(), index=number)
            yield batch


class TracedDataset(Dataset):
    """A map-style dataset that records how long each item takes to load, and where.

    The DataLoader fetches a whole batch through ``__getitems__``, so the per-item cost of tracing
    is one clock read and one write to shared memory.
    """

    def __init__(self, dataset: Dataset, log: EventLog) -> None:
        self.dataset = dataset
        self.log = log

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        writer = self.log.writer()
        writer.current_batch = getattr(indices, "number", -1)
        load_many = getattr(self.dataset, "__getitems__", None)
        if load_many:
            return self._load_together(writer, load_many, indices)
        return writer.load_items(self.dataset.__getitem__, indices)

    @staticmethod
    def _load_together(
        writer: _Writer, load_many: Callable[[Sequence[int]], list[Any]], indices: Sequence[int]
    ) -> list[Any]:
        """For datasets that load a batch in one call: every item gets the call's start and end."""
        start = perf_counter_ns()
        try:
            items = load_many(indices)
        except BaseException:
            end = perf_counter_ns()
            for index in indices:
                writer.record(Kind.ITEM_FAILED, start, end, index)
            raise
        end = perf_counter_ns()
        for index in indices:
            writer.record(Kind.ITEM_LOADED, start, end, index)
        return items


class TracedCollate:
    """Wraps a ``collate_fn`` and records each call, labelled with the batch's number."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any], log: EventLog) -> None:
        self.collate_fn = collate_fn
        self.log = log

    def __call__(self, items: list[Any]) -> Any:
        writer = self.log.writer()
        start = perf_counter_ns()
        try:
            return self.collate_fn(items)
        finally:
            writer.record(Kind.COLLATED, start, perf_counter_ns(), writer.current_batch)


def _record_exit(writer: _Writer) -> None:
    now = perf_counter_ns()
    writer.record(Kind.WORKER_EXITED, now, now)


class TracedWorkerInit:
    """A ``worker_init_fn`` that records that the worker is ready, arranges for its normal exit to be
    recorded, then calls the user's own ``worker_init_fn`` if there is one."""

    def __init__(self, log: EventLog, worker_init_fn: Callable[[int], None] | None = None) -> None:
        self.log = log
        self.worker_init_fn = worker_init_fn

    def __call__(self, worker_id: int) -> None:
        info = get_worker_info()
        if info is not None and isinstance(info.dataset, TracedDataset):
            show_dataset_to_worker(info.dataset.dataset)  # user code sees its own dataset
        writer = self.log.writer(worker_id)
        now = perf_counter_ns()
        writer.record(Kind.WORKER_READY, now, now, worker_id)
        # multiprocessing runs these finalizers when the worker's run() returns (not on a crash).
        multiprocessing.util.Finalize(None, functools.partial(_record_exit, writer), exitpriority=100)
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)
