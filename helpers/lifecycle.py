"""A ``multiprocessing`` context whose worker processes are timed from both sides: the main
process records when it creates each one, and each records its first moment of Python.

Pass :func:`timed_context` as a ``DataLoader``'s ``multiprocessing_context``; PyTorch creates its
workers through it like through any context. A spawned worker imports this module first of all
ours, before PyTorch, so at import it needs nothing but the standard library; the event log and
PyTorch's internals are imported where they are used.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context as mp_context
import os
import sys
import time
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import EventLog

__all__ = ["timed_context"]


class _Now:
    """Unpickles as the clock's reading at that moment. A spawned worker reads its process object
    from a pipe; this comes first in it, before PyTorch and the dataset are imported and unpickled,
    so it marks the new interpreter's first moment of running our code."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return perf_counter_ns, ()


def _rebuild(first_moment: int, cls: type, state: dict[str, Any]) -> Any:
    process = cls.__new__(cls)
    process.__dict__.update(state)
    process._first_moment = first_moment
    return process


class _TimedProcess:
    """Mixed into a start method's ``Process`` class: records ``PROCESS_CREATED`` in the parent
    around ``start()`` and ``PROCESS_RUNNING`` in the child."""

    _trace_log: EventLog | None = None
    _on_fork_server: Any = None
    _first_moment: int | None = None

    def start(self) -> None:
        from .events import Kind
        from .internals import fork_server_pid

        log, worker_id = self._trace_log, self._worker_id()
        server = fork_server_pid()
        begin = perf_counter_ns()
        super().start()  # type: ignore[misc]
        end = perf_counter_ns()
        if log is None or worker_id is None:
            return
        log.record_for(self.pid, worker_id, Kind.PROCESS_CREATED, begin, end)  # type: ignore[attr-defined]
        if self._on_fork_server is not None:
            self._on_fork_server(server, begin, end)

    def run(self) -> None:
        first = self._first_moment or perf_counter_ns()  # fork: run() is the child's first code of ours
        log, worker_id = self._trace_log, self._worker_id()
        if log is not None and worker_id is not None:
            from .events import Kind

            log.writer(worker_id).record(Kind.PROCESS_RUNNING, first, first)
        super().run()  # type: ignore[misc]

    def _worker_id(self) -> int | None:
        from .internals import worker_id_of

        return worker_id_of(self._target, self._args, self._kwargs)  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = dict(self.__dict__, _on_fork_server=None)  # the parent's callback stays in the parent
        return _rebuild, (_Now(), type(self), state)


class _ForkServerRecorder:
    """Puts the fork server on the trace once per loader: started by a ``start()`` call of ours,
    or running since earlier (it lives as long as the kernel)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.done = False

    def __call__(self, before: int | None, begin: int, end: int) -> None:
        from .events import FORK_SERVER_ID, Kind
        from .internals import fork_server_pid

        pid = fork_server_pid()
        if self.done or pid is None:
            return
        self.done = True
        if pid != before:
            self.log.record_for(pid, FORK_SERVER_ID, Kind.FORK_SERVER, begin, end)
            return
        age = _age_ns(pid)
        if age is not None:
            started = perf_counter_ns() - age
            self.log.record_for(pid, FORK_SERVER_ID, Kind.FORK_SERVER, started, started)


def _age_ns(pid: int) -> int | None:
    """How long ago process ``pid`` started: on Linux from ``/proc`` to a clock tick (10 ms), else
    from psutil."""
    try:
        if sys.platform.startswith("linux"):
            ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
            uptime = float(Path("/proc/uptime").read_text().split()[0])
            return int((uptime - ticks / os.sysconf("SC_CLK_TCK")) * 1e9)
        import psutil

        return int((time.time() - psutil.Process(pid).create_time()) * 1e9)
    except (OSError, ValueError, IndexError, ImportError):
        return None


_PROCESS_CLASSES: dict[str, type] = {}
for _name in ("fork", "spawn", "forkserver"):
    _base = getattr(
        mp_context,
        {"fork": "ForkProcess", "spawn": "SpawnProcess", "forkserver": "ForkServerProcess"}[_name],
        None,
    )
    if _base is not None:
        _cls = type(f"Timed{_base.__name__}", (_TimedProcess, _base), {"__module__": __name__})
        _cls.__qualname__ = _cls.__name__
        globals()[_cls.__name__] = _cls  # importable by name: spawned workers unpickle it
        _PROCESS_CLASSES[_name] = _cls


def timed_context(method: str, log: EventLog) -> multiprocessing.context.BaseContext:
    """The ``method`` start method's context, whose DataLoader worker processes record their
    creation and first moment in ``log``.

    >>> from helpers.events import EventLog
    >>> log = EventLog()
    >>> timed_context("spawn", log).get_start_method()
    'spawn'
    >>> log.close()
    """
    base = multiprocessing.get_context(method)
    process_class = _PROCESS_CLASSES[method]
    on_fork_server = _ForkServerRecorder(log) if method == "forkserver" else None

    class TimedContext(type(base)):  # type: ignore[misc]
        def Process(self, *args: Any, **kwargs: Any) -> Any:  # multiprocessing's name
            process = process_class(*args, **kwargs)
            process._trace_log = log
            process._on_fork_server = on_fork_server
            return process

    return TimedContext()
