"""Trace any ``DataLoader``: build a traced one from ``DataLoader``'s own arguments
(:func:`trace_loader`) or from an existing loader (:func:`trace`), run it, and get a
:class:`~helpers.events.Trace`.

A traced loader is a real ``DataLoader`` built from the same parts (dataset, sampler or batch
sampler, collate function, worker init function, generator, ...), each wrapped so that it records
what it does. It yields the same batches and raises the same errors as the plain one. Every
argument is checked before any process starts: PyTorch's own checks run first, with a clearer
message added where this package has one.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import pickle
import reprlib
import sys
import traceback
import types
import weakref
from collections.abc import Callable, Iterable
from multiprocessing.reduction import ForkingPickler
from time import perf_counter_ns
from typing import Any

import psutil
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Sampler

from .events import EventLog, Kind, Trace, WaitEnd
from .internals import (
    SHUTDOWN_WAIT_S,
    as_if_spawning,
    batches_in_flight,
    forget_iterator,
    live_iterator,
    shut_down,
    worker_pids,
)
from .lifecycle import timed_context
from .system import descendants, wait_until_gone
from .tracing import (
    NumberedSampler,
    TracedCollate,
    TracedDataset,
    TracedIterableDataset,
    TracedWorkerInit,
    tag_iterable_batches,
)

__all__ = ["TracedLoader", "check_settings", "run_experiment", "trace", "trace_loader"]

_DATALOADER = inspect.signature(DataLoader)


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _count_problem(arguments: dict[str, Any]) -> str | None:
    """What is wrong with the loader's numbers, in words, or ``None``."""
    workers, batch_size = arguments["num_workers"], arguments["batch_size"]
    if not _is_count(workers, 0):
        return f"num_workers must be a whole number >= 0 (0 loads in the main process), got {workers!r}"
    if batch_size is not None and not _is_count(batch_size, 1):
        return f"batch_size must be a whole number >= 1 (or None: no batching), got {batch_size!r}"
    prefetch = arguments["prefetch_factor"]
    if prefetch is not None and workers == 0:
        return "prefetch_factor only applies with workers: set num_workers > 0 or prefetch_factor=None"
    if prefetch is not None and not _is_count(prefetch, 1):
        return f"prefetch_factor must be a whole number >= 1, got {prefetch!r}"
    timeout = arguments["timeout"]
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        return f"timeout must be a number of seconds >= 0, got {timeout!r}"
    return None


def _problem(arguments: dict[str, Any]) -> str | None:
    """What is wrong with ``DataLoader`` arguments, in words, or ``None``."""
    problem = _count_problem(arguments)
    if problem is not None:
        return problem
    context, methods = arguments["multiprocessing_context"], multiprocessing.get_all_start_methods()
    if isinstance(context, str) and context not in methods:
        return f"unknown start method {context!r}; this machine offers {', '.join(methods)}"
    if arguments["persistent_workers"] and arguments["num_workers"] == 0:
        return "persistent_workers=True needs workers: set num_workers > 0"
    for name in ("collate_fn", "worker_init_fn"):
        if arguments[name] is not None and not callable(arguments[name]):
            return f"{name} must be callable, got {arguments[name]!r}"
    return None


def _checked_loader(*args: Any, start_method: str | None = None, **kwargs: Any) -> DataLoader:
    """``DataLoader(*args, **kwargs)`` (``start_method``: another name for
    ``multiprocessing_context``), raising before any process starts if a worker could not get
    its parts. PyTorch's errors are raised as they are, with this package's words added where it
    has a clearer message; it refuses a few more values (a fractional ``num_workers``, say)."""
    try:
        bound = _DATALOADER.bind(*args, **kwargs)
    except TypeError:
        DataLoader(*args, **kwargs)  # raises Python's own TypeError for these arguments
        raise
    bound.apply_defaults()
    arguments = bound.arguments
    if start_method is not None:
        if arguments["multiprocessing_context"] not in (None, start_method):
            raise ValueError("start_method is another name for multiprocessing_context: give one of them")
        arguments["multiprocessing_context"] = start_method
    try:
        loader = DataLoader(**arguments)
    except (TypeError, ValueError) as exc:
        problem = _problem(arguments)
        if problem is None:
            raise
        raise type(exc)(f"{problem} (PyTorch: {exc})") from exc
    problem = _problem(arguments)
    if problem is not None:
        raise ValueError(problem)
    _check_parts(loader)
    return loader


def _start_method(loader: DataLoader) -> str | None:
    """The start method ``loader``'s workers get (``None`` without workers), fixing nothing."""
    if not loader.num_workers:
        return None
    context = loader.multiprocessing_context
    if context is not None:
        return str(context.get_start_method())
    return multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]


