"""The tracer records every event, in the right process, under every start method."""

import os
import signal
from collections import Counter
from time import perf_counter_ns

import psutil
import pytest
import torch
from workloads import EnvDataset, ParentPidDataset, remember_worker_id

from helpers import Kind, SleepDataset, run_experiment, stack_collate, trace_loader
from helpers.events import EventLog


def test_every_event_arrives_from_the_right_process(start_method: str) -> None:
    trace = run_experiment(
        SleepDataset(12, delay=0.01), batch_size=3, num_workers=2, start_method=start_method
    )
    main = os.getpid()
    assert trace.start_method == start_method
    assert trace.main_pid == main

    items = trace.of(Kind.ITEM_LOADED)
    assert sorted(e.index for e in items) == list(range(12))
    workers = trace.worker_pids
    assert len(workers) == 2 and main not in workers and sorted(workers.values()) == [0, 1]
    assert all(e.pid in workers and e.worker_id == workers[e.pid] for e in items)

    collates = trace.of(Kind.COLLATED)
    assert sorted(e.index for e in collates) == [0, 1, 2, 3]
    for collate in collates:  # each batch is built by the worker that loaded its items, after them
        mine = [e for e in items if e.pid == collate.pid and e.end <= collate.start]
        assert len(mine) >= 3
    assert [e.index for e in trace.of(Kind.BATCH_RECEIVED)] == [0, 1, 2, 3]
    assert all(e.pid == main for e in trace.of(Kind.BATCH_RECEIVED, Kind.BATCH_REQUESTED, Kind.ITER_CALLED))
    assert Counter(e.pid for e in trace.of(Kind.WORKER_READY)) == Counter(dict.fromkeys(workers, 1))
    assert Counter(e.pid for e in trace.of(Kind.WORKER_EXITED)) == Counter(dict.fromkeys(workers, 1))
    assert all(e.start <= e.end for e in trace.events)
    assert trace.processes_after_construction == () and trace.leftover_processes == ()


def test_workers_start_inside_iter_not_at_construction(start_method: str) -> None:
    trace = run_experiment(SleepDataset(4, delay=0.0), batch_size=2, num_workers=2, start_method=start_method)
    created = trace.first(Kind.LOADER_CREATED)
    iter_called = trace.first(Kind.ITER_CALLED)
    assert created is not None and iter_called is not None
    assert created.end <= iter_called.start == 0.0
    assert trace.processes_after_construction == ()
    workers = trace.of(Kind.PROCESS_CREATED)
    assert len(workers) == 2
    assert all(iter_called.start <= e.start <= e.end <= iter_called.end for e in workers)


def test_break_loses_no_event(start_method: str) -> None:
    trace = run_experiment(
        SleepDataset(20, delay=0.01), batch_size=2, num_workers=2, start_method=start_method, max_batches=1
    )
    assert trace.batches_received == 1
    assert trace.error is None
    # Every batch a worker collated has all its items recorded, and every worker's exit is there.
    items_by_pid = Counter(e.pid for e in trace.of(Kind.ITEM_LOADED))
    collates_by_pid = Counter(e.pid for e in trace.of(Kind.COLLATED))
    assert collates_by_pid and all(items_by_pid[pid] >= 2 * n for pid, n in collates_by_pid.items())
    assert {e.pid for e in trace.of(Kind.WORKER_EXITED)} == set(trace.worker_pids)
    assert trace.first(Kind.ITER_CLOSED) is not None
    assert trace.leftover_processes == ()


def test_without_workers_everything_happens_in_main() -> None:
    trace = run_experiment(SleepDataset(6, delay=0.0), batch_size=2, num_workers=0, collate_fn=stack_collate)
    assert trace.start_method is None
    assert {e.pid for e in trace.events} == {os.getpid()}
    assert trace.of(Kind.WORKER_READY) == []
    assert [e.index for e in trace.of(Kind.COLLATED)] == [0, 1, 2]


