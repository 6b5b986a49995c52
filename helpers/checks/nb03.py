"""Notebook 03, custom collate: questions, and exercises checked against the reader's own runs."""

from __future__ import annotations

from ..events import Event, Kind, Trace
from . import Exercise, Feedback, Question

__all__ = ["EXERCISES", "QUESTIONS", "collate_seconds_in_main", "steady_interval"]

NO_ANSWER = "No answer yet: set `answer` in the cell and run it again."

QUESTIONS = [
    Question(
        "With num_workers=0, which process runs your collate_fn?",
        [
            "The main process, between the loop's requests",
            "A helper thread of the main process",
            "A single worker process started for it",
            "It is not called without workers",
        ],
        answer="The main process, between the loop's requests",
        why="collate_fn runs where the batch's items are loaded: with num_workers=0 the main process's "
        "iterator fetches the items and calls collate_fn itself, inside next(), so its cost adds to "
        "every step of your loop.",
        hints={
            "A single worker process started for it": "num_workers=0 starts no process at all.",
            "It is not called without workers": "It is: every batch is built by collate_fn, workers or not.",
        },
    ),
    Question(
        "With num_workers=4 and batch_size=2, can one batch hold items loaded by two different workers?",
        [
            "No: one worker loads all of a batch's items and collates them",
            "Yes: each item goes to whichever worker is free",
            "Yes, but only with shuffle=True",
            "Only when in_order=False",
        ],
        answer="No: one worker loads all of a batch's items and collates them",
        why="The main process hands a worker the whole list of indices of one batch; the worker's fetcher "
        "loads every item of it and calls collate_fn on them (the fetch method shown above).",
        hints={
            "Yes: each item goes to whichever worker is free": "Hand-outs are per batch, not per item.",
            "Only when in_order=False": "in_order changes the order batches are returned in, not who builds them.",
        },
    ),
    Question(
        "The article argues that if workers were created when the DataLoader is constructed, they could "
        "not use a custom collate_fn. Why does that not follow?",
        [
            (
                "collate_fn is stored by DataLoader(...) and passed to each worker as an argument of its "
                "Process, whenever that Process is created"
            ),
            "Workers import collate_fn from the notebook when they need it",
            "The main process runs collate_fn and sends the result to the workers",
            "collate_fn can only be set after the workers exist",
        ],
        answer="collate_fn is stored by DataLoader(...) and passed to each worker as an argument of its "
        "Process, whenever that Process is created",
        why="DataLoader(...) keeps collate_fn from construction on; the loop that creates each worker "
        "passes it in the Process's args. A worker created at construction would have received it just "
        "the same. The outcome (collate runs in the workers) holds; the reason given for it does not.",
        hints={
            "The main process runs collate_fn and sends the result to the workers": "With workers, collate "
            "runs in the workers: the traced run shows their PIDs.",
            "Workers import collate_fn from the notebook when they need it": "They receive it pickled, as a "
            "Process argument, when they start.",
        },
    ),
]


def collate_seconds_in_main(trace: Trace) -> float:
    """Seconds the main process spent in ``collate_fn`` during ``trace``."""
    return sum(e.duration for e in trace.of(Kind.COLLATED) if e.pid == trace.main_pid)


def steady_interval(trace: Trace) -> float:
    """The mean time between two batches the loop received once every worker was ready (from the
    second batch after the last one became ready). A mean, not a median: batches from workers that
    run in step arrive in pairs, and the gaps alternate between short and long."""
    ready = max((e.start for e in trace.of(Kind.WORKER_READY)), default=float("-inf"))
    ends = [e.end for e in trace.of(Kind.BATCH_RECEIVED) if e.end > ready][1:]
    return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else float("nan")


def _trace(events: list[Event], main_pid: int = 100, num_workers: int = 2) -> Trace:
    return Trace(
        events=tuple(sorted(events, key=lambda e: e.start)),
        main_pid=main_pid,
        start_method="fork" if num_workers else None,
        settings={"num_workers": num_workers, "batch_size": 2},
    )


def _received_in(order: list[int], step: float = 0.1) -> Trace:
    return _trace(
        [Event(100, -1, Kind.BATCH_RECEIVED, step * i, step * (i + 1), n) for i, n in enumerate(order)]
    )


