"""Swimlane charts of a :class:`~helpers.events.Trace`: one lane per process, time since ``iter()``.

Every event stays readable at every time scale: short bars get a minimum width, markers that
would hide one another are counted ("×5") or stacked, and labels are laid out from their
measured size so that they never cover one another or a bar they do not belong to. Figures have
margins fixed in inches (no layout engine), so that layout is known before anything is drawn,
and a redraw is quick. They are built with matplotlib's object API (no pyplot state), so they can
be drawn from any thread; in a notebook, run ``%matplotlib inline`` once and a returned figure
shows as an image.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.textpath import text_to_path

from .events import Event, Kind, Trace, WaitEnd
from .memory import MemoryReport, ProcessMemory

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = [
    "COLORS",
    "MIN_COLLATE_PT",
    "STYLE",
    "compare_swimlanes",
    "figure_png",
    "lanes",
    "legend_entries",
    "legend_figure",
    "plot_memory",
    "plot_swimlanes",
]

#: Okabe-Ito colours, distinguishable with the common colour-vision deficiencies (greys and a
#: light tint of bluish green for the quiet marks).
COLORS = {
    "item": "#0072B2",  # blue
    "collate": "#E69F00",  # orange
    "failed": "#D55E00",  # vermillion
    "start": "#009E73",  # bluish green
    "starting": "#D4EFE7",  # bluish green, light
    "request": "#56B4E9",  # sky blue
    "no batch": "#F0E442",  # yellow
    "wait": "#BBBBBB",  # grey
    "unused": "#E6E6E6",  # light grey
    "close": "#CC79A7",  # reddish purple
    "ink": "#000000",
}

#: Sizes for a projector at the back of a room.
STYLE: dict[RcKeyType, Any] = {
    "font.size": 15,
    "axes.titlesize": 18,
    "axes.labelsize": 16,
    "xtick.labelsize": 14,
    "ytick.labelsize": 14,
    "legend.fontsize": 13,
}

_WIDTH = 13.0  # figure width, inches
_PITCH = 0.8  # inches from one lane to the next
_BAR = 0.6  # bar height, in lanes
_HEAD = 1.45  # room above the main lane's centre, in lanes: markers and three rows of labels
_FOOT = 0.65  # room below the last lane's centre, in lanes: one row of labels
_FONT = 12  # label size, points
_PAD = 2.0  # points kept clear around every label
_CLEAR = _PAD + 0.5  # points from a box to a label's text beside it: the padding, and a little more
_HALF_LINE = 0.75  # half the width of the DataLoader() and iter() lines, points
_MIN_PT = 1.0  # the narrowest bar, points
MIN_COLLATE_PT = 5.0  #: the narrowest collate bar, points
_LEGEND_ROW = 0.275  # inches per legend row


@dataclass(frozen=True)
class _Look:
    """How one kind of mark is drawn, and what the legend says it means."""

    label: str
    color: str
    hatch: str | None = None
    edge: str = COLORS["ink"]
    marker: str | None = None  #: ``None`` for a bar
    size: float = 0.0  #: marker size, points
    zorder: float = 2.0  #: markers above bars; a collate above the item after it; an exit under both


def _wait_key(how: WaitEnd) -> str:
    return f"no batch: {how.name.lower()}"


_NO_BATCH_HATCH = {
    WaitEnd.END_OF_DATA: None,
    WaitEnd.TIMEOUT: "--",
    WaitEnd.WORKER_DIED: "xx",
    WaitEnd.ERROR: "\\\\",
    WaitEnd.INTERRUPTED: "||",
}

#: Every kind of mark, in the legend's order.
_LOOKS = {
    "call": _Look("DataLoader() / iter() running", COLORS["start"], ".."),
    "wait": _Look("main waits for a batch", COLORS["wait"]),
    **{
        _wait_key(how): _Look(
            f"next() got no batch: {how.label.removesuffix(' (StopIteration)')}", COLORS["no batch"], hatch
        )
        for how, hatch in _NO_BATCH_HATCH.items()
    },
    "close": _Look("shutting workers down", COLORS["close"]),
    "request": _Look("batch handed out (×n: n at once)", COLORS["request"], marker="^", size=11, zorder=5),
    "received": _Look("batch received (bn)", COLORS["ink"], marker="v", size=12, zorder=5),
    "created": _Look("process created", "white", marker="o", size=12, zorder=5),
    "starting": _Look(
        "starting: interpreter, imports, unpickling", COLORS["starting"], "\\\\", edge=COLORS["start"]
    ),
    "running": _Look("first Python code of ours runs", COLORS["ink"], marker="|", size=26, zorder=5),
    "ready": _Look("ready: worker_init_fn ran", COLORS["start"], marker="*", size=22, zorder=5),
    "item": _Look("item loading (dataset index)", COLORS["item"]),
    "failed": _Look("item failed", COLORS["failed"], "xx"),
    "collate": _Look("collate_fn builds batch n (bn)", COLORS["collate"], "//", zorder=3),
    "unused": _Look("built, never received (unused)", COLORS["unused"], "//", edge="#666666", zorder=3),
    "exit": _Look("exit", COLORS["ink"], marker="X", size=13, zorder=2.5),
    "died": _Look("ended without a normal exit", COLORS["failed"], marker="X", size=16, zorder=2.5),
}

#: Under ``fork`` no interpreter starts and nothing is imported or unpickled.
_STARTING_UNDER_FORK = "starting: fork, worker set-up"


def lanes(trace: Trace) -> list[tuple[int, str]]:
    """``(pid, label)`` for each lane: main first, then the fork server (if the trace has one),
    then workers by epoch and worker id."""
    iter_starts = [e.start for e in trace.of(Kind.ITER_CALLED)]
    order: dict[int, tuple[int, int]] = {}
    for event in trace.events:
        if event.worker_id >= 0 and event.pid not in order:
            order[event.pid] = (sum(1 for t in iter_starts if t <= event.start), event.worker_id)
    parent = "\nchild of fork server" if trace.start_method == "forkserver" else ""
    found = [(trace.main_pid, f"main\npid {trace.main_pid}")]
    server = trace.fork_server_pid
    if server is not None:
        found.append((server, f"fork server\npid {server}"))
    workers = sorted(order, key=order.__getitem__)
    return found + [(pid, f"worker {order[pid][1]}\npid {pid}{parent}") for pid in workers]


# --- reading a trace ----------------------------------------------------------------------------


def _of(events: Iterable[Event], *kinds: Kind) -> list[Event]:
    return [e for e in events if e.kind in kinds]


def _spans(events: Iterable[Event]) -> list[tuple[float, float]]:
    return [(e.start, e.end) for e in events]


def _is_note(event: Event) -> bool:
    """A fork server that was running before this run: a note on its lane, not a point in time
    (it may have started minutes before)."""
    return event.kind == Kind.FORK_SERVER and event.start == event.end


def _time_range(trace: Trace) -> tuple[float, float]:
    """From the earliest event (``iter()`` at the latest) to the last one."""
    times = [t for e in trace.events if not _is_note(e) for t in (e.start, e.end)]
    lo, hi = min([0.0, *times]), max(times, default=1.0)
    return lo, hi if hi > lo else lo + 1.0


def _died(trace: Trace, events: Sequence[Event]) -> bool:
    """A worker that recorded events but no normal exit, in a run an error ended."""
    return (
        trace.error is not None
        and any(e.worker_id >= 0 for e in events)
        and not _of(events, Kind.WORKER_EXITED)
    )


def _wait_text(trace: Trace, how: WaitEnd) -> str:
    """How a ``next()`` that got no batch ended, as the chart says it."""
    if how != WaitEnd.END_OF_DATA:
        return how.label
    shuts_down = trace.start_method is not None and not trace.settings.get("persistent_workers")
    return "end of data + shutdown" if shuts_down else "end of data"


def _batch_text(numbers: Sequence[int]) -> str:
    """``b3``; ``b0–3`` for a run of numbers; ``b0, b4, …, b20`` for a longer series with one
    step; ``b0, b4`` otherwise. A number repeated (two epochs) is named once.

    >>> _batch_text([2, 0, 1, 1])
    'b0–2'
    """
    ns = sorted(set(numbers))
    if len(ns) == 1:
        return f"b{ns[0]}"
    if ns == list(range(ns[0], ns[-1] + 1)):
        return f"b{ns[0]}–{ns[-1]}"
    if len(ns) > 3 and ns == list(range(ns[0], ns[-1] + 1, ns[1] - ns[0])):
        return f"b{ns[0]}, b{ns[1]}, …, b{ns[-1]}"
    return ", ".join(f"b{n}" for n in ns)


def _seconds(duration: float) -> str:
    if duration < 1:
        return f"{duration * 1000:.0f} ms"
    return f"{duration:.1f} s" if duration < 100 else f"{duration:.0f} s"


def _marks(trace: Trace) -> list[str]:
    """The keys of the looks a chart of ``trace`` draws, in the legend's order."""
    kinds = {e.kind for e in trace.events}
    wasted = set(trace.wasted_batches)
    collates = {e.index in wasted for e in trace.of(Kind.COLLATED)}
    shown = {key for kind, keys in _KIND_MARKS.items() if kind in kinds for key in keys}
    shown |= {_wait_key(how) for _, how in trace.waits_ended()}
    shown |= {"unused"} if True in collates else set()
    shown |= {"collate"} if False in collates else set()
    started = [e for e in trace.of(Kind.FORK_SERVER) if not _is_note(e)]
    shown |= {"created", "starting"} if started else set()
    pids = {e.pid for e in trace.events if e.worker_id >= 0}
    shown |= {"died"} if any(_died(trace, [e for e in trace.events if e.pid == p]) for p in pids) else set()
    return [key for key in _LOOKS if key in shown]


