"""How many workers? Time a short run of *your* dataset at a few ``num_workers`` and pick the
fewest workers that load about as fast as the most.

Each setting runs one traced loader with persistent workers: a warm-up (until every worker has
delivered a batch, so every process is started and has imported what it needs), then one full
timed epoch. Throughput is items over the timed epoch's seconds, from the moment ``iter()``
returned (the workers were idle and had their first indices) to the last batch received, so it
counts neither start-up nor the warm-up's leftover batches; start-up is reported on its own as
the cold time to the first batch.

>>> s = Sweep((Point(0, 40, 1.0), Point(1, 40, 1.0), Point(2, 40, 0.5), Point(4, 40, 0.49)))
>>> recommend(s).num_workers
2
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

from torch.utils.data import Dataset

from .events import Kind, Trace
from .experiment import trace_loader
from .system import cpu_quota

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Point", "Recommendation", "Sweep", "measure", "plot_sweeps", "recommend", "sweep", "usable_cpus"]

#: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Sizes for a projector at the back of a room.
STYLE = {
    "font.size": 15,
    "axes.titlesize": 18,
    "axes.labelsize": 16,
    "xtick.labelsize": 14,
    "ytick.labelsize": 14,
    "legend.fontsize": 14,
}


def usable_cpus() -> float:
    """CPUs this process may run on: its affinity (``taskset``, cpuset) or, where there is none,
    ``os.cpu_count()``; lowered to the cgroup's CPU quota where that is smaller (Binder: 1)."""
    cpus: float = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota()
    return min(cpus, quota) if quota is not None else cpus


@dataclass(frozen=True)
class Point:
    """One setting of a sweep: ``items`` loaded in ``seconds`` (a warm epoch)."""

    num_workers: int
    items: int
    seconds: float  #: the timed epoch, from ``iter()`` returning to the last batch received
    first_batch_s: float = math.nan  #: cold start: from the first ``iter()`` to the first batch
    item_s: float = math.nan  #: median wall time of one item in the timed epoch
    trace: Trace | None = field(default=None, repr=False, compare=False)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds


@dataclass(frozen=True)
class Sweep:
    """Throughput of one dataset at several ``num_workers``."""

    points: tuple[Point, ...]
    dataset: str = ""
    batch_size: int = 1
    start_method: str | None = None
    cpus: float | None = None  #: CPUs usable when it was measured
    seconds: float = math.nan  #: wall time the whole sweep took

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a sweep needs at least one point")
        settings = [p.num_workers for p in self.points]
        if len(set(settings)) != len(settings):
            raise ValueError(f"each num_workers may appear once, got {settings}")
        object.__setattr__(self, "points", tuple(sorted(self.points, key=lambda p: p.num_workers)))

    @property
    def throughput(self) -> dict[int, float]:
        """``num_workers`` -> items per second."""
        return {p.num_workers: p.items_per_s for p in self.points}

    def point(self, num_workers: int) -> Point:
        for p in self.points:
            if p.num_workers == num_workers:
                return p
        raise KeyError(f"num_workers={num_workers} was not measured; measured: {list(self.throughput)}")

    def speedup(self, num_workers: int, over: int = 0) -> float:
        """Throughput at ``num_workers`` divided by throughput at ``over``."""
        return self.point(num_workers).items_per_s / self.point(over).items_per_s

    def table(self) -> str:
        lines = [
            f"{self.dataset}, batch_size={self.batch_size}, start method {self.start_method or 'default'}"
            + (f", swept in {self.seconds:.1f} s" if not math.isnan(self.seconds) else ""),
            f"{'num_workers':>11} {'items/s':>9} {'vs 0':>6} {'one item':>9} {'first batch':>12}",
        ]
        base = self.points[0].items_per_s
        for p in self.points:
            lines.append(
                f"{p.num_workers:>11} {p.items_per_s:>9.0f} {p.items_per_s / base:>5.1f}x "
                f"{p.item_s * 1000:>6.0f} ms {p.first_batch_s:>10.2f} s"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(self.table())  # type: ignore[attr-defined]


def measure(
    dataset: Dataset,
    num_workers: int,
    *,
    batch_size: int = 2,
    start_method: str | None = None,
    prefetch_factor: int | None = None,
) -> Point:
    """Load ``dataset`` once warm with ``num_workers`` workers and return the :class:`Point`.

    The timed epoch starts when ``iter()`` returns or when its first item starts loading, if
    earlier (``iter()`` hands out the first indices before it returns)."""
    trace = _warm_then_timed_trace(dataset, num_workers, batch_size, start_method, prefetch_factor)
    if trace.error is not None:
        raise trace.error
    return _point_from_trace(trace, num_workers, len(dataset))  # type: ignore[arg-type]


def _warm_then_timed_trace(
    dataset: Dataset,
    num_workers: int,
    batch_size: int,
    start_method: str | None,
    prefetch_factor: int | None,
) -> Trace:
    """For :func:`measure`: the trace of one loader with persistent workers, warmed up and then
    run for one full epoch."""
    warm_up = max(num_workers, 1)  # batches: one from each worker, so every worker is up
    with trace_loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        start_method=start_method if num_workers else None,  # PyTorch refuses one without workers
        prefetch_factor=prefetch_factor,
        persistent_workers=num_workers > 0,
    ) as loader:
        for taken, _ in enumerate(loader, start=1):
            if taken >= warm_up:
                break
        for _ in loader:
            pass
    return loader.trace


