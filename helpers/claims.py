"""Verdicts on the article's claims, worded from what :mod:`helpers.measurements` measured.

A verdict's text is computed from numbers measured in this kernel, never typed in, so it stays
true on Linux (fork, or forkserver from Python 3.14), macOS and Windows (spawn) and Binder. A
verdict has two parts: whether what the claim predicts happens here (its :class:`Outcome`), and,
where a measurement can tell, whether it happens for the reason the article gives.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from .events import Kind, Trace
from .measurements import ProcessCounts, epoch_costs, first_batch_with, most_at_once, private_growth
from .memory import MemoryReport
from .system import MIB

__all__ = [
    "Outcome",
    "Verdict",
    "VerdictTable",
    "summary_table",
    "verdict_c1",
    "verdict_c2",
    "verdict_c3",
    "verdict_c4",
    "verdict_c5",
    "verdict_c6",
    "verdict_c7",
]


class Outcome(enum.Enum):
    """Whether what a claim predicts happened on this machine."""

    HOLDS = "holds"
    PARTLY = "holds only in part"  #: in some of the cases the claim covers, not in all
    FAILS = "does not hold"
    NOT_MEASURED = "not measured"  #: this machine cannot run the experiment (say, no GPU)

    @property
    def mark(self) -> str:
        """An emoji for the outcome, as the notebooks show it."""
        return {"holds": "✅", "holds only in part": "⚠️", "does not hold": "❌", "not measured": "⏭️"}[
            self.value
        ]

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Verdict:
    """What a measurement says about one claim of the article.

    >>> v = Verdict("C9", "workers are cheap.", Outcome.HOLDS, "each took 2 MiB.", reason_holds=False)
    >>> print(v)
    C9 HOLDS here, but not for the article's reason. Claim: workers are cheap.
    Measured: each took 2 MiB.
    """

    claim: str
    statement: str
    outcome: Outcome
    evidence: str
    #: whether it happens for the reason the article gives; ``None`` where that is not judged
    reason_holds: bool | None = None

    @property
    def measured(self) -> bool:
        """False where this machine could not run the experiment (say, no GPU)."""
        return self.outcome is not Outcome.NOT_MEASURED

    @property
    def reason(self) -> str:
        """The second part of the verdict, in words ("" where it is not judged)."""
        if self.reason_holds is None or self.outcome is Outcome.NOT_MEASURED:
            return ""
        return "for the article's reason" if self.reason_holds else "not for the article's reason"

    def __str__(self) -> str:
        reason = f", but {self.reason}" if self.reason_holds is False else ""
        return (
            f"{self.claim} {str(self.outcome).upper()} here{reason}. Claim: {self.statement}\n"
            f"Measured: {self.evidence}"
        )

    def _repr_markdown_(self) -> str:
        reason = f", but {self.reason}" if self.reason_holds is False else ""
        return (
            f"**{self.claim} {self.outcome.mark} {self.outcome} on this machine{reason}.** "
            f"*Claim:* {self.statement}<br>*Measured:* {self.evidence}"
        )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class VerdictTable:
    """Verdicts shown as one table (Markdown in a notebook, text elsewhere)."""

    verdicts: tuple[Verdict, ...]

    def __str__(self) -> str:
        return "\n".join(
            f"{v.claim}: {v.outcome}{f' ({v.reason})' if v.reason else ''} - {v.statement}"
            for v in self.verdicts
        )

    def _repr_markdown_(self) -> str:
        rows = [
            "| claim | the article says | on this machine | the article's reason | what was measured |",
            "|---|---|---|---|---|",
        ]
        for v in self.verdicts:
            reason = {None: "not judged", True: "holds", False: "does not hold"}[v.reason_holds]
            rows.append(
                f"| {v.claim} | {_cell(v.statement)} | **{v.outcome}** | {reason} | {_cell(v.evidence)} |"
            )
        return "\n".join(rows)


def summary_table(verdicts: list[Verdict]) -> VerdictTable:
    """The verdicts, sorted by claim, as one table.

    >>> print(summary_table([Verdict("C2", "b.", Outcome.FAILS, "..."), Verdict("C1", "a.", Outcome.HOLDS, "...")]))
    C1: holds - a.
    C2: does not hold - b.
    """
    return VerdictTable(tuple(sorted(verdicts, key=lambda v: v.claim)))


def _holds(measured_true: bool) -> Outcome:
    return Outcome.HOLDS if measured_true else Outcome.FAILS


def verdict_c1(counts: ProcessCounts) -> Verdict:
    """C1: no worker exists once ``DataLoader(...)`` returns."""
    return Verdict(
        "C1",
        "no worker process exists after DataLoader(...) returns.",
        _holds(counts.after_construction == 0),
        f"{counts.after_construction} new processes right after DataLoader(num_workers={counts.num_workers}) "
        f"returned; {counts.after_iter} right after iter(loader) returned.",
    )


def verdict_c2(counts: ProcessCounts, trace: Trace) -> Verdict:
    """C2 holds only if workers appear one by one as batches are needed, not all inside ``iter()``."""
    iter_called, first_batch = trace.first(Kind.ITER_CALLED), trace.first(Kind.BATCH_RECEIVED)
    asked = first_batch.start if first_batch is not None else float("inf")  # the loop's first next()
    handed_out = sum(1 for e in trace.of(Kind.BATCH_REQUESTED) if e.start < asked)
    all_at_iter = counts.num_workers > 0 and counts.after_iter == counts.num_workers
    iter_ms = (iter_called.duration * 1000) if iter_called else float("nan")
    return Verdict(
        "C2",
        'workers are created "only as needed" while the loop runs, interleaved with batches.',
        _holds(not all_at_iter),
        f"all {counts.after_iter} of {counts.num_workers} worker processes existed as soon as iter() returned "
        f"(before the first next()); iter() took {iter_ms:.0f} ms in the traced run and had already handed out "
        f"{handed_out} batches (num_workers × prefetch_factor, at most the number of "
        f"batches) before the loop asked for its first one.",
    )


def verdict_c7(counts: ProcessCounts, trace: Trace) -> Verdict:
    """Interleaved output proves on-demand creation only if the workers did not all exist at
    ``iter()``; what it does reflect is workers loading whole batches in parallel."""
    on_demand = counts.num_workers > 0 and counts.after_iter < counts.num_workers
    builders = {e.index: e.pid for e in trace.of(Kind.COLLATED)}
    received = [e.index for e in trace.of(Kind.BATCH_RECEIVED)]
    return Verdict(
        "C7",
        "interlaced prints from workers and main prove that workers are created on demand.",
        _holds(on_demand),
        f"up to {most_at_once(trace.of(Kind.ITEM_LOADED))} items were loading at the same moment, in different "
        f"workers (that is what interlaces the output); each of the {len(builders)} batches was built whole by "
        f"one worker ({len(set(builders.values()))} workers took turns); the loop received batches in the order "
        f"{received}; and all {counts.after_iter} of {counts.num_workers} worker processes existed right after "
        f"iter() returned.",
    )


def _creation_order(report: MemoryReport) -> str:
    created = report.trace.first(Kind.LOADER_CREATED)
    started = report.trace.first(Kind.PROCESS_CREATED)
    if created is None or started is None:
        return "the array was built first"
    return (
        f"the array was built before DataLoader() (t = {created.start:.3f} s) and the workers started "
        f"after it, at t = {started.start:.3f} s"
    )


def verdict_c3(report: MemoryReport, baseline: MemoryReport) -> Verdict:
    """Does each worker hold its own copy of the dataset's array? And is lazy creation the reason
    it does not? ``baseline`` is the same run with almost no data."""
    data = report.data_bytes or 0
    growth = private_growth(report, baseline)
    copies = growth / data if data else 0.0
    statement = (
        "lazy creation is what keeps workers from inheriting duplicated copies of a large NumPy array."
    )
    method, order = report.start_method, _creation_order(report)
    if copies >= 0.5:
        evidence = (
            f"under {method}, each worker's private memory (USS) grew by {growth / MIB:.0f} MiB for a "
            f"{data / MIB:.0f} MiB array: every worker holds its own copy ({copies:.2f} copies each), because "
            f"{method} sends each worker the pickled dataset. Lazy creation did not prevent it: {order}."
        )
        return Verdict("C3", statement, Outcome.FAILS, evidence, reason_holds=False)
    evidence = (
        f"under {method}, each worker's private memory (USS) grew by only {max(growth, 0) / MIB:.0f} MiB for a "
        f"{data / MIB:.0f} MiB array: the workers share the parent's pages (counted in their RSS, "
        f"{report.worker_rss / MIB:.0f} MiB) through fork's copy-on-write. That is fork's doing, not lazy "
        f"creation's: {order}, so they inherited it all the same."
    )
    return Verdict("C3", statement, Outcome.HOLDS, evidence, reason_holds=False)


def _collate_places(run: Trace) -> tuple[bool, str]:
    """Whether every collate of ``run`` ran in a worker, and where each ran, in words."""
    collates = run.of(Kind.COLLATED)
    in_workers = [e for e in collates if e.pid != run.main_pid]
    pids = ", ".join(map(str, sorted({e.pid for e in in_workers}))) or "none"
    return bool(collates) and len(in_workers) == len(collates), (
        f"with num_workers={run.settings.get('num_workers')}, {len(in_workers)} of {len(collates)} collate calls "
        f"ran in worker processes (PIDs {pids}) and {len(collates) - len(in_workers)} in the main process "
        f"(PID {run.main_pid})"
    )


def verdict_c5(trace: Trace, without_workers: Trace | None = None) -> Verdict:
    """Where did ``collate_fn`` run in ``trace``? Give a ``num_workers=0`` run as ``without_workers``
    to judge the claim for both settings at once."""
    holds, evidence = _collate_places(trace)
    outcome = _holds(holds)
    if without_workers is not None:
        holds_without, more = _collate_places(without_workers)
        evidence += "; " + more
        if holds and not holds_without:
            outcome = Outcome.PARTLY
    return Verdict("C5", "a custom collate_fn runs inside the worker processes.", outcome, evidence + ".")


def verdict_c6(trace: Trace, persistent: Trace) -> Verdict:
    """Deferring worker creation avoids the cost of workers not yet needed; but is the cost avoided,
    or paid again at every ``iter()``? ``trace`` and ``persistent`` are two-epoch runs, without and
    with ``persistent_workers``."""
    statement = 'workers are deferred "to avoid overhead of creating workers when not immediately required".'
    created = trace.first(Kind.LOADER_CREATED)
    if created is None:
        return Verdict("C6", statement, Outcome.NOT_MEASURED, "no DataLoader() in the trace")
    epochs, kept = epoch_costs(trace), epoch_costs(persistent)
    fresh_text = " and ".join(
        f"epoch {c.epoch} started {c.workers_started} workers and waited {c.first_batch_s:.2f} s for its first batch"
        for c in epochs
    )
    kept_text = " and ".join(
        f"epoch {c.epoch} started {c.workers_started} and waited {c.first_batch_s:.2f} s" for c in kept
    )
    outcome = _holds(not trace.processes_after_construction)
    if outcome is Outcome.HOLDS and sum(c.workers_started for c in epochs[1:]) > 0:
        outcome = Outcome.PARTLY
    return Verdict(
        "C6",
        statement,
        outcome,
        f"DataLoader() took {created.duration * 1000:.1f} ms and started {len(trace.processes_after_construction)} "
        f"processes, so a loader that is never iterated costs nothing. But the cost is moved, not avoided: "
        f"{fresh_text} ({trace.start_method}). With persistent_workers=True: {kept_text}.",
    )


def verdict_c4() -> Verdict:
    """Where a CUDA GPU exists: initialise CUDA here, then let forked and spawned workers use it."""
    statement = "lazy creation prevents CUDA-context problems from fork."
    if not torch.cuda.is_available():
        evidence = "no CUDA GPU is visible to this kernel, so the experiment was skipped."
        return Verdict("C4", statement, Outcome.NOT_MEASURED, evidence)
    from .datasets import CudaDataset

    torch.zeros(1, device="cuda")  # what a training script does before its loop: model.to("cuda")
    results = {method: first_batch_with(CudaDataset(), method) for method in ("fork", "spawn")}
    return Verdict(
        "C4",
        statement,
        _holds(results["fork"] == "ok"),
        f"CUDA was initialised in this kernel before iter(), as a training script does when it moves its model "
        f"to the GPU. Then fork workers that touch CUDA: {results['fork']}; spawn workers: {results['spawn']}. "
        f"Lazy creation starts the workers after CUDA is already initialised, so it cannot protect forked workers; "
        f"the start method does.",
        reason_holds=False,
    )
