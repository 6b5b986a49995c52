"""Swimlane charts of a :class:`~helpers.events.Trace`: one lane per process, time since ``iter()``.

Figures are built with matplotlib's object API (no pyplot state), so they can be drawn from any
thread; in a notebook, run ``%matplotlib inline`` once and a returned figure shows as an image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .events import Event, Kind, Trace
from .memory import MemoryReport

__all__ = [
    "COLORS",
    "STYLE",
    "compare_swimlanes",
    "figure_png",
    "lanes",
    "legend_figure",
    "plot_memory",
    "plot_swimlanes",
]

#: Okabe-Ito colours, distinguishable with the common colour-vision deficiencies.
COLORS = {
    "item": "#0072B2",  # blue
    "collate": "#E69F00",  # orange
    "failed": "#D55E00",  # vermillion
    "start": "#009E73",  # bluish green
    "request": "#56B4E9",  # sky blue
    "wait": "#BBBBBB",  # grey
    "close": "#CC79A7",  # reddish purple
    "ink": "#000000",
}

#: Sizes for a projector at the back of a room.
STYLE = {
    "font.size": 15,
    "axes.titlesize": 18,
    "axes.labelsize": 16,
    "xtick.labelsize": 14,
    "ytick.labelsize": 14,
    "legend.fontsize": 13,
}

_BAR = 0.6  # bar height, in lanes


def lanes(trace: Trace) -> list[tuple[int, str]]:
    """``(pid, label)`` for each lane: main first, then workers by epoch and worker id."""
    iter_starts = [e.start for e in trace.of(Kind.ITER_CALLED)]
    order: dict[int, tuple[int, int]] = {}
    for event in trace.events:
        if event.pid != trace.main_pid and event.pid not in order:
            epoch = sum(1 for t in iter_starts if t <= event.start)
            order[event.pid] = (epoch, event.worker_id)
    workers = sorted(order, key=lambda pid: order[pid])
    return [(trace.main_pid, f"main\npid {trace.main_pid}")] + [
        (pid, f"worker {order[pid][1]}\npid {pid}") for pid in workers
    ]


def _received_labels(ax: Axes, events: Sequence[Event], y: float, span: float) -> None:
    """Number the received batches; batches arriving together share one label ("b0-b3")."""
    groups: list[list[Event]] = []
    for e in events:
        if groups and e.end - groups[-1][-1].end < span * 0.025:
            groups[-1].append(e)
        else:
            groups.append([e])
    for group in groups:
        first, last = group[0], group[-1]
        text = f"b{first.index}" if len(group) == 1 else f"b{first.index}-{last.index}"
        ax.text(last.end, y + 0.5, text, ha="center", va="bottom", fontsize=12)


def _bars(
    ax: Axes,
    events: Sequence[Event],
    y: float,
    color: str,
    hatch: str | None,
    label_fmt: str | None,
    span: float,
) -> None:
    if not events:
        return
    ax.broken_barh(
        [(e.start, max(e.duration, span * 0.002)) for e in events],
        (y - _BAR / 2, _BAR),
        facecolors=color,
        edgecolor=COLORS["ink"],
        linewidth=0.8,
        hatch=hatch,
    )
    if label_fmt is None:
        return
    for e in events:
        if e.duration > span * 0.03:
            ax.text(
                e.start + e.duration / 2,
                y,
                label_fmt.format(e.index),
                ha="center",
                va="center",
                fontsize=12,
                color="white" if color == COLORS["item"] else COLORS["ink"],
                fontweight="bold",
            )


def plot_swimlanes(
    trace: Trace,
    ax: Axes | None = None,
    title: str | None = None,
    xlim: tuple[float, float] | None = None,
    legend: bool = True,
) -> Figure:
    """Draw ``trace`` as swimlanes and return the figure.

    Bars: items loading (blue, labelled with the dataset index), collate (orange, hatched,
    labelled with the batch number), failures (vermillion, cross-hatched), ``DataLoader()`` and
    ``iter()`` running (green, dotted), the main loop waiting for a batch (grey) and shutting
    workers down (purple). Markers: a worker process's first
    moment (green star), its exit (black x), a batch handed to a worker (blue triangle) and a batch
    received by the main loop (black triangle with its number). Dashed line: ``DataLoader()``;
    solid line: ``iter()`` (t = 0).
    """
    with matplotlib.rc_context(STYLE):
        lane_list = lanes(trace)
        if ax is None and legend:
            fig = Figure(figsize=(13, 2.2 + 0.95 * len(lane_list)), layout="constrained")
            ax = fig.add_subplot()
        elif ax is None:  # fixed margins (in inches) instead of a layout engine: quicker to redraw
            height = 1.6 + 0.95 * len(lane_list)
            fig = Figure(figsize=(13, height))
            fig.subplots_adjust(
                left=1.45 / 13, right=1 - 0.25 / 13, top=1 - 0.75 / height, bottom=0.8 / height
            )
            ax = fig.add_subplot()
        else:
            fig = ax.get_figure()  # type: ignore[assignment]
        times = [t for e in trace.events for t in (e.start, e.end)] or [0.0, 1.0]
        lo, hi = xlim or (min(times + [0.0]), max(times))
        span = max(hi - lo, 1e-6)
        ys = {pid: -row for row, (pid, _) in enumerate(lane_list)}

        for pid, y in ys.items():
            mine = [e for e in trace.events if e.pid == pid]
            of = lambda *kinds: [e for e in mine if e.kind in kinds]
            _bars(ax, of(Kind.BATCH_RECEIVED), y, COLORS["wait"], None, None, span)
            _bars(ax, of(Kind.ITER_CLOSED), y, COLORS["close"], None, None, span)
            _bars(ax, of(Kind.LOADER_CREATED, Kind.ITER_CALLED), y, COLORS["start"], "..", None, span)
            _bars(ax, of(Kind.ITEM_LOADED), y, COLORS["item"], None, "{}", span)
            _bars(ax, of(Kind.ITEM_FAILED), y, COLORS["failed"], "xx", "{}", span)
            _bars(ax, of(Kind.COLLATED), y, COLORS["collate"], "//", "b{}", span)
            for e in of(Kind.WORKER_READY):
                ax.plot(
                    e.start,
                    y,
                    marker="*",
                    markersize=22,
                    color=COLORS["start"],
                    markeredgecolor=COLORS["ink"],
                    zorder=5,
                )
            for e in of(Kind.WORKER_EXITED):
                ax.plot(e.start, y, marker="X", markersize=13, color=COLORS["ink"], zorder=5)
            if pid != trace.main_pid and mine and not of(Kind.WORKER_EXITED) and trace.error is not None:
                last = max(e.end for e in mine)  # it never exited normally: killed, or stopped by the error
                ax.plot(
                    last,
                    y,
                    marker="X",
                    markersize=16,
                    color=COLORS["failed"],
                    markeredgecolor=COLORS["ink"],
                    zorder=6,
                )
            requested = of(Kind.BATCH_REQUESTED)
            if requested:
                ax.plot(
                    [e.start for e in requested],
                    [y - 0.42] * len(requested),
                    linestyle="none",
                    marker="^",
                    markersize=10,
                    color=COLORS["request"],
                    markeredgecolor=COLORS["ink"],
                    zorder=5,
                )
            received = of(Kind.BATCH_RECEIVED)
            if received:
                ax.plot(
                    [e.end for e in received],
                    [y + 0.42] * len(received),
                    linestyle="none",
                    marker="v",
                    markersize=12,
                    color=COLORS["ink"],
                    zorder=5,
                )
                _received_labels(ax, received, y, span)

        for e in trace.of(Kind.LOADER_CREATED):
            ax.axvline(e.start, color=COLORS["ink"], linestyle="--", linewidth=1.5)
            ax.text(e.start, 1.05, " DataLoader()", ha="left", va="bottom", fontsize=13)
        for e in trace.of(Kind.ITER_CALLED):
            ax.axvline(e.start, color=COLORS["ink"], linestyle="-", linewidth=1.5)
            ax.text(e.start, 0.75, " iter()", ha="left", va="bottom", fontsize=13)

        ax.set_yticks(list(ys.values()), [label for _, label in lane_list])
        ax.set_ylim(-len(lane_list) + 0.4, 1.5)
        ax.set_xlim(lo - span * 0.02, hi + span * 0.02)
        ax.set_xlabel("seconds since iter()")
        ax.grid(axis="x", alpha=0.3)
        settings = trace.settings
        ax.set_title(
            title
            or (
                f"num_workers={settings.get('num_workers')}, batch_size={settings.get('batch_size')}, "
                f"start method: {trace.start_method or 'none'}"
            ),
            loc="left",
        )
        if legend:
            ax.legend(
                handles=_legend_handles(),
                loc="upper center",
                bbox_to_anchor=(0.5, -0.18 - 0.3 / len(lane_list)),
                ncol=4,
                frameon=False,
            )
    return fig


def compare_swimlanes(traces: Mapping[str, Trace]) -> Figure:
    """Several traces stacked on one shared time axis (t = 0 at each one's ``iter()``), titled by
    their keys, with one legend at the bottom."""
    heights = [len(lanes(t)) + 1.2 for t in traces.values()]
    times = [x for t in traces.values() for e in t.events for x in (e.start, e.end)] or [0.0, 1.0]
    xlim = (min(times + [0.0]), max(times))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13, 1.6 + 0.95 * sum(heights)), layout="constrained")
        axes = fig.subplots(len(traces), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
        for ax, (title, trace) in zip(axes, traces.items()):
            plot_swimlanes(trace, ax=ax, title=title, xlim=xlim, legend=False)
        for ax in axes[:-1]:
            ax.set_xlabel("")
        axes[-1].legend(
            handles=_legend_handles(), loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4, frameon=False
        )
    return fig


def plot_memory(reports: Mapping[str, MemoryReport]) -> Figure:
    """One panel per report: a bar per process, split into its private memory (USS) and the
    pages it shares with others (RSS - USS); a tick at its PSS; a dashed line at the data's size."""
    mib = 2**20
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.3 * len(reports) + 1.5, 6.2), layout="constrained")
        axes = fig.subplots(1, len(reports), sharey=True, squeeze=False)[0]
        for ax, (title, report) in zip(axes, reports.items()):
            processes = [report.main, *report.workers]
            x = range(len(processes))
            uss = [p.uss / mib for p in processes]
            shared = [(p.rss - p.uss) / mib for p in processes]
            ax.bar(x, uss, color=COLORS["failed"], edgecolor=COLORS["ink"], label="private (USS)")
            ax.bar(
                x,
                shared,
                bottom=uss,
                color=COLORS["wait"],
                edgecolor=COLORS["ink"],
                hatch="//",
                label="shared with other processes (RSS - USS)",
            )
            for i, p in enumerate(processes):
                inside = p.uss / mib > 0.08 * max(q.rss / mib for q in processes)
                ax.text(
                    i,
                    p.uss / mib / 2 if inside else p.uss / mib,
                    f"{p.uss / mib:.0f}",
                    ha="center",
                    va="center" if inside else "bottom",
                    color="white" if inside else COLORS["ink"],
                    fontweight="bold",
                )
                if p.pss is not None:
                    ax.plot([i - 0.45, i + 0.45], [p.pss / mib] * 2, color=COLORS["ink"], linewidth=3)
            if report.data_bytes:
                ax.axhline(report.data_bytes / mib, color=COLORS["item"], linestyle="--", linewidth=2)
                ax.text(
                    -0.5,
                    report.data_bytes / mib,
                    " data size",
                    color=COLORS["item"],
                    ha="left",
                    va="bottom",
                    fontsize=13,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
                )
            ax.set_xticks(list(x), [p.role.replace("worker ", "worker\n") for p in processes])
            ax.set_title(title, loc="left")
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("memory (MiB)")
        handles, _ = axes[0].get_legend_handles_labels()
        handles.append(
            Line2D([], [], color=COLORS["ink"], linewidth=3, label="PSS (fair share of shared pages)")
        )
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    return fig


