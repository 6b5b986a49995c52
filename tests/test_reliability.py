"""Nothing left behind and nothing lost, under every start method and every way a run can end.

Each case compares this process's child processes (recursively), threads and open file
descriptors before and after a run, after one warm-up run of the same start method (which may
start the long-lived fork server or resource tracker, kept on purpose and not counted).
"""

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import psutil
import pytest

from helpers import (
    Kind,
    SleepDataset,
    SwimlanePanel,
    Trace,
    check_settings,
    descendants,
    run_experiment,
    trace_loader,
)
from helpers.datasets import FaultyDataset
from helpers.system import private_shm_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _footprint() -> tuple[set[int], set[str], int]:
    threads = {f"{t.name}:{t.ident}" for t in threading.enumerate()}
    return descendants(), threads, psutil.Process().num_fds()


@pytest.fixture
def nothing_left_behind(start_method: str) -> Iterator[None]:
    run_experiment(SleepDataset(size=2, delay=0.0), num_workers=1, start_method=start_method)  # warm-up
    before = _footprint()
    yield
    after = _footprint()
    assert after[0] - before[0] == set(), "processes left behind"
    assert after[1] - before[1] == set(), "threads left behind"
    assert after[2] == before[2], "file descriptors left open"


def _interrupted(start_method: str) -> Trace:
    """A KeyboardInterrupt delivered as a real SIGINT to this process while the loop runs."""
    with (
        pytest.raises(KeyboardInterrupt),
        trace_loader(
            SleepDataset(size=8, delay=0.01), batch_size=2, num_workers=2, start_method=start_method
        ) as loader,
    ):
        for batch in loader:
            del batch  # the loop's own variable would keep the batch's shared memory open
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10**7):  # the signal arrives between two bytecodes
                pass
    return loader.trace