class _Discard:
    """A file that forgets what is written to it: pickling into it only checks that pickling works."""

    def write(self, data: bytes | pickle.PickleBuffer) -> int:
        return memoryview(data).nbytes


class _Interactive(Exception):
    """A class or function a new Python process cannot import."""


def _defined_interactively(obj: type | types.FunctionType) -> bool:
    """True for a class or function of ``__main__`` that is not in the main script's file (a
    notebook cell, a REPL): spawned workers re-run the main *script* to find ``__main__``
    objects, so they cannot find these."""
    if getattr(obj, "__module__", None) != "__main__":
        return False
    functions = [obj] if inspect.isfunction(obj) else [f for f in vars(obj).values() if inspect.isfunction(f)]
    source = functions[0].__code__.co_filename if functions else None
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    return main_file is None or source is None or os.path.realpath(source) != os.path.realpath(main_file)


class _SpawnPickler(ForkingPickler):
    """Pickles as a new process's arguments are pickled, refusing what it could not import."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)) and _defined_interactively(obj):
            raise _Interactive(obj)
        return NotImplemented


def _check_parts(loader: DataLoader) -> None:
    """Raise ``ValueError`` if ``spawn`` or ``forkserver`` workers could not receive the parts of
    ``loader`` they are sent pickled: what PyTorch would fail on inside ``iter()``."""
    method = _start_method(loader)
    if method in (None, "fork"):
        return
    parts = {
        "dataset": loader.dataset,
        "collate_fn": loader.collate_fn,
        "worker_init_fn": loader.worker_init_fn,
    }
    for name, part in parts.items():
        try:
            with as_if_spawning():
                _SpawnPickler(_Discard(), pickle.HIGHEST_PROTOCOL).dump(part)
        except _Interactive as exc:
            where = exc.args[0]
            raise ValueError(
                f"{name}: {where.__qualname__} is defined in this notebook, and {method} workers start "
                f"a fresh Python that cannot import it: move it into a .py module and import it from "
                f"there, or use start_method='fork' where it exists"
            ) from None
        except Exception as exc:  # pickle raises many types here
            raise ValueError(
                f"{name} cannot be pickled, and {method} workers receive it pickled: {exc}"
            ) from exc


def check_settings(dataset: Dataset, *args: Any, **kwargs: Any) -> str | None:
    """Check :func:`trace_loader`'s arguments without starting any process: raise what building the
    loader would raise (``ValueError`` naming the first bad setting); return the start method
    workers will use (``None`` without workers).

    >>> check_settings([1, 2, 3], batch_size=2, num_workers=2, start_method="spawn")
    'spawn'
    """
    return _start_method(_checked_loader(dataset, *args, **kwargs))


def _context(loader: DataLoader, log: EventLog) -> tuple[Any, tuple[str, ...]]:
    """The multiprocessing context for the traced copy of ``loader``, and what it cannot record. A
    standard context is replaced by one that times worker creation; the caller's own kind of
    context is kept as it is."""
    method = _start_method(loader)
    if method is None:
        return None, ()
    given = loader.multiprocessing_context
    if given is None or type(given) is type(multiprocessing.get_context(method)):
        return timed_context(method, log), ()
    note = (
        f"multiprocessing_context is the caller's own {type(given).__name__}, kept as it is: worker "
        f"processes' creation and first moments (process_created, process_running) were not recorded"
    )
    return given, (note,)


def _traced_copy(loader: DataLoader, log: EventLog, context: Any) -> DataLoader:
    """A ``DataLoader`` like ``loader`` (same parts, same settings) whose parts record events."""
    workers = loader.num_workers
    common: dict[str, Any] = {
        "num_workers": workers,
        "collate_fn": TracedCollate(loader.collate_fn, log),
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": TracedWorkerInit(log, loader.worker_init_fn) if workers else loader.worker_init_fn,
        "multiprocessing_context": context,
        "generator": loader.generator,
        "prefetch_factor": loader.prefetch_factor,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
        "in_order": loader.in_order,
    }
    if isinstance(loader.dataset, IterableDataset):
        dataset = TracedIterableDataset(loader.dataset, log)
        traced = DataLoader(dataset, batch_size=loader.batch_size, drop_last=loader.drop_last, **common)
        tag_iterable_batches(traced, log)
        return traced
    if loader.batch_sampler is not None:
        numbered: Any = NumberedSampler(loader.batch_sampler, log)
        return DataLoader(TracedDataset(loader.dataset, log), batch_sampler=numbered, **common)
    numbered = NumberedSampler(loader.sampler, log)
    return DataLoader(TracedDataset(loader.dataset, log), batch_size=None, sampler=numbered, **common)


_REPR = reprlib.Repr()  # a dataset that is a list of a million items is shown by its first few
_REPR.maxother = _REPR.maxstring = 200


def _name(part: object) -> str:
    """A function's name; an object's repr where its class gives it one (``SlowCollate(ms=5)``),
    else its class's name."""
    name = getattr(part, "__qualname__", None)
    if name is not None:
        return name
    has_repr = type(part).__repr__ is not object.__repr__
    return repr(part) if has_repr else type(part).__qualname__


