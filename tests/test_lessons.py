"""The kernel-side helpers of notebooks 01-03 (helpers.lessons) and the scenarios their workers
import (helpers.scenarios)."""

import multiprocessing

import pytest
import torch
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from helpers import SleepDataset, lessons, run_experiment
from helpers.lessons import LoaderPanel, MemoryPanel, compare_after_start, mib, show_source, source_lines
from helpers.scenarios import RowsDataset, SlowCollate, TalkingDataset, pid_collate

FORK = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")


def test_mib_never_prints_minus_zero() -> None:
    assert mib(-0.2 * 2**20) == "0 MiB"
    assert mib(-3 * 2**20) == "-3 MiB"
    assert mib(1.25 * 2**20, 1) == "1.2 MiB"


def test_source_excerpt_is_one_contiguous_numbered_block(capsys: pytest.CaptureFixture[str]) -> None:
    path, first, lines = source_lines(
        _MultiProcessingDataLoaderIter.__init__, "for i in range(self._num_workers)", "w.start()"
    )
    assert path.endswith("dataloader.py") and "for i in range" in lines[0] and "w.start()" in lines[-1]
    show_source(_MultiProcessingDataLoaderIter.__init__, "for i in range(self._num_workers)", "w.start()")
    shown = capsys.readouterr().out.splitlines()
    numbers = [int(line.split("|")[0]) for line in shown if "|" in line]
    assert numbers == list(range(first, first + len(lines)))
    assert shown[0].startswith("torch/utils/data/dataloader.py, lines ")


def test_a_missing_pattern_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    show_source(_MultiProcessingDataLoaderIter._reset, "no such line anywhere")
    assert "not shown" in capsys.readouterr().out


def test_scenarios() -> None:
    rows = RowsDataset(size=20, delay=0.0, verbose=False)
    assert rows.nbytes == 8_000_000 and torch.equal(rows[13], torch.from_numpy(rows.data[3]))
    assert pid_collate([torch.tensor(1.0), torch.tensor(2.0)]).tolist() == [1.0, 2.0]
    assert repr(SlowCollate(20)) == "SlowCollate(ms=20)" and SlowCollate(0)([torch.zeros(2)]).shape == (1, 2)
    assert TalkingDataset(size=3, delay=0.0)[2].flatten()[0] == 2.0


@FORK
def test_loader_panel_keeps_its_first_chart_and_draws_changes_below() -> None:
    panel = LoaderPanel(
        SleepDataset(size=6, delay=0.0, shape=()),
        num_workers=1,
        batch_size=2,
        start_method="fork",
        collate_ms=5,
        in_order=True,
    )
    assert panel.first_figure is not None and panel.image.layout.display == "none"
    assert "1 worker lanes" in panel.status.value and "in workers" in panel.status.value
    panel.num_workers.value = 2
    assert panel.wait(60) and panel.trace is not None
    assert panel.trace.settings["num_workers"] == 2 and "2 worker lanes" in panel.status.value
    assert panel.image.value and panel.image.layout.display is None
    assert panel.trace.settings["collate_fn"] == "SlowCollate(ms=5)"
    panel.num_workers.value = 0
    assert panel.wait(60) and panel.trace is not None and panel.in_order is not None
    assert panel.in_order.disabled and panel.trace.start_method is None
    assert "collate ran 3× in the main process" in panel.status.value


def test_memory_panel_refuses_a_setting_that_would_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lessons, "memory_limit", lambda: 64 * 2**20)
    panel = MemoryPanel(num_workers=2, array_mib=64, start_method="spawn")
    assert panel.result is None and panel.first_figure is None
    assert "Not run" in panel.status.value and "memory limit" in panel.status.value


@FORK
def test_memory_panel_measures_every_process_beside_its_lane() -> None:
    panel = MemoryPanel(num_workers=2, array_mib=8, start_method="fork")
    report, server = panel.report, panel.result[1]
    assert report is not None and server is None and len(report.workers) == 2
    assert "2 worker lanes" in panel.status.value and "of the" in panel.status.value
    assert panel.first_figure is not None and len(panel.first_figure.axes) == 3


@FORK
def test_compare_after_start_draws_each_run_from_its_first_ready_worker() -> None:
    traces = {
        name: run_experiment(
            SleepDataset(size=4, delay=0.01), batch_size=2, num_workers=2, start_method="fork"
        )
        for name in ("a", "b")
    }
    figure = compare_after_start(traces)
    swimlanes = [ax for ax in figure.axes if ax.get_title(loc="left")]
    assert len(swimlanes) == 2
    for ax, trace in zip(swimlanes, traces.values(), strict=True):
        ready = min(e.start for e in trace.events if e.kind.name == "WORKER_READY")
        assert ax.get_xlim()[0] < ready < ax.get_xlim()[1]


@FORK
def test_plot_after_start_draws_from_the_first_ready_worker_and_runs_without_workers_whole() -> None:
    with_workers = run_experiment(
        SleepDataset(size=4, delay=0.01), batch_size=2, num_workers=2, start_method="fork"
    )
    window = lessons.work_window(with_workers)
    assert window is not None
    (ax,) = [ax for ax in lessons.plot_after_start(with_workers).axes if ax.get_title(loc="left")]
    assert ax.get_xlim()[0] <= window[0] and "first worker ready" in ax.get_title(loc="left")
    without = run_experiment(SleepDataset(size=4, delay=0.0), batch_size=2, num_workers=0)
    assert lessons.work_window(without) is None and lessons.plot_after_start(without).axes
