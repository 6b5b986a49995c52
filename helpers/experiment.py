"""Build a traced DataLoader from plain settings, run it, and get a :class:`~helpers.events.Trace`.

Every setting is checked before any process starts, so a bad value gives one clear
``ValueError`` and leaves nothing behind.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator
from time import perf_counter_ns
from typing import Any

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    default_collate,
)

from .events import EventLog, Kind, Trace, WaitEnd
from .internals import SHUTDOWN_WAIT_S, batches_in_flight, forget_iterator, live_iterator, shut_down
from .lifecycle import timed_context
from .system import descendants, wait_until_gone
from .tracing import NumberedBatchSampler, TracedCollate, TracedDataset, TracedWorkerInit

__all__ = ["TracedLoader", "check_settings", "run_experiment", "trace_loader"]


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class _Discard:
    """A file that forgets what is written to it: pickling into it only checks that pickling works."""

    def write(self, data: bytes | pickle.PickleBuffer) -> int:
        return memoryview(data).nbytes


def _defined_interactively(obj: object) -> bool:
    """True for a class or function of ``__main__`` that is not in the main script's file (a
    notebook cell, a REPL): spawned workers re-run the main *script* to find ``__main__``
    objects, so they cannot find these."""
    target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    if getattr(target, "__module__", None) != "__main__":
        return False
    functions = (
        [target]
        if inspect.isfunction(target)
        else [f for f in vars(target).values() if inspect.isfunction(f)]
    )
    source = functions[0].__code__.co_filename if functions else None
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    return main_file is None or source is None or os.path.realpath(source) != os.path.realpath(main_file)


def check_settings(
    dataset: Dataset,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    start_method: str | None = None,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    timeout: float = 0.0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
) -> str | None:
    """Raise ``ValueError`` naming the first bad setting; return the start method workers will use
    (``None`` without workers). Starts no process."""
    if isinstance(dataset, IterableDataset) or not (
        hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
    ):
        raise ValueError(
            f"tracing needs a map-style dataset (with __getitem__ and __len__), got {type(dataset).__name__}"
        )
    if not _is_count(num_workers, 0):
        raise ValueError(
            f"num_workers must be a whole number >= 0 (0 loads in the main process), got {num_workers!r}"
        )
    if not _is_count(batch_size, 1):
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    methods = multiprocessing.get_all_start_methods()
    if start_method is not None and start_method not in methods:
        raise ValueError(f"unknown start method {start_method!r}; this machine offers {', '.join(methods)}")
    if prefetch_factor is not None:
        if num_workers == 0:
            raise ValueError(
                "prefetch_factor only applies with workers: set num_workers > 0 or prefetch_factor=None"
            )
        if not _is_count(prefetch_factor, 1):
            raise ValueError(f"prefetch_factor must be a whole number >= 1, got {prefetch_factor!r}")
    if persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers=True needs workers: set num_workers > 0")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    if timeout > 0 and num_workers == 0:
        raise ValueError("timeout only applies with workers: set num_workers > 0 or timeout=0")
    for name, fn in (("collate_fn", collate_fn), ("worker_init_fn", worker_init_fn)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable, got {fn!r}")
    if num_workers == 0:
        return None
    method = start_method or multiprocessing.get_context().get_start_method()
    if method != "fork":
        _check_picklable(method, dataset=dataset, collate_fn=collate_fn, worker_init_fn=worker_init_fn)
    return method


def _check_picklable(method: str, **parts: object) -> None:
    for name, part in parts.items():
        if part is None:
            continue
        if _defined_interactively(part):
            raise ValueError(
                f"{name} {getattr(part, '__name__', type(part).__name__)} is defined in this notebook, "
                f"and {method} workers start a fresh Python that cannot import it: move it into a .py "
                f"module and import it from there, or use start_method='fork' where it exists"
            )
        try:
            pickle.Pickler(_Discard(), protocol=pickle.HIGHEST_PROTOCOL).dump(part)
        except Exception as exc:  # pickle raises many types here
            raise ValueError(
                f"{name} cannot be pickled, and {method} workers receive it pickled: {exc}"
            ) from exc


class TracedLoader:
    """A real ``DataLoader`` whose dataset, collate function, worker start and batch hand-outs are
    traced. Iterate it like the loader; :meth:`close` (or leaving a ``with`` block) shuts its
    workers down and makes :attr:`trace`."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int = 1,
        shuffle: bool = False,
        num_workers: int = 0,
        start_method: str | None = None,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        in_order: bool = True,
        pin_memory: bool = False,
        timeout: float = 0.0,
        drop_last: bool = False,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        worker_init_fn: Callable[[int], None] | None = None,
    ) -> None:
        self.start_method = check_settings(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            start_method=start_method,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            timeout=timeout,
            collate_fn=collate_fn,
            worker_init_fn=worker_init_fn,
        )
        self.settings = {
            "dataset": repr(dataset),
            "batch_size": batch_size,
            "shuffle": shuffle,
            "num_workers": num_workers,
            "start_method": self.start_method,
            "prefetch_factor": prefetch_factor if num_workers else None,
            "persistent_workers": persistent_workers,
            "in_order": in_order,
            "pin_memory": pin_memory,
            "timeout": timeout,
            "drop_last": drop_last,
            "collate_fn": getattr(collate_fn, "__name__", repr(collate_fn))
            if collate_fn
            else "default_collate",
        }
        self._log = EventLog()
        self._trace: Trace | None = None
        self._error: BaseException | None = None
        self._before = descendants()
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        start = perf_counter_ns()
        self.dataloader = DataLoader(
            TracedDataset(dataset, self._log),
            batch_sampler=NumberedBatchSampler(BatchSampler(sampler, batch_size, drop_last), self._log),
            num_workers=num_workers,
            collate_fn=TracedCollate(collate_fn or default_collate, self._log),
            pin_memory=pin_memory,
            timeout=timeout,
            worker_init_fn=TracedWorkerInit(self._log, worker_init_fn) if num_workers else worker_init_fn,
            multiprocessing_context=timed_context(self.start_method, self._log)
            if self.start_method
            else None,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            in_order=in_order,
        )
        self._log.record(Kind.LOADER_CREATED, start, perf_counter_ns())
        self._after_construction = tuple(sorted(descendants() - self._before))

    def __len__(self) -> int:
        return len(self.dataloader)

    def worker_processes(self) -> list[int]:
        """PIDs of the processes this loader has started that are running now (its workers)."""
        return sorted(descendants() - self._before)

    def __iter__(self) -> Iterator[Any]:
        if self._trace is not None:
            raise RuntimeError("this TracedLoader is closed; make a new one")
        log = self._log
        start = perf_counter_ns()
        iterator = iter(self.dataloader)
        log.record(Kind.ITER_CALLED, start, perf_counter_ns())
        received = 0
        try:
            while True:
                outstanding = batches_in_flight(iterator)
                start = perf_counter_ns()
                try:
                    batch = next(iterator)
                except BaseException as exc:
                    log.record(Kind.WAIT_ENDED, start, perf_counter_ns(), WaitEnd.of(exc))
                    if isinstance(exc, StopIteration):
                        return
                    raise
                end = perf_counter_ns()
                log.record(Kind.BATCH_RECEIVED, start, end, _number_returned(iterator, outstanding, received))
                received += 1
                yield batch
        except (Exception, KeyboardInterrupt) as exc:
            self._error = exc
            raise
        finally:
            if not self.dataloader.persistent_workers:
                self._shut_down(iterator)
            del iterator
            if self._error is not None:
                # The error's traceback holds PyTorch's frames, and they hold the iterator with its
                # pipes and shared memory: drop their locals so those are freed now, not whenever
                # the error is (IPython keeps the last one). Line numbers stay for the traceback.
                _clear_frames(self._error)

    def _shut_down(self, iterator: Any) -> None:
        start = perf_counter_ns()
        shut_down(iterator)
        self._log.record(Kind.ITER_CLOSED, start, perf_counter_ns())

    def close(self) -> Trace:
        """Shut down any workers, wait for them to end, read every event; return the trace."""
        if self._trace is None:
            try:
                persistent = live_iterator(self.dataloader)
                if self.dataloader.persistent_workers and persistent is not None:
                    self._shut_down(persistent)
                    forget_iterator(self.dataloader)
                leftovers = wait_until_gone(descendants() - self._before, SHUTDOWN_WAIT_S)
                self._trace = Trace.from_records(
                    self._log.read(),
                    main_pid=os.getpid(),
                    start_method=self.start_method,
                    settings=self.settings,
                    processes_after_construction=self._after_construction,
                    leftover_processes=leftovers,
                    error=self._error,
                )
            finally:
                self._log.close()
        return self._trace

    @property
    def trace(self) -> Trace:
        """The trace of everything this loader did; available once it is closed."""
        if self._trace is None:
            raise RuntimeError(
                "the trace is ready once the loader is closed: use `with trace_loader(...) as loader:`"
            )
        return self._trace

    def __enter__(self) -> TracedLoader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._error is None and exc is not None:
            self._error = exc  # raised in the loop's body (a KeyboardInterrupt, say), not by the loader
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_trace", None) is None and hasattr(self, "_log"):
            self._log.close()  # never closed: at least remove the event files