def test_custom_collate_runs_where_the_batch_is_built(start_method: str) -> None:
    trace = run_experiment(
        SleepDataset(8, delay=0.0, shape=()),
        batch_size=2,
        num_workers=2,
        start_method=start_method,
        collate_fn=stack_collate,
    )
    assert {e.pid for e in trace.of(Kind.COLLATED)} <= set(trace.worker_pids)
    assert os.getpid() not in {e.pid for e in trace.of(Kind.COLLATED)}


def test_forkserver_workers_are_children_of_the_fork_server(start_method: str) -> None:
    with trace_loader(ParentPidDataset(), batch_size=2, num_workers=2, start_method=start_method) as loader:
        parents = {int(p) for batch in loader for p in batch}
    if start_method == "forkserver":
        assert os.getpid() not in parents
        assert all(psutil.Process(p).ppid() == os.getpid() for p in parents)
    else:
        assert parents == {os.getpid()}


def test_users_worker_init_fn_still_runs(start_method: str) -> None:
    with trace_loader(
        EnvDataset(),
        batch_size=3,
        num_workers=2,
        start_method=start_method,
        worker_init_fn=remember_worker_id,
    ) as loader:
        seen = sorted({int(v) for batch in loader for v in batch})
    assert seen == [0, 1]
    assert len(loader.trace.of(Kind.WORKER_READY)) == 2


def test_persistent_workers_are_reused_across_epochs(start_method: str) -> None:
    trace = run_experiment(
        SleepDataset(4, delay=0.0),
        batch_size=2,
        num_workers=2,
        start_method=start_method,
        persistent_workers=True,
        epochs=2,
    )
    assert len(trace.of(Kind.ITER_CALLED)) == 2
    assert len(trace.of(Kind.WORKER_READY)) == 2
    assert trace.batches_received == 4 and trace.leftover_processes == ()


def test_new_workers_every_epoch_without_persistence() -> None:
    trace = run_experiment(
        SleepDataset(4, delay=0.0), batch_size=2, num_workers=2, start_method="fork", epochs=2
    )
    assert len(trace.of(Kind.WORKER_READY)) == 4
    assert len(trace.worker_pids) == 4


def test_trace_is_only_ready_after_close() -> None:
    loader = trace_loader(SleepDataset(2, delay=0.0))
    with pytest.raises(RuntimeError, match="closed"):
        _ = loader.trace
    loader.close()
    assert loader.trace.batches_received == 0
    with pytest.raises(RuntimeError, match="closed"):
        iter(loader).__next__()


def test_log_keeps_the_events_of_a_killed_process() -> None:
    log = EventLog()
    try:
        pid = os.fork()
        if pid == 0:  # child: record, then die without any cleanup
            for i in range(5):
                log.record(Kind.ITEM_LOADED, perf_counter_ns(), index=i)
            os.kill(os.getpid(), signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status)
        records = log.read()
        assert list(records["index"]) == [0, 1, 2, 3, 4]
        assert set(records["pid"]) == {pid}
    finally:
        log.close()


def test_log_grows_past_one_chunk_and_cleans_up() -> None:
    log = EventLog()
    for i in range(10_000):
        log.record(Kind.ITEM_LOADED, i, i + 1, index=i)
    records = log.read()
    assert list(records["index"]) == list(range(10_000))
    log.close()
    assert not os.path.exists(log.directory)


def test_no_event_files_are_left_behind(start_method: str, event_logs: list[str]) -> None:
    run_experiment(SleepDataset(4, delay=0.0), batch_size=2, num_workers=1, start_method=start_method)
    assert len(event_logs) == 1
    assert [folder for folder in event_logs if os.path.exists(folder)] == []


def test_batches_are_unchanged_by_tracing() -> None:
    with trace_loader(
        SleepDataset(6, delay=0.0, shape=(2,)), batch_size=4, num_workers=2, start_method="fork"
    ) as loader:
        batches = list(loader)
    assert torch.equal(batches[0], torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    assert batches[1].shape == (2, 2)
