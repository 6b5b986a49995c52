"""Notebook 05, when things go wrong: questions, and exercises checked against the reader's runs."""

from __future__ import annotations

import math
from typing import Any

from . import Exercise, Feedback, Question
from ._answers import answered, is_number

__all__ = ["EXERCISES", "QUESTIONS"]

QUESTIONS = [
    Question(
        "Your loop stops with 'DataLoader worker (pid(s) 4242) exited unexpectedly'. The error it "
        "was raised from reads 'DataLoader worker (pid 4242) is killed by signal: Killed.' What "
        "most likely happened?",
        [
            "__getitem__ raised an exception in worker 4242",
            "Something sent the worker SIGKILL: often the out-of-memory killer",
            "The worker could not import or unpickle the dataset while starting",
            "The loader's timeout ran out",
        ],
        answer="Something sent the worker SIGKILL: often the out-of-memory killer",
        why="'Killed by signal' means the process was ended from outside; it ran no more code, so "
        "there is no traceback. An exception in __getitem__ comes back as its own type with the "
        "worker's traceback; a worker that fails while starting ends with 'exit code 1'; a timeout "
        "says 'DataLoader timed out after … seconds'.",
        hints={
            "__getitem__ raised an exception in worker 4242": "An exception is caught by the worker and "
            "sent back with its type and traceback, as in the first run of this notebook.",
            "The worker could not import or unpickle the dataset while starting": "That worker ends by "
            "itself, with exit code 1, as in the 'fails while starting' run.",
            "The loader's timeout ran out": "A timeout is not a death: its message is 'DataLoader timed out'.",
        },
    ),
    Question(
        "Under spawn your workers take 3 s to start, and you set timeout=1. What happens?",
        [
            "Nothing: timeout only counts once the workers are ready",
            "The first next() raises 'DataLoader timed out after 1 seconds'",
            "PyTorch kills each worker that takes longer than 1 s to start",
            "The loader silently retries until the workers are ready",
        ],
        answer="The first next() raises 'DataLoader timed out after 1 seconds'",
        why="timeout bounds every wait on the result queue, and the first next() waits through the "
        "workers' start-up; nothing in PyTorch waits for them to be ready first.",
        hints={
            "Nothing: timeout only counts once the workers are ready": "Look at _get_data above: it "
            "waits on the queue from the moment next() is called.",
        },
    ),
    Question(
        "Why does this series' tracer keep every event a killed worker recorded?",
        [
            "The main process asks each worker for its events before it ends",
            "Each event is written straight into a memory-mapped file in shared memory",
            "Events go through a multiprocessing.Queue, which is never lost",
            "PyTorch sends a dying worker's events to the main process",
        ],
        answer="Each event is written straight into a memory-mapped file in shared memory",
        why="A record is complete and readable by the main process the moment it is written: no "
        "buffer, no feeder thread, no lock that a kill could interrupt.",
        hints={
            "Events go through a multiprocessing.Queue, which is never lost": "A Queue hands each event "
            "to a feeder thread; a process killed before that thread wrote it loses it.",
        },
    ),
]


@answered
def _check_items_before_kill(answer: Any, trace: Any = None) -> Feedback:
    from ..events import Kind

    if trace is None or trace.error is None:
        return Feedback.of(False, "Pass the killed run's trace: check(answer, trace=killed).")
    if not (isinstance(answer, int) and not isinstance(answer, bool)):
        return Feedback.of(False, "Give a whole number of items.")
    text = " ".join(str(e) for e in (trace.error, trace.error.__cause__) if e is not None)
    victims = [pid for pid in trace.worker_pids if str(pid) in text]
    if not victims:
        return Feedback.of(False, "This trace's error names no worker.")
    items = sorted(e.index for e in trace.of(Kind.ITEM_LOADED) if e.pid == victims[0])
    hint = ""
    if answer != len(items) and answer == len(items) + 1:
        hint = " The item that killed it never finished, so it has no event."
    return Feedback.of(
        answer == len(items),
        f"The killed worker (pid {victims[0]}) finished {len(items)} items, {items}, before it died; "
        f"the event log kept every one.{hint}",
    )


