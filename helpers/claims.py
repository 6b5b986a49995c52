"""Measurements that settle the article's claims (and the questions around them), and verdicts
worded from what they measured.

A verdict's text is computed from numbers measured in this kernel, never typed in, so it stays
true on Linux (fork, or forkserver from Python 3.14), macOS and Windows (spawn) and Binder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from .events import Event, Kind, Trace
from .experiment import trace_loader
from .memory import MemoryReport
from .system import descendants, wait_until_gone

__all__ = [
    "EpochCost",
    "ProcessCounts",
    "ScriptRun",
    "Verdict",
    "count_processes",
    "epoch_costs",
    "first_batch_with",
    "most_at_once",
    "private_growth",
    "run_script",
    "summary_table",
    "threads_added_by_pin_memory",
    "verdict_c1",
    "verdict_c2",
    "verdict_c3",
    "verdict_c4",
    "verdict_c5",
    "verdict_c6",
    "verdict_c7",
    "worker_parents",
]


@dataclass(frozen=True)
class Verdict:
    """What a measurement says about one claim of the article."""

    claim: str
    statement: str
    holds: bool
    evidence: str
    partly: bool = False  #: the measured outcome matches, but not for the claimed reason or not always
    measured: bool = True  #: False where this machine cannot run the experiment (say, no GPU)

    @property
    def outcome(self) -> str:
        if not self.measured:
            return "not measured"
        if self.partly:
            return "holds only in part"
        return "holds" if self.holds else "does not hold"

    def __str__(self) -> str:
        return f"{self.claim} {self.outcome.upper()} here. Claim: {self.statement}\nMeasured: {self.evidence}"

    def _repr_markdown_(self) -> str:
        mark = {"holds": "✅", "does not hold": "❌", "holds only in part": "⚠️", "not measured": "⏭️"}[
            self.outcome
        ]
        return f"**{self.claim} {mark} {self.outcome} on this machine.** *Claim:* {self.statement}<br>*Measured:* {self.evidence}"


@dataclass(frozen=True)
class VerdictTable:
    """Verdicts shown as one table (Markdown in a notebook, text elsewhere)."""

    verdicts: tuple[Verdict, ...]

    def __str__(self) -> str:
        return "\n".join(f"{v.claim}: {v.outcome} - {v.statement}" for v in self.verdicts)

    def _repr_markdown_(self) -> str:
        rows = ["| claim | the article says | on this machine | what was measured |", "|---|---|---|---|"]
        for v in self.verdicts:
            cell = lambda text: text.replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {v.claim} | {cell(v.statement)} | **{v.outcome}** | {cell(v.evidence)} |")
        return "\n".join(rows)


def summary_table(verdicts: list[Verdict]) -> VerdictTable:
    """The verdicts, sorted by claim, as one table."""
    return VerdictTable(tuple(sorted(verdicts, key=lambda v: v.claim)))


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
    handed_out = [
        e for e in trace.of(Kind.BATCH_REQUESTED) if first_batch is None or e.start < first_batch.start
    ]
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


def private_growth(report: MemoryReport, baseline: MemoryReport) -> float:
    """How much more private memory (USS) the median worker holds in ``report`` than in
    ``baseline``, a run of the same kind with almost no data: the part the data costs each worker."""
    return report.worker_uss - baseline.worker_uss


def verdict_c3(report: MemoryReport, baseline: MemoryReport) -> Verdict:
    """Does each worker hold its own copy of the dataset's array? And is lazy creation the reason?"""
    mib = 2**20
    data = report.data_bytes or 0
    growth = private_growth(report, baseline)
    copies = growth / data if data else 0.0
    created = report.trace.first(Kind.LOADER_CREATED)
    started = report.trace.first(Kind.WORKER_READY)
    order = (
        f"the array was built before DataLoader() (t = {created.start:.3f} s) and the workers started "
        f"after it, at t = {started.start:.3f} s"
        if created and started
        else "the array was built first"
    )
    statement = (
        "lazy creation is what keeps workers from inheriting duplicated copies of a large NumPy array."
    )
    if copies >= 0.5:
        return Verdict(
            "C3",
            statement,
            False,
            f"under {report.start_method}, each worker's private memory (USS) grew by {growth / mib:.0f} MiB "
            f"for a {data / mib:.0f} MiB array: every worker holds its own copy ({copies:.2f} copies each), "
            f"because {report.start_method} sends each worker the pickled dataset. Lazy creation did not "
            f"prevent it: {order}.",
        )
    return Verdict(
        "C3",
        statement,
        True,
        f"under {report.start_method}, each worker's private memory (USS) grew by only {max(growth, 0) / mib:.0f} MiB "
        f"for a {data / mib:.0f} MiB array: the workers share the parent's pages (counted in their RSS, "
        f"{report.worker_rss / mib:.0f} MiB) through fork's copy-on-write. That is fork's doing, not lazy "
        f"creation's: {order}, so they inherited it all the same.",
        partly=True,
    )


