"""Sliders that re-run a real traced DataLoader and redraw its swimlanes."""

from __future__ import annotations

import html
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch.utils.data import Dataset

from .events import Trace
from .experiment import run_experiment
from .plotting import figure_png, legend_entries, legend_figure, plot_swimlanes
from .system import workers_that_fit

#: One thread runs every panel's experiments and draws their charts, whichever panel asked.
#: matplotlib keeps the font files it opened per thread: a thread per burst of slider changes
#: would open them again and again.
_DRAWER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swimlane-panel")


class LatestSettings:
    """Runs ``show(settings)`` for the latest settings asked for, one run at a time, on the
    drawing thread. Settings asked for while a run goes on are merged: when it ends only the
    latest is run, so at most one experiment (and its workers) exists at a time.

    >>> shown = []
    >>> runs = LatestSettings(shown.append)
    >>> runs.request({"num_workers": 2}); runs.wait(10)
    True
    >>> shown
    [{'num_workers': 2}]
    """

    def __init__(self, show: Callable[[dict[str, Any]], None]) -> None:
        self._show = show
        self._wanted: dict[str, Any] | None = None
        self._busy = False
        self.changed = threading.Condition()  #: held, it lets changes pile up before any runs

    def request(self, settings: dict[str, Any]) -> None:
        """Run ``settings`` next (replacing any that wait), starting a run unless one goes on."""
        with self.changed:
            self._wanted = settings
            if self._busy:
                return
            self._busy = True
        _DRAWER.submit(self._run_latest)

    def superseded(self) -> bool:
        """Whether newer settings wait: a finished run should then not be drawn."""
        with self.changed:
            return self._wanted is not None

    def wait(self, timeout: float) -> bool:
        """Block until no settings wait or run (at most ``timeout`` s); True if idle."""
        with self.changed:
            return self.changed.wait_for(lambda: not self._busy, timeout)

    def _run_latest(self) -> None:
        while True:
            with self.changed:
                settings, self._wanted = self._wanted, None
                if settings is None:
                    self._busy = False
                    self.changed.notify_all()
                    return
            self._show(settings)


__all__ = ["SwimlanePanel", "status_line"]


