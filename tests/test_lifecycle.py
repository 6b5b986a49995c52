"""Each worker's life is recorded from both sides, under every start method: the main process
records creating it (inside ``iter()``), the worker its first moment of Python and when it is
ready. Every ``next()`` that gets no batch is recorded with how it ended. Traced workers import
nothing heavy of ours, so tracing does not lengthen the start-up it draws."""

import importlib
import multiprocessing

import pytest
import torch
from probes import HEAVY_MODULES, ModulesDataset
from torch.utils.data import DataLoader

from helpers import Kind, SleepDataset, WaitEnd, run_experiment, trace_loader
from helpers.datasets import FaultyDataset
from helpers.events import FORK_SERVER_ID


def test_every_worker_is_created_inside_iter_before_it_is_ready(start_method: str) -> None:
    trace = run_experiment(SleepDataset(8, delay=0.0), batch_size=2, num_workers=4, start_method=start_method)
    iter_called = trace.first(Kind.ITER_CALLED)
    assert iter_called is not None
    created = {e.pid: e for e in trace.of(Kind.PROCESS_CREATED)}
    running = {e.pid: e for e in trace.of(Kind.PROCESS_RUNNING)}
    ready = {e.pid: e for e in trace.of(Kind.WORKER_READY)}
    assert set(created) == set(running) == set(ready) == set(trace.worker_pids)
    assert sorted(e.worker_id for e in created.values()) == [0, 1, 2, 3]
    for pid, event in created.items():
        assert iter_called.start <= event.start <= event.end <= iter_called.end
        assert event.worker_id == trace.worker_pids[pid]
        # start() may return after the child runs (fork): the creation *begins* before it runs
        assert event.start <= running[pid].start <= ready[pid].start


def test_under_forkserver_the_fork_server_is_on_the_trace() -> None:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    traces = [
        run_experiment(SleepDataset(4, delay=0.0), batch_size=2, num_workers=2, start_method="forkserver")
        for _ in range(2)
    ]
    for trace in traces:  # started by this run or running since an earlier one: on the trace once
        servers = trace.of(Kind.FORK_SERVER)
        assert len(servers) == 1 and servers[0].worker_id == FORK_SERVER_ID
        assert trace.fork_server_pid == servers[0].pid not in trace.worker_pids
        assert servers[0].start <= trace.of(Kind.PROCESS_CREATED)[0].end
    assert traces[1].of(Kind.FORK_SERVER)[0].start < traces[1].of(Kind.ITER_CALLED)[0].start


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_traced_workers_import_nothing_heavy_of_ours(method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} on this platform")
    for name in ("IPython", "ipywidgets", "matplotlib.pyplot", "psutil"):  # as in a notebook's kernel
        importlib.import_module(name)

    with trace_loader(ModulesDataset(), batch_size=2, num_workers=1, start_method=method) as loader:
        (flags,) = list(loader)
    imported = [name for name, flag in zip(HEAVY_MODULES, flags[0].tolist(), strict=True) if flag]
    assert imported == []
    assert ModulesDataset()[0].all()  # the probe does see them where they are imported


def test_the_last_next_is_recorded_with_the_shutdown_inside_it(start_method: str) -> None:
    trace = run_experiment(SleepDataset(4, delay=0.0), batch_size=2, num_workers=2, start_method=start_method)
    ((wait, how),) = trace.waits_ended()
    assert how == WaitEnd.END_OF_DATA
    assert wait.start >= trace.of(Kind.BATCH_RECEIVED)[-1].end
    assert all(e.start <= wait.end for e in trace.of(Kind.WORKER_EXITED))  # PyTorch stopped them inside it


@pytest.mark.parametrize(
    ("dataset", "settings", "ending"),
    [
        (FaultyDataset(size=8, fail_on=(5,)), {}, WaitEnd.ERROR),
        (FaultyDataset(size=8, kill_on=(5,)), {}, WaitEnd.WORKER_DIED),
        (
            SleepDataset(size=8, delay=0.01, slow_items=(4,), slow_factor=100),
            {"timeout": 0.3},
            WaitEnd.TIMEOUT,
        ),
    ],
    ids=["error", "killed", "timeout"],
)
def test_a_next_that_fails_is_recorded_with_how_it_ended(dataset, settings: dict, ending: WaitEnd) -> None:
    trace = run_experiment(
        dataset, batch_size=2, num_workers=2, start_method="fork", raise_errors=False, **settings
    )
    assert trace.error is not None
    assert [how for _, how in trace.waits_ended()] == [ending]
    assert WaitEnd.of(trace.error) == ending


def test_batches_built_after_a_break_are_counted_as_wasted(start_method: str) -> None:
    trace = run_experiment(
        SleepDataset(12, delay=0.0), batch_size=2, num_workers=2, start_method=start_method, max_batches=1
    )
    received = {e.index for e in trace.of(Kind.BATCH_RECEIVED)}
    collated = {e.index for e in trace.of(Kind.COLLATED)}
    assert received == {0} and trace.waits_ended() == []
    assert trace.wasted_batches == sorted(collated - received) and trace.wasted_batches
    assert "built but never received: " + str(len(trace.wasted_batches)) in trace.summary()
    assert trace.handed_out_before_first_batch == 4  # 2 workers × prefetch_factor 2


def test_user_code_in_a_worker_sees_its_own_dataset(start_method: str) -> None:
    from probes import DatasetTypeDataset, remember_dataset_type

    with trace_loader(
        DatasetTypeDataset(),
        batch_size=2,
        num_workers=2,
        start_method=start_method,
        worker_init_fn=remember_dataset_type,
    ) as loader:
        seen = {int(v) for batch in loader for v in batch}
    plain = {
        int(v)
        for batch in DataLoader(
            DatasetTypeDataset(),
            batch_size=2,
            num_workers=2,
            multiprocessing_context=start_method,
            worker_init_fn=remember_dataset_type,
        )
        for v in batch
    }
    assert seen == plain == {1}
    assert torch.is_tensor(DatasetTypeDataset()[0])