_KIND_MARKS = {
    Kind.LOADER_CREATED: ("call",),
    Kind.ITER_CALLED: ("call",),
    Kind.BATCH_REQUESTED: ("request",),
    Kind.BATCH_RECEIVED: ("wait", "received"),
    Kind.ITER_CLOSED: ("close",),
    Kind.PROCESS_CREATED: ("created", "starting"),
    Kind.PROCESS_RUNNING: ("running",),
    Kind.WORKER_READY: ("ready",),
    Kind.ITEM_LOADED: ("item",),
    Kind.ITEM_FAILED: ("failed",),
    Kind.WORKER_EXITED: ("exit",),
}


# --- laying labels out --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _text_size(text: str, size: float = _FONT, bold: bool = False) -> tuple[float, float]:
    """Width and height in points of one line of ``text`` as matplotlib draws it (its height is
    at least that of "lp", as in :class:`matplotlib.text.Text`), plus a point for rounding."""
    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    width, height, _ = text_to_path.get_text_width_height_descent(text, prop, ismath=False)
    _, line, _ = text_to_path.get_text_width_height_descent("lp", prop, ismath=False)
    return width + 1.0, max(height, line) + 1.0


@dataclass(frozen=True)
class _Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: _Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def within(self, other: _Box) -> bool:
        return other.x0 <= self.x0 and self.x1 <= other.x1 and other.y0 <= self.y0 and self.y1 <= other.y1

    def area_shared(self, other: _Box) -> float:
        dx = min(self.x1, other.x1) - max(self.x0, other.x0)
        dy = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(dx, 0.0) * max(dy, 0.0)