def verdict_c5(trace: Trace, without_workers: Trace | None = None) -> Verdict:
    """Where did ``collate_fn`` run in ``trace``? Give a ``num_workers=0`` run as ``without_workers``
    to judge the claim for both settings at once."""

    def where(run: Trace) -> tuple[bool, str]:
        collates = run.of(Kind.COLLATED)
        in_workers = [e for e in collates if e.pid != run.main_pid]
        pids = ", ".join(map(str, sorted({e.pid for e in in_workers}))) or "none"
        return bool(collates) and len(in_workers) == len(collates), (
            f"with num_workers={run.settings.get('num_workers')}, {len(in_workers)} of {len(collates)} collate calls "
            f"ran in worker processes (PIDs {pids}) and {len(collates) - len(in_workers)} in the main process "
            f"(PID {run.main_pid})"
        )

    holds, evidence = where(trace)
    partly = False
    if without_workers is not None:
        holds_without, more = where(without_workers)
        partly = holds and not holds_without
        evidence += "; " + more
    return Verdict(
        "C5", "a custom collate_fn runs inside the worker processes.", holds, evidence + ".", partly=partly
    )


@dataclass(frozen=True)
class EpochCost:
    """What one ``iter()`` of a loader cost, in seconds, and how many worker processes it started."""

    epoch: int
    iter_s: float  #: ``iter(loader)`` from call to return
    first_batch_s: float  #: from calling ``iter()`` to receiving the first batch
    workers_started: int


def epoch_costs(trace: Trace) -> list[EpochCost]:
    """One :class:`EpochCost` per ``iter()`` in the trace."""
    iters = trace.of(Kind.ITER_CALLED)
    bounds = [e.start for e in iters[1:]] + [float("inf")]
    costs = []
    for number, (call, until) in enumerate(zip(iters, bounds), start=1):
        received = [e for e in trace.of(Kind.BATCH_RECEIVED) if call.start <= e.end < until]
        started = [e for e in trace.of(Kind.WORKER_READY) if call.start <= e.start < until]
        costs.append(
            EpochCost(
                number,
                call.duration,
                (received[0].end - call.start) if received else float("nan"),
                len(started),
            )
        )
    return costs


def verdict_c6(trace: Trace, persistent: Trace) -> Verdict:
    """Deferring worker creation avoids the cost of workers not yet needed; but is the cost avoided,
    or paid again at every ``iter()``? ``trace`` and ``persistent`` are two-epoch runs, without and
    with ``persistent_workers``."""
    created = trace.first(Kind.LOADER_CREATED)
    epochs, kept = epoch_costs(trace), epoch_costs(persistent)
    again = [c.workers_started for c in epochs[1:]]
    later = sum(again)
    return (
        Verdict(
            "C6",
            'workers are deferred "to avoid overhead of creating workers when not immediately required".',
            not trace.processes_after_construction,
            f"DataLoader() took {created.duration * 1000:.1f} ms and started {len(trace.processes_after_construction)} "
            f"processes, so a loader that is never iterated costs nothing. But the cost is moved, not avoided: "
            f"{' and '.join(f'epoch {c.epoch} started {c.workers_started} workers and waited {c.first_batch_s:.2f} s for its first batch' for c in epochs)}"
            f" ({trace.start_method}). With persistent_workers=True: "
            f"{' and '.join(f'epoch {c.epoch} started {c.workers_started} and waited {c.first_batch_s:.2f} s' for c in kept)}.",
            partly=later > 0,
        )
        if created
        else Verdict("C6", "workers are deferred to avoid overhead", False, "no DataLoader() in the trace")
    )


