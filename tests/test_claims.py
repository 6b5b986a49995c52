"""The measurements behind the verdicts, and verdicts that change when the measurement does."""

import os
import platform
import threading

import pytest
from workloads import ExitingDataset

from helpers import ArrayDataset, Kind, SleepDataset, descendants, run_experiment, stack_collate, trace_loader
from helpers.claims import Outcome, verdict_c3, verdict_c4, verdict_c5, verdict_c6
from helpers.datasets import FaultyDataset, ObjectListDataset
from helpers.events import Trace
from helpers.measurements import (
    count_processes,
    epoch_costs,
    first_batch_with,
    private_growth,
    run_script,
    threads_added_by_pin_memory,
    worker_parents,
)
from helpers.memory import MemoryReport, ProcessMemory, measure_memory
from helpers.system import MIB, START_METHODS, default_start_methods


def _report(worker_uss_mib: float, data_mib: float, method: str) -> MemoryReport:
    trace = Trace(events=(), main_pid=1, start_method=method)
    workers = tuple(
        ProcessMemory(f"worker {i}", 10 + i, 300 * MIB, int(worker_uss_mib * MIB), None) for i in range(2)
    )
    return MemoryReport(
        "data",
        int(data_mib * MIB),
        method,
        ProcessMemory("main", 1, 400 * MIB, 80 * MIB, None),
        workers,
        trace,
    )


def test_c3_verdict_is_worded_from_the_measured_memory() -> None:
    baseline = _report(10, 1, "x")
    shared = verdict_c3(_report(12, 128, "x"), baseline)
    copied = verdict_c3(_report(140, 128, "x"), baseline)
    assert shared.outcome is Outcome.HOLDS and shared.reason_holds is False
    assert "copy-on-write" in shared.evidence and "but not for the article's reason" in str(shared)
    assert copied.outcome is Outcome.FAILS and copied.reason_holds is False
    assert "own copy" in copied.evidence and "grew by 130 MiB" in copied.evidence


def test_c3_under_each_start_method(start_method: str) -> None:
    """fork shares the array's pages; spawn and forkserver give each worker its own copy."""
    report = measure_memory(ArrayDataset.of_mib(48), start_method=start_method)
    baseline = measure_memory(ArrayDataset.of_mib(1), start_method=start_method)
    assert len(report.workers) == 2 and report.trace.leftover_processes == ()
    verdict = verdict_c3(report, baseline)
    data = ArrayDataset.of_mib(48).nbytes
    if start_method == "fork":
        assert private_growth(report, baseline) < 0.25 * data
        assert verdict.outcome is Outcome.HOLDS
    else:
        assert private_growth(report, baseline) > 0.75 * data
        assert verdict.outcome is Outcome.FAILS and start_method in verdict.evidence


@pytest.mark.skipif("fork" not in START_METHODS, reason="copy-on-read needs fork")
def test_copy_on_read_under_fork() -> None:
    """Reading a list of Python floats copies pages into a forked worker; reading an array does not."""
    grow = {
        kind: private_growth(
            measure_memory(make(24), start_method="fork"), measure_memory(make(1), start_method="fork")
        )
        for kind, make in (("list", ObjectListDataset.of_mib), ("array", ArrayDataset.of_mib))
    }
    assert grow["list"] > 6 * MIB > grow["array"]


def test_c5_verdict_follows_where_collate_ran(start_method: str) -> None:
    dataset = SleepDataset(size=8, delay=0.0, shape=())
    in_main = verdict_c5(run_experiment(dataset, batch_size=2, num_workers=0, collate_fn=stack_collate))
    in_workers = verdict_c5(
        run_experiment(
            dataset, batch_size=2, num_workers=2, collate_fn=stack_collate, start_method=start_method
        )
    )
    assert in_main.outcome is Outcome.FAILS and "0 of 4 collate calls ran in worker" in in_main.evidence
    assert in_workers.outcome is Outcome.HOLDS and "4 of 4 collate calls ran in worker" in in_workers.evidence
    both = verdict_c5(
        run_experiment(
            dataset, batch_size=2, num_workers=2, collate_fn=stack_collate, start_method=start_method
        ),
        run_experiment(dataset, batch_size=2, num_workers=0, collate_fn=stack_collate),
    )
    assert both.outcome is Outcome.PARTLY and "0 of 4" in both.evidence and "4 of 4" in both.evidence


def test_each_batch_is_built_whole_by_one_worker(start_method: str) -> None:
    trace = run_experiment(
        SleepDataset(size=8, delay=0.0, shape=()), batch_size=2, num_workers=2, start_method=start_method
    )
    batches = sorted(trace.batches())
    assert [items for _, _, _, items in batches] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(pid in trace.worker_pids and trace.worker_pids[pid] == wid for _, wid, pid, _ in batches)