def legend_figure() -> Figure:
    """The swimlane legend on its own, for charts drawn with ``legend=False``."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13, 1.9))
        fig.legend(handles=_legend_handles(), loc="center", ncol=3, frameon=False)
    return fig


def _legend_handles() -> list[Patch | Line2D]:
    return [
        Patch(facecolor=COLORS["item"], edgecolor=COLORS["ink"], label="item loading (index)"),
        Patch(facecolor=COLORS["collate"], edgecolor=COLORS["ink"], hatch="//", label="collate (batch no.)"),
        Patch(facecolor=COLORS["failed"], edgecolor=COLORS["ink"], hatch="xx", label="item failed"),
        Patch(facecolor=COLORS["wait"], edgecolor=COLORS["ink"], label="main waits for batch"),
        Patch(
            facecolor=COLORS["start"], edgecolor=COLORS["ink"], hatch="..", label="DataLoader() / iter() run"
        ),
        Line2D(
            [],
            [],
            marker="*",
            markersize=18,
            color=COLORS["start"],
            markeredgecolor=COLORS["ink"],
            linestyle="none",
            label="worker process starts",
        ),
        Line2D(
            [], [], marker="X", markersize=11, color=COLORS["ink"], linestyle="none", label="worker exits"
        ),
        Line2D(
            [],
            [],
            marker="X",
            markersize=13,
            color=COLORS["failed"],
            markeredgecolor=COLORS["ink"],
            linestyle="none",
            label="worker ended without a normal exit",
        ),
        Line2D(
            [],
            [],
            marker="^",
            markersize=10,
            color=COLORS["request"],
            markeredgecolor=COLORS["ink"],
            linestyle="none",
            label="batch handed to a worker",
        ),
        Line2D(
            [],
            [],
            marker="v",
            markersize=11,
            color=COLORS["ink"],
            linestyle="none",
            label="batch received by loop",
        ),
        Patch(facecolor=COLORS["close"], edgecolor=COLORS["ink"], label="shutting workers down"),
    ]


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (for an image widget)."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 1}
    )  # fast to encode; a few KB more
    return buffer.getvalue()