def _union(boxes: Iterable[_Box]) -> _Box:
    bs = list(boxes)
    return _Box(min(b.x0 for b in bs), min(b.y0 for b in bs), max(b.x1 for b in bs), max(b.y1 for b in bs))


@dataclass(frozen=True)
class _Spot:
    """Where a label's text is anchored, in data units, and how it is aligned there."""

    x: float
    y: float
    ha: str = "center"
    va: str = "center"


@dataclass(frozen=True)
class _Label:
    text: str
    spots: tuple[_Spot, ...]  #: where it may go, best first
    host: _Box | None = None  #: the bar it labels from inside: the one box it may cover, wholly
    required: bool = False  #: drawn even when no spot is free (where it covers least)
    color: str = COLORS["ink"]
    bold: bool = False


def _axes_inches(ax: Axes) -> tuple[float, float]:
    width, height = ax.get_figure().get_size_inches()  # type: ignore[union-attr]
    position = ax.get_position()
    return position.width * width, position.height * height


class _Layout:
    """Places labels on one axes where they cover no bar, marker or other label.

    It works in data units, converted from points with the axes' size on its figure, so the layout
    is known before anything is drawn. Obstacles are kept in vertical strips for quick look-up.
    """

    def __init__(self, ax: Axes) -> None:
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        width, height = _axes_inches(ax)
        self.per_pt = ((x1 - x0) / (72 * width), (y1 - y0) / (72 * height))
        self.bounds = _Box(x0, y0, x1, y1)
        self._strip = (x1 - x0) / 64
        self._taken: dict[int, list[tuple[_Box, bool]]] = {}
        self._labels: list[_Label] = []

    def _strips(self, box: _Box) -> range:
        return range(
            math.floor((box.x0 - self.bounds.x0) / self._strip),
            math.floor((box.x1 - self.bounds.x0) / self._strip) + 1,
        )

    def block(self, box: _Box, bar: bool = False) -> None:
        """Keep labels off ``box``; off a ``bar`` too, but for labels wholly inside both it and the
        bar they label (it is that bar, or one drawn over it)."""
        for strip in self._strips(box):
            self._taken.setdefault(strip, []).append((box, bar))

    def add(self, label: _Label) -> None:
        self._labels.append(label)

    def text_box(self, text: str, spot: _Spot, bold: bool = False) -> _Box:
        """The box ``text`` covers at ``spot``, with ``_PAD`` points all round."""
        (w, h), (px, py) = _text_size(text, bold=bold), self.per_pt
        left = {"left": 0.0, "center": w / 2, "right": w}[spot.ha]
        bottom = {"bottom": 0.0, "center": h / 2, "top": h}[spot.va]
        x0, y0 = spot.x - (left + _PAD) * px, spot.y - (bottom + _PAD) * py
        return _Box(x0, y0, x0 + (w + 2 * _PAD) * px, y0 + (h + 2 * _PAD) * py)

    def line(self, text: str) -> float:
        """The height of a row of labels like ``text``, in data units: rows this far apart leave
        half a point between their boxes."""
        return (_text_size(text)[1] + 2 * _PAD + 0.5) * self.per_pt[1]

    def gap(self, a: _Box, b: _Box) -> int:
        """How far apart ``a`` and ``b`` are, in steps of 3 points (so that spots equally near
        compare equal, whatever the rounding)."""
        dx = max(a.x0 - b.x1, b.x0 - a.x1, 0.0) / self.per_pt[0]
        dy = max(a.y0 - b.y1, b.y0 - a.y1, 0.0) / self.per_pt[1]
        return math.floor(math.hypot(dx, dy) / 3)

    def _covered(self, box: _Box, host: _Box | None) -> list[_Box]:
        """What a label of ``host`` (``None``: of no bar) would cover at ``box``."""
        found = {
            id(o): (o, bar) for s in self._strips(box) for o, bar in self._taken.get(s, ()) if box.overlaps(o)
        }
        inside = host is not None and box.within(host)
        return [o for o, bar in found.values() if not (bar and inside and box.within(o))]

    def _best(self, label: _Label) -> _Spot | None:
        spots = [s for s in label.spots if self.text_box(label.text, s, label.bold).within(self.bounds)]
        for spot in spots:
            if not self._covered(self.text_box(label.text, spot, label.bold), label.host):
                return spot
        if not label.required or not label.spots:
            return None

        def covered_area(spot: _Spot) -> float:
            box = self.text_box(label.text, spot, label.bold)
            return sum(box.area_shared(o) for o in self._covered(box, label.host))

        return min(spots or label.spots, key=covered_area)

    def place(self) -> list[tuple[_Label, _Spot]]:
        """Each label at its first free spot, required labels first; a required label with no
        free spot goes where it covers least, any other is left out."""
        placed = []
        for label in sorted(self._labels, key=lambda label: not label.required):
            spot = self._best(label)
            if spot is not None:
                self.block(self.text_box(label.text, spot, label.bold))
                placed.append((label, spot))
        return placed


