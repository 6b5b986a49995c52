"""Notebook 06, the claims measured: questions, and exercises that read the evidence of a verdict."""

from __future__ import annotations

from typing import Any

from . import Exercise, Feedback, Question
from ._answers import answered, is_number

__all__ = ["EXERCISES", "QUESTIONS"]

QUESTIONS = [
    Question(
        "A colleague on a Mac reads this table, measured on your Linux laptop, and concludes "
        "'workers never copy my array'. Which row should make them rerun the notebook first?",
        ["C1", "C2", "C3", "C5"],
        answer="C3",
        why="C3's verdict depends on the start method: forked workers share the array's pages, while "
        "spawned ones (the Mac's default) each unpickle a copy of their own. Notebook 02 measures both.",
        hints={
            "C1": "C1 (no process at DataLoader()) is the same under every start method.",
            "C5": "Where collate_fn runs does not depend on the start method.",
        },
    ),
    Question(
        "Which sentence sums up what creating workers at iter() rather than at DataLoader() does?",
        [
            "It moves the cost of starting workers from DataLoader() to every iter()",
            "It stops workers from copying the dataset",
            "It is what lets collate_fn run in the workers",
            "It makes forked workers safe to use CUDA",
        ],
        answer="It moves the cost of starting workers from DataLoader() to every iter()",
        why="A loader that is never iterated costs nothing, and each iter() pays the start-up (C6). "
        "The copy depends on the start method (C3), collate_fn is an argument of each worker (C5), "
        "and CUDA is already initialised when iter() runs (C4).",
    ),
]


@answered
def _check_handed_out(answer: Any, trace: Any = None) -> Feedback:
    if trace is None:
        return Feedback.of(False, "Pass the article's run: check(answer, trace=trace).")
    if not (isinstance(answer, int) and not isinstance(answer, bool)):
        return Feedback.of(False, "Give a whole number of batches.")
    expected = trace.handed_out_before_first_batch
    workers = trace.settings.get("num_workers")
    hint = ""
    if answer != expected and workers and answer == workers * 2:
        hint = " That is num_workers × prefetch_factor; can there be that many batches?"
    return Feedback.of(
        answer == expected,
        f"The trace counts {expected} batches handed out before the first was received.{hint}",
    )


@answered
def _check_private_growth(answer: Any, report: Any = None, baseline: Any = None) -> Feedback:
    if report is None or baseline is None:
        return Feedback.of(False, "Pass both measurements: check(answer, report=report, baseline=baseline).")
    if not is_number(answer):
        return Feedback.of(False, "Give a number of MiB.")
    expected = (report.worker_uss - baseline.worker_uss) / 2**20
    close = abs(answer - expected) <= max(1.0, 0.05 * abs(expected))
    growth = (
        f"grew by {expected:.1f} MiB"
        if expected >= 1
        else f"did not grow (it changed by {expected:+.1f} MiB: the workers share the array's pages)"
    )
    return Feedback.of(
        close,
        f"Each worker's USS {growth} for the array under {report.start_method}"
        + ("." if close else "; subtract the baseline's worker_uss and divide by 2**20."),
    )


@answered
def _check_collating_workers(answer: Any, trace: Any = None) -> Feedback:
    from ..events import Kind

    if trace is None:
        return Feedback.of(False, "Pass the 4-worker run: check(answer, trace=in_workers).")
    pids = {e.pid for e in trace.of(Kind.COLLATED) if e.pid != trace.main_pid}
    return Feedback.of(
        answer == len(pids),
        f"collate_fn ran in {len(pids)} worker processes ({', '.join(map(str, sorted(pids)))}).",
    )


EXERCISES = [
    Exercise("Batches handed out before the first was received, in the article's run.", _check_handed_out),
    Exercise("MiB of private memory each worker added for the 64 MiB array.", _check_private_growth),
    Exercise("How many worker processes ran collate_fn in the 4-worker run.", _check_collating_workers),
]


def _examples() -> None:
    """Right and wrong answers for each exercise, on small made-up measurements."""
    from types import SimpleNamespace

    from ..events import Event, Kind, Trace

    run = Trace(
        events=(
            Event(1, -1, Kind.ITER_CALLED, 0.0, 0.01, -1),
            *(Event(1, -1, Kind.BATCH_REQUESTED, 0.005, 0.005, n) for n in range(5)),
            *(Event(10 + n, n, Kind.COLLATED, 0.2, 0.21, n) for n in range(4)),
            Event(1, -1, Kind.BATCH_RECEIVED, 0.01, 0.3, 0),
        ),
        main_pid=1,
        start_method="fork",
        settings={"num_workers": 4},
    )
    report = SimpleNamespace(worker_uss=200 * 2**20, start_method="spawn")
    baseline = SimpleNamespace(worker_uss=136 * 2**20, start_method="spawn")
    EXERCISES[0].examples = [((5,), {"trace": run}, True), ((8,), {"trace": run}, False)]
    EXERCISES[1].examples = [
        ((64.0,), {"report": report, "baseline": baseline}, True),
        ((200.0,), {"report": report, "baseline": baseline}, False),
    ]
    EXERCISES[2].examples = [((4,), {"trace": run}, True), ((1,), {"trace": run}, False)]


_examples()
