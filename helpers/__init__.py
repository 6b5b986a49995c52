"""Live measurements of PyTorch ``DataLoader`` workers: trace a real loader, draw its processes
as swimlanes, and move sliders to re-run it.

Names are imported on first use. Spawned and forkserver workers import this package to unpickle
the traced dataset; loaded lazily, it costs them only the tracer's own modules, never matplotlib
or ipywidgets, so tracing does not lengthen the start-up it draws.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .datasets import ArrayDataset, SleepDataset, stack_collate
    from .events import Event, Kind, Trace, WaitEnd
    from .experiment import TracedLoader, check_settings, run_experiment, trace, trace_loader
    from .export import write_chrome_trace
    from .plotting import plot_swimlanes
    from .system import descendants, machine_info
    from .widgets import SwimlanePanel

_WHERE = {
    "ArrayDataset": "datasets",
    "SleepDataset": "datasets",
    "stack_collate": "datasets",
    "Event": "events",
    "Kind": "events",
    "Trace": "events",
    "WaitEnd": "events",
    "TracedLoader": "experiment",
    "check_settings": "experiment",
    "run_experiment": "experiment",
    "trace": "experiment",
    "trace_loader": "experiment",
    "write_chrome_trace": "export",
    "plot_swimlanes": "plotting",
    "descendants": "system",
    "machine_info": "system",
    "SwimlanePanel": "widgets",
}

__all__ = [  # noqa: RUF022 (the order of _WHERE: by module)
    "ArrayDataset",
    "SleepDataset",
    "stack_collate",
    "Event",
    "Kind",
    "Trace",
    "WaitEnd",
    "TracedLoader",
    "check_settings",
    "run_experiment",
    "trace",
    "trace_loader",
    "write_chrome_trace",
    "plot_swimlanes",
    "descendants",
    "machine_info",
    "SwimlanePanel",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
