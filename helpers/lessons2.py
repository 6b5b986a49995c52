"""Kernel-side tools for notebooks 00, 04, 05 and 06: a few numbered lines of an installed library's
source, an exception's chain of causes, and panels whose controls re-run a real DataLoader.

Nothing here runs in a worker process, and nothing here settles a claim: the measurements stay in
the notebooks' cells. ipywidgets and matplotlib are imported only when a panel is built.
"""

from __future__ import annotations

import html
import inspect
import multiprocessing
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ControlPanel",
    "crash_at_start",
    "epochs_panel",
    "error_chain",
    "show_source",
    "source_block",
    "start_method_dropdown",
    "timeout_panel",
]


def _where(path: str) -> str:
    """``torch/cuda/__init__.py`` rather than the full path of the installed file."""
    parts = Path(path).parts
    if "helpers" in parts:  # this series' own package
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("helpers") :])
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    for number, part in enumerate(parts):  # the standard library: multiprocessing/context.py
        if part.startswith("python3") and number + 1 < len(parts):
            return "/".join(parts[number + 1 :])
    return path


def source_block(
    obj: Any, first: str, last: str | None = None, *, lines: int | None = None, nth: int = 1
) -> str:
    """The installed source of ``obj`` (a module, class or function) from the first line that
    contains ``first`` to the ``nth`` line after it that contains ``last`` (or ``lines`` lines),
    as one contiguous block with the file's own line numbers.

    >>> import multiprocessing.context as context
    >>> print(source_block(context, "class ForkServerContext", lines=2))  # doctest: +ELLIPSIS
    multiprocessing/context.py, lines ...:
    ...  class ForkServerContext(BaseContext):
    ...      _name = 'forkserver'
    """
    text, start = inspect.getsourcelines(obj)
    start = max(start, 1)
    found = [n for n, line in enumerate(text) if first in line]
    if not found:
        raise ValueError(f"no line of {getattr(obj, '__name__', obj)!r} contains {first!r}")
    begin = found[0]
    if last is not None:
        ends = [n for n in range(begin, len(text)) if last in text[n]]
        if len(ends) < nth:
            raise ValueError(f"fewer than {nth} lines after {first!r} contain {last!r}")
        end = ends[nth - 1] + 1
    else:
        end = begin + (lines or 1)
    block = [line.rstrip("\n") for line in text[begin:end]]
    indent = min((len(line) - len(line.lstrip()) for line in block if line.strip()), default=0)
    numbers = range(start + begin, start + end)
    where = _where(inspect.getsourcefile(obj) or "?")
    span = f"line {numbers[0]}" if len(numbers) == 1 else f"lines {numbers[0]}-{numbers[-1]}"
    width = len(str(numbers[-1]))
    body = "\n".join(f"{n:>{width}}  {line[indent:]}" for n, line in zip(numbers, block, strict=True))
    return f"{where}, {span}:\n{body}"


def show_source(
    obj: Any, first: str, last: str | None = None, *, lines: int | None = None, nth: int = 1
) -> None:
    """Print :func:`source_block`."""
    print(source_block(obj, first, last, lines=lines, nth=nth))


def error_chain(error: BaseException | None) -> list[str]:
    """One line per exception in ``error``'s chain, outermost first: its type and the last line
    of its message (where PyTorch puts the worker's own error), following ``__cause__`` and then
    ``__context__``. Empty for ``None``.

    >>> try:
    ...     try:
    ...         raise KeyError("inner")
    ...     except KeyError as e:
    ...         raise RuntimeError("outer") from e
    ... except RuntimeError as e:
    ...     error_chain(e)
    ['RuntimeError: outer', "KeyError: 'inner'"]
    """
    found: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        found.append(f"{type(error).__name__}: {lines[-1].strip() if lines else ''}".rstrip(": "))
        error = error.__cause__ or error.__context__
    return found