def _around(layout: _Layout, box: _Box, text: str, rows: int = 1, inside: bool = False) -> tuple[_Spot, ...]:
    """Spots for a label of ``box``, nearest first: inside it (if asked); in up to ``rows`` rows
    above it and one below, centred or shifted either way; beside it. Equally near: in that order."""
    (px, py), clear = layout.per_pt, _CLEAR
    w, h = (_text_size(text)[0] + 2 * _PAD) * px, layout.line(text)
    mid, middle = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    lines = [(box.y1 + clear * py, "bottom"), (box.y0 - clear * py, "top")]
    lines += [(box.y1 + clear * py + k * h, "bottom") for k in range(1, rows)]
    shifts = [(mid, "center"), (mid, "left"), (mid, "right")]
    shifts += [(mid + k * w / 2, "left") for k in (1, 2)] + [(mid - k * w / 2, "right") for k in (1, 2)]
    spots = [_Spot(mid, middle)] if inside else []
    spots += [_Spot(x, y, ha, va) for y, va in lines for x, ha in shifts]
    spots += [_Spot(box.x1 + clear * px, middle, "left"), _Spot(box.x0 - clear * px, middle, "right")]
    return tuple(sorted(spots, key=lambda spot: layout.gap(layout.text_box(text, spot), box)))


def _clusters(xs: Sequence[float], gap: float) -> list[list[int]]:
    """Indices of ``xs`` in order of ``xs``, in runs whose neighbours are at most ``gap`` apart."""
    runs: list[list[int]] = []
    for i in sorted(range(len(xs)), key=xs.__getitem__):
        if runs and xs[i] - xs[runs[-1][-1]] <= gap:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


# --- drawing ------------------------------------------------------------------------------------


