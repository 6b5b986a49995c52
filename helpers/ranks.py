"""Data-parallel loading with ``torch.distributed``: every rank runs its own ``DataLoader`` with
its own workers over the share of the dataset its ``DistributedSampler`` gives it; and the
traces of all ranks merged onto one time axis.

Starting ranks
--------------
:func:`rank_main` is what each rank runs. It lives in this module, not in a notebook, so that
ranks started with ``spawn`` (and the DataLoader workers they start in turn) can import it. The
ranks meet through a file (``init_method="file://..."``, gloo backend, CPU only), so no port has
to be free. Each rank writes its :class:`RankRun` (pickled) into the job's folder, and the
notebook reads them back with :meth:`RankJob.results`.

Each rank loads ``RankShare(dataset, list(sampler))`` (a ``Subset`` that loads its items one by
one) in plain sequential order, rather than handing the sampler to the loader, because this
series' ``trace_loader`` builds its own sampler (it numbers the batches it hands out). The
batches are the same: ``DataLoader(dataset, sampler=sampler)`` reads ``dataset[i]`` for the
``i`` the sampler yields, in that order, and so does a sequential pass over the share. The
tracer records positions in the share; :func:`with_dataset_indices` maps them back to dataset
indices. (``torch.utils.data.Subset`` would do, but it fetches a batch in one call, so the
tracer could not time its items one by one.)

Aligning traces from several machines
-------------------------------------
Each rank's trace has its own clock: seconds since *its* ``iter()``. On one machine every
process reads the same monotonic clock, but machines do not share clocks (and NTP keeps wall
clocks only to within milliseconds, which is the scale of a batch). So the ranks make an event
they all see at once: each rank reads its clock just before it enters ``dist.barrier()`` and
just after it leaves, ``K`` times in a row. A rank cannot leave a barrier before the last rank
has entered it, at some true instant ``E``; so rank ``r`` leaves at ``E + δ_r`` with
``0 <= δ_r <= d_r``, where ``d_r`` is how long the barrier took on rank ``r`` (leave minus enter,
read on its own clock: no shared clock needed).

With ``b_r`` the time rank ``r`` left the barrier on its trace's clock, rank ``r``'s clock is
ahead of rank 0's by ``offset_r = b_r - b_0``, and :func:`merge_traces` shifts every event of
rank ``r`` by ``-offset_r`` onto rank 0's clock. The error of ``offset_r`` is ``δ_r - δ_0``, the
*exit skew* of the two ranks: the spread of the barrier's exit times. It is at most
``max(d_r, d_0)``. The first barrier waits for the slowest rank to start, so it is long; the
following ones are entered almost together, and last about one message round trip. Repeating
the barrier and using the repetition whose longest ``d`` is smallest gives the tightest bound:
that is what :func:`offsets_from_barriers` does. On one machine the exit spread itself can be
read from the shared clock; :func:`barrier_offsets` reports it too, with the true offsets, so
the method's error is measured rather than assumed. Events of two ranks closer together than
the bound cannot be ordered with confidence; events farther apart are ordered correctly.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset, DistributedSampler

from .events import Event, Kind, Trace
from .experiment import trace_loader

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Alignment",
    "RankJob",
    "RankRun",
    "RankShare",
    "RankedTrace",
    "barrier_offsets",
    "merge_traces",
    "offsets_from_barriers",
    "plot_ranks",
    "rank_main",
    "with_dataset_indices",
]


@dataclass(frozen=True)
class RankJob:
    """What every rank is asked to do. It is pickled to spawned ranks, so it holds only plain
    values and an importable dataset (whose items are tensors filled with their index, like
    :class:`~helpers.datasets.SleepDataset`, so each rank can also read off what it received)."""

    dataset: Dataset
    folder: str  #: where the ranks meet and leave their results; empty, and one per job
    world_size: int = 2
    num_workers: int = 2
    batch_size: int = 2
    epochs: int = 1  #: epochs loaded (each starts its workers afresh)
    shuffles: int = 3  #: epochs whose sampler order is recorded, with and without set_epoch
    seed: int = 0
    start_method: str | None = None  #: for the DataLoader workers inside each rank
    barriers: int = 10  #: barriers repeated to align the ranks' clocks

    def results(self) -> list[RankRun]:
        """What each rank left in :attr:`folder`, ordered by rank."""
        runs = [pickle.loads(path.read_bytes()) for path in sorted(Path(self.folder).glob("rank-*.pickle"))]
        runs.sort(key=lambda run: run.rank)
        if [run.rank for run in runs] != list(range(self.world_size)):
            raise RuntimeError(
                f"expected results from {self.world_size} ranks in {self.folder}, found {len(runs)}"
            )
        return runs


@dataclass(frozen=True)
class RankRun:
    """What one rank did. Clock readings (``_ns``) are this rank's ``perf_counter_ns``."""

    rank: int
    world_size: int
    host: str
    pid: int
    traces: tuple[Trace, ...]  #: one per epoch loaded; item events carry dataset indices
    received: tuple[tuple[int, ...], ...]  #: the items in the batches this rank received, per epoch loaded
    indices: tuple[tuple[int, ...], ...]  #: the sampler's indices for this rank, per epoch, after set_epoch
    without_set_epoch: tuple[tuple[int, ...], ...]  #: what the same sampler yields without set_epoch
    barriers_ns: tuple[tuple[int, int], ...]  #: (entered, left) each barrier
    origins_ns: tuple[int, ...]  #: the clock just before each epoch's ``iter()``: its trace's t = 0

    def barrier_exits(self, epoch: int = 0) -> list[float]:
        """When this rank left each barrier, in seconds on epoch ``epoch``'s trace clock."""
        return [(left - self.origins_ns[epoch]) / 1e9 for _, left in self.barriers_ns]

    def barrier_durations(self) -> list[float]:
        """How long each barrier took on this rank, in seconds."""
        return [(left - entered) / 1e9 for entered, left in self.barriers_ns]

    def worker_pids(self, epoch: int = 0) -> list[int]:
        return sorted(self.traces[epoch].worker_pids)


