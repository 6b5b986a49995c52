"""Nothing left behind and nothing lost, under every start method and every way a run can end.

Each case compares this process's child processes (recursively), threads and open file
descriptors before and after a run, after one warm-up run of the same start method (which may
start the long-lived fork server or resource tracker, kept on purpose and not counted).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from matplotlib import font_manager

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
from helpers.system import START_METHODS, private_shm_available, private_shm_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _open_files() -> Counter[str]:
    """What this process's file descriptors point to (``pipe:[…]``, ``socket:[…]``, a path):
    before and after a run, the difference names what the run left open. Where there is no
    ``/proc`` (macOS) only their number is known.

    matplotlib's font cache is emptied first (as matplotlib itself does in a forked child): it
    opens a font file the first time a chart drawn on a given thread needs that face, and a
    chart needs the bold face only where a bar is long enough to hold its batch number, so which
    fonts are open depends on timing, not on anything a run left behind."""
    font_manager._get_font.cache_clear()  # type: ignore[attr-defined]
    try:
        fds = os.listdir("/proc/self/fd")
    except FileNotFoundError:
        return Counter({"file descriptor": psutil.Process().num_fds()})
    found: Counter[str] = Counter()
    for fd in fds:
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            found[os.readlink(f"/proc/self/fd/{fd}")] += 1
    return found


@dataclass(frozen=True)
class Footprint:
    """This process's child processes (recursively), threads and open file descriptors."""

    processes: set[int]
    threads: set[str]
    files: Counter[str]

    @classmethod
    def now(cls) -> Footprint:
        return cls(descendants(), {f"{t.name}:{t.ident}" for t in threading.enumerate()}, _open_files())

    def assert_nothing_added(self, after: Footprint, *, threads_named: str | None = None) -> None:
        """Fail naming what ``after`` holds that this footprint did not (threads whose name starts
        with ``threads_named`` are allowed)."""
        assert after.processes - self.processes == set(), "processes left behind"
        threads = {
            t for t in after.threads - self.threads if not (threads_named and t.startswith(threads_named))
        }
        assert threads == set(), "threads left behind"
        assert after.files.total() == self.files.total(), (
            f"file descriptors left open: {after.files - self.files}"
        )


@pytest.fixture
def nothing_left_behind(start_method: str) -> Iterator[None]:
    run_experiment(SleepDataset(size=2, delay=0.0), num_workers=1, start_method=start_method)  # warm-up
    before = Footprint.now()
    yield
    before.assert_nothing_added(Footprint.now())


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


@pytest.mark.slow
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


@pytest.mark.slow
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
    before, rss = Footprint.now(), psutil.Process().memory_info().rss
    twenty_changes()
    after = Footprint.now()
    assert most == 1, "two experiments ran at once"
    assert panel.trace is not None
    assert panel.trace.settings["num_workers"] == 2 and len(panel.trace.worker_pids) == 2
    before.assert_nothing_added(after, threads_named="swimlane-panel")
    assert psutil.Process().memory_info().rss - rss < 64 * 2**20


def test_every_redraw_happens_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib keeps the fonts it opened per thread (its font cache is keyed on the thread's
    id, up to 64 entries of one to two open files each): a panel that draws on a new thread for
    each burst of slider changes opens the font files again whenever that thread gets an id not
    seen before, and so holds more open files the longer it is used."""
    import helpers.widgets

    drawn_on: list[threading.Thread] = []  # the threads themselves: their ids may be reused
    real = helpers.widgets.plot_swimlanes

    def recorded(*args: Any, **kwargs: Any) -> Any:
        drawn_on.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(helpers.widgets, "plot_swimlanes", recorded)
    panel = SwimlanePanel(SleepDataset(size=2, delay=0.0), num_workers=0, batch_size=2)
    for value in (1, 2, 1):  # three bursts, each waited for
        panel.batch_size.value = value
        assert panel.wait(timeout=60)
    redraws = drawn_on[1:]  # the first chart is drawn by the constructor, on the caller's thread
    assert len(redraws) == 3 and len(set(redraws)) == 1


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


@pytest.mark.slow
@pytest.mark.skipif(
    not private_shm_available(),
    reason="a private 64 MB /dev/shm needs Linux, root and unshare (mount namespace)",
)
def test_a_64_mb_dev_shm(start_method: str) -> None:
    done = subprocess.run(
        private_shm_command(64, sys.executable, "-c", SMALL_SHM, start_method),
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


@pytest.mark.skipif("fork" not in START_METHODS, reason="needs fork (fast runs)")
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
