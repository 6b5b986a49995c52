"""Every private attribute of PyTorch's DataLoader and of ``multiprocessing`` that this package
touches, in one place.

PyTorch offers no public way to stop an iterator's workers now, to learn which batches are in
flight, or to tell a worker's id from the arguments of its process; ``multiprocessing`` offers none
to ask for the fork server's PID, or to pickle an object as it is pickled for a new process. What we need of them is here, each behind a function that
degrades to doing nothing (or to ``None``) if a future release renames it. Tested against the
pinned ``torch`` in ``pyproject.toml``.
"""

from __future__ import annotations

import inspect
import multiprocessing.context as _mp_context
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data._utils import worker as _worker

__all__ = [
    "SHUTDOWN_WAIT_S",
    "as_if_spawning",
    "batches_in_flight",
    "forget_iterator",
    "fork_server_pid",
    "live_iterator",
    "show_dataset_to_worker",
    "shut_down",
    "worker_id_of",
    "worker_pids",
]

#: How long to wait for an index queue's feeder thread (PyTorch waits 5 s per worker itself).
SHUTDOWN_WAIT_S = 10.0

_WORKER_LOOP = inspect.signature(_worker._worker_loop)


def shut_down(iterator: Any, wait: float = SHUTDOWN_WAIT_S) -> None:
    """Stop a DataLoader iterator's workers now and wait for the threads that fed them indices.

    PyTorch's own ``_shutdown_workers`` joins the workers but closes the index queues without
    joining their feeder threads, so a thread of the run can outlive it; this joins them (bounded).
    A single-process iterator has nothing to stop."""
    feeders = [q._thread for q in getattr(iterator, "_index_queues", ()) if getattr(q, "_thread", None)]
    stop = getattr(iterator, "_shutdown_workers", None)
    if stop is not None:
        stop()
    for feeder in feeders:
        feeder.join(wait)


def live_iterator(loader: DataLoader) -> Any:
    """The iterator a ``persistent_workers`` loader keeps between epochs, or ``None``."""
    return getattr(loader, "_iterator", None)


def forget_iterator(loader: DataLoader) -> None:
    """Make a persistent loader start new workers at its next ``iter()``."""
    if hasattr(loader, "_iterator"):
        loader._iterator = None


def batches_in_flight(iterator: Any) -> set[int] | None:
    """Numbers of the batches a multi-process iterator has handed out and not yet returned
    (``None`` for a single-process one)."""
    tasks = getattr(iterator, "_task_info", None)
    return set(tasks) if isinstance(tasks, dict) else None


def worker_pids(iterator: Any) -> list[int]:
    """PIDs of a multi-process iterator's worker processes."""
    return [w.pid for w in getattr(iterator, "_workers", ())]


def worker_id_of(target: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> int | None:
    """The DataLoader worker id in the arguments of a process whose ``target`` is PyTorch's
    worker loop, or ``None`` for any other process."""
    if target is not _worker._worker_loop:
        return None
    try:
        return int(_WORKER_LOOP.bind(*args, **kwargs).arguments["worker_id"])
    except (TypeError, KeyError, ValueError):
        return None


def show_dataset_to_worker(dataset: Any) -> None:
    """Make ``get_worker_info().dataset`` in this worker process return ``dataset``: user code run
    in the worker (``worker_init_fn``, an iterable dataset's ``__iter__``) sees its own dataset,
    not the tracer's wrapper around it. ``WorkerInfo`` is frozen, hence ``object.__setattr__``."""
    info = _worker.get_worker_info()
    if info is not None:
        object.__setattr__(info, "dataset", dataset)


def fork_server_pid() -> int | None:
    """The PID of this process's ``multiprocessing`` fork server, if one runs."""
    try:
        from multiprocessing import forkserver
    except ImportError:  # Windows
        return None
    server = getattr(forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


class _DryRunPopen:
    """Stands for a process being started, for :func:`as_if_spawning`: file descriptors and
    handles stay the parent's own (nothing is duplicated or sent)."""

    @staticmethod
    def duplicate_for_child(handle: int) -> int:
        return handle

    @staticmethod
    def DupFd(fd: int) -> int:  # multiprocessing's name
        return fd


@contextmanager
def as_if_spawning() -> Iterator[None]:
    """Within this block, this thread pickles as ``spawn`` and ``forkserver`` do when they send a
    new process its arguments: locks, semaphores, ``Value`` and ``Array`` objects pickle (they refuse
    otherwise), and those made in a ``fork`` context refuse as they would then."""
    previous = _mp_context.get_spawning_popen()
    _mp_context.set_spawning_popen(_DryRunPopen())  # type: ignore[arg-type]
    try:
        yield
    finally:
        _mp_context.set_spawning_popen(previous)