class RankShare(Dataset):
    """The items ``indices`` of ``dataset``, in that order: ``RankShare(d, ix)[i]`` is ``d[ix[i]]``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Any:
        return self.dataset[self.indices[position]]

    def __repr__(self) -> str:
        return f"RankShare({self.dataset!r}, {self.indices})"


def with_dataset_indices(trace: Trace, indices: Sequence[int]) -> Trace:
    """``trace`` of a loader over ``Subset(dataset, indices)``, with its item events numbered by
    dataset index (``indices[position]``) instead of by position in the subset."""
    items = (Kind.ITEM_LOADED, Kind.ITEM_FAILED)
    events = tuple(replace(e, index=indices[e.index]) if e.kind in items else e for e in trace.events)
    return trace.replace(events=events)


def rank_main(rank: int, job: RankJob) -> None:
    """One rank: join the group, time ``job.barriers`` barriers, then load ``job.epochs`` epochs
    of its share of the dataset with ``job.num_workers`` workers, traced; note the sampler's order
    for ``job.shuffles`` epochs with and without ``set_epoch``; write a :class:`RankRun`."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=Path(job.folder, "rendezvous").as_uri(),
        rank=rank,
        world_size=job.world_size,
        timeout=timedelta(seconds=120),
    )
    try:
        barriers = _time_barriers(job.barriers)
        # Every rank shuffles with the same seed; the rank and world size come from dist.
        sampler: DistributedSampler[int] = DistributedSampler(job.dataset, shuffle=True, seed=job.seed)
        traces, received, origins = _load_epochs(job, sampler)
        told, without_set_epoch = _sampler_orders(job, sampler)
        run = RankRun(
            rank=rank,
            world_size=job.world_size,
            host=socket.gethostname(),
            pid=os.getpid(),
            traces=tuple(traces),
            received=tuple(received),
            indices=tuple(told),
            without_set_epoch=without_set_epoch,
            barriers_ns=tuple(barriers),
            origins_ns=tuple(origins),
        )
        Path(job.folder, f"rank-{rank}.pickle").write_bytes(pickle.dumps(run))
    finally:
        dist.destroy_process_group()


def _time_barriers(count: int) -> list[tuple[int, int]]:
    """Time ``count`` barriers for :func:`rank_main`."""
    import torch.distributed as dist

    barriers = []  # (entered, left) on this rank's clock: to align the ranks' traces later
    for _ in range(count):
        entered = perf_counter_ns()
        dist.barrier()
        barriers.append((entered, perf_counter_ns()))
    return barriers


