"""Tracing changes nothing a loader does.

Each case is usage taken from PyTorch's own ``test/test_dataloader.py`` (named after the test it
comes from). It runs three times under each start method: on a plain ``DataLoader``, through
``trace_loader`` with the same arguments, and through ``trace`` of a plain loader. All three must
agree on batches, errors and ``len()``; each traced run must leave a complete trace and nothing
behind (no process, thread or event file).
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    ChainDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
    WeightedRandomSampler,
    get_worker_info,
)

from helpers import Kind, Trace, WaitEnd, check_settings, descendants, trace_loader
from helpers.experiment import trace

pytestmark = pytest.mark.slow

# ----------------------------------------------------------------------------------------------
# Datasets and functions, at module level so that spawn and forkserver workers can import them.


def tensor_dataset(n: int = 12) -> TensorDataset:
    data = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    return TensorDataset(data, torch.arange(n) % 5)


class CountingDataset(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __getitem__(self, i: int) -> int:
        return i

    def __len__(self) -> int:
        return self.n


class CountingIterableDataset(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class UnsizedStream(IterableDataset):
    def __iter__(self) -> Iterator[int]:
        return iter(range(4))


class WorkerSpecificIterableDataset(IterableDataset):
    """Worker ``i`` yields ``range(sizes[i])`` (PyTorch's own test dataset)."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        assert info is not None and isinstance(info.dataset, WorkerSpecificIterableDataset)
        return iter(range(self.sizes[info.id]))


class MultiEpochDataset(IterableDataset):
    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        assert info is not None
        return iter([info.id] * (self.length // info.num_workers))

    def __len__(self) -> int:
        return self.length


class ErrorDataset(Dataset):
    """No ``__getitem__``: every item raises ``NotImplementedError``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class ErrorIterableDataset(IterableDataset):
    def __iter__(self) -> Iterator[int]:
        raise RuntimeError("Error in __iter__")


class CorruptItems(Dataset):
    """Items in ``bad`` raise ``ValueError``; the others are their index."""

    def __init__(self, size: int, bad: tuple[int, ...]) -> None:
        self.size, self.bad = size, bad

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> int:
        if i in self.bad:
            raise ValueError(f"item {i} is corrupt")
        return i


class KillingDataset(CountingDataset):
    def __getitem__(self, i: int) -> int:
        if i == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return i


class BulkLoadingDataset(Dataset):
    def __init__(self, length: int) -> None:
        self.length = length

    def __getitem__(self, indices: list[int]) -> torch.Tensor:
        assert isinstance(indices, (list, tuple))
        return torch.as_tensor(indices)

    def __len__(self) -> int:
        return self.length


class BulkLoadingSampler(torch.utils.data.Sampler):
    def __init__(self, dataset: Dataset, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(3))  # type: ignore[arg-type]
        for x in order.split(self.batch_size):
            yield x.tolist()

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)  # type: ignore[arg-type]


class GetItemsDataset(Dataset):
    def __init__(self) -> None:
        self.data = torch.arange(8.0)

    def __getitem__(self, item: int) -> torch.Tensor:
        return self.data[item]

    def __getitems__(self, items: list[int]) -> list[torch.Tensor]:
        return list(self.data[items])

    def __len__(self) -> int:
        return 8


class DictDataset(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"a_tensor": torch.full((4, 2), float(i)), "another_dict": {"a_number": i}}


class StringDataset(Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> tuple[str, int]:
        return "12345"[i], i


class NumpyDataset(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> np.ndarray:
        return np.ones((2, 3)) * i


class SeedDataset(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        return torch.initial_seed()


class WorkerInfoDataset(Dataset):
    """Each item tells what ``get_worker_info()`` shows: the worker's id, the number of workers, and
    whether ``info.dataset`` is this very dataset."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> torch.Tensor:
        info = get_worker_info()
        assert info is not None
        return torch.tensor([info.id, info.num_workers, int(info.dataset is self)])


class SharedCounter(Dataset):
    """Counts the items loaded, across processes, in a ``multiprocessing.Value`` under its lock."""

    def __init__(self, method: str) -> None:
        context = multiprocessing.get_context(method)
        self.count = context.Value("i", 0)
        self.event = context.Event()

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> int:
        with self.count.get_lock():
            self.count.value += 1
        return i


def _marked(method: str) -> type:
    """A context class of the caller's own (``method``'s, with a mark)."""
    base = type(multiprocessing.get_context(method))
    return type(f"Marked{base.__name__}", (base,), {"__module__": __name__, "marked": True})


MARKED_CONTEXTS = {method: _marked(method) for method in multiprocessing.get_all_start_methods()}


def clone_collate(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return [x.clone() for x in batch]


def stack_first(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([item[0] for item in batch])


def seed_init(worker_id: int) -> None:
    torch.manual_seed(12345)


def error_worker_init_fn(worker_id: int) -> None:
    raise RuntimeError("Error in worker_init_fn")


# ----------------------------------------------------------------------------------------------
# Observing a loader: what it yields, raises and reports, as plain comparable values.

Build = Callable[..., Any]


def plain(value: Any) -> Any:
    """``value`` as plain Python data: tensors and arrays become (type, dtype, values)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), value.tolist())
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.tolist())
    if isinstance(value, dict):
        return ("dict", sorted((k, plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [plain(v) for v in value])
    return value


def error(exc: BaseException) -> tuple[str, str, str]:
    """An error as (type, first line, last line), PIDs and addresses left out (they differ between
    runs)."""
    text = re.sub(r"0x[0-9a-f]+", "0x...", re.sub(r"pid(\(s\))? [\d, ]+", "pid N", str(exc)))
    lines = [line for line in text.splitlines() if line.strip()]
    return ("error", type(exc).__name__, lines[0] if lines else "") + ((lines[-1],) if lines else ())  # type: ignore[return-value]


def drain(iterable: Iterable[Any], limit: int = 100, go_on: bool = True) -> list[Any]:
    """What ``next()`` gives, call after call: batches, and errors (going on past them, as a
    training loop that skips bad batches does, if ``go_on``), until ``StopIteration``."""
    try:
        iterator = iter(iterable)
    except Exception as exc:  # noqa: BLE001 (single-process loading starts the dataset's iterator here)
        return [error(exc)]
    seen: list[Any] = []
    for _ in range(limit):
        try:
            seen.append(("batch", plain(next(iterator))))
        except StopIteration:
            return seen
        except Exception as exc:  # noqa: BLE001 (whatever the loader raises is observed)
            seen.append(error(exc))
            if not go_on:
                return seen
    raise AssertionError(f"more than {limit} next() calls")


def size(loader: Any) -> Any:
    try:
        return ("len", len(loader))
    except TypeError as exc:
        return error(exc)


def built(build: Build, *args: Any, **kwargs: Any) -> Any:
    """``build(*args, **kwargs)``, or the error it raised."""
    try:
        return build(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 (whatever DataLoader() raises is observed)
        return error(exc)


def unordered(seen: list[Any]) -> list[Any]:
    return sorted(seen, key=repr)


# ----------------------------------------------------------------------------------------------
# The cases. Each gets ``build`` (DataLoader's signature) and returns what it observed.


def sequential_batch(build: Build) -> list[Any]:
    loader = build(tensor_dataset(), batch_size=2, num_workers=2)
    return [size(loader), *drain(loader)]


def sequential_nonbatch(build: Build) -> list[Any]:
    loader = build(tensor_dataset(), batch_size=None, num_workers=2)
    return [size(loader), *drain(loader)]


def shuffle_reproducibility(build: Build) -> list[Any]:
    loader = build(tensor_dataset(), 3, True, num_workers=2, generator=torch.Generator().manual_seed(42))
    return [size(loader), *drain(loader)]


def shuffle_reproducibility_in_main(build: Build) -> list[Any]:
    loader = build(tensor_dataset(), shuffle=True, generator=torch.Generator().manual_seed(42))
    return [size(loader), *drain(loader)]


def sampler(build: Build) -> list[Any]:  # a plain iterable as the sampler
    loader = build(tensor_dataset(), sampler=range(2, 12), batch_size=2, num_workers=2)
    return [size(loader), *drain(loader)]


def batch_sampler(build: Build) -> list[Any]:  # tuples of indices, of two sizes
    batches = [tuple(range(i, i + 2)) if i % 5 == 0 else tuple(range(i, i + 3)) for i in (0, 2, 5, 7)]
    loader = build(tensor_dataset(), batch_sampler=batches, num_workers=2)
    return [size(loader), *drain(loader)]


def bulk_loading_nobatch(build: Build) -> list[Any]:
    dataset = BulkLoadingDataset(11)
    loader = build(dataset, num_workers=2, batch_size=None, sampler=BulkLoadingSampler(dataset, 4))
    return [size(loader), *drain(loader)]


def drop_last(build: Build) -> list[Any]:
    loader = build(tensor_dataset(), batch_size=5, drop_last=True, num_workers=2)
    return [size(loader), *drain(loader)]


def duplicating_data_with_drop_last(build: Build) -> list[Any]:  # DistributedSampler, one rank
    from torch.utils.data.distributed import DistributedSampler  # imports torch.distributed: slow

    dataset = tensor_dataset(9)
    ranks: list[Any] = [
        DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=True, seed=1) for r in (0, 1)
    ]
    seen: list[Any] = []
    for rank in ranks:
        rank.set_epoch(3)
        loader = build(dataset, batch_size=2, drop_last=True, sampler=rank, num_workers=2)
        seen += [size(loader), *drain(loader)]
    return seen


def sampler_reproducibility(build: Build) -> list[Any]:
    weights = [0.1, 0.9, 0.4, 0.7, 3.0, 0.6]
    rng = torch.Generator().manual_seed(42)
    loader = build(
        CountingDataset(6), sampler=WeightedRandomSampler(weights, 5, generator=rng), num_workers=2
    )
    return [size(loader), *drain(loader)]


def custom_collate(build: Build) -> list[Any]:
    return drain(build(tensor_dataset(), batch_size=4, collate_fn=clone_collate, num_workers=2))


def dict_items(build: Build) -> list[Any]:
    return drain(build(DictDataset(), batch_size=2, num_workers=2))


def numpy_and_strings(build: Build) -> list[Any]:
    return drain(build(NumpyDataset(), batch_size=4, num_workers=2)) + drain(
        build(StringDataset(), 2, num_workers=2)
    )


def getitems(build: Build) -> list[Any]:
    return drain(build(GetItemsDataset(), batch_size=3, num_workers=2))


def persistent_workers(build: Build) -> list[Any]:
    loader = build(tensor_dataset(), batch_size=4, num_workers=2, persistent_workers=True)
    return drain(loader) + drain(loader)


def in_order_false(build: Build) -> list[Any]:
    return unordered(drain(build(tensor_dataset(), batch_size=2, num_workers=2, in_order=False)))


def prefetch_factor(build: Build) -> list[Any]:
    return drain(build(tensor_dataset(), batch_size=2, num_workers=2, prefetch_factor=3))


def worker_init_fn(build: Build) -> list[Any]:
    return drain(build(SeedDataset(), batch_size=2, num_workers=2, worker_init_fn=seed_init))


def worker_seed_reproducibility(build: Build) -> list[Any]:
    loader = build(SeedDataset(), num_workers=2, generator=torch.Generator().manual_seed(42))
    return drain(loader)


def get_worker_info_map(build: Build) -> list[Any]:
    return drain(build(WorkerInfoDataset(), batch_size=2, num_workers=2))


def iterable_style_dataset(build: Build) -> list[Any]:
    seen = drain(build(CountingIterableDataset(20), batch_size=7))
    seen += [size(build(CountingIterableDataset(20), batch_size=7, drop_last=True))]
    dataset = WorkerSpecificIterableDataset([0, 4, 20])
    seen += unordered(drain(build(dataset, num_workers=3, batch_size=7)))
    return seen + unordered(drain(build(dataset, num_workers=3, batch_size=None)))


def iterable_drop_last(build: Build) -> list[Any]:
    dataset = WorkerSpecificIterableDataset([0, 4, 20])
    return unordered(drain(build(dataset, num_workers=3, batch_size=7, drop_last=True, prefetch_factor=4)))


def iterable_without_len(build: Build) -> list[Any]:
    loader = build(UnsizedStream(), batch_size=3)
    return [size(loader), *drain(loader)]


def chain_iterable_style_dataset(build: Build) -> list[Any]:
    chained = ChainDataset([CountingIterableDataset(5), CountingIterableDataset(4)])
    return drain(build(chained, num_workers=1)) + drain(build(chained))


def multi_epochs_reproducibility(build: Build) -> list[Any]:
    loader = build(MultiEpochDataset(8), batch_size=2, num_workers=2)
    return [item for _ in range(3) for item in drain(loader)]


def builtin_collection_conversion(build: Build) -> list[Any]:
    seen = []
    for workers in (0, 1):
        for dataset in (CountingDataset(6), CountingIterableDataset(6)):
            for batch_size in (None, 2):
                seen.append(plain(tuple(build(dataset, batch_size=batch_size, num_workers=workers))))
    return seen


def error_each_batch(build: Build) -> list[Any]:  # PyTorch's _test_error: skip every bad batch
    loader = build(ErrorDataset(9), batch_size=2, shuffle=True, num_workers=2)
    return [size(loader), *drain(loader)]


def error_then_go_on(build: Build) -> list[Any]:
    return drain(build(CorruptItems(10, bad=(3, 8)), batch_size=2, num_workers=2))


def error_in_init(build: Build) -> list[Any]:  # as `list(loader)`: up to the first error
    seen = drain(build(ErrorIterableDataset(), num_workers=0), go_on=False)
    seen += drain(build(ErrorIterableDataset(), num_workers=2), go_on=False)
    loader = build(tensor_dataset(), num_workers=2, worker_init_fn=error_worker_init_fn)
    return seen + drain(loader, go_on=False)


def segfault(build: Build) -> list[Any]:  # the worker loading batch 0 dies
    iterator = iter(build(KillingDataset(8), batch_size=2, num_workers=2))
    try:
        next(iterator)
    except RuntimeError as exc:  # "... exited unexpectedly" or "... is killed by signal", by a race
        return [("error", type(exc).__name__, str(exc).startswith("DataLoader worker (pid"))]
    return [("no error",)]


def multiprocessing_contexts(build: Build, method: str) -> list[Any]:
    seen = drain(build(CountingDataset(11), num_workers=2, batch_size=3, multiprocessing_context=method))
    context = multiprocessing.get_context(method)
    return seen + drain(
        build(CountingDataset(11), num_workers=2, batch_size=3, multiprocessing_context=context)
    )


def own_context_kind(build: Build, method: str) -> list[Any]:
    context = MARKED_CONTEXTS[method]()
    return drain(build(CountingDataset(5), num_workers=2, batch_size=2, multiprocessing_context=context))


def shared_value(build: Build, method: str) -> list[Any]:
    dataset = SharedCounter(method)
    seen = drain(build(dataset, batch_size=2, num_workers=2))
    return [*seen, ("loaded", dataset.count.value)]


def multiple_dataloaders(build: Build) -> list[Any]:
    first = iter(build(tensor_dataset(), num_workers=1))
    second = iter(build(tensor_dataset(), num_workers=2))
    seen = [plain(next(first)), plain(next(second)), plain(next(first)), plain(next(second))]
    del first, second
    return [("batch", batch) for batch in seen]


def iterator_left_referenced(build: Build) -> list[Any]:
    iterator = iter(build(tensor_dataset(), batch_size=2, num_workers=2))
    return [("batch", plain(next(iterator)))]  # no more: the iterator is left as it is


def positional_arguments(build: Build) -> list[Any]:
    loader = build(tensor_dataset(), 4, False, None, None, 2, clone_collate, False, True)
    return [size(loader), *drain(loader)]


def growing_dataset(build: Build) -> list[Any]:
    dataset = [torch.ones(4) for _ in range(4)]
    loaders = [build(dataset, shuffle=False), build(dataset, shuffle=True)]
    dataset.append(torch.ones(4))
    return [size(loader) for loader in loaders]


def invalid_ctor_args_combinations(build: Build) -> list[Any]:
    dataset, stream = tensor_dataset(), CountingIterableDataset(20)
    batches = BatchSampler(SequentialSampler(dataset), 3, False)
    valid = multiprocessing.get_all_start_methods()[-1]
    cases: list[tuple[Any, dict[str, Any]]] = [
        (dataset, {"num_workers": -1}),
        (dataset, {"timeout": -1}),
        (dataset, {"batch_size": None, "drop_last": True}),
        (dataset, {"num_workers": 0, "multiprocessing_context": valid}),
        (dataset, {"num_workers": 1, "multiprocessing_context": "bad"}),
        (dataset, {"num_workers": 1, "multiprocessing_context": object()}),
        (dataset, {"batch_size": 11, "sampler": SequentialSampler(dataset), "shuffle": True}),
        (dataset, {"batch_sampler": batches, "sampler": SequentialSampler(dataset), "shuffle": 3}),
        (dataset, {"batch_size": 11, "batch_sampler": batches}),
        (dataset, {"drop_last": 3, "batch_sampler": batches}),
        (stream, {"shuffle": True}),
        (stream, {"sampler": 3}),
        (stream, {"batch_sampler": batches}),
        (dataset, {"prefetch_factor": 2}),
        (dataset, {"persistent_workers": True}),
        (dataset, {"batch_size": 0}),
    ]
    return [built(build, data, **kwargs) for data, kwargs in cases]


def pin_memory_without_accelerator(build: Build) -> list[Any]:
    return drain(build(tensor_dataset(), batch_size=4, pin_memory=True))


@dataclass(frozen=True)
class Case:
    run: Callable[..., list[Any]]
    workers: bool = True  #: starts worker processes (so runs under each start method)
    takes_method: bool = False  #: chooses its own multiprocessing context
    kills_a_worker: bool = False


CASES = {
    case.run.__name__: case
    for case in [
        Case(sequential_batch),
        Case(sequential_nonbatch),
        Case(shuffle_reproducibility),
        Case(shuffle_reproducibility_in_main, workers=False),
        Case(sampler),
        Case(batch_sampler),
        Case(bulk_loading_nobatch),
        Case(drop_last),
        Case(duplicating_data_with_drop_last),
        Case(sampler_reproducibility),
        Case(custom_collate),
        Case(dict_items),
        Case(numpy_and_strings),
        Case(getitems),
        Case(persistent_workers),
        Case(in_order_false),
        Case(prefetch_factor),
        Case(worker_init_fn),
        Case(worker_seed_reproducibility),
        Case(get_worker_info_map),
        Case(iterable_style_dataset),
        Case(iterable_drop_last),
        Case(iterable_without_len, workers=False),
        Case(chain_iterable_style_dataset),
        Case(multi_epochs_reproducibility),
        Case(builtin_collection_conversion),
        Case(error_each_batch),
        Case(error_then_go_on),
        Case(error_in_init),
        Case(segfault, kills_a_worker=True),
        Case(multiprocessing_contexts, takes_method=True),
        Case(own_context_kind, takes_method=True),
        Case(shared_value, takes_method=True),
        Case(multiple_dataloaders),
        Case(iterator_left_referenced),
        Case(positional_arguments),
        Case(growing_dataset, workers=False),
        Case(invalid_ctor_args_combinations, workers=False),
        Case(pin_memory_without_accelerator, workers=False),
    ]
}
WITH_WORKERS = [name for name, case in CASES.items() if case.workers]
IN_MAIN = [name for name, case in CASES.items() if not case.workers]


# ----------------------------------------------------------------------------------------------
# Running a case plainly and traced, and comparing.


def _with_method(args: tuple[Any, ...], kwargs: dict[str, Any], method: str | None) -> dict[str, Any]:
    """``kwargs``, with ``multiprocessing_context=method`` where the loader has workers and no
    context of its own."""
    workers = args[5] if len(args) > 5 else kwargs.get("num_workers", 0)
    if method is None or not isinstance(workers, int) or workers <= 0 or "multiprocessing_context" in kwargs:
        return kwargs
    return {**kwargs, "multiprocessing_context": method}


def _run(case: Case, build: Build, method: str | None) -> list[Any]:
    def with_method(*args: Any, **kwargs: Any) -> Any:
        return build(*args, **_with_method(args, kwargs, method))

    return case.run(with_method, method) if case.takes_method else case.run(with_method)


def _traced(case: Case, method: str | None, how: str) -> tuple[list[Any], list[Trace], list[str]]:
    """What ``case`` observes through traced loaders, their traces, and their event directories."""
    loaders: list[Any] = []

    def build(*args: Any, **kwargs: Any) -> Any:
        loader = (
            trace_loader(*args, **kwargs) if how == "trace_loader" else trace(DataLoader(*args, **kwargs))
        )
        loaders.append(loader)
        return loader

    seen = _run(case, build, method)
    return seen, [loader.close() for loader in loaders], [loader._log.directory for loader in loaders]


def _same(plain_seen: list[Any], traced_seen: list[Any]) -> None:
    """Equal, except that a traced construction error may add words to PyTorch's message."""
    assert len(traced_seen) == len(plain_seen), (plain_seen, traced_seen)
    for mine, theirs in zip(traced_seen, plain_seen, strict=True):
        if theirs and theirs[0] == "error" and isinstance(theirs[2], str) and mine[0] == "error":
            assert mine[1] == theirs[1] and theirs[2] in mine[2], (theirs, mine)
            assert mine[-1].endswith(theirs[-1]) or theirs[-1] in mine[-1], (theirs, mine)
        else:
            assert mine == theirs


def _complete(trace: Trace, case: Case) -> None:
    """Every batch received was built, every iterator was shut down, every worker started (and
    ended) on the record, and nothing was left running."""
    assert trace.leftover_processes == ()
    calls, closes = trace.count(Kind.ITER_CALLED), trace.count(Kind.ITER_CLOSED)
    assert closes == (min(calls, 1) if trace.settings["persistent_workers"] else calls)
    collated = {e.index for e in trace.of(Kind.COLLATED)}
    received = {e.index for e in trace.of(Kind.BATCH_RECEIVED)}
    if trace.settings["batch_size"] is not None or trace.settings["sampler"] != "_InfiniteConstantSampler":
        assert received <= collated
    workers = trace.worker_pids
    ready = [e.pid for e in trace.of(Kind.WORKER_READY)]
    assert sorted(ready) == sorted(workers)
    if not case.kills_a_worker:
        assert sorted(e.pid for e in trace.of(Kind.WORKER_EXITED)) == sorted(workers)
    if workers and not trace.notes:
        assert {e.pid for e in trace.of(Kind.PROCESS_CREATED)} == set(workers)


def _footprint() -> tuple[set[int], set[str]]:
    return descendants(), {f"{t.name}:{t.ident}" for t in threading.enumerate()}


def _check(name: str, method: str | None, ways: tuple[str, ...]) -> None:
    """Run case ``name`` plainly, then traced each of ``ways``, and compare."""
    case = CASES[name]
    expected = _run(case, DataLoader, method)
    for how in ways:
        before = _footprint()
        seen, traces, logs = _traced(case, method, how)
        _same(expected, seen)
        for one in traces:
            _complete(one, case)
        after = _footprint()
        assert (after[0] - before[0], after[1] - before[1]) == (set(), set()), "left running"
        assert [log for log in logs if os.path.exists(log)] == [], "event files left behind"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", WITH_WORKERS)
def test_traced_loader_behaves_like_pytorchs(name: str, start_method: str) -> None:
    # Worker processes are slow to start under spawn: each case is traced one way, the two ways
    # taking turns down the list (both build the same TracedLoader once their arguments are checked).
    ways = ("trace_loader", "trace")
    _check(name, start_method, (ways[WITH_WORKERS.index(name) % 2],))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", IN_MAIN)
def test_traced_loader_behaves_like_pytorchs_in_main(name: str) -> None:
    _check(name, None, ("trace_loader", "trace"))


# ----------------------------------------------------------------------------------------------
# The same promises, one at a time, with sharper messages.


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_an_iterator_still_referenced_is_shut_down_at_close(start_method: str) -> None:
    with trace_loader(tensor_dataset(), batch_size=2, num_workers=2, start_method=start_method) as loader:
        iterator = iter(loader)
        next(iterator)
        workers = loader.worker_processes()
    assert len(workers) == 2 and not set(workers) & descendants()
    assert loader.trace.leftover_processes == () and loader.trace.count(Kind.ITER_CLOSED) == 1
    with pytest.raises(StopIteration):
        next(iterator)
    del iterator
    gc.collect()  # dropping it now neither fails nor records anything


def test_the_loop_goes_on_after_an_error_and_the_trace_shows_it(start_method: str) -> None:
    with trace_loader(
        CorruptItems(10, bad=(3,)), batch_size=2, num_workers=2, start_method=start_method
    ) as loader:
        seen = drain(loader)
    assert [outcome[0] for outcome in seen] == ["batch", "error", "batch", "batch", "batch"]
    assert seen[1][-1] == "ValueError: item 3 is corrupt"
    trace = loader.trace
    assert [how for _, how in trace.waits_ended()] == [WaitEnd.ERROR, WaitEnd.END_OF_DATA]
    assert [e.index for e in trace.of(Kind.ITEM_FAILED)] == [3]
    assert [e.index for e in trace.of(Kind.BATCH_RECEIVED)] == [0, 2, 3, 4]
    assert trace.error is None  # the loop went past it: it did not end the run


def test_the_users_loader_is_not_changed(start_method: str) -> None:
    loader = DataLoader(
        tensor_dataset(), batch_size=3, shuffle=True, num_workers=2, multiprocessing_context=start_method,
        collate_fn=stack_first, worker_init_fn=seed_init, persistent_workers=True,
    )  # fmt: skip
    before = dict(vars(loader))
    with trace(loader) as traced:
        assert traced.dataset is loader.dataset and traced.batch_size == 3 and len(traced) == len(loader)
        assert len(list(traced)) == 4
    assert vars(loader) == before
    assert traced.trace.settings["shuffle"] and traced.trace.settings["collate_fn"] == "stack_first"


def test_a_context_of_the_callers_own_kind_is_kept_and_the_trace_says_so(start_method: str) -> None:
    context = MARKED_CONTEXTS[start_method]()
    with trace_loader(
        CountingDataset(4), batch_size=2, num_workers=2, multiprocessing_context=context
    ) as loader:
        assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3]]
    assert loader.dataloader.multiprocessing_context is context
    assert loader.trace.count(Kind.PROCESS_CREATED) == 0 and loader.trace.count(Kind.WORKER_READY) == 2
    assert "not recorded" in loader.trace.notes[0] and "note: " in loader.trace.summary()
    standard = multiprocessing.get_context(start_method)
    with trace_loader(
        CountingDataset(4), batch_size=2, num_workers=2, multiprocessing_context=standard
    ) as loader:
        list(loader)
    assert loader.trace.count(Kind.PROCESS_CREATED) == 2 and loader.trace.notes == ()


def test_an_iterable_datasets_shards_show_worker_by_worker(start_method: str) -> None:
    dataset = WorkerSpecificIterableDataset([3, 5])
    with trace_loader(dataset, batch_size=2, num_workers=2, start_method=start_method) as loader:
        batches = [batch.tolist() for batch in loader]
    trace = loader.trace
    assert Counter(e.worker_id for e in trace.of(Kind.ITEM_LOADED)) == {0: 3, 1: 5}
    built = {number: (worker, positions) for number, worker, _, positions in trace.batches()}
    for number, batch in zip([e.index for e in trace.of(Kind.BATCH_RECEIVED)], batches, strict=True):
        worker, positions = built[number]
        assert batch == positions  # worker w yields range(sizes[w]): an item is its position
        assert max(positions) < dataset.sizes[worker]


def test_start_method_needs_workers_as_in_pytorch() -> None:
    before = descendants()
    with pytest.raises(ValueError, match=r"multi-process loading \(num_workers > 0\), but got num_workers=0"):
        trace_loader(CountingDataset(2), num_workers=0, start_method="spawn")
    with pytest.raises(ValueError, match="another name for multiprocessing_context"):
        trace_loader(CountingDataset(2), num_workers=1, start_method="spawn", multiprocessing_context="fork")
    assert descendants() == before


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_only_what_a_new_process_cannot_receive_is_refused(method: str) -> None:
    before = descendants()
    assert check_settings(SharedCounter(method), num_workers=2, start_method=method) == method
    with pytest.raises(ValueError, match=r"dataset cannot be pickled.*fork context"):
        check_settings(SharedCounter("fork"), num_workers=2, start_method=method)
    dataset = CountingDataset(3)
    dataset.transform = type("NotebookTransform", (), {"__module__": "__main__"})()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="NotebookTransform is defined in this notebook"):
        check_settings(dataset, num_workers=2, start_method=method)
    with pytest.raises(ValueError, match="collate_fn cannot be pickled"):
        check_settings(CountingDataset(3), num_workers=2, start_method=method, collate_fn=lambda batch: batch)
    assert check_settings(dataset, num_workers=2, start_method="fork") == "fork"  # fork pickles nothing
    assert descendants() == before