def _settings(loader: DataLoader, method: str | None) -> dict[str, Any]:
    """``loader``'s settings, as the trace reports them."""
    sampler: Any = loader.sampler
    return {
        "dataset": _REPR.repr(loader.dataset),
        "batch_size": loader.batch_size,
        "shuffle": isinstance(sampler, RandomSampler),
        "sampler": _name(sampler),
        "batch_sampler": _name(loader.batch_sampler) if loader.batch_sampler is not None else None,
        "num_workers": loader.num_workers,
        "start_method": method,
        "prefetch_factor": loader.prefetch_factor,
        "persistent_workers": loader.persistent_workers,
        "in_order": loader.in_order,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "drop_last": loader.drop_last,
        "collate_fn": _name(loader.collate_fn),
        "generator": loader.generator is not None,
    }


class TracedIterator:
    """What ``iter()`` of a :class:`TracedLoader` returns: PyTorch's own iterator, each ``next()``
    recorded. Errors pass through as PyTorch raises them, and ``next()`` after a caught error goes
    on as PyTorch's does. Other attributes are PyTorch's iterator's."""

    __slots__ = ("__weakref__", "_done", "_failed", "_iterator", "_owner", "_received")

    def __init__(self, owner: TracedLoader, iterator: Any) -> None:
        self._owner = owner
        self._iterator = iterator
        self._received = 0
        self._failed: BaseException | None = None
        self._done = False

    def __iter__(self) -> TracedIterator:
        return self

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_iterator"), name)

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        log, iterator = self._owner._log, self._iterator
        outstanding = batches_in_flight(iterator)
        start = perf_counter_ns()
        try:
            batch = next(iterator)
        except BaseException as exc:
            log.record(Kind.WAIT_ENDED, start, perf_counter_ns(), WaitEnd.of(exc))
            self._ended(exc)
            raise
        log.record(
            Kind.BATCH_RECEIVED,
            start,
            perf_counter_ns(),
            _number_returned(iterator, outstanding, self._received),
        )
        self._received += 1
        if self._failed is not None:  # the loop went on past an error: it did not end the loop
            self._owner._forget_error(self._failed)
            self._failed = None
        return batch

    def _ended(self, exc: BaseException) -> None:
        if isinstance(exc, StopIteration):
            if self._failed is not None:
                self._owner._forget_error(self._failed)
            self.finish()
            return
        # The error's traceback holds PyTorch's frames, and they hold the iterator with its pipes and
        # shared memory: drop their locals so those can be freed (line numbers stay).
        _clear_frames(exc)
        self._failed = exc
        self._owner._error = exc

    def finish(self) -> None:
        """Stop this iterator's workers now (unless the loader keeps them: ``persistent_workers``)
        and record it; later ``next()`` calls raise ``StopIteration``."""
        if getattr(self, "_done", True):
            return
        self._done = True
        if not self._owner.dataloader.persistent_workers:
            self._owner._shut_down(self._iterator)
        self._iterator = None

    def __del__(self) -> None:
        self.finish()  # a `break` drops the iterator: its workers stop now, as PyTorch's would