@answered
def _check_smallest_timeout(answer: Any, trace: Any = None) -> Feedback:
    from ..events import Kind

    if trace is None:
        return Feedback.of(False, "Run the slow loader without a timeout and pass its trace: trace=untimed.")
    if trace.settings.get("timeout"):
        return Feedback.of(False, "That run had a timeout itself; run it without one.")
    waits = [e.duration for e in trace.of(Kind.BATCH_RECEIVED)]
    if not waits:
        return Feedback.of(False, "That trace received no batch.")
    if not is_number(answer):
        return Feedback.of(False, "Give a number of seconds.")
    longest = max(waits)
    first = waits[0]
    close = longest <= answer <= longest * 1.15 + 0.05
    where = "the first batch (it waited for the workers to start)" if first == longest else "a later batch"
    if answer < longest:
        return Feedback.of(
            False,
            f"With {answer} s the loop would give up: the longest wait was {longest:.2f} s, for {where}.",
        )
    return Feedback.of(
        close,
        f"The longest next() in this run waited {longest:.2f} s, for {where}"
        + (
            "; any timeout at least that long lets this run finish."
            if close
            else f"; {answer} s works, but it is not the smallest."
        ),
    )


@answered
def _check_shm_mib(answer: Any) -> Feedback:
    batches = min(4 * 2, math.ceil(1000 / 16))
    expected = batches * 16 * 3 * 224 * 224 * 4 / 2**20
    if not is_number(answer):
        return Feedback.of(False, "Give a number of MiB.")
    close = abs(answer - expected) <= 0.5
    hint = ""
    if not close and abs(answer - expected / batches) <= 0.5:
        hint = " That is one batch; how many are in flight at once?"
    return Feedback.of(
        close,
        f"{batches} batches in flight × {expected / batches:.1f} MiB = {expected:.1f} MiB, "
        f"{'more' if expected > 64 else 'less'} than a 64 MiB /dev/shm.{hint}",
    )


EXERCISES = [
    Exercise(
        "From the killed run, how many items did the killed worker finish before it died?",
        _check_items_before_kill,
        examples=[],  # filled in below, from a made-up trace
    ),
    Exercise(
        "The smallest timeout (s) with which the slow loader finishes, from a run without a timeout.",
        _check_smallest_timeout,
        examples=[],
    ),
    Exercise(
        "MiB of /dev/shm that the batches in flight need: 16 images of 3x224x224 float32, 4 workers, "
        "prefetch_factor 2, 1000 items.",
        _check_shm_mib,
        examples=[((73.5,), {}, True), ((9.2,), {}, False), ((64,), {}, False)],
    ),
]


def _examples() -> None:
    """Right and wrong answers for the exercises that check against a trace, on made-up traces."""
    from ..events import Event, Kind, Trace, WaitEnd

    error = RuntimeError("DataLoader worker (pid(s) 11) exited unexpectedly")
    error.__cause__ = RuntimeError("DataLoader worker (pid 11) is killed by signal: Killed.")
    killed = Trace(
        events=(
            Event(1, -1, Kind.ITER_CALLED, 0.0, 0.01, -1),
            Event(11, 0, Kind.ITEM_LOADED, 0.1, 0.2, 4),
            Event(12, 1, Kind.ITEM_LOADED, 0.1, 0.2, 2),
            Event(1, -1, Kind.WAIT_ENDED, 0.15, 0.23, int(WaitEnd.WORKER_DIED)),
        ),
        main_pid=1,
        start_method="fork",
        error=error,
    )
    untimed = Trace(
        events=(
            Event(1, -1, Kind.ITER_CALLED, 0.0, 0.01, -1),
            Event(1, -1, Kind.BATCH_RECEIVED, 0.01, 0.3, 0),
            Event(1, -1, Kind.BATCH_RECEIVED, 0.3, 2.3, 1),
            Event(1, -1, Kind.BATCH_RECEIVED, 2.3, 2.4, 2),
        ),
        main_pid=1,
        start_method="fork",
        settings={"timeout": 0.0},
    )
    EXERCISES[0].examples = [((1,), {"trace": killed}, True), ((2,), {"trace": killed}, False)]
    EXERCISES[1].examples = [
        ((2.0,), {"trace": untimed}, True),
        ((0.5,), {"trace": untimed}, False),
        ((10,), {"trace": untimed}, False),
    ]


_examples()