def _load_epochs(
    job: RankJob, sampler: DistributedSampler[int]
) -> tuple[list[Trace], list[tuple[int, ...]], list[int]]:
    """Load ``job.epochs`` epochs of this rank's share, traced, for :func:`rank_main`: each
    epoch's trace, the items received, and the clock just before its ``iter()``."""
    traces, received, origins = [], [], []
    for epoch in range(job.epochs):
        sampler.set_epoch(epoch)  # without it, every epoch repeats the same shuffle
        mine = list(sampler)
        got: list[int] = []
        with trace_loader(
            RankShare(job.dataset, mine),
            batch_size=job.batch_size,
            num_workers=job.num_workers,
            start_method=job.start_method,
        ) as loader:
            origins.append(perf_counter_ns())  # just before iter(): the trace's t = 0
            for batch in loader:
                got += batch.reshape(len(batch), -1)[:, 0].int().tolist()
        traces.append(with_dataset_indices(loader.trace, mine))
        received.append(tuple(got))
    return traces, received, origins


def _sampler_orders(
    job: RankJob, sampler: DistributedSampler[int]
) -> tuple[list[tuple[int, ...]], tuple[tuple[int, ...], ...]]:
    """For :func:`rank_main`: the sampler's order for ``job.shuffles`` epochs with ``set_epoch``,
    and what a sampler never given the epoch yields as many times."""
    # The order of a few epochs, with set_epoch and from a sampler never given the epoch.
    never_told: DistributedSampler[int] = DistributedSampler(job.dataset, shuffle=True, seed=job.seed)
    told = []
    for epoch in range(job.shuffles):
        sampler.set_epoch(epoch)
        told.append(tuple(sampler))
    return told, tuple(tuple(never_told) for _ in range(job.shuffles))


@dataclass(frozen=True)
class Alignment:
    """Clock offsets of the ranks' traces from rank 0's, in seconds, and how far to trust them."""

    offsets: tuple[float, ...]  #: rank r's trace clock minus rank 0's
    repetition: int  #: the barrier used (the one whose longest duration is shortest)
    bound_s: float  #: the offsets are right to within this: that barrier's longest duration
    exit_spread_s: float | None = None  #: that barrier's measured exit spread (one machine only)
    true_offsets: tuple[float, ...] | None = None  #: from the shared clock (one machine only)

    @property
    def errors_s(self) -> tuple[float, ...] | None:
        """Each offset minus the true one, where the true one is known."""
        if self.true_offsets is None:
            return None
        return tuple(o - t for o, t in zip(self.offsets, self.true_offsets, strict=True))


def offsets_from_barriers(
    exits: Sequence[Sequence[float]], durations: Sequence[Sequence[float]]
) -> tuple[tuple[float, ...], int, float]:
    """``(offsets, repetition, bound)`` from ``exits[r][k]``, when rank ``r`` left barrier ``k``
    on its own trace clock, and ``durations[r][k]``, how long that barrier took on rank ``r``.

    The barrier used is the one whose longest duration across ranks is shortest; the offsets
    are right to within that duration (see the module's docstring)."""
    if len(exits) != len(durations) or not exits:
        raise ValueError("exits and durations need one row per rank, and at least one rank")
    repeats = {len(row) for row in (*exits, *durations)}
    if len(repeats) != 1 or 0 in repeats:
        raise ValueError("every rank needs the same number (> 0) of barrier times")
    count = repeats.pop()
    k = min(range(count), key=lambda k: max(row[k] for row in durations))
    offsets = tuple(row[k] - exits[0][k] for row in exits)
    return offsets, k, max(row[k] for row in durations)


def barrier_offsets(runs: Sequence[RankRun], epoch: int = 0) -> Alignment:
    """The offsets of epoch ``epoch``'s traces, from the barriers every rank timed. On one machine
    (one host name) the clock is shared, so the true offsets and the exit spread are reported too."""
    offsets, k, bound = offsets_from_barriers(
        [run.barrier_exits(epoch) for run in runs], [run.barrier_durations() for run in runs]
    )
    if len({run.host for run in runs}) == 1:
        lefts = [run.barriers_ns[k][1] for run in runs]
        true = tuple((runs[0].origins_ns[epoch] - run.origins_ns[epoch]) / 1e9 for run in runs)
        return Alignment(offsets, k, bound, (max(lefts) - min(lefts)) / 1e9, true)
    return Alignment(offsets, k, bound)