class TracedLoader:
    """A real ``DataLoader`` like ``loader`` whose dataset, sampler, collate function and worker
    start are traced. Iterate it like the loader; :meth:`close` (or leaving a ``with`` block) shuts
    down every iterator it made and its workers, and makes :attr:`trace`. ``loader`` is not changed;
    its public attributes (``dataset``, ``batch_size``, ``sampler``, ...) are this one's."""

    def __init__(self, loader: DataLoader) -> None:
        self.source = loader
        self.start_method = _start_method(loader)
        self.settings = _settings(loader, self.start_method)
        self._log = EventLog()
        self._iterators: weakref.WeakSet[TracedIterator] = weakref.WeakSet()
        self._trace: Trace | None = None
        self._error: BaseException | None = None
        self._before = descendants()
        self._workers: set[int] = set()  # every worker process an iterator of this loader started
        context, self._notes = _context(loader, self._log)
        start = perf_counter_ns()
        self.dataloader = _traced_copy(loader, self._log, context)
        self._log.record(Kind.LOADER_CREATED, start, perf_counter_ns())
        self._after_construction = tuple(sorted(descendants() - self._before))

    def __getattr__(self, name: str) -> Any:
        source = self.__dict__.get("source")
        if name.startswith("_") or source is None:
            raise AttributeError(name)
        return getattr(source, name)

    def __len__(self) -> int:
        return len(self.dataloader)

    def worker_processes(self) -> list[int]:
        """PIDs of the processes this loader has started that are running now: its workers, and
        any process they started."""
        started = descendants() - self._before
        return sorted(pid for pid in started if pid in self._workers or _ancestors(pid) & self._workers)

    def __iter__(self) -> TracedIterator:
        if self._trace is not None:
            raise RuntimeError("this TracedLoader is closed; make a new one")
        start = perf_counter_ns()
        iterator = iter(self.dataloader)
        self._log.record(Kind.ITER_CALLED, start, perf_counter_ns())
        self._workers.update(worker_pids(iterator))
        traced = TracedIterator(self, iterator)
        self._iterators.add(traced)
        return traced

    def _shut_down(self, iterator: Any) -> None:
        if self._trace is not None:
            return  # closed: the log is gone, and close() shut everything down
        start = perf_counter_ns()
        shut_down(iterator)
        self._log.record(Kind.ITER_CLOSED, start, perf_counter_ns())

    def _forget_error(self, error: BaseException) -> None:
        if self._error is error:
            self._error = None

    def close(self) -> Trace:
        """Shut down every iterator and worker, wait for them to end, read every event; return the
        trace."""
        if self._trace is None:
            try:
                for iterator in list(self._iterators):
                    iterator.finish()
                persistent = live_iterator(self.dataloader)
                if persistent is not None:
                    self._shut_down(persistent)
                    forget_iterator(self.dataloader)
                leftovers = wait_until_gone(self.worker_processes(), SHUTDOWN_WAIT_S)
                events, by_batch = self._log.read_events()
                self._trace = Trace(
                    events,
                    main_pid=os.getpid(),
                    start_method=self.start_method,
                    settings=self.settings,
                    processes_after_construction=self._after_construction,
                    leftover_processes=leftovers,
                    error=self._error,
                    notes=self._notes + _by_batch_note(by_batch),
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

    def __enter__(self) -> TracedLoader:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._error = exc  # what left the `with` block (a KeyboardInterrupt, say) ended the run
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_trace", None) is None and hasattr(self, "_log"):
            self._log.close()  # never closed: at least remove the event files


def _by_batch_note(items: int) -> tuple[str, ...]:
    if not items:
        return ()
    note = (
        f"{items} items loaded in under 5 µs each on average were timed a batch at a time: each has "
        f"an even share of its batch's time"
    )
    return (note,)


def _ancestors(pid: int) -> set[int]:
    """PIDs of the processes above ``pid`` (none if it has ended)."""
    try:
        return {parent.pid for parent in psutil.Process(pid).parents()}
    except psutil.Error:
        return set()


def _number_returned(iterator: Any, outstanding: set[int] | None, received: int) -> int:
    """The number of the batch ``next()`` just returned: the one that left the iterator's
    outstanding batches (with ``in_order=False`` that need not be the next in line). Without
    workers, batches come strictly in order."""
    if outstanding is None:
        return received
    returned = outstanding - (batches_in_flight(iterator) or set())
    return max(returned) if returned else received


def trace_loader(
    dataset: Dataset,
    batch_size: int | None = 1,
    shuffle: bool | None = None,
    sampler: Sampler | Iterable | None = None,
    batch_sampler: Sampler[list] | Iterable[list] | None = None,
    num_workers: int = 0,
    collate_fn: Callable[[Any], Any] | None = None,
    pin_memory: bool = False,
    drop_last: bool = False,
    timeout: float = 0,
    worker_init_fn: Callable[[int], None] | None = None,
    multiprocessing_context: Any = None,
    generator: Any = None,
    *,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    pin_memory_device: str = "",
    in_order: bool = True,
    start_method: str | None = None,
) -> TracedLoader:
    """A traced ``DataLoader``: the arguments are ``DataLoader``'s, in its order, with its
    meaning and errors; ``start_method`` is another name for ``multiprocessing_context``.

    >>> with trace_loader(list(range(6)), 4) as loader:
    ...     [batch.tolist() for batch in loader]
    [[0, 1, 2, 3], [4, 5]]
    >>> loader.trace.batches_received
    2
    """
    arguments = dict(locals())  # the parameters, as given
    return TracedLoader(_checked_loader(**arguments))


def trace(loader: DataLoader) -> TracedLoader:
    """A traced copy of an existing ``loader`` (which is not changed): same dataset, sampler or
    batch sampler, collate function, workers and settings, so the same batches.

    >>> from torch.utils.data import DataLoader
    >>> with trace(DataLoader(list(range(6)), batch_size=4)) as traced:
    ...     [batch.tolist() for batch in traced]
    [[0, 1, 2, 3], [4, 5]]
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(f"trace() takes a DataLoader, got {type(loader).__name__}")
    _check_parts(loader)
    return TracedLoader(loader)


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
