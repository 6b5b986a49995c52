"""Kernel-side helpers that notebooks 01-03 share: excerpts of the installed PyTorch source, and
panels whose controls re-run a real ``DataLoader`` and redraw what it did.

Nothing here runs in a worker process (what workers import is in :mod:`helpers.scenarios`).

Each panel runs its first experiment before it is shown and leaves that run's chart in the
notebook as a picture, so a saved or rendered notebook shows a chart too. Each later change runs
a new experiment, and its chart is drawn inside the panel, under the controls. Changes that arrive
while an experiment runs are merged: when it ends, only the latest setting runs, so at most one
experiment (and its workers) exists at a time.
"""

from __future__ import annotations

import html
import inspect
import multiprocessing
import os
import statistics
import textwrap
from typing import Any, cast

import ipywidgets as widgets
import matplotlib
import psutil
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset

from .datasets import ArrayDataset
from .events import Kind, Trace
from .experiment import run_experiment
from .memory import MemoryReport, ProcessMemory, measure_memory
from .plotting import COLORS, STYLE, figure_png, lanes, plot_swimlanes
from .scenarios import SlowCollate
from .system import WORKER_BYTES, memory_limit, workers_that_fit
from .widgets import LatestSettings

__all__ = [
    "LoaderPanel",
    "MemoryPanel",
    "compare_after_start",
    "mib",
    "plot_after_start",
    "show_source",
    "source_lines",
    "work_window",
]

MIB = 2**20


def mib(nbytes: float, digits: int = 0) -> str:
    """``nbytes`` in MiB as text, without a minus sign on a value that rounds to zero.

    >>> mib(-0.3 * 2**20), mib(1.5 * 2**20, 1)
    ('0 MiB', '1.5 MiB')
    """
    return f"{round(nbytes / MIB, digits) + 0.0:.{digits}f} MiB"  # + 0.0 turns -0.0 into 0.0


# --- the installed PyTorch source -----------------------------------------------------------------


def source_lines(obj: Any, start: str, end: str | None = None, more: int = 0) -> tuple[str, int, list[str]]:
    """``(file, first line number, lines)`` of the contiguous block of ``obj``'s installed source
    from the first line containing ``start`` to the first line after it containing ``end`` (just
    that line if ``end`` is ``None``), and ``more`` lines after that. Raises ``LookupError``
    naming a pattern not found."""
    lines, first = inspect.getsourcelines(obj)
    path = inspect.getsourcefile(obj) or "?"
    begin = next((i for i, line in enumerate(lines) if start in line), None)
    if begin is None:
        raise LookupError(f"{start!r} is not in the source of {getattr(obj, '__qualname__', obj)}")
    stop = begin
    if end is not None:
        stop = next((i for i in range(begin, len(lines)) if end in lines[i]), -1)
        if stop < 0:
            raise LookupError(f"{end!r} does not follow {start!r} in {getattr(obj, '__qualname__', obj)}")
    return path, first + begin, [line.rstrip("\n") for line in lines[begin : stop + 1 + more]]


def show_source(obj: Any, start: str, end: str | None = None, more: int = 0) -> None:
    """Print the contiguous block of ``obj``'s installed source from the line containing ``start``
    to the next line containing ``end`` (and ``more`` lines after it), numbered as in the file,
    under the file's name.

    Where this PyTorch has no such lines (another version), say so instead of failing."""
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    try:
        path, number, lines = source_lines(obj, start, end, more)
    except (LookupError, OSError, TypeError) as exc:
        print(f"(not shown: {exc}; this is torch {torch.__version__})")
        return
    marker = f"{os.sep}site-packages{os.sep}"
    shown = path.split(marker, 1)[1] if marker in path else path
    last = number + len(lines) - 1
    print(f"{shown}, lines {number}–{last}, in {name} (torch {torch.__version__}):\n")
    width = len(str(last))
    for offset, line in enumerate(textwrap.dedent("\n".join(lines)).splitlines()):
        print(f"{number + offset:>{width}} | {line}")


# --- charts ---------------------------------------------------------------------------------------


def work_window(trace: Trace) -> tuple[float, float] | None:
    """From just before ``trace``'s first worker was ready to just after its last batch was built
    or received; ``None`` for a run without workers."""
    ready = [e.start for e in trace.of(Kind.WORKER_READY)]
    if not ready:
        return None
    first = min(ready)
    last = max((e.end for e in trace.of(Kind.BATCH_RECEIVED, Kind.COLLATED)), default=first + 1.0)
    margin = (last - first) * 0.04
    return first - margin, last + margin