class _Chart:
    """One trace being drawn on one axes: its lanes, and the layout its labels share."""

    def __init__(self, ax: Axes, trace: Trace, xlim: tuple[float, float]) -> None:
        self.ax, self.trace = ax, trace
        self.lanes = lanes(trace)
        margin = (xlim[1] - xlim[0]) * 0.02
        ax.set_xlim(xlim[0] - margin, xlim[1] + margin)
        ax.set_ylim(1 - len(self.lanes) - _FOOT, _HEAD)
        self.layout = _Layout(ax)

    def width(self, points: float) -> float:
        return points * self.layout.per_pt[0]

    def height(self, points: float) -> float:
        return points * self.layout.per_pt[1]

    def bars(
        self, spans: Sequence[tuple[float, float]], y: float, key: str, min_pt: float = _MIN_PT
    ) -> list[_Box]:
        """A bar from start to end for each span on lane ``y``, at least ``min_pt`` wide."""
        if not spans:
            return []
        look, least = _LOOKS[key], self.width(min_pt)
        boxes = [_Box(s, y - _BAR / 2, max(e, s + least), y + _BAR / 2) for s, e in spans]
        self.ax.broken_barh(
            [(b.x0, b.x1 - b.x0) for b in boxes],
            (y - _BAR / 2, _BAR),
            facecolors=look.color,
            edgecolor=look.edge,
            linewidth=0.8,
            hatch=look.hatch,
            zorder=look.zorder,
            gid=key,
        )
        for box in boxes:
            self.layout.block(box, bar=True)
        return boxes

    def marks(self, xs: Sequence[float], y: float, key: str) -> list[_Box]:
        """A marker at each of ``xs`` on height ``y``."""
        if not xs:
            return []
        look = _LOOKS[key]
        self.ax.plot(
            xs,
            [y] * len(xs),
            linestyle="none",
            marker=look.marker,
            markersize=look.size,
            color=look.color,
            markeredgecolor=look.edge,
            markeredgewidth=2.5 if look.marker == "|" else 1.0,
            zorder=look.zorder,
            gid=key,
        )
        half_w = self.width(1.5 if look.marker == "|" else look.size / 2)
        half_h = self.height(look.size / 2)
        boxes = [_Box(x - half_w, y - half_h, x + half_w, y + half_h) for x in xs]
        for box in boxes:
            self.layout.block(box)
        return boxes

    def label(
        self,
        text: str,
        spots: Sequence[_Spot],
        *,
        host: _Box | None = None,
        required: bool = False,
        color: str = COLORS["ink"],
        bold: bool = False,
    ) -> None:
        """Lay ``text`` out at the first free one of ``spots`` (see :class:`_Label`)."""
        self.layout.add(_Label(text, tuple(spots), host, required, color, bold))

    def finish(self) -> None:
        """Draw the labels where the layout put them."""
        for label, spot in self.layout.place():
            self.ax.text(
                spot.x,
                spot.y,
                label.text,
                ha=spot.ha,
                va=spot.va,
                fontsize=_FONT,
                color=label.color,
                fontweight="bold" if label.bold else "normal",
                zorder=6,
            )


def _draw_calls(chart: _Chart) -> None:
    """A dashed line where ``DataLoader()`` was called and a solid one at each ``iter()``, each
    named at the top."""
    layout = chart.layout
    for kind, text, style in ((Kind.LOADER_CREATED, "DataLoader()", "--"), (Kind.ITER_CALLED, "iter()", "-")):
        for e in chart.trace.of(kind):
            chart.ax.axvline(
                e.start, color=COLORS["ink"], linestyle=style, linewidth=2 * _HALF_LINE, zorder=1
            )
            bounds, half = layout.bounds, chart.width(_HALF_LINE)
            layout.block(_Box(e.start - half, bounds.y0, e.start + half, bounds.y1))
            top, x = layout.bounds.y1 - chart.height(_CLEAR), e.start + chart.width(_HALF_LINE + _CLEAR)
            rows = [_Spot(x, top - k * layout.line(text), "left", "top") for k in range(3)]
            chart.label(text, rows, required=True)


def _draw_main(chart: _Chart, mine: list[Event], y: float) -> None:
    """The main process: ``DataLoader()`` and ``iter()`` running, each wait for a batch and how it
    ended, the shutdown, batches handed out and received."""
    chart.bars(_spans(_of(mine, Kind.LOADER_CREATED, Kind.ITER_CALLED)), y, "call")
    received = _of(mine, Kind.BATCH_RECEIVED)
    chart.bars(_spans(received), y, "wait")
    for e in _of(mine, Kind.WAIT_ENDED):
        how = WaitEnd(e.index)
        box = chart.bars([(e.start, e.end)], y, _wait_key(how))[0]
        text = _wait_text(chart.trace, how)
        inside = _NO_BATCH_HATCH[how] is None
        chart.label(text, _around(chart.layout, box, text, 3, inside), host=box, required=True)
    for box in chart.bars(_spans(_of(mine, Kind.ITER_CLOSED)), y, "close", min_pt=3.0):
        chart.label("shutting down", [_Spot((box.x0 + box.x1) / 2, y)], host=box)
    _draw_hand_outs(chart, _of(mine, Kind.BATCH_REQUESTED), y)
    _draw_received(chart, received, y)


