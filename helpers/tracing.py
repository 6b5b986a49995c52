"""Wrappers that record events around a user's dataset, collate function, worker init function
and sampler, in whichever process each of them runs.

None of them changes what the user's code receives: the dataset gets the indices its sampler
yielded, ``get_worker_info().dataset`` in a worker is the user's dataset, and errors pass through
unchanged. Batch numbers travel to the worker beside the indices (:class:`Numbered`), or, for
iterable-style datasets, inside the placeholders the worker only counts (:class:`BatchTag`).
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing.util
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import perf_counter_ns
from typing import Any

from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from .events import EventLog, Kind, _Writer
from .internals import show_dataset_to_worker

__all__ = [
    "BatchTag",
    "Numbered",
    "NumberedSampler",
    "TaggingSampler",
    "TracedCollate",
    "TracedDataset",
    "TracedIterableDataset",
    "TracedWorkerInit",
    "tag_iterable_batches",
]


class _Current:
    """The batch this process is loading now, for its collate event."""

    batch = -1


def _begin_batch(number: int) -> None:
    _Current.batch = number


class Numbered:
    """What a sampler yielded (an index or a batch of indices), with the number of its batch.

    >>> Numbered([4, 5], 2).value
    [4, 5]
    """

    __slots__ = ("number", "value")

    def __init__(self, value: Any, number: int) -> None:
        self.value = value
        self.number = number

    def __reduce__(self) -> tuple[type[Numbered], tuple[Any, int]]:
        return Numbered, (self.value, self.number)


class NumberedSampler(Sampler[Numbered]):
    """Numbers what ``sampler`` yields (from 0 at each ``iter()``: PyTorch's own task numbers) and
    records, in the main process, the moment each one is handed out to be loaded. Wraps a batch
    sampler, or a sampler when ``batch_size=None``."""

    def __init__(self, sampler: Iterable[Any], log: EventLog) -> None:
        self.sampler = sampler
        self.log = log

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]  # a TypeError like PyTorch's if unsized

    def __iter__(self) -> Iterator[Numbered]:
        for number, value in enumerate(self.sampler):
            self.log.record(Kind.BATCH_REQUESTED, perf_counter_ns(), index=number)
            yield Numbered(value, number)


class BatchTag:
    """A placeholder for one item of batch ``number`` of an iterable-style dataset, whose fetcher
    only counts the placeholders. Unpickled in a worker (the moment it takes the batch from its
    queue), it tells that worker which batch it is loading."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number

    def __reduce__(self) -> tuple[Callable[[int], None], tuple[int]]:
        return _begin_batch, (self.number,)


class TaggingSampler(Sampler[BatchTag]):
    """Stands in for the endless sampler PyTorch gives an iterable-style dataset: ``batch_size``
    tags per batch, recording when each batch is handed out."""

    def __init__(self, batch_size: int, log: EventLog) -> None:
        self.batch_size = batch_size
        self.log = log

    def __iter__(self) -> Iterator[BatchTag]:
        for number in itertools.count():
            self.log.record(Kind.BATCH_REQUESTED, perf_counter_ns(), index=number)
            _begin_batch(number)  # loading in this process (num_workers=0) comes next
            tag = BatchTag(number)
            for _ in range(self.batch_size):
                yield tag


def tag_iterable_batches(loader: DataLoader, log: EventLog) -> None:
    """Number the batches of ``loader`` (over a :class:`TracedIterableDataset`, with automatic
    batching): its batch sampler draws from a :class:`TaggingSampler` instead. PyTorch's fetcher
    for iterable-style datasets uses only the number of indices in a batch, never their values."""
    if loader.batch_sampler is not None and loader.batch_size is not None:
        loader.batch_sampler.sampler = TaggingSampler(loader.batch_size, log)  # type: ignore[attr-defined]


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

    def __getitem__(self, index: Any) -> Any:
        if type(index) is Numbered:  # batch_size=None: one item a batch
            _begin_batch(index.number)
            index = index.value
        return self.log.writer().load_items(self.dataset.__getitem__, (index,))[0]

    def __getitems__(self, batch: Any) -> Any:
        if type(batch) is Numbered:
            _begin_batch(batch.number)
            batch = batch.value
        writer = self.log.writer()
        load_many = getattr(self.dataset, "__getitems__", None)
        if load_many:
            return self._load_together(writer, load_many, batch)
        if not isinstance(batch, Sequence):
            batch = list(batch)  # any iterable of indices, as PyTorch's fetcher takes it
        return writer.load_items(self.dataset.__getitem__, batch)

    @staticmethod
    def _load_together(writer: _Writer, load_many: Callable[[Any], Any], indices: Any) -> Any:
        """For datasets that load a batch in one call: every item gets the call's start and end."""
        listed = indices if isinstance(indices, Sequence) else list(indices)
        start = perf_counter_ns()
        try:
            items = load_many(indices)
        except BaseException:
            writer.record_many(Kind.ITEM_FAILED, start, perf_counter_ns(), listed)
            raise
        writer.record_many(Kind.ITEM_LOADED, start, perf_counter_ns(), listed)
        return items


class TracedIterableDataset(IterableDataset):
    """An iterable-style dataset that records each item its stream yields, on the lane of the
    process that iterates it: in a worker, that worker's shard. An item's index is its position in
    that process's stream (0, 1, 2, ... from each ``iter()``)."""

    def __init__(self, dataset: IterableDataset, log: EventLog) -> None:
        self.dataset = dataset
        self.log = log

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # a TypeError like plain PyTorch's if unsized

    def __iter__(self) -> Iterator[Any]:
        items = iter(self.dataset)  # errors in the user's __iter__ are raised here, as without tracing
        return self.log.writer().stream_items(items)


class TracedCollate:
    """Wraps a ``collate_fn`` and records each call, labelled with the batch's number."""

    def __init__(self, collate_fn: Callable[[Any], Any], log: EventLog) -> None:
        self.collate_fn = collate_fn
        self.log = log

    def __call__(self, items: Any) -> Any:
        writer = self.log.writer()
        start = perf_counter_ns()
        try:
            return self.collate_fn(items)
        finally:
            writer.record(Kind.COLLATED, start, perf_counter_ns(), _Current.batch)


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
        if info is not None and isinstance(info.dataset, (TracedDataset, TracedIterableDataset)):
            show_dataset_to_worker(info.dataset.dataset)  # user code sees its own dataset
        writer = self.log.writer(worker_id)
        now = perf_counter_ns()
        writer.record(Kind.WORKER_READY, now, now, worker_id)
        # multiprocessing runs these finalizers when the worker's run() returns (not on a crash).
        multiprocessing.util.Finalize(None, functools.partial(_record_exit, writer), exitpriority=100)
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)
