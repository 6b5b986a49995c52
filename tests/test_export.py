"""An exported trace is Chrome Trace Event JSON that Perfetto and chrome://tracing open: named
processes, events of the right shape in microseconds, properly nested slices, flows bound to
slices, and every event of the trace in it."""

import json
from collections import Counter, defaultdict
from numbers import Real
from pathlib import Path
from typing import Any

import pytest
from test_transparency import WorkerSpecificIterableDataset

from helpers import Kind, SleepDataset, Trace, run_experiment
from helpers.datasets import FaultyDataset
from helpers.export import write_chrome_trace

EPS = 0.002  # µs: timestamps are rounded to the nanosecond

REQUIRED = {
    "X": {"name": str, "cat": str, "ph": str, "pid": int, "tid": int, "ts": Real, "dur": Real},
    "i": {"name": str, "cat": str, "ph": str, "pid": int, "tid": int, "ts": Real, "s": str},
    "M": {"name": str, "ph": str, "pid": int, "args": dict},
    "s": {"name": str, "cat": str, "ph": str, "pid": int, "tid": int, "ts": Real, "id": int},
    "t": {"name": str, "cat": str, "ph": str, "pid": int, "tid": int, "ts": Real, "id": int},
    "f": {"name": str, "cat": str, "ph": str, "pid": int, "tid": int, "ts": Real, "id": int, "bp": str},
}


def _exported(trace: Trace, tmp_path: Path) -> list[dict[str, Any]]:
    data = json.loads(write_chrome_trace(trace, tmp_path / "trace.json").read_text())
    assert set(data) >= {"traceEvents"} and data.get("displayTimeUnit") in ("ms", "ns")
    return data["traceEvents"]


def _check_shapes(events: list[dict[str, Any]]) -> None:
    for event in events:
        required = REQUIRED[event["ph"]]
        for key, kind in required.items():
            assert isinstance(event.get(key), kind), (key, event)
        if "ts" in event:
            assert event["ts"] >= 0
        if event["ph"] == "X":
            assert event["dur"] >= 0
        if event["ph"] == "M":
            assert event["name"] in ("process_name", "thread_name", "process_sort_index")


def _slices(events: list[dict[str, Any]]) -> dict[tuple[int, int], list[tuple[float, float]]]:
    by_thread = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            by_thread[e["pid"], e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
    return {thread: sorted(spans, key=lambda s: (s[0], -s[1])) for thread, spans in by_thread.items()}


def _check_nesting(events: list[dict[str, Any]]) -> None:
    """On each thread, two slices are either disjoint or one holds the other."""
    for spans in _slices(events).values():
        open_ends: list[float] = []
        for start, end in spans:
            while open_ends and open_ends[-1] <= start + EPS:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1] + EPS, "slices overlap without nesting"
            open_ends.append(end)


def _check_flows(events: list[dict[str, Any]]) -> int:
    """Each flow starts once, ends once, in time order, every step inside a slice of its thread."""
    slices = _slices(events)
    steps = defaultdict(list)
    for e in events:
        if e["ph"] in "stf":
            inside = any(s - EPS <= e["ts"] <= t + EPS for s, t in slices.get((e["pid"], e["tid"]), []))
            assert inside, f"flow step outside any slice: {e}"
            steps[e["id"]].append((e["ts"], e["ph"]))
    for flow in steps.values():
        phases = [ph for _, ph in flow]
        assert phases[0] == "s" and phases[-1] == "f" and phases.count("s") == phases.count("f") == 1
        assert [ts for ts, _ in flow] == sorted(ts for ts, _ in flow)
    return len(steps)


def _check_everything(trace: Trace, events: list[dict[str, Any]]) -> None:
    _check_shapes(events)
    counts = Counter(e["cat"] for e in events if e["ph"] in "Xi")
    assert {kind.name.lower(): counts[kind.name.lower()] for kind in Kind} == {
        kind.name.lower(): trace.count(kind) for kind in Kind
    }
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names[trace.main_pid] == f"main process (pid {trace.main_pid})"
    for pid, worker in trace.worker_pids.items():
        assert names[pid] == f"worker {worker} (pid {pid})"
    if trace.fork_server_pid is not None:
        assert names[trace.fork_server_pid] == f"fork server (pid {trace.fork_server_pid})"
    assert len(names) == len(set(names)) == 1 + len(trace.worker_pids) + (trace.fork_server_pid is not None)
    order = sorted((e["args"]["sort_index"], e["pid"]) for e in events if e["name"] == "process_sort_index")
    assert order[0][1] == trace.main_pid
    assert {e["pid"] for e in events if e["name"] == "thread_name"} == set(names)
    _check_nesting(events)
    # The main process starts each worker inside iter(): those slices sit on its thread, in iter().
    calls = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "iter_called"]
    for created in (e for e in events if e.get("cat") == "process_created"):
        assert created["pid"] == created["tid"] == trace.main_pid
        assert any(s - EPS <= created["ts"] <= created["ts"] + created["dur"] <= t + EPS for s, t in calls)


def test_a_traced_run_exports_completely(start_method: str, tmp_path: Path) -> None:
    trace = run_experiment(
        SleepDataset(12, delay=0.002), batch_size=2, num_workers=2, start_method=start_method, max_batches=4
    )
    events = _exported(trace, tmp_path)
    _check_everything(trace, events)
    # Each batch received is one arrow from its hand-out to its receipt; one built and never
    # received ends at its collate.
    assert _check_flows(events) == trace.batches_received + len(trace.wasted_batches)
    # Times are microseconds: the file's iter() slice lasts as long as the trace's.
    (iter_called,) = [e for e in events if e.get("cat") == "iter_called"]
    assert iter_called["dur"] == pytest.approx(trace.of(Kind.ITER_CALLED)[0].duration * 1e6, abs=EPS)
    received = [e for e in events if e.get("cat") == "batch_received"]
    first, last = trace.of(Kind.BATCH_RECEIVED)[0], trace.of(Kind.BATCH_RECEIVED)[-1]
    assert received[-1]["ts"] - received[0]["ts"] == pytest.approx((last.start - first.start) * 1e6, abs=EPS)
    # A worker's items and collate sit inside its batch's slice.
    batches = [e for e in events if e.get("cat") == "batch"]
    assert len(batches) == trace.count(Kind.COLLATED)


def test_errors_failed_items_and_iterable_streams_export(tmp_path: Path) -> None:
    failed = run_experiment(
        FaultyDataset(8, delay=0.0, fail_on=(5,)),
        batch_size=2,
        num_workers=2,
        start_method="fork",
        raise_errors=False,
    )
    events = _exported(failed, tmp_path)
    _check_everything(failed, events)
    _check_flows(events)
    stream = run_experiment(
        WorkerSpecificIterableDataset([3, 5]), batch_size=2, num_workers=2, start_method="fork"
    )
    events = _exported(stream, tmp_path)
    _check_everything(stream, events)
    assert _check_flows(events) == stream.batches_received


def test_a_run_without_workers_exports(tmp_path: Path) -> None:
    trace = run_experiment(SleepDataset(4, delay=0.0), batch_size=2)
    events = _exported(trace, tmp_path)
    _check_everything(trace, events)
    assert _check_flows(events) == 2
