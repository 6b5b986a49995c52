"""Notebook 01, when workers appear: questions, and exercises checked against the reader's own runs.

Each exercise's check takes the reader's prediction and what their cell measured, and says whether
the prediction matches the measurement, with the numbers that explain it.
"""

from __future__ import annotations

from typing import Any

from ..events import Event, Kind, Trace
from . import Exercise, Feedback, Question

__all__ = ["EXERCISES", "QUESTIONS", "example_trace"]

NO_PREDICTION = "No prediction yet: set `prediction` to your number in the cell and run it again."

QUESTIONS = [
    Question(
        "Right after `loader = DataLoader(dataset, batch_size=2, num_workers=4)` returns, how many "
        "worker processes exist?",
        ["0", "1", "4", "one for each batch"],
        answer="0",
        why="DataLoader(...) only stores its settings. Worker processes are created by iter(loader): it "
        "builds a _MultiProcessingDataLoaderIter, whose __init__ creates and starts every one of them.",
        hints={
            "4": "Not yet: count them right after DataLoader(...), before iter().",
            "1": "No helper process is started by the constructor either.",
            "one for each batch": "Workers are never made per batch: each one loads many batches.",
        },
    ),
    Question(
        "The lines printed by the workers and by the main loop come out mixed together. What does that show?",
        [
            "Workers are created one at a time, as batches are needed",
            "Several workers are loading items at the same time, each building its own batch",
            "The main process loads some items itself",
            "Each batch is split between several workers",
        ],
        answer="Several workers are loading items at the same time, each building its own batch",
        why="Every worker exists from iter() on; each loads a whole batch while the others load theirs, "
        "so their lines mix. When a line appears says when an item finished, not when its process began.",
        hints={
            "Workers are created one at a time, as batches are needed": "That is the article's reading; "
            "the process counts show all of them alive right after iter().",
            "The main process loads some items itself": "With num_workers > 0 the main process loads "
            "nothing; only with num_workers=0 does it.",
            "Each batch is split between several workers": "The trace shows one worker per batch: a batch's "
            "list of indices goes to one worker, which loads and collates all of it.",
        },
    ),
    Question(
        "4 workers, the default prefetch_factor (2), and an epoch of only 5 batches. How many batches "
        "does iter() hand out before your loop asks for one?",
        ["2", "4", "5", "8"],
        answer="5",
        why="iter() tries to hand out num_workers × prefetch_factor = 8 batches (the loop in _reset), but "
        "_try_put_index returns as soon as the sampler has no batch left, after 5.",
        hints={
            "8": "That is how many it tries; count how many batches there are.",
            "4": "One per worker would be prefetch_factor=1.",
            "2": "prefetch_factor is per worker, not in all.",
        },
    ),
]


def example_trace(
    *,
    num_workers: int = 4,
    prefetch_factor: int | None = None,
    batch_size: int = 2,
    batches: int = 5,
    handed_out_first: int = 5,
    received: int = 5,
    items: int = 10,
    collated: int | None = None,
    main_pid: int = 100,
) -> Trace:
    """A made-up trace with the given counts, for the exercises' examples and tests."""
    events = _main_events(main_pid, batches, handed_out_first, received)
    built = received if collated is None else collated
    events += _worker_events(num_workers, items, built)
    events.sort(key=lambda e: e.start)
    settings: dict[str, Any] = {
        "num_workers": num_workers,
        "prefetch_factor": prefetch_factor,
        "batch_size": batch_size,
    }
    return Trace(
        events=tuple(events),
        main_pid=main_pid,
        start_method="fork" if num_workers else None,
        settings=settings,
    )


def _main_events(main_pid: int, batches: int, handed_out_first: int, received: int) -> list[Event]:
    """The main process's events of :func:`example_trace`: iter, batches handed out and received."""
    events: list[Event] = [Event(main_pid, -1, Kind.ITER_CALLED, 0.0, 0.01, -1)]
    events += [
        Event(main_pid, -1, Kind.BATCH_REQUESTED, 0.001 * i, 0.001 * i, i) for i in range(handed_out_first)
    ]
    events += [
        Event(main_pid, -1, Kind.BATCH_RECEIVED, 0.02 + 0.1 * i, 0.1 + 0.1 * i, i) for i in range(received)
    ]
    events += [
        Event(main_pid, -1, Kind.BATCH_REQUESTED, 0.1 + 0.1 * i, 0.1 + 0.1 * i, i)
        for i in range(handed_out_first, batches)
    ]
    return events