def _draw_hand_outs(chart: _Chart, requested: list[Event], y: float) -> None:
    """A triangle below the main bar for each batch handed out; triangles too close to tell apart,
    or to count, get a count ("×5")."""
    size = _LOOKS["request"].size
    xs = [e.start for e in requested]
    boxes = chart.marks(xs, y - _BAR / 2 - chart.height(size / 2 + 1), "request")
    top, clear = y - _BAR / 2 - chart.height(_CLEAR), chart.width(_CLEAR)
    for run in _clusters(xs, chart.width(size + _text_size("×00", bold=True)[0])):
        if len(run) > 1:
            box, text = _union(boxes[i] for i in run), f"×{len(run)}"
            beside = [_Spot(box.x1 + clear, top, "left", "top"), _Spot(box.x0 - clear, top, "right", "top")]
            chart.label(text, beside + list(_around(chart.layout, box, text)), required=True, bold=True)


def _draw_received(chart: _Chart, received: list[Event], y: float) -> None:
    """A triangle on the main bar where the loop got each batch, numbered; batches that arrived
    too close together for a label each share one ("b0–3")."""
    size = _LOOKS["received"].size
    xs = [e.end for e in received]
    boxes = chart.marks(xs, y + _BAR / 2 + chart.height(size / 2 + 1), "received")
    for run in _clusters(xs, chart.width(_text_size("b00")[0] + 2 * _PAD)):
        text = _batch_text([received[i].index for i in run])
        chart.label(text, _around(chart.layout, _union(boxes[i] for i in run), text, 3), required=True)


def _draw_fork_server(chart: _Chart, mine: list[Event], y: float) -> None:
    """The fork server: created and starting, where a ``start()`` of this run started it; else a
    note of when it was started, which may be long before the time axis begins."""
    for e in _of(mine, Kind.FORK_SERVER):
        if _is_note(e):
            text = f"◀ fork server started {_seconds(-e.start)} before iter()"
            if e.start >= 0:  # its age is known to a clock tick
                text = "fork server already running"
            left = chart.ax.get_xlim()[0]
            spots = [_Spot(x + chart.width(_HALF_LINE + _CLEAR), y, "left") for x in (left, 0.0)]
            chart.label(text, spots, required=True)
            continue
        box = _union(chart.bars([(e.start, e.end)], y, "starting") + chart.marks([e.start], y, "created"))
        beside = _Spot(box.x1 + chart.width(_CLEAR), y, "left")
        text = "fork server starting"
        chart.label(text, [beside, *_around(chart.layout, box, text)], required=True)


def _draw_life(chart: _Chart, mine: list[Event], y: float) -> None:
    """A worker process's life: created, starting until ready (a tick where its Python first ran),
    ready, exit; a red cross at its last event if it never exited normally."""
    created, ready = _of(mine, Kind.PROCESS_CREATED), _of(mine, Kind.WORKER_READY)
    if created:
        born = created[0].start
        end = ready[0].start if ready else max(e.end for e in mine)
        bar = chart.bars([(born, end)], y, "starting")[0]
        inside = [_Spot(bar.x0 + f * (bar.x1 - bar.x0), y) for f in (0.5, 0.6, 0.4, 0.7, 0.3)]  # off the tick
        chart.label(f"starting {_seconds(end - born)}", inside, host=bar)
        hidden = bool(ready) and end - born < chart.width(_LOOKS["ready"].size)
        chart.marks([born], y - _BAR / 2 if hidden else y, "created")  # below the star it would hide
    chart.marks([e.start for e in _of(mine, Kind.PROCESS_RUNNING)], y, "running")
    chart.marks([e.start for e in ready], y, "ready")
    chart.marks([e.start for e in _of(mine, Kind.WORKER_EXITED)], y, "exit")
    if _died(chart.trace, mine):
        chart.marks([max(e.end for e in mine)], y, "died")


def _draw_work(chart: _Chart, mine: list[Event], y: float) -> None:
    """Items loading (numbered inside where the number fits), failures, and collates."""
    items = _of(mine, Kind.ITEM_LOADED)
    for e, box in zip(items, chart.bars(_spans(items), y, "item"), strict=True):
        mid = _Spot((box.x0 + box.x1) / 2, y)
        chart.label(str(e.index), [mid], host=box, color="white", bold=True)
    failed = _of(mine, Kind.ITEM_FAILED)
    for e, box in zip(failed, chart.bars(_spans(failed), y, "failed"), strict=True):
        text = f"item {e.index} failed"
        chart.label(text, _around(chart.layout, box, text), host=box, required=True)
    wasted = set(chart.trace.wasted_batches)
    collates = _of(mine, Kind.COLLATED)
    _draw_collates(chart, [e for e in collates if e.index not in wasted], y, "collate")
    _draw_collates(chart, [e for e in collates if e.index in wasted], y, "unused")