def _point_from_trace(trace: Trace, num_workers: int, size: int) -> Point:
    """For :func:`measure`: the :class:`Point` of a warm-then-timed trace of ``size`` items."""
    warm, timed = trace.of(Kind.ITER_CALLED)[:2]
    received = [e for e in trace.of(Kind.BATCH_RECEIVED) if e.start >= timed.start]
    items = trace.of(Kind.ITEM_LOADED)[-size:]  # the timed epoch loads every item, last
    begin = min([timed.end, *(e.start for e in items)])  # a worker may start inside iter()
    first = trace.first(Kind.BATCH_RECEIVED)
    return Point(
        num_workers=num_workers,
        items=size,
        seconds=received[-1].end - begin,
        first_batch_s=first.end - warm.start if first is not None else math.nan,
        item_s=statistics.median(e.duration for e in items) if items else math.nan,
        trace=trace,
    )


def sweep(
    dataset: Dataset,
    num_workers: Iterable[int] = (0, 1, 2, 4),
    *,
    batch_size: int = 2,
    start_method: str | None = None,
    prefetch_factor: int | None = None,
) -> Sweep:
    """:func:`measure` ``dataset`` at each ``num_workers`` in turn. Keep it short: an epoch of a
    few dozen items of some milliseconds each is enough to tell the settings apart."""
    began = perf_counter()
    points = tuple(
        measure(dataset, n, batch_size=batch_size, start_method=start_method, prefetch_factor=prefetch_factor)
        for n in num_workers
    )
    method = next((p.trace.start_method for p in points if p.trace and p.trace.start_method), start_method)
    return Sweep(points, repr(dataset), batch_size, method, usable_cpus(), perf_counter() - began)


@dataclass(frozen=True)
class Recommendation:
    """A ``num_workers`` to use, and why (in :attr:`reason`)."""

    num_workers: int
    items_per_s: float
    best: Point
    tolerance: float
    reason: str

    def __str__(self) -> str:
        return self.reason

    def _repr_markdown_(self) -> str:
        return f"**num_workers={self.num_workers}.** {self.reason}"


