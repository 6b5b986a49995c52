"""How much memory each process of a running ``DataLoader`` holds, and how much of it is its own.

psutil's ``memory_full_info`` gives, per process, **RSS** (every page it has mapped, shared or
not), **USS** (pages only it holds: what it would free on exit) and, on Linux, **PSS** (its own
pages plus a fair share of each shared page). A worker that shares a parent's array through fork
shows it in RSS but not in USS; a worker holding its own copy shows it in USS.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, replace

import psutil
from torch.utils.data import Dataset

from .events import Trace
from .experiment import trace_loader
from .system import MIB

__all__ = ["MemoryReport", "ProcessMemory", "measure_memory"]


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory, in bytes. ``pss`` is ``None`` where the OS does not report it."""

    role: str
    pid: int
    rss: int
    uss: int
    pss: int | None

    @classmethod
    def of(cls, role: str, pid: int) -> ProcessMemory:
        """Measure process ``pid`` now.

        >>> import os
        >>> me = ProcessMemory.of("main", os.getpid())
        >>> 0 < me.uss <= me.rss
        True
        """
        info = psutil.Process(pid).memory_full_info()
        return cls(role, pid, info.rss, info.uss, getattr(info, "pss", None))


@dataclass(frozen=True)
class MemoryReport:
    """Memory of the main process and each worker, taken after the workers read the whole dataset."""

    dataset: str
    data_bytes: int | None  #: the dataset's ``nbytes``, where it has one
    start_method: str
    main: ProcessMemory
    workers: tuple[ProcessMemory, ...]
    trace: Trace

    @property
    def worker_uss(self) -> float:
        """The median worker's private memory (USS), in bytes."""
        return statistics.median(w.uss for w in self.workers)

    @property
    def worker_rss(self) -> float:
        """The median worker's resident memory (RSS), shared pages included, in bytes."""
        return statistics.median(w.rss for w in self.workers)

    @property
    def total_pss(self) -> int | None:
        """Main plus workers, each shared page counted once: what they cost the machine together."""
        values = [p.pss for p in (self.main, *self.workers)]
        return None if None in values else sum(values)  # type: ignore[arg-type]

    def table(self) -> str:
        """The numbers as text, in MiB."""
        lines = [
            f"{self.dataset}, start method {self.start_method}",
            f"{'process':>10} {'pid':>8} {'RSS':>8} {'USS':>8} {'PSS':>8}   (MiB)",
        ]
        for p in (self.main, *self.workers):
            pss = "n/a" if p.pss is None else f"{p.pss / MIB:.0f}"
            lines.append(f"{p.role:>10} {p.pid:>8} {p.rss / MIB:>8.0f} {p.uss / MIB:>8.0f} {pss:>8}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def measure_memory(
    dataset: Dataset, *, start_method: str | None = None, num_workers: int = 2, batch_size: int = 1
) -> MemoryReport:
    """Run one epoch over ``dataset`` with persistent workers, so that together they read all of
    it; then, while they are still alive, measure the main process and every worker.

    >>> from helpers.datasets import ArrayDataset
    >>> report = measure_memory(ArrayDataset.of_mib(8), num_workers=2)
    >>> [worker.role for worker in report.workers], report.data_bytes // MIB
    (['worker 0', 'worker 1'], 8)
    """
    with trace_loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        start_method=start_method,
        persistent_workers=True,
    ) as loader:
        for _ in loader:
            pass
        main = ProcessMemory.of("main", os.getpid())
        measured = [ProcessMemory.of("worker", pid) for pid in loader.worker_processes()]
    ids = loader.trace.worker_pids
    workers = tuple(
        sorted(
            (replace(m, role=f"worker {ids[m.pid]}") for m in measured if m.pid in ids),
            key=lambda m: ids[m.pid],
        )
    )
    return MemoryReport(
        repr(dataset),
        getattr(dataset, "nbytes", None),
        loader.start_method or "none",
        main,
        workers,
        loader.trace,
    )