def _draw_collates(chart: _Chart, collates: list[Event], y: float, key: str) -> None:
    """A collate bar at least ``MIN_COLLATE_PT`` wide for each batch built, always labelled with
    its number ("b5", or "b5 unused"); collates too close for a label each share one."""
    boxes = chart.bars(_spans(collates), y, key, MIN_COLLATE_PT)
    suffix = " unused" if key == "unused" else ""
    gap = chart.width(_text_size(f"b00{suffix}")[0] + 2 * _PAD)
    for run in _clusters([b.x0 for b in boxes], gap):
        text = _batch_text([collates[i].index for i in run]) + suffix
        box = _union(boxes[i] for i in run)
        host = box if len(run) == 1 else None
        chart.label(text, _around(chart.layout, box, text, inside=host is not None), host=host, required=True)


def _draw(ax: Axes, trace: Trace, xlim: tuple[float, float], title: str | None) -> None:
    """Draw ``trace`` on ``ax``, its lanes and labels, with time limits ``xlim``."""
    chart = _Chart(ax, trace, xlim)
    _draw_calls(chart)
    for row, (pid, _) in enumerate(chart.lanes):
        mine = [e for e in trace.events if e.pid == pid]
        if pid == trace.fork_server_pid:
            _draw_fork_server(chart, mine, -row)
            continue
        if pid == trace.main_pid:
            _draw_main(chart, mine, -row)
        _draw_life(chart, mine, -row)
        _draw_work(chart, mine, -row)
    chart.finish()
    ax.set_yticks([-row for row in range(len(chart.lanes))], [label for _, label in chart.lanes])
    ax.set_xlabel("seconds since iter()")
    ax.grid(axis="x", alpha=0.3)
    settings = trace.settings
    default = (
        f"num_workers={settings.get('num_workers')}, batch_size={settings.get('batch_size')}, "
        f"start method: {trace.start_method or 'none'}"
    )
    ax.set_title(title or default, loc="left")


# --- figures and legends ------------------------------------------------------------------------


def _legend(traces: Sequence[Trace]) -> list[tuple[str, str]]:
    """``(look, what it means)`` for each kind of mark the charts of ``traces`` draw, in order;
    every kind there is, for no traces."""
    keys = {key for trace in traces for key in _marks(trace)} if traces else set(_LOOKS)
    only_fork = bool(traces) and all(t.start_method == "fork" for t in traces)
    return [
        (key, _STARTING_UNDER_FORK if key == "starting" and only_fork else _LOOKS[key].label)
        for key in _LOOKS
        if key in keys
    ]


def legend_entries(trace: Trace) -> list[str]:
    """What the legend of ``trace``'s chart says: one line for each kind of mark drawn."""
    return [label for _, label in _legend([trace])]


def _handle(key: str, label: str) -> Patch | Line2D:
    look = _LOOKS[key]
    if look.marker is None:
        return Patch(facecolor=look.color, edgecolor=look.edge, hatch=look.hatch, label=label)
    return Line2D(
        [],
        [],
        marker=look.marker,
        markersize=min(look.size, 15),
        markeredgewidth=2.5 if look.marker == "|" else 1.0,
        color=look.color,
        markeredgecolor=look.edge,
        linestyle="none",
        label=label,
    )


def _legend_columns(labels: Sequence[str]) -> int:
    """The most columns (up to 4) whose labels fit across the figure. Matplotlib fills them one
    after another, the first ``len % ncol`` of them one row longer."""
    size = STYLE["legend.fontsize"]
    for ncol in range(4, 1, -1):
        rows, longer = divmod(len(labels), ncol)
        sizes = [rows + 1] * longer + [rows] * (ncol - longer)
        starts = itertools.accumulate([0, *sizes[:-1]])
        columns = [labels[start : start + n] for start, n in zip(starts, sizes, strict=True) if n]
        widths = [max(_text_size(label, size)[0] for label in column) + 4.0 * size for column in columns]
        if sum(widths) < (_WIDTH - 0.4) * 72:
            return ncol
    return 1


def _legend_height(entries: Sequence[tuple[str, str]]) -> float:
    """Inches a legend of ``entries`` needs at the bottom of a figure."""
    if not entries:
        return 0.0
    return math.ceil(len(entries) / _legend_columns([label for _, label in entries])) * _LEGEND_ROW + 0.25


def _add_legend(fig: Figure, entries: Sequence[tuple[str, str]], height: float) -> None:
    """The legend across the bottom ``height`` inches of ``fig``."""
    fig.legend(
        handles=[_handle(key, label) for key, label in entries],
        loc="upper center",
        bbox_to_anchor=(0.5, height / fig.get_size_inches()[1]),
        ncol=_legend_columns([label for _, label in entries]),
        columnspacing=1.2,
        frameon=False,
    )