class SwimlanePanel:
    """Controls for ``num_workers``, ``batch_size``, ``prefetch_factor`` and the start method above
    a swimlane chart. Each change runs a new experiment on ``dataset`` and redraws the chart.

    Changes that arrive while an experiment runs are merged: when it ends, only the latest setting
    is run and drawn, so at most one experiment (and its workers) exists at a time. The first
    chart is drawn before the constructor returns. The status line above the chart always
    describes the chart on show: it is updated before the chart is. ``fixed`` settings (``shuffle``,
    ``max_batches``, ``epochs``, ...) go to :func:`~helpers.experiment.run_experiment` unchanged.
    The ``num_workers`` slider stops at ``max_workers``, by default as many spawned workers as
    fit in this kernel's memory limit (:func:`~helpers.system.workers_that_fit`; 7 on Binder).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_workers: int = 2,
        batch_size: int = 2,
        prefetch_factor: int = 2,
        start_method: str | None = None,
        max_workers: int | None = None,
        **fixed: Any,
    ) -> None:
        self.dataset = dataset
        self.fixed = fixed
        most = workers_that_fit() if max_workers is None else max_workers
        controls = self._controls(min(num_workers, most), most, batch_size, prefetch_factor, start_method)
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="1100px"))
        self.image.add_class("swimlane-chart")
        # The legend names the marks on show; drawn once for each set of them, redraws stay fast.
        self.legend = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="1100px"))
        self._legends: dict[tuple[str, ...], bytes] = {}
        self.widget = widgets.VBox(
            [widgets.HBox(controls[:2]), widgets.HBox(controls[2:]), self.status, self.image, self.legend]
        )

        self.trace: Trace | None = None  #: the trace of the chart on show
        self.figure: Figure | None = None  #: the chart on show
        self.experiments_run = 0
        self.charts_drawn = 0
        self._runs = LatestSettings(self._show)

        self._show(self.settings())
        for control in controls:
            control.observe(self._on_change, names="value")

    def _controls(
        self, num_workers: int, most: int, batch_size: int, prefetch_factor: int, start_method: str | None
    ) -> list[widgets.Widget]:
        """Make the sliders and the start method menu; return them in the order they are shown."""
        style = {"description_width": "initial"}
        layout = widgets.Layout(width="320px")
        self.num_workers = widgets.IntSlider(
            num_workers, min=0, max=most, description="num_workers", style=style, layout=layout
        )
        self.batch_size = widgets.IntSlider(
            batch_size, min=1, max=8, description="batch_size", style=style, layout=layout
        )
        self.prefetch_factor = widgets.IntSlider(
            prefetch_factor, min=1, max=4, description="prefetch_factor", style=style, layout=layout
        )
        self.start_method = widgets.Dropdown(
            options=multiprocessing.get_all_start_methods(),
            value=start_method or multiprocessing.get_context().get_start_method(),
            description="start method",
            style=style,
            layout=widgets.Layout(width="260px"),
        )
        return [self.num_workers, self.batch_size, self.prefetch_factor, self.start_method]

    def settings(self) -> dict[str, Any]:
        """The loader settings the controls show now."""
        workers = self.num_workers.value
        self.prefetch_factor.disabled = workers == 0
        return {
            "num_workers": workers,
            "batch_size": self.batch_size.value,
            "prefetch_factor": self.prefetch_factor.value if workers else None,
            "start_method": self.start_method.value if workers else None,
            **self.fixed,
        }

    def _on_change(self, _change: Any = None) -> None:
        self._runs.request(self.settings())

    def _show(self, settings: dict[str, Any]) -> None:
        self.status.value = "<i>running a DataLoader with these settings…</i>"
        try:
            trace = run_experiment(self.dataset, raise_errors=False, **settings)
        except Exception as exc:  # noqa: BLE001 (a bad setting, or any failure: say so, stay usable)
            self.status.value = f"<b>Could not run:</b> {html.escape(str(exc))}"
            return
        finally:
            self.experiments_run += 1
        if self._runs.superseded():
            return  # a newer setting is waiting: don't draw this one
        figure = plot_swimlanes(trace, legend=False)
        chart, legend = figure_png(figure), self._legend_png(trace)
        # Status first: a reader who sees the new chart finds the status that describes it.
        self.status.value = status_line(trace)
        self.legend.value = legend
        self.image.value = chart
        self.trace, self.figure = trace, figure
        self.charts_drawn += 1

    def _legend_png(self, trace: Trace) -> bytes:
        """The legend of ``trace``'s chart, drawn once for each set of marks."""
        entries = tuple(legend_entries(trace))
        if entries not in self._legends:
            self._legends[entries] = figure_png(legend_figure(trace))
        return self._legends[entries]

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until no change is waiting or running (at most ``timeout`` s); True if idle."""
        return self._runs.wait(timeout)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def status_line(trace: Trace) -> str:
    """What the chart of ``trace`` shows, in one line of HTML: its worker lanes, the batches the
    loop received, how many were handed out before the first arrived and how many were built for
    nothing, and the error that ended the run, if one did."""
    last = max((e.end for e in trace.events), default=0.0)
    message = " · ".join(
        [
            f"{len(trace.worker_pids)} worker lanes",
            f"{trace.batches_received} batches received",
            f"{trace.handed_out_before_first_batch} handed out before the first was received",
            f"{len(trace.wasted_batches)} built but never received",
            f"last event {last:.2f} s after iter()",
        ]
    )
    if trace.error is not None:
        name, first_line = type(trace.error).__name__, str(trace.error).splitlines()[0]
        message += f" — <b>{html.escape(name)}</b>: {html.escape(first_line)}"
    return message
