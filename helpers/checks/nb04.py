"""Notebook 04, start methods: questions, and exercises checked against the reader's runs."""

from __future__ import annotations

import math
from typing import Any

from . import Exercise, Feedback, Question
from ._answers import answered, is_number

__all__ = ["EXERCISES", "QUESTIONS"]

QUESTIONS = [
    Question(
        "A Dataset class defined in a notebook cell: under which start methods can DataLoader "
        "workers load it?",
        ["fork only", "spawn only", "fork and forkserver", "all three"],
        answer="fork only",
        why="A forked worker is a copy of the kernel, class included. spawn and forkserver workers "
        "unpickle the dataset, which means importing its class from its module, and a notebook's "
        "__main__ cannot be imported by a fresh Python.",
        hints={
            "fork and forkserver": "A forkserver worker is forked from the fork server, not from your "
            "kernel: the server never ran your notebook's cells.",
            "all three": "Look at the first_batch runs above: two of them ended with exit code 1.",
        },
    ),
    Question(
        "You train for 10 epochs with num_workers=4 and persistent_workers=True. How many times "
        "are the workers started?",
        [
            "Once, at the first iter()",
            "10 times, once per epoch",
            "40 times",
            "Never: they start at DataLoader()",
        ],
        answer="Once, at the first iter()",
        why="With persistent_workers=True the loader keeps its iterator and its workers between "
        "epochs; each later iter() only resets them. Without it, every iter() starts num_workers new "
        "processes.",
        hints={
            "Never: they start at DataLoader()": "DataLoader() starts no process (claim C1, notebook 01).",
            "10 times, once per epoch": "That is what happens without persistent_workers.",
        },
    ),
    Question(
        "A Linux notebook that defines its Dataset in a cell worked on Python 3.13 and fails on "
        "3.14 with \"Can't get attribute 'MyDataset' on <module '__main__'>\". Why?",
        [
            "Python 3.14 changed Linux's default start method from fork to forkserver",
            "PyTorch dropped support for notebook-defined datasets",
            "Python 3.14 pickles classes by value",
            "The DataLoader now creates workers at construction",
        ],
        answer="Python 3.14 changed Linux's default start method from fork to forkserver",
        why="Under forkserver the worker unpickles the dataset and must import its class, which a "
        "notebook's __main__ cannot provide. Move the class into a module, or pass "
        "multiprocessing_context='fork' explicitly.",
    ),
]


@answered
def _check_fifty_epochs(answer: Any, trace: Any = None) -> Feedback:
    from ..events import Kind

    if trace is None:
        return Feedback.of(False, "Pass the two-epoch run: check(answer, trace=two_epochs).")
    iters = trace.of(Kind.ITER_CALLED)
    received = trace.of(Kind.BATCH_RECEIVED)
    waits = []
    for number, call in enumerate(iters):
        until = iters[number + 1].start if number + 1 < len(iters) else math.inf
        first = next((e for e in received if call.start <= e.end < until), None)
        if first is not None:
            waits.append(first.end - call.start)
    if not waits:
        return Feedback.of(False, "That trace has no epoch that received a batch.")
    if not is_number(answer):
        return Feedback.of(False, "Give a number of seconds.")
    average = sum(waits) / len(waits)
    expected = 50 * average
    close = abs(answer - expected) <= 0.1 * expected + 0.05
    hint = ""
    if not close and abs(answer - average) <= 0.1 * average + 0.01:
        hint = " That is one epoch's wait; the loop runs 50."
    return Feedback.of(
        close,
        f"Each epoch waited {average:.2f} s on average for its first batch, so 50 epochs wait about "
        f"{expected:.0f} s ({expected / 60:.1f} min); persistent_workers=True would pay it once.{hint}",
    )


@answered
def _check_spawn_start_up(answer: Any, trace: Any = None) -> Feedback:
    from ..events import Kind

    if trace is None:
        return Feedback.of(False, "Pass the spawn run: check(answer, trace=traces['spawn']).")
    created = next((e for e in trace.of(Kind.PROCESS_CREATED) if e.worker_id == 0), None)
    ready = next((e for e in trace.of(Kind.WORKER_READY) if e.worker_id == 0), None)
    if created is None or ready is None:
        return Feedback.of(False, "That trace lacks worker 0's creation or its ready event.")
    if not is_number(answer):
        return Feedback.of(False, "Give a number of seconds.")
    expected = ready.start - created.end
    close = abs(answer - expected) <= max(0.01, 0.05 * expected)
    return Feedback.of(
        close,
        f"Worker 0 was created at t = {created.end:.3f} s and ready at t = {ready.start:.3f} s: "
        f"{expected:.2f} s of start-up"
        + ("." if close else ". Subtract the creation's end from the ready event's start."),
    )


@answered
def _check_wasted(answer: Any, trace: Any = None) -> Feedback:
    if trace is None:
        return Feedback.of(False, "Pass the run with the break: check(answer, trace=left).")
    if not (isinstance(answer, int) and not isinstance(answer, bool)):
        return Feedback.of(False, "Give a whole number of batches.")
    wasted = trace.wasted_batches
    return Feedback.of(
        answer == len(wasted),
        f"Built but never received: {len(wasted)} batches"
        + (f" ({', '.join(map(str, wasted))})" if wasted else "")
        + f"; the loop received {trace.batches_received}.",
    )


EXERCISES = [
    Exercise(
        "50 epochs under spawn without persistent_workers: seconds spent waiting for first batches.",
        _check_fifty_epochs,
    ),
    Exercise("Seconds from worker 0's creation to its being ready, under spawn.", _check_spawn_start_up),
    Exercise("Batches built that the loop never received after the break.", _check_wasted),
]


def _examples() -> None:
    """Right and wrong answers for each exercise, against small made-up traces."""
    from ..events import Event, Kind, Trace

    def trace(*events: tuple[int, int, Kind, float, float, int], **fields: Any) -> Trace:
        return Trace(events=tuple(Event(*e) for e in events), main_pid=1, start_method="spawn", **fields)

    epochs = trace(
        (1, -1, Kind.ITER_CALLED, 0.0, 0.01, -1),
        (1, -1, Kind.BATCH_RECEIVED, 0.01, 3.0, 0),
        (1, -1, Kind.ITER_CALLED, 3.5, 3.51, -1),
        (1, -1, Kind.BATCH_RECEIVED, 3.51, 6.5, 0),
    )
    start_up = trace(
        (1, 0, Kind.PROCESS_CREATED, 0.001, 0.011, -1),
        (1, 1, Kind.PROCESS_CREATED, 0.011, 0.02, -1),
        (11, 0, Kind.WORKER_READY, 3.011, 3.011, 0),
        (12, 1, Kind.WORKER_READY, 3.2, 3.2, 1),
    )
    left = trace(
        (1, -1, Kind.ITER_CALLED, 0.0, 0.01, -1),
        (11, 0, Kind.COLLATED, 0.1, 0.1, 0),
        (12, 1, Kind.COLLATED, 0.1, 0.1, 1),
        (1, -1, Kind.BATCH_RECEIVED, 0.01, 0.1, 0),
        (11, 0, Kind.COLLATED, 0.2, 0.2, 2),
    )
    EXERCISES[0].examples = [((150.0,), {"trace": epochs}, True), ((3.0,), {"trace": epochs}, False)]
    EXERCISES[1].examples = [((3.0,), {"trace": start_up}, True), ((3.2,), {"trace": start_up}, False)]
    EXERCISES[2].examples = [((2,), {"trace": left}, True), ((0,), {"trace": left}, False)]


_examples()