def _clip_labels(fig: Figure) -> None:
    """Hide the labels of marks outside each axes' window (they would float beside the chart, or
    show a cut-off piece at its edge); clip the others to it."""
    for ax in fig.axes:
        low, high = ax.get_xlim()
        for text in ax.texts:
            if text.get_transform() == ax.transData and not low <= text.get_position()[0] <= high:
                text.set_visible(False)
            text.set_clip_on(True)


def _window_title(trace: Trace, name: str | None, window: tuple[float, float]) -> str:
    settings = trace.settings
    name = name or (
        f"num_workers={settings.get('num_workers')}, batch_size={settings.get('batch_size')}, "
        f"start method: {trace.start_method or 'none'}"
    )
    return f"{name}; from t = {window[0]:.2f} s, the first worker ready"


def plot_after_start(trace: Trace, title: str | None = None) -> Figure:
    """``trace``'s swimlanes from its first worker ready to its last batch (:func:`work_window`):
    the work, without the workers' start-up (which under ``spawn`` can take longer than everything
    else) or the final shutdown. A run without workers is drawn whole."""
    window = work_window(trace)
    if window is None:
        return plot_swimlanes(trace, title=title)
    figure = plot_swimlanes(trace, title=_window_title(trace, title, window), xlim=window)
    _clip_labels(figure)
    return figure


def compare_after_start(traces: dict[str, Trace]) -> Figure:
    """``traces`` stacked, each drawn over its own :func:`work_window`, named in its title."""
    heights = [len(lanes(t)) + 1.8 for t in traces.values()]
    with matplotlib.rc_context(cast(Any, STYLE)):  # STYLE is typed loosely on some branches
        fig = Figure(figsize=(13, 1.0 * sum(heights) + 2.2))
        axes = fig.subplots(len(traces), 1, height_ratios=heights, squeeze=False)[:, 0]
        fig.subplots_adjust(left=0.13, right=0.98, top=0.95, bottom=0.2, hspace=0.6)
        for number, (ax, (name, trace)) in enumerate(zip(axes, traces.items(), strict=True)):
            window = work_window(trace)
            plot_swimlanes(
                trace,
                ax=ax,
                title=name if window is None else _window_title(trace, name, window),
                xlim=window,
                legend=number == len(traces) - 1,
            )
    _clip_labels(fig)
    return fig


# --- panels ---------------------------------------------------------------------------------------


class _Panel:
    """Controls above a chart. Subclasses say what the controls mean (:meth:`settings`), how to
    measure (:meth:`measure`), draw (:meth:`draw`) and describe (:meth:`describe`) one run."""

    def __init__(self, rows: list[list[widgets.Widget]]) -> None:
        self.controls = [control for row in rows for control in row]
        self.status = widgets.HTML()
        self.image = widgets.Image(
            format="png", layout=widgets.Layout(width="100%", max_width="1100px", display="none")
        )
        self.image.add_class("swimlane-chart")
        self.widget = widgets.VBox([*(widgets.HBox(row) for row in rows), self.status, self.image])
        self.result: Any = None  #: what the run on show measured
        self.figure: Figure | None = None  #: its chart
        self.first_figure: Figure | None = None  #: the first run's chart, shown above the controls
        self.experiments_run = 0
        self.charts_drawn = 0
        self._runs = LatestSettings(self._show)
        self._show(self.settings())
        for control in self.controls:
            control.observe(self._on_change, names="value")

    # what a subclass says
    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def measure(self, settings: dict[str, Any]) -> Any:
        raise NotImplementedError

    def draw(self, result: Any) -> Figure:
        raise NotImplementedError

    def describe(self, result: Any) -> str:
        raise NotImplementedError

    # running the latest change
    def _on_change(self, _change: Any = None) -> None:
        self._runs.request(self.settings())

    def _show(self, settings: dict[str, Any]) -> None:
        self.status.value = "<i>running a DataLoader with these settings…</i>"
        try:
            result = self.measure(settings)
        except Exception as exc:  # noqa: BLE001 (a bad setting, or one that does not fit: say so, stay usable)
            self.status.value = f"<b>Not run:</b> {html.escape(str(exc))}"
            return
        finally:
            self.experiments_run += 1
        if self._runs.superseded():
            return  # a newer setting is waiting: don't draw this one
        figure = self.draw(result)
        first = self.first_figure is None
        chart = None if first else figure_png(figure)
        self.result, self.figure = result, figure
        self.charts_drawn += 1
        if first:
            self.first_figure = figure
            note = "This run is drawn above. Move a control: each new run is drawn here, below."
        else:
            note = "Drawn below; the first run stays above for comparison."
        # The status first: when the chart changes, the words beside it already describe it.
        self.status.value = f"{self.describe(result)}<br><i>{note}</i>"
        if chart is not None:
            self.image.value = chart
            self.image.layout.display = None

    def wait(self, timeout: float = 120.0) -> bool:
        """Block until no change is waiting or running (at most ``timeout`` s); True if idle."""
        return self._runs.wait(timeout)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.first_figure is not None:
            display(self.first_figure)
        display(self.widget)