def _number_returned(iterator: Any, outstanding: set[int] | None, received: int) -> int:
    """The number of the batch ``next()`` just returned: the one that left the iterator's
    outstanding batches (with ``in_order=False`` that need not be the next in line). Without
    workers, batches come strictly in order."""
    if outstanding is None:
        return received
    returned = outstanding - (batches_in_flight(iterator) or set())
    return max(returned) if returned else received


def trace_loader(dataset: Dataset, **settings: Any) -> TracedLoader:
    """A traced ``DataLoader`` over ``dataset``; ``settings`` are ``DataLoader``'s keyword
    arguments, with ``start_method`` in place of ``multiprocessing_context``."""
    return TracedLoader(dataset, **settings)


def run_experiment(
    dataset: Dataset,
    *,
    epochs: int = 1,
    max_batches: int | None = None,
    raise_errors: bool = True,
    **settings: Any,
) -> Trace:
    """Iterate a traced loader for ``epochs`` epochs, leaving each after ``max_batches`` batches
    (a ``break``, as in the article) if given, and return the trace.

    With ``raise_errors=False`` an exception from the loader is kept in ``trace.error`` instead.
    """
    if not _is_count(epochs, 1):
        raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}")
    if max_batches is not None and not _is_count(max_batches, 1):
        raise ValueError(f"max_batches must be a whole number >= 1 or None, got {max_batches!r}")
    with trace_loader(dataset, **settings) as loader:
        try:
            for _ in range(epochs):
                _take(loader, max_batches)
        except Exception as exc:
            if raise_errors:
                raise
            # Kept in the trace: free the batches and pipes its finished frames still hold.
            _clear_frames(exc)
    return loader.trace


def _clear_frames(error: BaseException) -> None:
    """Drop the local variables of the finished frames in ``error``'s traceback and in those of the
    errors it was raised from (line numbers stay, for printing it)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        if error.__cause__ is not None and id(error.__cause__) not in seen:
            _clear_frames(error.__cause__)
        error = error.__context__  # type: ignore[assignment]


def _take(loader: TracedLoader, max_batches: int | None) -> None:
    """One epoch, leaving after ``max_batches`` batches (a ``break``) if given."""
    for received, _batch in enumerate(loader, start=1):
        if received == max_batches:
            break