@pytest.mark.parametrize("in_order", [True, False])
def test_received_batches_carry_their_own_numbers(start_method: str, in_order: bool) -> None:
    """With in_order=False batches may arrive out of order; the trace records which one arrived."""
    dataset = SleepDataset(size=12, delay=0.01, shape=(), slow_items=(0, 1), slow_factor=10)
    with trace_loader(
        dataset, batch_size=2, num_workers=2, in_order=in_order, start_method=start_method
    ) as loader:
        contents = [int(batch[0]) // 2 for batch in loader]
    recorded = [e.index for e in loader.trace.of(Kind.BATCH_RECEIVED)]
    assert recorded == contents and sorted(recorded) == list(range(6))
    if in_order:
        assert recorded == list(range(6))


def test_every_epoch_starts_new_workers_unless_persistent(start_method: str) -> None:
    dataset = SleepDataset(size=4, delay=0.0)
    fresh = run_experiment(dataset, epochs=2, batch_size=2, num_workers=2, start_method=start_method)
    kept = run_experiment(
        dataset, epochs=2, batch_size=2, num_workers=2, start_method=start_method, persistent_workers=True
    )
    assert [c.workers_started for c in epoch_costs(fresh)] == [2, 2]
    assert [c.workers_started for c in epoch_costs(kept)] == [2, 0]
    assert verdict_c6(fresh, kept).outcome is Outcome.PARTLY
    assert verdict_c6(kept, kept).outcome is Outcome.HOLDS


def test_worker_parents(start_method: str) -> None:
    parents = worker_parents(SleepDataset(size=2, delay=0.0), start_method)
    assert len(parents) == 2
    expected = "the fork server" if start_method == "forkserver" else "this kernel"
    assert all(what == expected for _, _, what in parents)
    if start_method != "forkserver":
        assert all(parent == os.getpid() for _, parent, _ in parents)


def test_a_script_without_a_main_guard_fails_under_spawn() -> None:
    body = """
        from torch.utils.data import DataLoader
        from helpers import SleepDataset
        {guard}
            for batch in DataLoader(SleepDataset(size=2, delay=0.0), num_workers=1, multiprocessing_context="spawn"):
                print("got a batch")
    """
    unguarded = run_script(body.format(guard="if True:"))
    guarded = run_script(body.format(guard='if __name__ == "__main__":'))
    assert unguarded.returncode != 0 and "bootstrapping phase" in unguarded.output
    assert guarded.returncode == 0 and guarded.output.count("got a batch") == 2


def test_cuda_verdict_without_a_gpu_says_it_was_skipped() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA experiment runs instead")
    verdict = verdict_c4()
    assert verdict.outcome is Outcome.NOT_MEASURED and "skipped" in verdict.evidence


def test_default_start_methods_includes_this_python() -> None:
    import multiprocessing

    assert default_start_methods()[platform.python_version()] == multiprocessing.get_start_method()


def test_first_batch_with_reports_what_the_loader_said(start_method: str) -> None:
    before = descendants(), {t.ident for t in threading.enumerate()}
    assert first_batch_with(SleepDataset(size=2, delay=0.0), start_method) == "ok"
    failed = first_batch_with(FaultyDataset(size=2, fail_on=(0,)), start_method)
    assert failed == "ValueError: item 0 is corrupt"
    killed = first_batch_with(FaultyDataset(size=2, kill_on=(0,)), start_method)
    exited = first_batch_with(ExitingDataset(), start_method)
    assert killed.startswith("RuntimeError: DataLoader worker") and exited.startswith(
        "RuntimeError: DataLoader worker"
    )
    if start_method != "forkserver":  # this process is the workers' parent: it gets their SIGCHLD
        assert "killed by signal: Killed" in killed and "exit code" not in killed
        assert "exited unexpectedly with exit code 1" in exited and "killed by signal" not in exited
    assert descendants() == before[0]
    assert {t.ident for t in threading.enumerate()} == before[1], "an index feeder thread outlived its run"


def test_count_processes_leaves_nothing_running(start_method: str) -> None:
    before = descendants(), {t.ident for t in threading.enumerate()}
    counts = count_processes(
        SleepDataset(size=8, delay=0.0), batch_size=2, num_workers=2, multiprocessing_context=start_method
    )
    assert (counts.after_construction, counts.after_iter, counts.after_close) == (0, 2, 0)
    assert counts.start_method == start_method
    assert descendants() == before[0]
    assert {t.ident for t in threading.enumerate()} == before[1], "an index feeder thread outlived its run"


@pytest.mark.skipif("fork" not in START_METHODS, reason="needs fork (fast runs)")
def test_no_index_feeder_thread_outlives_a_measurement() -> None:
    """count_processes and first_batch_with wait for the threads that fed their workers indices.
    With PyTorch's shutdown alone, 2 of 30 first_batch_with runs here left one running."""
    for _ in range(20):
        before = {t.ident for t in threading.enumerate()}
        count_processes(
            SleepDataset(size=4, delay=0.0), batch_size=2, num_workers=2, multiprocessing_context="fork"
        )
        first_batch_with(SleepDataset(size=2, delay=0.0), "fork", num_workers=2)
        assert [t.name for t in threading.enumerate() if t.ident not in before] == []


def test_pin_memory_starts_a_thread_only_with_an_accelerator() -> None:
    import torch

    added = threads_added_by_pin_memory(SleepDataset(size=4, delay=0.0))
    if torch.accelerator.is_available():
        assert len(added) == 1 and "pin_memory" in added[0]
    else:
        assert added == []
