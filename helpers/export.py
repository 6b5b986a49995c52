"""Write a :class:`~helpers.events.Trace` as Chrome Trace Event JSON, the format that Perfetto UI
(https://ui.perfetto.dev: "Open trace file") and ``chrome://tracing`` open.

Each process (the main one, every worker, the fork server) is a process of its own in the file,
named and in lane order, with one thread. Work is drawn as complete events (``"ph": "X"``) with
times in microseconds since the first event; a worker's items and collate sit inside a slice for
their batch, and a worker's start (``Process.start()``) inside the main process's ``iter()``.
Moments are instants (``"ph": "i"``). Each batch is followed by a flow arrow (``"ph": "s"``,
``"t"``, ``"f"``) from its hand-out in the main process to its collate in a worker and on to the
``next()`` that received it. Every event of the trace is in the file once, with its kind's name
as its category (``"cat": "item_loaded"``); the batch slices and arrows have categories
``"batch"`` and ``"flow"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .events import Event, Kind, Trace, WaitEnd

__all__ = ["chrome_trace", "write_chrome_trace"]

_INSTANTS = {Kind.BATCH_REQUESTED, Kind.WORKER_READY, Kind.PROCESS_RUNNING, Kind.WORKER_EXITED}


def _name(e: Event) -> str:
    """The label of ``e``'s slice or instant."""
    if e.kind == Kind.WAIT_ENDED:
        return f"next(): no batch, {WaitEnd(e.index).label}"
    return {
        Kind.LOADER_CREATED: "DataLoader()",
        Kind.ITER_CALLED: "iter()",
        Kind.BATCH_REQUESTED: f"hand out batch {e.index}",
        Kind.WORKER_READY: "worker ready",
        Kind.ITEM_LOADED: f"item {e.index}",
        Kind.ITEM_FAILED: f"item {e.index} failed",
        Kind.COLLATED: f"collate batch {e.index}",
        Kind.BATCH_RECEIVED: f"next() → batch {e.index}",
        Kind.WORKER_EXITED: "worker exits",
        Kind.ITER_CLOSED: "shut down workers",
        Kind.PROCESS_CREATED: f"start worker {e.worker_id} (pid {e.pid})",
        Kind.PROCESS_RUNNING: "process runs Python",
        Kind.FORK_SERVER: "fork server started" if e.end > e.start else "fork server running since",
    }[e.kind]


class _Clock:
    """Trace seconds to the file's microseconds, counted from the earliest event."""

    def __init__(self, trace: Trace) -> None:
        self.origin = float(trace.events.start.min(initial=0.0))

    def __call__(self, seconds: float) -> float:
        return round((seconds - self.origin) * 1e6, 3)


def _processes(trace: Trace) -> list[tuple[int, str]]:
    """``(pid, name)`` of each process, main first, then workers as they appeared, then the fork
    server."""
    workers = [(pid, f"worker {wid}") for pid, wid in trace.worker_pids.items()]
    server = trace.fork_server_pid
    return [(trace.main_pid, "main process"), *workers, *([(server, "fork server")] if server else [])]


