"""Measurements that settle the article's claims, and verdicts worded from what they measured.

A verdict's text is computed from numbers measured in this kernel, never typed in, so it stays
true on Linux (fork, or forkserver from Python 3.14), macOS and Windows (spawn) and Binder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader, Dataset

from .events import Event, Kind, Trace
from .system import descendants, wait_until_gone

__all__ = ["ProcessCounts", "Verdict", "count_processes", "most_at_once", "verdict_c1", "verdict_c2", "verdict_c7"]


@dataclass(frozen=True)
class Verdict:
    """What a measurement says about one claim of the article."""

    claim: str
    statement: str
    holds: bool
    evidence: str

    def __str__(self) -> str:
        word = "HOLDS" if self.holds else "DOES NOT HOLD"
        return f"{self.claim} {word} here. Claim: {self.statement}\nMeasured: {self.evidence}"

    def _repr_markdown_(self) -> str:
        word = "✅ holds" if self.holds else "❌ does not hold"
        return f"**{self.claim} {word} on this machine.** *Claim:* {self.statement}<br>*Measured:* {self.evidence}"


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
    (recursively, since forkserver workers are children of the fork server) after each step."""
    before = descendants()

    def new() -> int:
        return len(descendants() - before)

    loader = DataLoader(dataset, **loader_kwargs)
    after_construction = new()
    iterator = iter(loader)
    after_iter = new()
    next(iterator)
    after_first_batch = new()
    shut_down = getattr(iterator, "_shutdown_workers", None)
    if shut_down is not None:
        shut_down()
    del iterator
    wait_until_gone(descendants() - before)
    context = loader.multiprocessing_context
    return ProcessCounts(
        num_workers=loader.num_workers,
        start_method=context.get_start_method() if context is not None else None,
        after_construction=after_construction,
        after_iter=after_iter,
        after_first_batch=after_first_batch,
        after_close=new(),
    )


def verdict_c1(counts: ProcessCounts) -> Verdict:
    return Verdict(
        "C1",
        "no worker process exists after DataLoader(...) returns.",
        counts.after_construction == 0,
        f"{counts.after_construction} new processes right after DataLoader(num_workers={counts.num_workers}) "
        f"returned; {counts.after_iter} right after iter(loader) returned.",
    )


def verdict_c2(counts: ProcessCounts, trace: Trace) -> Verdict:
    """C2 holds only if workers appear one by one as batches are needed, not all inside ``iter()``."""
    first_batch = trace.first(Kind.BATCH_RECEIVED)
    iter_called = trace.first(Kind.ITER_CALLED)
    handed_out = [e for e in trace.of(Kind.BATCH_REQUESTED) if first_batch is None or e.start < first_batch.start]
    all_at_iter = counts.num_workers > 0 and counts.after_iter == counts.num_workers
    iter_ms = (iter_called.duration * 1000) if iter_called else float("nan")
    return Verdict(
        "C2",
        'workers are created "only as needed" while the loop runs, interleaved with batches.',
        not all_at_iter,
        f"all {counts.after_iter} of {counts.num_workers} worker processes existed as soon as iter() returned "
        f"(before the first next()); iter() took {iter_ms:.0f} ms in the traced run and had already handed out "
        f"{len(handed_out)} batches (num_workers × prefetch_factor, at most the number of batches) "
        f"before the loop asked for its first one.",
    )


def most_at_once(events: list[Event]) -> int:
    """The largest number of the events that were in progress at one moment."""
    edges = sorted([(e.start, 1) for e in events] + [(e.end, -1) for e in events])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def verdict_c7(counts: ProcessCounts, trace: Trace) -> Verdict:
    """Interleaved output proves on-demand creation only if the workers did not all exist at
    ``iter()``; what it does reflect is workers loading whole batches in parallel."""
    items = trace.of(Kind.ITEM_LOADED)
    builders = {e.index: e.pid for e in trace.of(Kind.COLLATED)}
    received = [e.index for e in trace.of(Kind.BATCH_RECEIVED)]
    return Verdict(
        "C7",
        "interlaced prints from workers and main prove that workers are created on demand.",
        counts.num_workers > 0 and counts.after_iter < counts.num_workers,
        f"up to {most_at_once(items)} items were loading at the same moment, in different workers (that is what "
        f"interlaces the output); each of the {len(builders)} batches was built whole by one worker "
        f"({len(set(builders.values()))} workers took turns); the loop received batches in the order {received}; "
        f"and all {counts.after_iter} of {counts.num_workers} worker processes existed right after iter() returned.",
    )