def _position(answer: int | None, trace: Trace, batch: int = 2) -> Feedback:
    if answer is None:
        return Feedback.of(False, NO_ANSWER)
    order = [e.index for e in trace.of(Kind.BATCH_RECEIVED)]
    if batch not in order:
        return Feedback.of(
            False, f"Batch {batch} was never received in this run (order {order}): run the cell again."
        )
    place = order.index(batch)
    return Feedback.of(
        abs(answer - place) <= 1,
        f"Measured: the loop received the batches in the order {order}, so batch {batch} came at position "
        f"{place} (counting from 0). With in_order=False the loop takes whichever batch is ready; the slow "
        f"batch's worker also holds up the batches queued behind it, while the other worker keeps going. "
        f"(One place either way counts as right: the neighbours depend on timing.)",
    )


def _collate_in_main(
    answer: tuple[float, float] | None, without_workers: Trace, with_workers: Trace
) -> Feedback:
    if answer is None:
        return Feedback.of(False, NO_ANSWER)
    measured = (collate_seconds_in_main(without_workers), collate_seconds_in_main(with_workers))
    close = all(abs(a - m) <= max(0.35 * m, 0.03) for a, m in zip(answer, measured, strict=True))
    batches = len(without_workers.of(Kind.COLLATED))
    return Feedback.of(
        close,
        f"Measured: the main process spent {measured[0]:.2f} s in collate with num_workers=0 ({batches} "
        f"batches) and {measured[1]:.2f} s with num_workers={with_workers.settings.get('num_workers')}: with "
        f"workers, every collate ran in a worker. (Within 35 % or 0.03 s counts as right.)",
    )


def _interval(answer: float | None, trace: Trace) -> Feedback:
    if answer is None:
        return Feedback.of(False, NO_ANSWER)
    measured = steady_interval(trace)
    return Feedback.of(
        abs(answer - measured) <= 0.3 * measured,
        f"Measured: once every worker was ready, a batch arrived every {measured * 1000:.0f} ms on average. "
        f"Each worker needs its items' loading time plus the collate per batch, and "
        f"{trace.settings.get('num_workers')} workers build batches side by side. (Within 30 % counts.)",
    )


def _timed(every: float, batches: int = 8) -> Trace:
    return _trace(
        [Event(100, -1, Kind.BATCH_RECEIVED, every * i, every * (i + 1), i) for i in range(batches)]
    )


def _collating(per_batch: float, batches: int, main: bool) -> Trace:
    pid = 100 if main else 200
    return _trace(
        [
            Event(pid, -1 if main else 0, Kind.COLLATED, i * 0.1, i * 0.1 + per_batch, i)
            for i in range(batches)
        ],
        num_workers=0 if main else 2,
    )


EXERCISES = [
    Exercise(
        "12 items in batches of 2, 2 workers, in_order=False; items 4 and 5 (batch 2) are 6 times slower. "
        "At which position (from 0) does the loop receive batch 2?",
        _position,
        examples=[
            ((4,), {"trace": _received_in([0, 1, 3, 4, 2, 5])}, True),
            ((2,), {"trace": _received_in([0, 1, 3, 4, 5, 2])}, False),
            ((None,), {"trace": _received_in([0, 1, 2])}, False),
        ],
    ),
    Exercise(
        "collate_fn costs 30 ms a batch, 6 batches: how many seconds of collate run in the main process "
        "with num_workers=0, and with num_workers=2?",
        _collate_in_main,
        examples=[
            (
                ((0.18, 0.0),),
                {"without_workers": _collating(0.03, 6, True), "with_workers": _collating(0.03, 6, False)},
                True,
            ),
            (
                ((0.0, 0.18),),
                {"without_workers": _collating(0.03, 6, True), "with_workers": _collating(0.03, 6, False)},
                False,
            ),
        ],
    ),
    Exercise(
        "2 workers; each item takes 20 ms and collate 60 ms per batch of 2. Once the workers run, how "
        "many seconds between two batches does the loop see?",
        _interval,
        examples=[
            ((0.05,), {"trace": _timed(0.05)}, True),
            ((0.1,), {"trace": _timed(0.05)}, False),
        ],
    ),
]
