"""The measurements behind the verdicts in :mod:`helpers.claims`: plain ``DataLoader`` runs that
count processes, threads and parents, a script run in a fresh Python, and what a trace says about
each epoch.

Each function starts what it measures and leaves nothing running when it returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from torch.utils.data import DataLoader, Dataset

from .events import Event, Kind, Trace
from .experiment import trace_loader
from .internals import shut_down
from .memory import MemoryReport
from .system import descendants, private_shm_command, wait_until_gone

__all__ = [
    "EpochCost",
    "ProcessCounts",
    "ScriptRun",
    "count_processes",
    "describe_error",
    "epoch_costs",
    "first_batch_with",
    "most_at_once",
    "private_growth",
    "run_script",
    "threads_added_by_pin_memory",
    "worker_parents",
]


@contextmanager
def _iterating(loader: DataLoader) -> Iterator[Any]:
    """``iter(loader)``; on leaving, its workers are shut down with the threads that fed them
    indices, and waited for. Should ``iter()`` itself raise (a worker that died at once), PyTorch
    stops the workers it had started when its half-made iterator is freed."""
    before = descendants()
    iterator = None
    try:
        iterator = iter(loader)
        yield iterator
    finally:
        if iterator is not None:
            shut_down(iterator)
        del iterator
        wait_until_gone(descendants() - before)


@dataclass(frozen=True)
class ProcessCounts:
    """New child processes of this kernel at each step of a plain, untraced ``DataLoader``."""

    num_workers: int
    start_method: str | None
    after_construction: int
    after_iter: int
    after_first_batch: int
    after_close: int


def count_processes(dataset: Dataset, **loader_kwargs: Any) -> ProcessCounts:
    """Build a real ``DataLoader``, take one batch, close it, and count new child processes
    (recursively, since forkserver workers are children of the fork server) after each step.

    >>> from helpers.datasets import SleepDataset
    >>> count_processes(SleepDataset(size=4, delay=0.0), batch_size=2)  # no workers: none start
    ProcessCounts(num_workers=0, start_method=None, after_construction=0, after_iter=0, after_first_batch=0, after_close=0)
    """
    before = descendants()

    def new() -> int:
        return len(descendants() - before)

    loader = DataLoader(dataset, **loader_kwargs)
    after_construction = new()
    with _iterating(loader) as iterator:
        after_iter = new()
        next(iterator)
        after_first_batch = new()
    context = loader.multiprocessing_context
    return ProcessCounts(
        num_workers=loader.num_workers,
        start_method=context.get_start_method() if context is not None else None,
        after_construction=after_construction,
        after_iter=after_iter,
        after_first_batch=after_first_batch,
        after_close=new(),
    )


def describe_error(error: BaseException) -> str:
    """``error`` in one line: its type, the last line of its message (for an error a worker
    raised, the worker's own line, not the type again) and, where it was raised from another,
    that one's message, which tells a worker killed by a signal from one that exited.

    >>> describe_error(ValueError("Caught ValueError in DataLoader worker process 0.\\n"
    ...                           "Original Traceback (most recent call last): ...\\n"
    ...                           "ValueError: item 0 is corrupt\\n"))
    'ValueError: item 0 is corrupt'
    >>> died = RuntimeError("DataLoader worker (pid(s) 7) exited unexpectedly")
    >>> died.__cause__ = RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed.")
    >>> describe_error(died)
    'RuntimeError: DataLoader worker (pid(s) 7) exited unexpectedly (DataLoader worker (pid 7) is killed by signal: Killed.)'
    """
    name = type(error).__name__
    lines = str(error).strip().splitlines() or [""]
    text = lines[-1].removeprefix(f"{name}: ")
    cause = str(error.__cause__ or "").strip()
    return f"{name}: {text}" + (f" ({cause.splitlines()[-1]})" if cause else "")


def first_batch_with(dataset: Dataset, start_method: str, num_workers: int = 1, timeout: float = 0.0) -> str:
    """Take one batch from a plain ``DataLoader``; return ``"ok"`` or the error it raised, in one
    line (:func:`describe_error`). A worker that dies is noticed by PyTorch's own check (every
    5 s); ``timeout`` also bounds the wait for one that hangs.

    >>> import multiprocessing
    >>> from helpers.datasets import FaultyDataset
    >>> first_batch_with(FaultyDataset(size=2, fail_on=(0,)), multiprocessing.get_start_method())
    'ValueError: item 0 is corrupt'
    """
    loader = DataLoader(
        dataset, num_workers=num_workers, multiprocessing_context=start_method, timeout=timeout
    )
    try:
        with _iterating(loader) as iterator:
            next(iterator)
    except Exception as exc:  # noqa: BLE001 - whatever the loader raised is the answer
        traceback.clear_frames(exc.__traceback__)  # its frames hold the iterator and its pipes
        return describe_error(exc)
    return "ok"


def most_at_once(events: list[Event]) -> int:
    """The largest number of the events that were in progress at one moment.

    >>> def item(start, end):
    ...     return Event(pid=1, worker_id=0, kind=Kind.ITEM_LOADED, start=start, end=end, index=0)
    >>> most_at_once([item(0.0, 1.0), item(0.5, 1.5), item(1.2, 2.0)])
    2
    """
    edges = sorted([(e.start, 1) for e in events] + [(e.end, -1) for e in events])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def private_growth(report: MemoryReport, baseline: MemoryReport) -> float:
    """How much more private memory (USS) the median worker holds in ``report`` than in
    ``baseline``, a run of the same kind with almost no data: the part the data costs each worker."""
    return report.worker_uss - baseline.worker_uss


@dataclass(frozen=True)
class EpochCost:
    """What one ``iter()`` of a loader cost, in seconds, and how many worker processes it started."""

    epoch: int
    iter_s: float  #: ``iter(loader)`` from call to return
    first_batch_s: float  #: from calling ``iter()`` to receiving the first batch
    workers_started: int  #: worker processes created (``Process.start()``) during the epoch


def epoch_costs(trace: Trace) -> list[EpochCost]:
    """One :class:`EpochCost` per ``iter()`` in the trace.

    >>> from helpers.datasets import SleepDataset
    >>> from helpers.experiment import run_experiment
    >>> trace = run_experiment(SleepDataset(size=4, delay=0.0), epochs=2, batch_size=2, num_workers=2)
    >>> [cost.workers_started for cost in epoch_costs(trace)]  # not persistent: new workers each time
    [2, 2]
    """
    iters = trace.of(Kind.ITER_CALLED)
    bounds = [e.start for e in iters[1:]] + [float("inf")]
    costs = []
    for number, (call, until) in enumerate(zip(iters, bounds, strict=True), start=1):
        received = [e for e in trace.of(Kind.BATCH_RECEIVED) if call.start <= e.end < until]
        created = [e for e in trace.of(Kind.PROCESS_CREATED) if call.start <= e.start < until]
        first_batch = (received[0].end - call.start) if received else float("nan")
        costs.append(EpochCost(number, call.duration, first_batch, len(created)))
    return costs


def threads_added_by_pin_memory(dataset: Dataset, num_workers: int = 2) -> list[str]:
    """Names of the threads this kernel runs while a loader with ``pin_memory=True`` delivers its
    first batch, that the same loader without it does not run."""

    def threads_at_first_batch(pin_memory: bool) -> dict[int | None, str]:
        with trace_loader(dataset, batch_size=2, num_workers=num_workers, pin_memory=pin_memory) as loader:
            running = {}
            for _ in loader:
                running = {t.ident: t.name for t in threading.enumerate()}
                break
        return running

    without = threads_at_first_batch(False)
    return sorted(name for ident, name in threads_at_first_batch(True).items() if ident not in without)


def _who(parent: psutil.Process) -> str:
    """What a worker's parent process is, in words."""
    if parent.pid == os.getpid():
        return "this kernel"
    return "the fork server" if "forkserver" in " ".join(parent.cmdline()) else parent.name()


