"""A trace keeps its events as columns (NumPy arrays, a few dozen bytes an event) and answers
every question the notebooks ask of it as the same events held one by one would."""

import os
import signal
from time import perf_counter_ns
from typing import Any

import numpy as np
import pytest
from test_transparency import CorruptItems, WorkerSpecificIterableDataset

import helpers.events
from helpers import Event, Kind, SleepDataset, Trace, run_experiment, trace_loader
from helpers.events import EventLog, Events


def _reference_batches(events: list[Event]) -> list[tuple[int, int, int, list[int]]]:
    """``Trace.batches`` written plainly, one event at a time."""
    pending: dict[int, list[int]] = {}
    found = []
    for e in events:
        if e.kind == Kind.ITEM_LOADED:
            pending.setdefault(e.pid, []).append(e.index)
        elif e.kind == Kind.ITEM_FAILED:
            pending.pop(e.pid, None)
        elif e.kind == Kind.COLLATED:
            found.append((e.index, e.worker_id, e.pid, pending.pop(e.pid, [])))
    return found


def _same_answers(trace: Trace) -> None:
    events = list(trace.events)
    assert len(events) == len(trace.events) and all(isinstance(e, Event) for e in events)
    assert [e.start for e in events] == sorted(e.start for e in events)
    assert trace.batches() == _reference_batches(events)
    assert trace.worker_pids == {e.pid: e.worker_id for e in events if e.worker_id >= 0}
    for kind in Kind:
        mine = [e for e in events if e.kind == kind]
        assert trace.of(kind) == mine and trace.count(kind) == len(mine)
        assert trace.first(kind) == (mine[0] if mine else None)
    received = {e.index for e in events if e.kind == Kind.BATCH_RECEIVED}
    built = {e.index for e in events if e.kind == Kind.COLLATED and e.index >= 0}
    assert trace.wasted_batches == sorted(built - received)
    first = next((e for e in events if e.kind == Kind.BATCH_RECEIVED), None)
    limit = first.start if first else float("inf")  # before the loop asked for its first batch
    assert trace.handed_out_before_first_batch == sum(
        1 for e in events if e.kind == Kind.BATCH_REQUESTED and e.start < limit
    )
    assert trace.events[-1] == events[-1] and list(trace.events[1:3]) == events[1:3]
    again = Trace(events, main_pid=trace.main_pid, start_method=trace.start_method)
    assert (
        again.batches() == trace.batches()
        and again.summary()
        == Trace(trace.events, main_pid=trace.main_pid, start_method=trace.start_method).summary()
    )


def test_answers_match_event_by_event(start_method: str) -> None:
    failing = run_experiment(
        CorruptItems(12, bad=(5,)), batch_size=2, num_workers=2, start_method=start_method, raise_errors=False
    )
    _same_answers(failing)
    broken_off = run_experiment(
        SleepDataset(12, delay=0.001), batch_size=3, num_workers=2, start_method=start_method, max_batches=2
    )
    _same_answers(broken_off)
    stream = run_experiment(
        WorkerSpecificIterableDataset([3, 6]), batch_size=2, num_workers=2, start_method=start_method
    )
    _same_answers(stream)


def test_a_large_trace_costs_a_few_dozen_bytes_an_event() -> None:
    log = EventLog()
    try:
        writer = log.writer()
        writer.load_items(lambda i: i, list(range(100_000)))
        now = perf_counter_ns()
        writer.record(Kind.ITER_CALLED, now, now + 1)
        trace = Trace(log.read_events()[0], main_pid=writer.pid, start_method=None)
    finally:
        log.close()
    assert len(trace.events) == 100_001 and trace.count(Kind.ITEM_LOADED) == 100_000
    assert trace.events.nbytes <= 64 * len(trace.events)
    for column in ("start", "end", "index", "pid", "worker_id", "kind"):
        assert isinstance(getattr(trace.events, column), np.ndarray)
    assert trace.events.index[trace.events.kind == Kind.ITEM_LOADED].tolist() == list(range(100_000))