class RankedTrace(Trace):
    """Traces of several ranks on one clock (rank 0's): a :class:`Trace` whose events are in time
    order, with the rank of each event in :attr:`ranks`."""

    def __init__(
        self,
        events: Sequence[Event],
        *,
        ranks: Sequence[int] = (),
        rank_traces: Sequence[Trace] = (),
        offsets: Sequence[float] = (),
        aligned_at: float | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(events, **fields)
        self.ranks = tuple(ranks)  #: the rank of each event, in the order of ``events``
        self.rank_traces = tuple(rank_traces)  #: the traces merged, unshifted
        self.offsets = tuple(offsets)  #: what was subtracted from each rank's times
        self.aligned_at = aligned_at  #: where the ranks were aligned (rank 0's barrier exit), if known

    @property
    def world_size(self) -> int:
        return len(self.rank_traces)

    def rank(self, rank: int) -> Trace:
        """The events of one rank, shifted onto the common clock, as a plain :class:`Trace`."""
        events = tuple(e for e, r in zip(self.events, self.ranks, strict=True) if r == rank)
        return self.rank_traces[rank].replace(events=events)


def merge_traces(
    traces: Sequence[Trace], offsets: Sequence[float], aligned_at: float | None = None
) -> RankedTrace:
    """One trace of every rank's events on rank 0's clock: rank ``r``'s times minus ``offsets[r]``.

    ``offsets[r]`` is how far rank ``r``'s clock is ahead of rank 0's (see
    :func:`offsets_from_barriers`); ``offsets[0]`` is normally 0."""
    if len(traces) != len(offsets) or not traces:
        raise ValueError(f"need one offset per trace, got {len(traces)} traces and {len(offsets)} offsets")
    tagged = sorted(
        (
            (replace(e, start=e.start - offset, end=e.end - offset), rank)
            for rank, (trace, offset) in enumerate(zip(traces, offsets, strict=True))
            for e in trace.events
        ),
        key=lambda pair: (pair[0].start, pair[1]),
    )
    first = traces[0]
    return RankedTrace(
        tuple(e for e, _ in tagged),
        main_pid=first.main_pid,
        start_method=first.start_method,
        settings={**first.settings, "world_size": len(traces)},
        error=next((t.error for t in traces if t.error is not None), None),
        ranks=tuple(r for _, r in tagged),
        rank_traces=tuple(traces),
        offsets=tuple(offsets),
        aligned_at=aligned_at,
    )


def plot_ranks(traces: RankedTrace | Sequence[Trace], title: str | None = None) -> Figure:
    """Swimlanes grouped by rank: one panel per rank (its main process, then its workers), all on
    one time axis. A :class:`RankedTrace` is drawn on its common clock, with a dotted line where
    the ranks were aligned; a plain list of traces is drawn as is (each on its own clock)."""
    import matplotlib
    from matplotlib.figure import Figure

    from .plotting import STYLE, lanes, plot_swimlanes

    merged = traces if isinstance(traces, RankedTrace) else merge_traces(list(traces), [0.0] * len(traces))
    per_rank = [merged.rank(r) for r in range(merged.world_size)]
    heights = [len(lanes(t)) + 1.3 for t in per_rank]
    times = [x for e in merged.events for x in (e.start, e.end)]
    if merged.aligned_at is not None:
        times.append(merged.aligned_at)
    xlim = (min([*times, 0.0]), max([*times, 0.0]))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13, 2.6 + 0.95 * sum(heights)), layout="constrained")
        axes = fig.subplots(len(per_rank), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
        for rank, (ax, trace) in enumerate(zip(axes, per_rank, strict=True)):
            items = sorted(e.index for e in trace.of(Kind.ITEM_LOADED))
            workers = len(trace.worker_pids)
            plot_swimlanes(
                trace,
                ax=ax,
                title=f"rank {rank}: main process and its {workers} workers; items {items}",
                xlim=xlim,
                legend=rank == len(per_rank) - 1,
            )
            if merged.aligned_at is not None:
                ax.axvline(merged.aligned_at, color="#000000", linestyle=":", linewidth=2.5)
            if rank < len(per_rank) - 1:
                ax.set_xlabel("")
        if merged.aligned_at is not None:
            axes[0].text(merged.aligned_at, 1.45, "barrier ", ha="right", va="top", fontsize=13)
        clock = "rank 0's iter()" if isinstance(traces, RankedTrace) else "each rank's own iter()"
        axes[-1].set_xlabel(f"seconds since {clock}")
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=19)
    return fig
