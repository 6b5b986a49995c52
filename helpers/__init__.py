"""Live measurements of PyTorch ``DataLoader`` workers: trace a real loader, draw its processes
as swimlanes, and move sliders to re-run it."""

from .datasets import ArrayDataset, SleepDataset, stack_collate
from .events import Event, Kind, Trace
from .experiment import TracedLoader, check_settings, run_experiment, trace_loader
from .plotting import plot_swimlanes
from .system import descendants, machine_info
from .widgets import SwimlanePanel

__all__ = [
    "ArrayDataset",
    "Event",
    "Kind",
    "SleepDataset",
    "SwimlanePanel",
    "Trace",
    "TracedLoader",
    "check_settings",
    "descendants",
    "machine_info",
    "plot_swimlanes",
    "run_experiment",
    "stack_collate",
    "trace_loader",
]