class ControlPanel:
    """Controls above a chart: each change calls ``run(**settings)`` (which runs a real
    DataLoader and returns a trace) and redraws ``draw(trace)`` with ``describe(trace)`` as the
    status line.

    Changes that arrive while a run is going are merged: when it ends only the latest settings
    run, so at most one DataLoader (and its workers) exists at a time. The first run happens in
    the constructor; its chart is kept as :attr:`first_figure`, for the cell to display as a
    static image that a saved notebook keeps, and the panel's own chart area shows each later run.
    """

    def __init__(
        self,
        controls: Mapping[str, Any],
        run: Callable[..., Any],
        draw: Callable[[Any], Any],
        describe: Callable[[Any], str],
        *,
        settings: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        import ipywidgets as widgets

        from .plotting import figure_png
        from .widgets import LatestSettings

        self._png = figure_png
        self.controls = dict(controls)
        self._run, self._draw, self._describe = run, draw, describe
        self._adjust = settings or (lambda values: values)
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="1100px"))
        self.image.add_class("swimlane-chart")
        boxes = list(self.controls.values())
        rows = [widgets.HBox(boxes[i : i + 3]) for i in range(0, len(boxes), 3)]
        self.widget = widgets.VBox([*rows, self.status, self.image])
        self.trace: Any = None  #: the trace of the latest run
        self.figure: Any = None  #: the chart of the latest run
        self.first_figure: Any = None  #: the chart of the run made by the constructor
        self.experiments_run = 0
        self.charts_drawn = 0
        self._runs = LatestSettings(self._show)
        self._show(self.settings(), first=True)
        for control in boxes:
            control.observe(self._on_change, names="value")

    def settings(self) -> dict[str, Any]:
        """What the controls show now, as keyword arguments of ``run``."""
        return self._adjust({name: control.value for name, control in self.controls.items()})

    def _on_change(self, _change: Any = None) -> None:
        self._runs.request(self.settings())

    def _show(self, settings: dict[str, Any], first: bool = False) -> None:
        self.status.value = "<i>running a DataLoader with these settings…</i>"
        try:
            trace = self._run(**settings)
        except Exception as exc:  # noqa: BLE001 - a bad setting: say so and keep the panel usable
            self.status.value = f"<b>Could not run:</b> {html.escape(str(exc))}"
            return
        finally:
            self.experiments_run += 1
        if self._runs.superseded():
            return  # a newer setting is waiting: don't draw this one
        figure = self._draw(trace)
        self.trace, self.figure = trace, figure
        self.charts_drawn += 1
        if first:
            self.first_figure = figure
            self.status.value = (
                html.escape(self._describe(trace))
                + "<br><i>The chart above the controls is this first run. Change a control: the"
                " new run is drawn here.</i>"
            )
        else:
            chart = self._png(figure)
            # Status first: a reader who sees the new chart finds the status that describes it.
            self.status.value = html.escape(self._describe(trace))
            self.image.value = chart

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until no change is waiting or running (at most ``timeout`` s); True if idle."""
        return self._runs.wait(timeout)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def start_method_dropdown(value: str | None = None) -> Any:
    """A dropdown of this machine's start methods, set to ``value`` or this kernel's default."""
    import ipywidgets as widgets

    return widgets.Dropdown(
        options=multiprocessing.get_all_start_methods(),
        value=value or multiprocessing.get_context().get_start_method(),
        description="start method",
        style={"description_width": "initial"},
        layout=widgets.Layout(width="240px"),
    )


def _slider(kind: str, value: float, low: float, high: float, *, step: float, description: str) -> Any:
    import ipywidgets as widgets

    make = widgets.IntSlider if kind == "int" else widgets.FloatSlider
    return make(
        value,
        min=low,
        max=high,
        step=step,
        description=description,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="330px"),
        continuous_update=False,
    )


def epochs_panel(
    dataset: Any,
    describe: Callable[[Any], str],
    *,
    num_workers: int = 2,
    batch_size: int = 2,
    epochs: int = 2,
    start_method: str | None = None,
) -> ControlPanel:
    """Notebook 04: start method × ``persistent_workers`` × epochs (and ``num_workers``) over
    ``dataset``; ``describe(trace)`` writes the status line."""
    import ipywidgets as widgets

    from .events import Kind
    from .experiment import run_experiment
    from .plotting import plot_swimlanes

    controls = {
        "start_method": start_method_dropdown(start_method),
        "persistent_workers": widgets.Checkbox(False, description="persistent_workers", indent=False),
        "epochs": _slider("int", epochs, 1, 3, step=1, description="epochs"),
        "num_workers": _slider("int", num_workers, 1, 4, step=1, description="num_workers"),
    }

    def run(**settings: Any) -> Any:
        return run_experiment(dataset, batch_size=batch_size, raise_errors=False, **settings)

    def draw(trace: Any) -> Any:
        epochs = len(trace.of(Kind.ITER_CALLED))
        persistent = trace.settings.get("persistent_workers")
        return plot_swimlanes(
            trace, title=f"{trace.start_method}, {epochs} epoch(s), persistent_workers={persistent}"
        )

    return ControlPanel(controls, run, draw, describe)


def timeout_panel(
    describe: Callable[[Any], str],
    *,
    timeout: float = 0.5,
    slow_seconds: float = 2.0,
    start_method: str | None = None,
) -> ControlPanel:
    """Notebook 05: ``timeout`` × how long item 4 takes × start method, over 8 items of 0.05 s in
    batches of 2 with 2 workers; ``describe(trace)`` writes the status line."""
    from .datasets import SleepDataset
    from .experiment import run_experiment
    from .plotting import plot_swimlanes

    controls = {
        "timeout": _slider("float", timeout, 0.0, 8.0, step=0.25, description="timeout (s; 0 = none)"),
        "slow_seconds": _slider("float", slow_seconds, 0.1, 4.0, step=0.1, description="item 4 takes (s)"),
        "start_method": start_method_dropdown(start_method),
    }

    def run(timeout: float, slow_seconds: float, start_method: str) -> Any:
        dataset = SleepDataset(size=8, delay=0.05, slow_items=(4,), slow_factor=slow_seconds / 0.05)
        return run_experiment(
            dataset,
            batch_size=2,
            num_workers=2,
            timeout=timeout,
            start_method=start_method,
            raise_errors=False,
        )

    def draw(trace: Any) -> Any:
        timeout = trace.settings.get("timeout") or "none"
        return plot_swimlanes(trace, title=f"{trace.start_method}, timeout={timeout}, item 4 slow")

    return ControlPanel(controls, run, draw, describe)


def crash_at_start(worker_id: int) -> None:
    """A ``worker_init_fn`` that ends its worker at once with exit code 1, before it loads
    anything and without a Python traceback: what a worker that fails while starting looks like
    from the main process. (Workers import it, so this module imports only the standard library
    at its top.)"""
    os._exit(1)