def _metadata(trace: Trace) -> Iterator[dict[str, Any]]:
    for order, (pid, name) in enumerate(_processes(trace)):
        yield {
            "name": "process_name",
            "ph": "M",
            "pid": pid,
            "tid": pid,
            "args": {"name": f"{name} (pid {pid})"},
        }
        yield {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": pid, "args": {"sort_index": order}}
        thread = "main thread" if pid == trace.main_pid else name
        yield {"name": "thread_name", "ph": "M", "pid": pid, "tid": pid, "args": {"name": thread}}


def _where(e: Event, trace: Trace) -> int:
    """The process whose thread shows ``e``: the main process starts worker processes."""
    return trace.main_pid if e.kind == Kind.PROCESS_CREATED else e.pid


def _events(trace: Trace, us: _Clock) -> Iterator[dict[str, Any]]:
    """One slice or instant for each event of the trace."""
    for e in trace.events:
        pid = _where(e, trace)
        out: dict[str, Any] = {"name": _name(e), "cat": e.kind.name.lower(), "pid": pid, "tid": pid}
        out["args"] = {"index": e.index, "worker_id": e.worker_id, "pid": e.pid}
        if e.kind in _INSTANTS or (e.kind == Kind.FORK_SERVER and e.end <= e.start):
            out.update(ph="i", s="t", ts=us(e.start))
        else:
            out.update(ph="X", ts=us(e.start), dur=round(max(e.end - e.start, 0.0) * 1e6, 3))
        yield out


def _batch_slices(trace: Trace, us: _Clock) -> Iterator[dict[str, Any]]:
    """A slice around each batch a process built: from its first item after the process's
    previous collate or failed item, to the end of its collate."""
    events = trace.events
    rows = np.flatnonzero(np.isin(events.kind, (Kind.ITEM_LOADED, Kind.ITEM_FAILED, Kind.COLLATED)))
    opened: dict[int, float] = {}
    for row in rows.tolist():
        e = events[row]
        if e.kind == Kind.ITEM_LOADED:
            opened.setdefault(e.pid, e.start)
        elif e.kind == Kind.ITEM_FAILED:
            opened.pop(e.pid, None)
        else:
            start = min(opened.pop(e.pid, e.start), e.start)
            label = f"batch {e.index}" if e.index >= 0 else "batch"
            yield {
                "name": label, "cat": "batch", "ph": "X", "pid": e.pid, "tid": e.pid,
                "ts": us(start), "dur": round((e.end - start) * 1e6, 3), "args": {"batch": e.index},
            }  # fmt: skip


def _flows(trace: Trace, us: _Clock) -> Iterator[dict[str, Any]]:
    """An arrow for each batch: hand-out (main) → collate (worker) → receipt (main), or ending at
    the collate for a batch never received. Each step is matched to the latest earlier step with
    the same batch number (numbers restart at each ``iter()``)."""
    steps = sorted(
        (
            (e.start if e.kind == Kind.BATCH_REQUESTED else e.end, e)
            for e in trace.of(*_FLOW_STEPS)
            if e.index >= 0
        ),
        key=lambda step: (step[0], _FLOW_STEPS.index(step[1].kind)),
    )
    handed: dict[int, Event] = {}
    built: dict[int, tuple[int, Event, Event]] = {}
    for flow, (_, e) in enumerate(steps):
        if e.kind == Kind.BATCH_REQUESTED:
            handed[e.index] = e
        elif e.kind == Kind.COLLATED and e.index in handed:
            built[e.index] = (flow, handed.pop(e.index), e)
        elif e.kind == Kind.BATCH_RECEIVED and e.index in built:
            flow_id, out, collate = built.pop(e.index)
            yield _flow("s", flow_id, out, trace.main_pid, us(out.start))
            yield _flow("t", flow_id, collate, collate.pid, us((collate.start + collate.end) / 2))
            arrived = max(collate.end, e.start)  # the batch reached the main process after this
            yield _flow("f", flow_id, e, trace.main_pid, us((arrived + e.end) / 2))
    for flow_id, out, collate in built.values():  # built, never received
        yield _flow("s", flow_id, out, trace.main_pid, us(out.start))
        yield _flow("f", flow_id, collate, collate.pid, us((collate.start + collate.end) / 2))


_FLOW_STEPS = (Kind.BATCH_REQUESTED, Kind.COLLATED, Kind.BATCH_RECEIVED)


def _flow(phase: str, flow: int, e: Event, pid: int, ts: float) -> dict[str, Any]:
    """A step of flow ``flow``, bound to the slice that encloses ``ts`` on ``pid``'s thread."""
    out = {
        "name": f"batch {e.index}",
        "cat": "flow",
        "ph": phase,
        "id": flow,
        "pid": pid,
        "tid": pid,
        "ts": ts,
    }
    if phase == "f":
        out["bp"] = "e"
    return out


def chrome_trace(trace: Trace) -> dict[str, Any]:
    """``trace`` as a Chrome Trace Event Format object (``json.dump`` it, or use
    :func:`write_chrome_trace`).

    >>> from helpers.events import Event, Kind, Trace
    >>> trace = Trace([Event(7, 0, Kind.COLLATED, 0.1, 0.2, 0)], main_pid=1, start_method="fork")
    >>> [(e["ph"], e["name"]) for e in chrome_trace(trace)["traceEvents"] if e["ph"] != "M"]
    [('X', 'collate batch 0'), ('X', 'batch 0')]
    """
    us = _Clock(trace)
    events = [*_metadata(trace), *_events(trace, us), *_batch_slices(trace, us), *_flows(trace, us)]
    other = {"start_method": trace.start_method, "iter_called_at_us": us(0.0), **trace.settings}
    if trace.error is not None:
        other["error"] = f"{type(trace.error).__name__}: {trace.error}"
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": _jsonable(other)}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        for key, value in values.items()
    }


def write_chrome_trace(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """Write ``trace`` to ``path`` as Chrome Trace Event JSON; return the path. Open it in
    https://ui.perfetto.dev ("Open trace file") or ``chrome://tracing`` ("Load")."""
    path = Path(path)
    with path.open("w") as out:
        json.dump(chrome_trace(trace), out, separators=(",", ":"))
    return path