def _figure(traces: Sequence[Trace], legend: float) -> tuple[Figure, list[Axes]]:
    """A figure with one axes per trace, stacked, sharing time, with margins fixed in inches and
    ``legend`` inches at the bottom for a legend."""
    top, gap, bottom, right = 0.6, 0.7, 0.8, 0.3
    lines = [line for t in traces for _, label in lanes(t) for line in label.split("\n")]
    left = max(_text_size(line, STYLE["ytick.labelsize"])[0] for line in lines) / 72 + 0.3
    heights = [_PITCH * (len(lanes(t)) - 1 + _FOOT + _HEAD) for t in traces]
    total = top + sum(heights) + gap * (len(heights) - 1) + bottom + legend
    fig = Figure(figsize=(_WIDTH, total))
    axes: list[Axes] = []
    y = total - top
    for height in heights:
        y -= height
        box = (left / _WIDTH, y / total, (_WIDTH - left - right) / _WIDTH, height / total)
        axes.append(fig.add_axes(box, sharex=axes[0] if axes else None))
        y -= gap
    return fig, axes


def plot_swimlanes(
    trace: Trace,
    ax: Axes | None = None,
    title: str | None = None,
    xlim: tuple[float, float] | None = None,
    legend: bool = True,
) -> Figure:
    """Draw ``trace`` as swimlanes (on ``ax``, or on a new figure) and return the figure.

    Each worker lane shows the process's life (created, starting until ready, work, exit) and
    each batch it built; the main lane shows ``DataLoader()`` and ``iter()`` running, batches
    handed out and received, every wait and how it ended, and the shutdown. The legend lists
    exactly the kinds of mark drawn (:func:`legend_entries`).
    """
    entries = _legend([trace]) if legend else []
    with matplotlib.rc_context(STYLE):
        if ax is not None:  # someone else's figure: the legend goes below the axes
            _draw(ax, trace, xlim or _time_range(trace), title)
            if entries:
                handles = [_handle(key, label) for key, label in entries]
                ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
            return ax.get_figure()  # type: ignore[return-value]
        height = _legend_height(entries)
        fig, (ax,) = _figure([trace], height)
        _draw(ax, trace, xlim or _time_range(trace), title)
        if entries:
            _add_legend(fig, entries, height)
    return fig


def compare_swimlanes(traces: Mapping[str, Trace]) -> Figure:
    """Several traces stacked on one shared time axis (t = 0 at each one's ``iter()``), titled by
    their keys, with one legend at the bottom."""
    ranges = [_time_range(t) for t in traces.values()]
    xlim = (min(lo for lo, _ in ranges), max(hi for _, hi in ranges))
    entries = _legend(list(traces.values()))
    with matplotlib.rc_context(STYLE):
        height = _legend_height(entries)
        fig, axes = _figure(list(traces.values()), height)
        for ax, (title, trace) in zip(axes, traces.items(), strict=True):
            _draw(ax, trace, xlim, title)
        for ax in axes[:-1]:
            ax.set_xlabel("")
            ax.tick_params(labelbottom=False)
        _add_legend(fig, entries, height)
    return fig


def legend_figure(trace: Trace | None = None) -> Figure:
    """The swimlane legend on its own, for charts drawn with ``legend=False``: the marks of
    ``trace``'s chart, or of every chart."""
    entries = _legend([trace] if trace is not None else [])
    with matplotlib.rc_context(STYLE):
        height = _legend_height(entries)
        fig = Figure(figsize=(_WIDTH, height))
        _add_legend(fig, entries, height)
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (for an image widget)."""
    buffer = io.BytesIO()
    # Fast to encode; a few KB more.
    fig.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


# --- memory -------------------------------------------------------------------------------------


def _memory_panel(ax: Axes, title: str, report: MemoryReport) -> None:
    """One bar per process: its private memory (USS) under the pages it shares (RSS - USS), a
    tick at its PSS, and a dashed line at the data's size."""
    mib = 2**20
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
    tallest = max(p.rss / mib for p in processes)
    for i, p in enumerate(processes):
        _memory_numbers(ax, i, p, tallest)
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


def _memory_numbers(ax: Axes, i: int, p: ProcessMemory, tallest: float) -> None:
    """Process ``i``'s USS in MiB, inside its bar where it fits; a tick at its PSS."""
    mib = 2**20
    inside = p.uss / mib > 0.08 * tallest
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


def plot_memory(reports: Mapping[str, MemoryReport]) -> Figure:
    """One panel per report: a bar per process, split into its private memory (USS) and the
    pages it shares with others (RSS - USS); a tick at its PSS; a dashed line at the data's size."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.3 * len(reports) + 1.5, 6.2), layout="constrained")
        axes = fig.subplots(1, len(reports), sharey=True, squeeze=False)[0]
        for ax, (title, report) in zip(axes, reports.items(), strict=True):
            _memory_panel(ax, title, report)
        axes[0].set_ylabel("memory (MiB)")
        handles, _ = axes[0].get_legend_handles_labels()
        handles.append(
            Line2D([], [], color=COLORS["ink"], linewidth=3, label="PSS (fair share of shared pages)")
        )
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    return fig