def verdict_c4() -> Verdict:
    """Where a CUDA GPU exists: initialise CUDA here, then let forked and spawned workers use it."""
    statement = "lazy creation prevents CUDA-context problems from fork."
    if not torch.cuda.is_available():
        return Verdict(
            "C4",
            statement,
            False,
            "no CUDA GPU is visible to this kernel, so the experiment was skipped.",
            measured=False,
        )
    from .datasets import CudaDataset

    torch.zeros(1, device="cuda")  # what a training script does before its loop: model.to("cuda")
    results = {}
    for method in ("fork", "spawn"):
        results[method] = first_batch_with(CudaDataset(), method)
    fork_failed = results["fork"] != "ok"
    return Verdict(
        "C4",
        statement,
        not fork_failed,
        f"CUDA was initialised in this kernel before iter(), as a training script does when it moves its model "
        f"to the GPU. Then fork workers that touch CUDA: {results['fork']}; spawn workers: {results['spawn']}. "
        f"Lazy creation starts the workers after CUDA is already initialised, so it cannot protect forked workers; "
        f"the start method does.",
    )


def first_batch_with(dataset: Dataset, start_method: str, num_workers: int = 1, timeout: float = 0.0) -> str:
    """Take one batch from a plain ``DataLoader``; return ``"ok"`` or the error it raised, in one line.
    A worker that dies is noticed by PyTorch's own check (every 5 s); ``timeout`` also bounds the
    wait for one that hangs."""
    loader = DataLoader(
        dataset, num_workers=num_workers, multiprocessing_context=start_method, timeout=timeout
    )
    before = descendants()
    iterator = iter(loader)
    try:
        next(iterator)
        return "ok"
    except Exception as exc:  # report whatever the DataLoader raised
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}"
    finally:
        shut_down = getattr(iterator, "_shutdown_workers", None)
        if shut_down is not None:
            shut_down()
        del iterator
        wait_until_gone(descendants() - before)


def threads_added_by_pin_memory(dataset: Dataset, num_workers: int = 2) -> list[str]:
    """Names of the threads this kernel runs while a loader with ``pin_memory=True`` delivers its
    first batch, that the same loader without it does not run."""

    def threads_at_first_batch(pin_memory: bool) -> dict[int | None, str]:
        with trace_loader(dataset, batch_size=2, num_workers=num_workers, pin_memory=pin_memory) as loader:
            running = {}
            for _ in loader:
                running = {t.ident: t.name for t in threading.enumerate()}
                break
        return running

    without = threads_at_first_batch(False)
    return sorted(name for ident, name in threads_at_first_batch(True).items() if ident not in without)


def worker_parents(dataset: Dataset, start_method: str, num_workers: int = 2) -> list[tuple[int, int, str]]:
    """``(worker pid, parent pid, what the parent is)`` for each worker of a running loader."""
    me = os.getpid()
    found = []
    with trace_loader(
        dataset, num_workers=num_workers, start_method=start_method, persistent_workers=True
    ) as loader:
        for _ in loader:
            pass
        for pid in loader.worker_processes():
            parent = psutil.Process(pid).parent()
            if parent is None:
                continue
            command = " ".join(parent.cmdline())
            what = (
                "this kernel"
                if parent.pid == me
                else "the fork server"
                if "forkserver" in command
                else parent.name()
            )
            found.append((pid, parent.pid, what))
    return found


@dataclass(frozen=True)
class ScriptRun:
    """What a Python script printed and how it ended."""

    returncode: int
    output: str

    def tail(self, lines: int = 6) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def run_script(source: str, timeout: float = 120.0, shm_mib: int | None = None) -> ScriptRun:
    """Run ``source`` as a script in a fresh Python (this kernel's interpreter), in a temporary
    directory; ``timeout`` bounds it. Use it to show what happens outside a notebook. With
    ``shm_mib`` the script gets a private ``/dev/shm`` of that size (see
    :func:`~helpers.system.private_shm_available`)."""
    with tempfile.TemporaryDirectory(prefix="dataloader-script-") as folder:
        script = Path(folder) / "train.py"
        script.write_text(textwrap.dedent(source))
        command = [sys.executable, str(script)]
        if shm_mib is not None:
            command = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'mount -t tmpfs -o size={int(shm_mib)}m tmpfs /dev/shm && exec "$0" "$@"',
                *command,
            ]
        try:
            done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return ScriptRun(-1, out + f"\n(stopped after {timeout:.0f} s)")
    return ScriptRun(done.returncode, done.stdout + done.stderr)