def _worker_events(num_workers: int, items: int, built: int) -> list[Event]:
    """The workers' events of :func:`example_trace`: items loaded and batches collated."""
    events = [
        Event(200 + i % max(num_workers, 1), i % max(num_workers, 1), Kind.ITEM_LOADED, 0.05, 0.09, i)
        for i in range(items)
    ]
    events += [
        Event(200 + i % max(num_workers, 1), i % max(num_workers, 1), Kind.COLLATED, 0.09, 0.095, i)
        for i in range(built)
    ]
    return events


def _handed_out(prediction: int | None, trace: Trace) -> Feedback:
    if prediction is None:
        return Feedback.of(False, NO_PREDICTION)
    measured = trace.handed_out_before_first_batch
    workers = trace.settings["num_workers"]
    prefetch = trace.settings.get("prefetch_factor") or 2
    batches = len({e.index for e in trace.of(Kind.BATCH_REQUESTED)})
    return Feedback.of(
        prediction == measured,
        f"Measured: {measured} batches were handed out before the loop received its first. iter() primes "
        f"min(num_workers × prefetch_factor, batches in the epoch) = min({workers} × {prefetch} = "
        f"{workers * prefetch}, {batches}) = {min(workers * prefetch, batches)}.",
    )


def _items_loaded(prediction: int | None, trace: Trace) -> Feedback:
    if prediction is None:
        return Feedback.of(False, NO_PREDICTION)
    loaded = len(trace.of(Kind.ITEM_LOADED))
    received = trace.batches_received
    size = trace.settings.get("batch_size", 1)
    wasted = trace.wasted_batches
    return Feedback.of(
        prediction == loaded,
        f"Measured: the workers loaded {loaded} items. The loop took {received} batches "
        f"({received * size} items), but iter() had already handed out "
        f"{trace.handed_out_before_first_batch} batches, and workers finish the batch they are loading "
        f"when the loop leaves: {len(wasted)} batch(es) were built and never received {wasted}.",
    )


def _workers_for_one_batch(prediction: int | None, alive: int, batches: int, num_workers: int) -> Feedback:
    if prediction is None:
        return Feedback.of(False, NO_PREDICTION)
    return Feedback.of(
        prediction == alive,
        f"Measured: {alive} worker processes existed right after iter(), for an epoch of {batches} "
        f"batch(es) with num_workers={num_workers}. iter() starts every worker at once, including those "
        f"that will never get a batch: nothing is created 'as needed'.",
    )


EXERCISES = [
    Exercise(
        "3 workers, prefetch_factor=2, 16 items in batches of 2: how many batches are handed out before "
        "the loop receives its first?",
        _handed_out,
        examples=[
            (
                (6,),
                {"trace": example_trace(num_workers=3, prefetch_factor=2, batches=8, handed_out_first=6)},
                True,
            ),
            (
                (8,),
                {"trace": example_trace(num_workers=3, prefetch_factor=2, batches=8, handed_out_first=6)},
                False,
            ),
            (
                (None,),
                {"trace": example_trace(num_workers=3, prefetch_factor=2, batches=8, handed_out_first=6)},
                False,
            ),
        ],
    ),
    Exercise(
        "10 items in batches of 2, 4 workers, and the loop leaves after 2 batches: how many items do the "
        "workers load in all?",
        _items_loaded,
        examples=[
            ((10,), {"trace": example_trace(received=2, items=10, collated=5)}, True),
            ((4,), {"trace": example_trace(received=2, items=10, collated=5)}, False),
        ],
    ),
    Exercise(
        "A dataset of 2 items, batch_size=2 (one batch), num_workers=3: how many worker processes exist "
        "right after iter() returns?",
        _workers_for_one_batch,
        examples=[
            ((3,), {"alive": 3, "batches": 1, "num_workers": 3}, True),
            ((1,), {"alive": 3, "batches": 1, "num_workers": 3}, False),
        ],
    ),
]