def test_indices_that_are_no_integers_are_recorded_as_minus_one() -> None:
    log = EventLog()
    try:
        writer = log.writer()
        assert writer.load_items(lambda key: key.upper(), ["a", "b"]) == ["A", "B"]
        assert writer.load_items(sum, [(1, 2)]) == [3]
        writer.record_many(Kind.ITEM_LOADED, 1, 2, [7, 8])
        assert list(writer.stream_items(iter("xy"))) == ["x", "y"]
        records = log.read()
    finally:
        log.close()
    assert sorted(records["index"].tolist()) == [-1, -1, -1, 0, 1, 7, 8]


def test_events_given_one_by_one_become_columns() -> None:
    events = [Event(7, 0, Kind.ITEM_LOADED, 0.1, 0.2, 3), Event(1, -1, Kind.BATCH_RECEIVED, 0.3, 0.4, 0)]
    columns = Events.of(events)
    assert list(columns) == events and columns[1] == events[1] and len(columns) == 2
    with pytest.raises(IndexError):
        columns[2]
    assert Trace(events, main_pid=1).events.kind.dtype == np.int8


def test_each_item_starts_when_the_one_before_it_ended() -> None:
    def load(i: int) -> int:
        if i == 3:
            raise ValueError("corrupt")
        return i

    log = EventLog()
    try:
        writer = log.writer()
        writer.load_items(load, [0, 1, 2])
        with pytest.raises(ValueError):
            writer.load_items(load, [2, 3, 4])  # 4 is never loaded: it is not recorded
        records = log.read()
    finally:
        log.close()
    assert records["index"].tolist() == [0, 1, 2, 2, 3]
    assert records["kind"].tolist() == [Kind.ITEM_LOADED] * 4 + [Kind.ITEM_FAILED]
    first, second = records[:3], records[3:]
    for batch in (first, second):
        assert (batch["start"][1:] == batch["end"][:-1]).all() and (batch["start"] > 0).all()
        assert (batch["start"] <= batch["end"]).all()


def test_items_too_fast_to_time_one_by_one_are_timed_a_batch_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = EventLog()
    try:
        writer = log.writer()
        monkeypatch.setattr(helpers.events, "_BY_BATCH_BELOW_NS", 10**12)  # every batch is fast
        writer.load_items(int, [0, 1, 2, 3])  # timed item by item, found fast, so...
        writer.load_items(int, [4, 5, 6, 7])  # ...this batch is timed as a whole
        monkeypatch.setattr(helpers.events, "_BY_BATCH_BELOW_NS", 0)  # every batch is slow
        writer.load_items(int, [8, 9])  # as a whole (the batch before was fast), found slow, so...
        writer.load_items(int, [10, 11])  # ...item by item again
        events, by_batch = log.read_events()
        monkeypatch.setattr(helpers.events, "_BY_BATCH_BELOW_NS", 10**12)
        pid = os.fork()
        if pid == 0:  # a child killed in the middle of a batch timed as a whole leaves none of it
            writer = log.writer()
            writer.load_items(int, [0, 1])
            writer.load_items(lambda i: os.kill(os.getpid(), signal.SIGKILL) if i == 3 else i, [2, 3, 4])
        os.waitpid(pid, 0)
        child = [e.index for e in Trace(log.read_events()[0]).events if e.pid == pid]
    finally:
        log.close()
    assert by_batch == 6 and child == [0, 1]  # items 4 to 9; the child's 0 and 1 were timed one by one
    assert events.index.tolist() == list(range(12))
    assert (events.start[1:] >= events.end[:-1] - 1e-9).all() and (events.end > events.start - 1e-9).all()
    spread = events.end[4:8] - events.start[4:8]
    assert np.allclose(spread, spread.mean(), atol=2e-9)  # an even share each, to the nanosecond


def test_a_trace_says_when_items_were_timed_a_batch_at_a_time() -> None:
    dataset: Any = list(range(640))
    with trace_loader(dataset, batch_size=64, num_workers=2, start_method="fork") as loader:
        received = [batch.tolist() for batch in loader]
    trace = loader.trace
    assert [item for batch in received for item in batch] == list(range(640))
    assert sorted(e.index for e in trace.of(Kind.ITEM_LOADED)) == list(range(640))
    assert [sorted(items) for _, _, _, items in sorted(trace.batches())] == [
        list(range(i, i + 64)) for i in range(0, 640, 64)
    ]
    assert any("timed a batch at a time" in note for note in trace.notes)