def recommend(sweep: Sweep, tolerance: float = 0.05) -> Recommendation:
    """The fewest workers whose throughput is within ``tolerance`` (a fraction) of the best measured.

    Fewer workers means less memory, a quicker start at every ``iter()`` and more CPU left for
    the training loop, so a setting that is only a few per cent faster is not worth its extra
    processes (and a few per cent is about the noise of a short run)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a fraction between 0 and 1, got {tolerance!r}")
    points = sweep.points
    best = max(points, key=lambda p: p.items_per_s)
    floor = (1 - tolerance) * best.items_per_s
    pick = next(p for p in points if p.items_per_s >= floor)
    words = _recommendation_words(sweep, best, pick, tolerance)
    return Recommendation(pick.num_workers, pick.items_per_s, best, tolerance, " ".join(words))


def _recommendation_words(sweep: Sweep, best: Point, pick: Point, tolerance: float) -> list[str]:
    """For :func:`recommend`: the sentences of the reason for picking ``pick``."""
    share = pick.items_per_s / best.items_per_s
    words = [f"Fastest measured: num_workers={best.num_workers} at {best.items_per_s:.0f} items/s."]
    if pick is not best:
        words.append(
            f"num_workers={pick.num_workers} reaches {pick.items_per_s:.0f} items/s ({share:.0%} of that), "
            f"within {tolerance:.0%}, with {best.num_workers - pick.num_workers} fewer worker processes."
        )
    return words + _recommendation_caveats(sweep, best, pick)


def _recommendation_caveats(sweep: Sweep, best: Point, pick: Point) -> list[str]:
    """For :func:`recommend`: why not fewer workers, and what to beware of in the pick."""
    points = sweep.points
    words = []
    fewer = [p for p in points if p.num_workers < pick.num_workers]
    if fewer:
        below = fewer[-1]
        words.append(
            f"num_workers={below.num_workers} reaches only {below.items_per_s / best.items_per_s:.0%} "
            f"of the best, so fewer will not do."
        )
    if pick.num_workers == 0:
        words.append(
            "Workers did not make loading faster here: num_workers=0 loads in the main process. "
            "(The sweep times loading alone; in training, even one worker lets loading overlap "
            "the training step.)"
        )
    elif pick is points[-1] and len(points) > 1:
        words.append(
            "It is the largest setting tried and throughput was still rising: "
            "sweep more workers to see where it stops."
        )
    if sweep.cpus is not None and pick.num_workers > sweep.cpus:
        words.append(
            f"That is more workers than the {sweep.cpus:g} CPUs this process may use, and PyTorch will "
            f"warn; the measurement says fewer workers were slower here."
        )
    return words


def plot_sweeps(
    sweeps: Mapping[str, Sweep],
    recommendations: Mapping[str, Recommendation] | None = None,
    cpus: float | None = None,
    title: str = "Throughput against num_workers",
) -> Figure:
    """Items per second against ``num_workers``, one line per sweep (keyed by its label), with
    the CPUs usable marked by a dashed line and each recommended setting by a large ring."""
    import matplotlib
    from matplotlib.figure import Figure

    markers = ("o", "s", "D", "^", "v", "P")
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        fig = Figure(figsize=(11, 7), layout="constrained")
        ax = fig.add_subplot()
        top = max(p.items_per_s for s in sweeps.values() for p in s.points)
        settings = sorted({p.num_workers for s in sweeps.values() for p in s.points})
        for i, (label, s) in enumerate(sweeps.items()):
            color = OKABE_ITO[i % len(OKABE_ITO)]
            _plot_sweep_line(ax, s, label, color, markers[i % len(markers)])
            _ring_recommended(ax, (recommendations or {}).get(label), label, color)
        cpus = (
            cpus if cpus is not None else next((s.cpus for s in sweeps.values() if s.cpus is not None), None)
        )
        _finish_axes(ax, settings, top, cpus, title)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, frameon=False)
    return fig


def _plot_sweep_line(ax: Axes, s: Sweep, label: str, color: str, marker: str) -> None:
    """For :func:`plot_sweeps`: one sweep's line, each point labelled with its items per second."""
    xs = [p.num_workers for p in s.points]
    ys = [p.items_per_s for p in s.points]
    ax.plot(xs, ys, marker=marker, markersize=11, linewidth=3, color=color, label=label)
    for x, y in zip(xs, ys, strict=True):
        ax.annotate(
            f"{y:.0f}",
            (x, y),
            textcoords="offset points",
            xytext=(0, 16),
            ha="center",
            fontsize=13,
            color=color,
            fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1, "alpha": 0.85},
        )


def _ring_recommended(ax: Axes, chosen: Recommendation | None, label: str, color: str) -> None:
    """For :func:`plot_sweeps`: a large ring on the recommended setting, if there is one."""
    if chosen is not None:
        ax.plot(
            chosen.num_workers,
            chosen.items_per_s,
            marker="o",
            markersize=26,
            markerfacecolor="none",
            markeredgecolor=color,
            markeredgewidth=3,
            linestyle="none",
            label=f"recommended for {label}: {chosen.num_workers}",
        )


def _finish_axes(ax: Axes, settings: list[int], top: float, cpus: float | None, title: str) -> None:
    """For :func:`plot_sweeps`: the CPUs-usable line, ticks, limits, labels, title and grid."""
    if cpus is not None:
        ax.axvline(cpus, color="#000000", linestyle="--", linewidth=2)
        ax.text(cpus, top * 1.22, f" {cpus:g} CPUs usable", ha="left", va="top", fontsize=14)
    ax.set_xticks(settings)
    ax.set_xlim(min(settings) - 0.3, max([*settings, cpus or 0]) + 0.6)
    ax.set_ylim(0, top * 1.25)
    ax.set_xlabel("num_workers")
    ax.set_ylabel("items loaded per second")
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.3)