def worker_parents(dataset: Dataset, start_method: str, num_workers: int = 2) -> list[tuple[int, int, str]]:
    """``(worker pid, parent pid, what the parent is)`` for each worker of a running loader."""
    found = []
    with trace_loader(
        dataset, num_workers=num_workers, start_method=start_method, persistent_workers=True
    ) as loader:
        for _ in loader:
            pass
        for pid in loader.worker_processes():
            parent = psutil.Process(pid).parent()
            if parent is not None:
                found.append((pid, parent.pid, _who(parent)))
    return found


@dataclass(frozen=True)
class ScriptRun:
    """What a Python script printed and how it ended."""

    returncode: int
    output: str

    def tail(self, lines: int = 6) -> str:
        """The last ``lines`` lines of the output."""
        return "\n".join(self.output.strip().splitlines()[-lines:])


def run_script(source: str, timeout: float = 120.0, shm_mib: int | None = None) -> ScriptRun:
    """Run ``source`` as a script in a fresh Python (this kernel's interpreter), in a temporary
    directory; ``timeout`` bounds it. Use it to show what happens outside a notebook. With
    ``shm_mib`` the script gets a private ``/dev/shm`` of that size
    (:func:`~helpers.system.private_shm_command`).

    >>> run_script('''
    ...     import sys
    ...     print("hello from", "a script" if __name__ == "__main__" else "an import")
    ...     sys.exit(3)
    ... ''')
    ScriptRun(returncode=3, output='hello from a script\\n')
    """
    with tempfile.TemporaryDirectory(prefix="dataloader-script-") as folder:
        script = Path(folder) / "train.py"
        script.write_text(textwrap.dedent(source))
        command = [sys.executable, str(script)]
        if shm_mib is not None:
            command = private_shm_command(shm_mib, *command)
        try:
            done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return ScriptRun(-1, out + f"\n(stopped after {timeout:.0f} s)")
    return ScriptRun(done.returncode, done.stdout + done.stderr)