def _slider(value: int, low: int, high: int, name: str, step: int = 1) -> widgets.IntSlider:
    return widgets.IntSlider(
        min(max(value, low), high),
        min=low,
        max=high,
        step=step,
        description=name,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="320px"),
    )


def _start_methods(value: str | None) -> widgets.Dropdown:
    return widgets.Dropdown(
        options=multiprocessing.get_all_start_methods(),
        value=value or multiprocessing.get_start_method(),
        description="start method",
        style={"description_width": "initial"},
        layout=widgets.Layout(width="260px"),
    )


class LoaderPanel(_Panel):
    """Sliders for ``num_workers`` (0 included), ``batch_size`` and, where asked for,
    ``prefetch_factor``, the start method, a collate cost (``collate_ms``: the loader gets a
    :class:`~helpers.scenarios.SlowCollate`) and ``in_order``. Each change runs
    :func:`~helpers.experiment.run_experiment` on ``dataset`` and draws its swimlanes (from the
    first worker ready on, with ``after_start``); ``fixed`` settings (``shuffle``,
    ``max_batches``, ...) go to it unchanged."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_workers: int = 2,
        batch_size: int = 2,
        prefetch_factor: int | None = None,
        start_method: str | None = None,
        choose_start_method: bool = False,
        collate_ms: int | None = None,
        in_order: bool | None = None,
        max_workers: int | None = None,
        after_start: bool = False,
        **fixed: Any,
    ) -> None:
        self.dataset = dataset
        self.fixed = fixed
        self.after_start = after_start  #: draw from the first worker ready on (plot_after_start)
        most = workers_that_fit() if max_workers is None else max_workers
        self.num_workers = _slider(num_workers, 0, most, "num_workers")
        self.batch_size = _slider(batch_size, 1, 8, "batch_size")
        first: list[widgets.Widget] = [self.num_workers, self.batch_size]
        second: list[widgets.Widget] = []
        self.prefetch_factor = (
            None if prefetch_factor is None else _slider(prefetch_factor, 1, 4, "prefetch_factor")
        )
        self.start_method = _start_methods(start_method) if choose_start_method else None
        self._method = start_method
        self.collate_ms = (
            None if collate_ms is None else _slider(collate_ms, 0, 60, "collate cost (ms)", step=5)
        )
        self.in_order = None
        if in_order is not None:
            self.in_order = widgets.Checkbox(value=in_order, description="in_order", indent=False)
        second = [c for c in (self.prefetch_factor, self.start_method, self.collate_ms, self.in_order) if c]
        super().__init__([first, second] if second else [first])

    @property
    def trace(self) -> Trace | None:
        """The trace of the run on show."""
        return self.result

    def settings(self) -> dict[str, Any]:
        workers = self.num_workers.value
        for control in (self.prefetch_factor, self.start_method, self.in_order):
            if control is not None:
                control.disabled = workers == 0
        method = self.start_method.value if self.start_method is not None else self._method
        chosen: dict[str, Any] = {
            "num_workers": workers,
            "batch_size": self.batch_size.value,
            "start_method": method if workers else None,
        }
        if self.prefetch_factor is not None:
            chosen["prefetch_factor"] = self.prefetch_factor.value if workers else None
        if self.collate_ms is not None:
            chosen["collate_fn"] = SlowCollate(self.collate_ms.value)
        if self.in_order is not None:
            chosen["in_order"] = self.in_order.value
        return {**chosen, **self.fixed}

    def measure(self, settings: dict[str, Any]) -> Trace:
        trace = run_experiment(self.dataset, raise_errors=False, **settings)
        if trace.error is not None and not trace.events:
            raise RuntimeError(str(trace.error).splitlines()[0])
        return trace

    def draw(self, result: Trace) -> Figure:
        return plot_after_start(result) if self.after_start else plot_swimlanes(result)

    def describe(self, result: Trace) -> str:
        collates = result.of(Kind.COLLATED)
        in_main = [e for e in collates if e.pid == result.main_pid]
        last = max((e.end for e in result.events), default=0.0)
        parts = [
            f"{len(result.worker_pids)} worker lanes",
            f"{result.batches_received} batches received",
            f"{result.handed_out_before_first_batch} handed out before the first arrived",
            (
                f"collate ran {len(in_main)}× in the main process "
                f"({sum(e.duration for e in in_main) * 1000:.0f} ms in all) and "
                f"{len(collates) - len(in_main)}× in workers"
            ),
            f"last event {last:.2f} s after iter()",
        ]
        text = " · ".join(parts)
        if result.error is not None:
            first_line = str(result.error).strip().splitlines()[0]
            text += f" — <b>{html.escape(type(result.error).__name__)}</b>: {html.escape(first_line)}"
        return text


class MemoryPanel(_Panel):
    """Sliders for ``num_workers``, the start method and the size of the dataset's array. Each
    change builds an :class:`~helpers.datasets.ArrayDataset` of that size in this kernel, runs
    :func:`~helpers.memory.measure_memory` on it and draws, beside each process's swimlane, its
    private (USS) and shared memory with a tick at its PSS, and below them what all of them
    together cost against this kernel's memory limit. A setting that would not fit in the limit
    is not run."""

    def __init__(
        self,
        *,
        num_workers: int = 2,
        array_mib: int = 64,
        start_method: str | None = None,
        max_workers: int | None = None,
        max_mib: int = 256,
    ) -> None:
        most = workers_that_fit() if max_workers is None else max_workers
        self.num_workers = _slider(num_workers, 1, most, "num_workers")
        self.start_method = _start_methods(start_method)
        self.array_mib = _slider(array_mib, 8, max_mib, "array size (MiB)", step=8)
        self._dataset: ArrayDataset | None = None
        super().__init__([[self.num_workers, self.array_mib], [self.start_method]])

    @property
    def report(self) -> MemoryReport | None:
        return None if self.result is None else self.result[0]

    def settings(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers.value,
            "start_method": self.start_method.value,
            "array_mib": self.array_mib.value,
        }

    @staticmethod
    def estimate(num_workers: int, start_method: str, array_mib: int) -> int:
        """Bytes this kernel and its workers would hold, roughly: a worker of its own (about
        ``WORKER_BYTES`` when it starts a fresh Python, a tenth of that when forked) plus a copy
        of the array each, unless it is forked."""
        own = WORKER_BYTES if start_method != "fork" else WORKER_BYTES // 10
        copy = 0 if start_method == "fork" else array_mib * MIB
        kernel = ProcessMemory.of("main", os.getpid()).uss
        return kernel + array_mib * MIB + num_workers * (own + copy)

    def measure(self, settings: dict[str, Any]) -> tuple[MemoryReport, ProcessMemory | None]:
        workers, method, size = settings["num_workers"], settings["start_method"], settings["array_mib"]
        need, limit = self.estimate(workers, method, size), memory_limit()
        if need > 0.9 * limit:
            raise RuntimeError(
                f"{workers} {method} workers with a {size} MiB array would need about {mib(need)}, "
                f"more than 90 % of this kernel's memory limit ({mib(limit)})"
            )
        if self._dataset is None or round(self._dataset.nbytes / MIB) != size:
            self._dataset = None  # free the old array before building the new one
            self._dataset = ArrayDataset.of_mib(size)
        report = measure_memory(self._dataset, start_method=method, num_workers=workers)
        server = report.trace.fork_server_pid
        try:
            server_memory = ProcessMemory.of("fork server", server) if server else None
        except psutil.Error:  # it may have ended: then it costs nothing now
            server_memory = None
        return report, server_memory

    @staticmethod
    def processes(report: MemoryReport, server: ProcessMemory | None) -> dict[int, ProcessMemory]:
        """Each measured process by PID."""
        found = {p.pid: p for p in (report.main, *report.workers)}
        if server is not None:
            found[server.pid] = server
        return found

    @staticmethod
    def total(report: MemoryReport, server: ProcessMemory | None) -> tuple[int, str]:
        """What the processes cost together, and how it was counted: PSS where the OS reports it,
        else USS (private memory only)."""
        every = [report.main, *report.workers] + ([server] if server else [])
        if all(p.pss is not None for p in every):
            return sum(p.pss for p in every), "PSS"  # type: ignore[misc]
        return sum(p.uss for p in every), "USS"

    def draw(self, result: tuple[MemoryReport, ProcessMemory | None]) -> Figure:
        report, server = result
        return plot_memory_lanes(report, server)

    def describe(self, result: tuple[MemoryReport, ProcessMemory | None]) -> str:
        report, server = result
        total, kind = self.total(report, server)
        limit = memory_limit()
        worker_uss = statistics.median(w.uss for w in report.workers)
        return " · ".join(
            [
                f"{len(report.workers)} worker lanes",
                f"start method {report.start_method}",
                f"array {mib(report.data_bytes or 0)}",
                f"median worker USS {mib(worker_uss)}",
                f"kernel USS {mib(report.main.uss)}",
                f"total {kind} {mib(total)} = {100 * total / limit:.0f} % of the {mib(limit)} limit",
            ]
        )


def plot_memory_lanes(report: MemoryReport, server: ProcessMemory | None = None) -> Figure:
    """``report``'s run as swimlanes, each process's memory beside its lane (USS, shared pages,
    a tick at PSS), and below, every process's share of this kernel's memory limit."""
    trace = report.trace
    measured = MemoryPanel.processes(report, server)
    rows = lanes(trace)
    limit = memory_limit()
    total, kind = MemoryPanel.total(report, server)
    with matplotlib.rc_context(cast(Any, STYLE)):  # STYLE is typed loosely on some branches
        height = 2.6 + 1.0 * len(rows)
        fig = Figure(figsize=(15, height))
        top, bottom_bar = 1 - 0.7 / height, 1.3 / height
        swim = fig.add_axes((0.1, bottom_bar + 0.55 / height, 0.55, top - bottom_bar - 0.55 / height))
        plot_swimlanes(trace, ax=swim, legend=False, title=f"{report.start_method}: what each process did")
        bars = fig.add_axes((0.69, swim.get_position().y0, 0.29, swim.get_position().height), sharey=swim)
        _memory_bars(bars, rows, measured, report)
        share = fig.add_axes((0.1, 0.35 / height, 0.88, 0.45 / height))
        _limit_bar(share, rows, measured, limit=limit, total=total, kind=kind)
    return fig


def _memory_bars(
    ax: Any, rows: list[tuple[int, str]], measured: dict[int, ProcessMemory], report: MemoryReport
) -> None:
    for row, (pid, _) in enumerate(rows):
        p = measured.get(pid)
        if p is None:
            continue
        y, uss, shared = -row, p.uss / MIB, (p.rss - p.uss) / MIB
        ax.barh(y, uss, height=0.6, color=COLORS["failed"], edgecolor=COLORS["ink"])
        ax.barh(y, shared, left=uss, height=0.6, color=COLORS["wait"], edgecolor=COLORS["ink"], hatch="//")
        if p.pss is not None:
            ax.plot([p.pss / MIB] * 2, [y - 0.38, y + 0.38], color=COLORS["ink"], linewidth=3)
        text = f"USS {uss:.0f}" + ("" if p.pss is None else f" · PSS {p.pss / MIB:.0f}")
        ax.text(p.rss / MIB, y + 0.32, f" {text}", ha="left", va="bottom", fontsize=11)
    if report.data_bytes:
        ax.axvline(report.data_bytes / MIB, color=COLORS["item"], linestyle="--", linewidth=2)
        ax.text(
            report.data_bytes / MIB,
            0.01,
            " array",
            color=COLORS["item"],
            fontsize=11,
            ha="left",
            va="bottom",
            transform=ax.get_xaxis_transform(),
        )
    ax.tick_params(labelleft=False)
    widest = max((p.rss for p in measured.values()), default=MIB) / MIB
    ax.set_xlim(0, widest * 1.6)
    ax.set_xlabel("MiB: private (USS) ■, shared ▨, | PSS")
    ax.set_title("memory", loc="left")
    ax.grid(axis="x", alpha=0.3)


def _limit_bar(
    ax: Any,
    rows: list[tuple[int, str]],
    measured: dict[int, ProcessMemory],
    *,
    limit: int,
    total: int,
    kind: str,
) -> None:
    left = 0.0
    for pid, label in rows:
        p = measured.get(pid)
        if p is None:
            continue
        value = (p.pss if kind == "PSS" and p.pss is not None else p.uss) / MIB
        color = COLORS["wait"] if label.startswith("main") else COLORS["failed"]
        ax.barh(0, value, left=left, height=1, color=color, edgecolor=COLORS["ink"])
        name = label.split("\n")[0]
        if value > limit / MIB * 0.06:
            ax.text(left + value / 2, 0, name, ha="center", va="center", fontsize=10)
        left += value
    ax.set_xlim(0, limit / MIB)
    ax.set_yticks([])
    ax.set_title(
        f"all of them: {kind} {total / MIB:.0f} MiB of this kernel's {limit / MIB:.0f} MiB memory limit "
        f"({100 * total / limit:.0f} %)",
        loc="left",
        fontsize=13,
    )