ENDINGS: dict[str, Callable[[str], Trace]] = {
    "normal end": lambda m: run_experiment(
        SleepDataset(size=8, delay=0.01), batch_size=2, num_workers=2, start_method=m
    ),
    "break": lambda m: run_experiment(
        SleepDataset(size=8, delay=0.01), batch_size=2, num_workers=2, start_method=m, max_batches=1
    ),
    "exception in a worker": lambda m: run_experiment(
        FaultyDataset(size=8, fail_on=(5,)), batch_size=2, num_workers=2, start_method=m, raise_errors=False
    ),
    "worker killed": lambda m: run_experiment(
        FaultyDataset(size=8, kill_on=(5,)), batch_size=2, num_workers=2, start_method=m, raise_errors=False
    ),
    "timeout": lambda m: run_experiment(
        SleepDataset(size=8, delay=0.01, slow_items=(4,), slow_factor=100),
        batch_size=2,
        num_workers=2,
        start_method=m,
        timeout=0.3,
        raise_errors=False,
    ),
    "KeyboardInterrupt": _interrupted,
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_ending_leaves_nothing_behind(
    start_method: str, ending: str, nothing_left_behind: None
) -> None:
    trace = ENDINGS[ending](start_method)
    assert trace.leftover_processes == ()
    assert len(trace.of(Kind.WORKER_READY)) == 2, "both workers' start events are in the trace"
    assert trace.first(Kind.ITER_CLOSED) is not None
    if ending in ("normal end", "break"):
        assert trace.error is None
        assert len(trace.of(Kind.WORKER_EXITED)) == 2
    else:
        assert trace.error is not None
    # nothing lost: every batch the loop received had all its items' load events recorded
    built = {number: items for number, _, _, items in trace.batches()}
    for received in trace.of(Kind.BATCH_RECEIVED):
        assert sorted(built[received.index]) == [2 * received.index, 2 * received.index + 1]


def test_errors_say_what_happened(start_method: str) -> None:
    failed = ENDINGS["exception in a worker"](start_method)
    assert isinstance(failed.error, ValueError) and "item 5 is corrupt" in str(failed.error)
    assert [e.index for e in failed.of(Kind.ITEM_FAILED)] == [5]
    killed = ENDINGS["worker killed"](start_method)
    assert isinstance(killed.error, RuntimeError) and "exited unexpectedly" in str(killed.error)
    dead = [
        pid
        for pid in killed.worker_pids
        if not [e for e in killed.events if e.pid == pid and e.kind == Kind.WORKER_EXITED]
    ]
    assert len(dead) == 1 and str(dead[0]) in str(killed.error)
    # the killed worker had loaded item 4 of its batch before item 5 killed it: that event was kept
    assert [e.pid for e in killed.of(Kind.ITEM_LOADED) if e.index == 4] == dead
    timed_out = ENDINGS["timeout"](start_method)
    assert "timed out after 0.3 seconds" in str(timed_out.error)


def test_a_dataset_that_always_fails(start_method: str, nothing_left_behind: None) -> None:
    trace = run_experiment(
        FaultyDataset(size=6, fail_on=tuple(range(6))),
        batch_size=2,
        num_workers=2,
        start_method=start_method,
        raise_errors=False,
    )
    assert isinstance(trace.error, ValueError) and "is corrupt" in str(trace.error)
    assert trace.batches_received == 0 and trace.leftover_processes == ()


@pytest.mark.parametrize(
    "settings",
    [
        {"num_workers": -1},
        {"batch_size": 0},
        {"num_workers": 2, "start_method": "teleport"},
        {"num_workers": 0, "prefetch_factor": 2},
    ],
)
def test_hostile_settings_start_nothing(settings: dict) -> None:
    before = descendants()
    with pytest.raises(ValueError):
        run_experiment(SleepDataset(size=4, delay=0.0), **settings)
    assert descendants() == before


def test_twenty_rapid_slider_changes_accumulate_nothing(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import helpers.widgets

    running, most = 0, 0
    lock = threading.Lock()
    real = helpers.widgets.run_experiment

    def counted(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(helpers.widgets, "run_experiment", counted)
    panel = SwimlanePanel(
        SleepDataset(size=6, delay=0.0), num_workers=1, batch_size=2, start_method=start_method
    )

    def twenty_changes() -> None:
        for value in [2, 3, 1, 4, 2] * 4:
            panel.num_workers.value = value
        assert panel.wait(timeout=120)

    twenty_changes()  # warm-up: the first rounds start services and fill caches
    before, rss = _footprint(), psutil.Process().memory_info().rss
    twenty_changes()
    after = _footprint()
    assert most == 1, "two experiments ran at once"
    assert panel.trace.settings["num_workers"] == 2 and len(panel.trace.worker_pids) == 2
    assert after[0] == before[0] and after[2] == before[2]
    assert {t for t in after[1] - before[1] if not t.startswith("swimlane-panel")} == set()
    assert psutil.Process().memory_info().rss - rss < 64 * 2**20


SMALL_SHM = """
import sys
from helpers import SleepDataset, run_experiment

method = sys.argv[1]
# the notebooks' default experiments
for size, workers in ((8, 2), (12, 2), (16, 4)):
    trace = run_experiment(SleepDataset(size=size, delay=0.01), batch_size=2, num_workers=workers, start_method=method)
    assert trace.error is None and trace.leftover_processes == (), trace.summary()
print("defaults ok")
# a batch of 48 MiB, two in flight: more than 64 MiB
trace = run_experiment(SleepDataset(size=8, delay=0.0, shape=(3, 1024, 1024)), batch_size=4, num_workers=2,
                       start_method=method, raise_errors=False)
print("large batch:", type(trace.error).__name__, str(trace.error).strip().splitlines()[-1])
print("left behind:", trace.leftover_processes)
"""


@pytest.mark.skipif(
    not private_shm_available(),
    reason="a private 64 MB /dev/shm needs Linux, root and unshare (mount namespace)",
)
def test_a_64_mb_dev_shm(start_method: str) -> None:
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$0" "$@"',
            sys.executable,
            "-c",
            SMALL_SHM,
            start_method,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "defaults ok" in done.stdout
    assert "large batch: RuntimeError" in done.stdout and "No space left on device" in done.stdout
    assert "left behind: ()" in done.stdout


def test_check_settings_names_the_problem() -> None:
    with pytest.raises(ValueError, match="num_workers"):
        check_settings(SleepDataset(), num_workers=-1)


@pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork (fast runs)"
)
def test_no_index_feeder_thread_outlives_its_run() -> None:
    """PyTorch closes the index queues without joining their feeder threads; a run must wait for
    them. Before it did, 5 of 30 such runs here left a QueueFeederThread behind."""
    for _ in range(20):
        before = {t.ident for t in threading.enumerate()}
        run_experiment(
            FaultyDataset(size=6, fail_on=tuple(range(6))),
            batch_size=2,
            num_workers=2,
            start_method="fork",
            raise_errors=False,
        )
        assert [t.name for t in threading.enumerate() if t.ident not in before] == []
