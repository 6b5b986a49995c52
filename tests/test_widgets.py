"""Moving a control re-runs a real experiment and redraws the chart for the new setting."""

from typing import Any

from helpers import SleepDataset, SwimlanePanel
from helpers.events import FORK_SERVER_ID, Event, Kind, Trace
from helpers.plotting import lanes, legend_entries
from helpers.widgets import status_line


def _lane_labels(panel: SwimlanePanel) -> list[str]:
    assert panel.figure is not None, "a chart is on show"
    return [t.get_text() for t in panel.figure.axes[0].get_yticklabels()]


def shown(panel: SwimlanePanel) -> Trace:
    """The trace of the chart on show (there is one)."""
    assert panel.trace is not None, "a chart is on show"
    return panel.trace


def test_slider_change_redraws_for_the_new_setting() -> None:
    panel = SwimlanePanel(SleepDataset(8, delay=0.005), num_workers=1, batch_size=2, start_method="fork")
    first_image = panel.image.value
    assert len(lanes(shown(panel))) == 2 and panel.charts_drawn == 1

    panel.num_workers.value = 3
    assert panel.wait(timeout=60)
    assert shown(panel).settings["num_workers"] == 3
    assert len(lanes(shown(panel))) == 4
    assert [label.split("\n")[0] for label in _lane_labels(panel)] == [
        "main",
        "worker 0",
        "worker 1",
        "worker 2",
    ]
    assert panel.image.value != first_image and panel.charts_drawn == 2

    panel.batch_size.value = 4
    assert panel.wait(timeout=60)
    assert shown(panel).settings["batch_size"] == 4 and shown(panel).batches_received == 2


def test_status_describes_the_chart_whenever_the_chart_changes() -> None:
    panel = SwimlanePanel(
        SleepDataset(12, delay=0.005), num_workers=1, batch_size=2, start_method="fork", max_batches=2
    )
    status_when_drawn: list[str] = []

    def chart_changed(_change: Any) -> None:
        status_when_drawn.append(panel.status.value)

    panel.image.observe(chart_changed, names="value")
    panel.num_workers.value = 3
    assert panel.wait(timeout=60) and shown(panel) is not None
    trace = shown(panel)
    assert len(status_when_drawn) == 1
    assert status_when_drawn[0].startswith(
        f"3 worker lanes · 2 batches received · {trace.handed_out_before_first_batch} handed out before "
        f"the first was received · {len(trace.wasted_batches)} built but never received · "
    )
    assert trace.handed_out_before_first_batch == 6  # 3 workers × prefetch_factor 2


def test_status_counts_worker_lanes_not_the_fork_server() -> None:
    events = (
        Event(100, -1, Kind.ITER_CALLED, 0.0, 0.01, -1),
        Event(50, FORK_SERVER_ID, Kind.FORK_SERVER, -30.0, -30.0, -1),
        Event(200, 0, Kind.WORKER_READY, 0.5, 0.5, 0),
        Event(201, 1, Kind.WORKER_READY, 0.5, 0.5, 1),
    )
    trace = Trace(events=events, main_pid=100, start_method="forkserver")
    assert len(lanes(trace)) == 4 and status_line(trace).startswith("2 worker lanes · 0 batches received")


def test_legend_names_the_marks_of_the_chart_on_show() -> None:
    panel = SwimlanePanel(SleepDataset(4, delay=0.0), num_workers=0, batch_size=2)
    without_workers = panel.legend.value
    assert shown(panel) is not None and "process created" not in legend_entries(shown(panel))
    panel.num_workers.value = 1
    panel.start_method.value = "fork"
    assert panel.wait(timeout=60) and shown(panel) is not None
    assert "process created" in legend_entries(shown(panel)) and panel.legend.value != without_workers


def test_rapid_changes_draw_only_the_last_setting() -> None:
    panel = SwimlanePanel(SleepDataset(6, delay=0.0), num_workers=1, batch_size=2, start_method="fork")
    with panel._runs.changed:  # hold the panel's lock so all twenty changes arrive before any runs
        for value in list(range(1, 9)) * 2 + [1, 2, 3, 2]:
            panel.num_workers.value = value
    assert panel.wait(timeout=60)
    assert shown(panel).settings["num_workers"] == 2
    assert panel.experiments_run == 2 and panel.charts_drawn == 2
    assert shown(panel).leftover_processes == ()


def test_a_failing_setting_leaves_the_panel_usable() -> None:
    panel = SwimlanePanel(
        SleepDataset(4, delay=0.0), num_workers=1, batch_size=2, start_method="fork", max_batches=0
    )
    assert "Could not run" in panel.status.value and "max_batches" in panel.status.value
    panel.fixed["max_batches"] = 1
    panel.num_workers.value = 2
    assert panel.wait(timeout=60)
    assert shown(panel).batches_received == 1


def test_no_start_method_without_workers() -> None:
    panel = SwimlanePanel(SleepDataset(4, delay=0.0), num_workers=0, batch_size=2)
    assert shown(panel).start_method is None and panel.prefetch_factor.disabled


def test_slider_offers_only_the_workers_that_fit(monkeypatch) -> None:
    import helpers.system

    monkeypatch.setattr(helpers.system, "memory_limit", lambda: 2 * 2**30)  # Binder
    assert helpers.system.workers_that_fit() == 7
    monkeypatch.setattr(helpers.system, "memory_limit", lambda: 1 * 2**30)
    assert helpers.system.workers_that_fit() == 2
    import helpers.widgets

    monkeypatch.setattr(helpers.widgets, "workers_that_fit", lambda: 3)
    panel = SwimlanePanel(SleepDataset(4, delay=0.0), num_workers=4, batch_size=2, start_method="fork")
    assert panel.num_workers.max == 3 and shown(panel).settings["num_workers"] == 3
