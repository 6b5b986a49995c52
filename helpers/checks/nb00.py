"""Notebook 00, start here: questions, and exercises checked against the reader's machine and run."""

from __future__ import annotations

import math
import os
from typing import Any

from . import Exercise, Feedback, Question
from ._answers import answered, is_number

__all__ = ["EXERCISES", "QUESTIONS"]

QUESTIONS = [
    Question(
        "In the pipeline picture, what travels through a worker's index queue?",
        [
            "Batches of dataset indices, such as [7, 2]",
            "The items the worker loaded",
            "The finished batches of tensors",
            "The whole dataset, once per batch",
        ],
        answer="Batches of dataset indices, such as [7, 2]",
        why="The sampler runs in the main process and sends each worker only the indices of the "
        "batches it should build; the worker's copy of the dataset does the loading, and finished "
        "batches come back through the one result queue.",
        hints={
            "The finished batches of tensors": "Those travel the other way, through the result queue.",
            "The whole dataset, once per batch": "A worker gets its copy of the dataset once, when it "
            "starts (notebook 02 measures what that copy costs).",
        },
    ),
    Question(
        "On a swimlane chart, what does t = 0 mark?",
        [
            "The moment DataLoader(...) was constructed",
            "The moment iter(loader) was called",
            "The moment the first worker was ready",
            "The moment the first batch arrived",
        ],
        answer="The moment iter(loader) was called",
        why="Every time on the chart is in seconds since iter(loader) was called; DataLoader(...) ran "
        "just before, at a small negative time.",
    ),
    Question(
        "Set num_workers to 0 in the panel. Which lanes does the chart draw?",
        [
            "Only the main process's lane",
            "One lane per CPU",
            "The main lane and one idle worker lane",
            "No lanes: nothing runs",
        ],
        answer="Only the main process's lane",
        why="With num_workers=0 no process is started: the main process loads every item and runs "
        "collate_fn itself, between the loop's requests.",
    ),
]


def _usable_cpus() -> int:
    from ..system import cpu_quota

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota()
    return usable if quota is None else max(1, min(usable, math.ceil(quota)))


@answered
def _check_cpus(answer: Any, expected: int | None = None) -> Feedback:
    expected = _usable_cpus() if expected is None else expected
    if not (isinstance(answer, int) and not isinstance(answer, bool)):
        return Feedback.of(False, "Give a whole number of CPUs.")
    hint = ""
    if answer != expected and answer == os.cpu_count():
        hint = " That is os.cpu_count(), the host's CPUs, not what this kernel may use."
    return Feedback.of(
        answer == expected, f"Workers here can compute on {expected} CPU(s) at the same moment.{hint}"
    )


@answered
def _check_first_batch(answer: Any, trace: Any = None) -> Feedback:
    from ..events import Kind

    if trace is None:
        return Feedback.of(False, "Pass the first chart's trace: check(answer, trace=trace).")
    first = trace.first(Kind.BATCH_RECEIVED)
    if first is None:
        return Feedback.of(False, "That run received no batch.")
    if not is_number(answer):
        return Feedback.of(False, "Give a number of seconds.")
    close = abs(answer - first.end) <= max(0.02, 0.1 * first.end)
    return Feedback.of(
        close,
        f"The first batch arrived {first.end:.2f} s after iter()"
        + ("." if close else "; read the black 'received' mark on the main lane against the time axis."),
    )


@answered
def _check_builder(answer: Any, trace: Any = None, batch: int = 1) -> Feedback:
    if trace is None:
        return Feedback.of(False, "Pass the first chart's trace: check(answer, trace=trace).")
    builders = {number: worker for number, worker, _pid, _items in trace.batches()}
    if batch not in builders:
        return Feedback.of(False, f"That run built no batch {batch}.")
    items = next(items for number, _w, _p, items in trace.batches() if number == batch)
    return Feedback.of(
        answer == builders[batch],
        f"Batch {batch} (items {items}) was built by worker {builders[batch]}, on its lane.",
    )


EXERCISES = [
    Exercise("How many CPUs can this kernel's workers compute on at once?", _check_cpus),
    Exercise("Seconds after iter() at which the first batch arrived.", _check_first_batch),
    Exercise("The worker id that built batch 1.", _check_builder),
]


def _examples() -> None:
    """Right and wrong answers for each exercise, on this machine and on a small made-up trace."""
    from ..events import Event, Kind, Trace

    run = Trace(
        events=(
            Event(1, -1, Kind.ITER_CALLED, 0.0, 0.01, -1),
            Event(11, 0, Kind.ITEM_LOADED, 0.1, 0.15, 0),
            Event(11, 0, Kind.COLLATED, 0.15, 0.16, 0),
            Event(12, 1, Kind.ITEM_LOADED, 0.1, 0.15, 1),
            Event(12, 1, Kind.COLLATED, 0.15, 0.16, 1),
            Event(1, -1, Kind.BATCH_RECEIVED, 0.01, 0.2, 0),
        ),
        main_pid=1,
        start_method="fork",
    )
    cpus = _usable_cpus()
    EXERCISES[0].examples = [((cpus,), {}, True), ((cpus + 1,), {}, False)]
    EXERCISES[1].examples = [((0.2,), {"trace": run}, True), ((0.5,), {"trace": run}, False)]
    EXERCISES[2].examples = [((1,), {"trace": run}, True), ((0,), {"trace": run}, False)]


_examples()
