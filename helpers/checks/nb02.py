"""Notebook 02, memory and large arrays: questions, and exercises checked against the reader's runs."""

from __future__ import annotations

from ..memory import MemoryReport, ProcessMemory
from . import Exercise, Feedback, Question
from .nb01 import example_trace

__all__ = ["EXERCISES", "QUESTIONS", "example_report"]

MIB = 2**20
NO_ANSWER = "No answer yet: set `answer` to your number in the cell and run it again."

QUESTIONS = [
    Question(
        "A dataset builds its array in __init__ and prints 'array built'. With num_workers=4 under spawn, "
        "how many times is 'array built' printed?",
        ["Once, in the kernel", "4 times, once in each worker", "5 times", "It depends on prefetch_factor"],
        answer="Once, in the kernel",
        why="A spawned worker unpickles the dataset: pickle restores the object's attributes, the array "
        "included, without calling __init__. So the print cannot tell you how many copies of the array "
        "exist; memory measurements can.",
        hints={
            "4 times, once in each worker": "Each worker does get its own copy, but not by running __init__.",
            "5 times": "__init__ runs only where you call the constructor.",
        },
    ),
    Question(
        "A forked worker's RSS includes the 128 MiB array, but its USS does not. What does that mean?",
        [
            "The worker maps the kernel's pages of the array, shared with it",
            "The worker holds a private copy of the array",
            "The worker never touched the array",
            "psutil cannot see memory of forked processes",
        ],
        answer="The worker maps the kernel's pages of the array, shared with it",
        why="RSS counts every page a process maps; USS only the pages no other process maps. An array in "
        "RSS but not in USS is shared (fork's copy-on-write), not copied.",
        hints={
            "The worker holds a private copy of the array": "A private copy would show in USS.",
            "The worker never touched the array": "After a fork the worker maps the kernel's pages whether "
            "it reads them or not; RSS shows them.",
        },
    ),
    Question(
        "On a Mac (spawn), a dataset holds a 500 MB NumPy array and the loader has num_workers=4. Roughly "
        "how much memory do the copies of the array take?",
        ["0.5 GB", "1 GB", "2 GB", "2.5 GB"],
        answer="2.5 GB",
        why="One array in the kernel and one unpickled copy in each of the 4 spawned workers: 5 × 500 MB. "
        "Creating the workers later would not change it; fork (where it is safe), or a memory-mapped file "
        "that each worker opens (np.load(..., mmap_mode='r')), would.",
        hints={
            "0.5 GB": "That would be fork sharing one copy; spawn pickles the dataset to every worker.",
            "2 GB": "Count the kernel's own array too.",
        },
    ),
]


def example_report(
    worker_uss_mib: float, workers: int = 3, data_mib: float = 64, start_method: str = "spawn"
) -> MemoryReport:
    """A made-up report of ``workers`` workers holding ``worker_uss_mib`` MiB each, for examples."""
    main = ProcessMemory("main", 100, 400 * MIB, 300 * MIB, 320 * MIB)
    each = int(worker_uss_mib * MIB)
    return MemoryReport(
        dataset="ArrayDataset(example)",
        data_bytes=int(data_mib * MIB),
        start_method=start_method,
        main=main,
        workers=tuple(
            ProcessMemory(f"worker {i}", 200 + i, each + 50 * MIB, each, each + 10 * MIB)
            for i in range(workers)
        ),
        trace=example_trace(num_workers=workers),
    )


def _total_uss(answer: float | None, report: MemoryReport) -> Feedback:
    if answer is None:
        return Feedback.of(False, NO_ANSWER)
    total = sum(w.uss for w in report.workers) / MIB
    data = (report.data_bytes or 0) / MIB
    return Feedback.of(
        abs(answer - total) <= 0.1 * total,
        f"Measured: the {len(report.workers)} {report.start_method} workers hold {total:.0f} MiB of private memory "
        f"together, {total / len(report.workers):.0f} MiB each: their own Python and PyTorch plus a "
        f"{data:.0f} MiB copy of the array each. (Within 10 % counts as right.)",
    )


def _copy_on_read(answer: float | None, growth: float | None) -> Feedback:
    if growth is None:
        return Feedback.of(False, "fork is not available on this machine, so there is nothing to measure.")
    if answer is None:
        return Feedback.of(False, NO_ANSWER)
    measured = growth / MIB
    return Feedback.of(
        measured / 1.5 <= answer <= measured * 1.5,
        f"Measured: each worker's USS grew by {measured:.1f} MiB while reading half of the list: every page "
        f"holding an object it touched became its own, because touching an object writes its reference "
        f"count. (Within a factor of 1.5 counts as right.)",
    )


def _workers_that_fit(answer: int | None, limit: int, kernel: float, worker: float) -> Feedback:
    if answer is None:
        return Feedback.of(False, NO_ANSWER)
    fit = int((limit - kernel) // worker)
    return Feedback.of(
        answer == fit,
        f"(limit − kernel USS) // worker USS = ({limit / MIB:.0f} − {kernel / MIB:.0f}) // {worker / MIB:.0f} "
        f"= {fit} workers.",
    )


EXERCISES = [
    Exercise(
        "Predict the total private memory (USS) of 2 spawn workers whose dataset holds a 64 MiB array.",
        _total_uss,
        examples=[
            ((428,), {"report": example_report(214, workers=2)}, True),
            ((214,), {"report": example_report(214, workers=2)}, False),
            ((None,), {"report": example_report(214, workers=2)}, False),
        ],
    ),
    Exercise(
        "Under fork, by how many MiB does each worker's USS grow when it reads half of a 32 MiB list of floats?",
        _copy_on_read,
        examples=[
            ((16,), {"growth": 16 * MIB}, True),
            ((0,), {"growth": 16 * MIB}, False),
            ((16,), {"growth": None}, False),
        ],
    ),
    Exercise(
        "How many spawn workers holding the 128 MiB array fit beside the kernel in its memory limit?",
        _workers_that_fit,
        examples=[
            ((5,), {"limit": 2048 * MIB, "kernel": 400 * MIB, "worker": 275 * MIB}, True),
            ((6,), {"limit": 2048 * MIB, "kernel": 400 * MIB, "worker": 275 * MIB}, False),
        ],
    ),
]
