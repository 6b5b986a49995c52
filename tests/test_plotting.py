"""What the swimlane chart shows, read back from the figure's artists: bars, markers, texts and
the legend. Exact layouts come from synthetic traces; what each start method does, from real runs."""

import itertools
import re

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from helpers import SleepDataset, plot_swimlanes, run_experiment
from helpers.events import FORK_SERVER_ID, Event, Kind, Trace, WaitEnd
from helpers.plotting import COLORS, MIN_COLLATE_PT, compare_swimlanes, lanes, legend_entries, legend_figure

MAIN = 100


def _event(kind: Kind, start: float, end: float | None = None, index: int = -1, worker: int = -1) -> Event:
    pid = MAIN if worker == -1 else (50 if worker == FORK_SERVER_ID else 200 + worker)
    return Event(pid, worker, kind, start, start if end is None else end, index)


def _run(
    *,
    workers: int = 3,
    batches: int = 6,
    item: float = 0.05,
    ready: float = 0.3,
    received: int | None = None,
    hand_outs: list[float] | None = None,
    method: str = "spawn",
    extra: tuple[Event, ...] = (),
) -> Trace:
    """A run with batches of 2 items: workers created at once inside ``iter()``, ready at
    ``ready``; batch ``b`` handed out at ``hand_outs[b]`` to worker ``b % workers``, built after
    its items and received in order; the first ``received`` batches only (all: then a ``next()``
    ends the data)."""
    events = [_event(Kind.LOADER_CREATED, -0.002, -0.0019), _event(Kind.ITER_CALLED, 0.0, 0.02), *extra]
    clock = {}
    for w in range(workers):
        events += [
            _event(Kind.PROCESS_CREATED, 0.001 + 0.003 * w, 0.003 + 0.003 * w, worker=w),
            _event(Kind.PROCESS_RUNNING, ready / 3, worker=w),
            _event(Kind.WORKER_READY, ready + 0.01 * w, index=w, worker=w),
        ]
        clock[w] = ready + 0.01 * w
    built = []
    hand_outs = hand_outs or [0.004 + 0.0004 * b for b in range(batches)]
    for b, handed in enumerate(hand_outs):
        events.append(_event(Kind.BATCH_REQUESTED, handed, index=b))
        w = b % workers
        for i in (2 * b, 2 * b + 1):
            events.append(_event(Kind.ITEM_LOADED, clock[w], clock[w] + item, index=i, worker=w))
            clock[w] += item
        events.append(_event(Kind.COLLATED, clock[w], clock[w] + 1e-6, index=b, worker=w))
        built.append(clock[w] + 1e-6)
    t = 0.02
    for b in range(batches if received is None else received):
        events.append(_event(Kind.BATCH_RECEIVED, t, max(t, built[b]) + 0.0002, index=b))
        t = events[-1].end
    if received is None:
        events.append(_event(Kind.WAIT_ENDED, t, t + 0.4, index=WaitEnd.END_OF_DATA))
        t += 0.4
    events.append(_event(Kind.ITER_CLOSED, t, t + 0.01))
    events += [_event(Kind.WORKER_EXITED, max(t, clock[w]) + 0.005, worker=w) for w in range(workers)]
    return Trace(
        events=tuple(sorted(events, key=lambda e: e.start)),
        main_pid=MAIN,
        start_method=method,
        settings={"num_workers": workers, "batch_size": 2},
    )


def _drawn(fig: Figure) -> Axes:
    """The chart's axes, after drawing the figure (text extents are known only then)."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.axes[0]


def _bars(ax: Axes, look: str) -> list[Bbox]:
    """Display extents of the bars drawn in ``look``."""
    return [
        p.get_extents(c.get_transform()) for c in ax.collections if c.get_gid() == look for p in c.get_paths()
    ]


def _points(ax: Axes, look: str) -> list[tuple[float, float]]:
    """Data positions of the markers drawn in ``look``."""
    lines = [line for line in ax.get_lines() if line.get_gid() == look]
    return [(float(x), float(y)) for line in lines for x, y in np.asarray(line.get_xydata()).tolist()]


def _texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _collated(ax: Axes) -> set[int]:
    """The batch numbers named on the worker lanes (below the main lane)."""
    return set().union(*(_numbers(t.get_text()) for t in ax.texts if t.get_position()[1] < -0.5))


def _numbers(text: str) -> set[int]:
    """The batch numbers a label names: "b3", "b0–3", "b0, b4", "b0, b4, …, b20", "b5 unused"."""
    series = re.fullmatch(r"b(\d+), b(\d+), …, b(\d+)(?: unused)?", text)
    if series:
        first, second, last = map(int, series.groups())
        return set(range(first, last + 1, second - first))
    found: set[int] = set()
    for first, last in re.findall(r"b(\d+)(?:–(\d+))?", text):
        found |= set(range(int(first), int(last or first) + 1))
    return found


def _x(ax: Axes, t: float) -> float:
    """Display x of time ``t``."""
    return ax.transData.transform((t, 0))[0]


def test_chart_has_a_lane_per_process_a_legend_and_time_since_iter() -> None:
    trace = run_experiment(SleepDataset(8, delay=0.01), batch_size=2, num_workers=3, start_method="fork")
    fig = plot_swimlanes(trace)
    ax = _drawn(fig)
    labels = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]
    assert (
        labels == ["main", "worker 0", "worker 1", "worker 2"] == [l.split("\n")[0] for _, l in lanes(trace)]
    )
    assert ax.get_xlabel() == "seconds since iter()"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == legend_entries(trace)
    assert {"process created", "starting: fork, worker set-up", "ready: worker_init_fn ran", "exit"} <= set(
        legend
    )
    assert ax.get_xlim()[0] < 0 < ax.get_xlim()[1]
    assert COLORS["item"].lower() == "#0072b2"


def test_every_collate_has_a_visible_bar_and_a_label_with_its_number() -> None:
    # 1 µs collates on a 1.5 s axis, 4 of 6 batches received: b4 and b5 were built for nothing.
    trace = _run(workers=3, batches=6, item=0.1, received=4)
    fig = plot_swimlanes(trace)
    ax = _drawn(fig)
    bars = _bars(ax, "collate") + _bars(ax, "unused")
    assert len(bars) == 6
    assert all(bar.width >= MIN_COLLATE_PT * fig.dpi / 72 - 0.01 for bar in bars)
    for collate in trace.of(Kind.COLLATED):
        assert any(abs(bar.x0 - _x(ax, collate.start)) < 0.5 for bar in bars)
    named = {n: text for text in _texts(ax) if text.startswith("b") for n in _numbers(text)}
    assert trace.wasted_batches == [4, 5]
    assert all(named[n].endswith(" unused") == (n in (4, 5)) for n in range(6))


def test_collates_too_close_for_a_label_each_share_one() -> None:
    # Items of 10 µs: each worker builds its two batches within a few µs.
    trace = _run(workers=2, batches=4, item=1e-5, ready=2.0)
    ax = _drawn(plot_swimlanes(trace))
    collate_labels = [text for text in _texts(ax) if text.startswith("b") and ", " in text]
    assert sorted(collate_labels) == ["b0, b2", "b1, b3"]


def test_simultaneous_hand_outs_show_their_count() -> None:
    # Five batches handed out within 2 ms, a sixth 0.2 s later.
    trace = _run(batches=6, hand_outs=[0.010, 0.0105, 0.011, 0.0115, 0.012, 0.2])
    ax = _drawn(plot_swimlanes(trace))
    assert len(_points(ax, "request")) == 6
    counts = [text for text in _texts(ax) if text.startswith("×")]
    assert counts == ["×5"]


def test_a_timed_out_wait_is_drawn_with_its_label() -> None:
    slow = SleepDataset(8, delay=0.01, slow_items=(4,), slow_factor=100)
    trace = run_experiment(
        slow, batch_size=2, num_workers=2, timeout=0.3, raise_errors=False, start_method="fork"
    )
    ax = _drawn(plot_swimlanes(trace))
    ((wait, how),) = trace.waits_ended()
    assert how == WaitEnd.TIMEOUT
    (bar,) = _bars(ax, "no batch: timeout")
    assert abs(bar.x0 - _x(ax, wait.start)) < 0.5 and abs(bar.x1 - _x(ax, wait.end)) < 0.5
    assert "timed out" in _texts(ax)
    assert "next() got no batch: timed out" in legend_entries(trace)
    unused = set().union(*(_numbers(text) for text in _texts(ax) if text.endswith(" unused")))
    assert unused == set(trace.wasted_batches) != set()


def test_each_worker_lane_shows_its_process_created_inside_iter_and_starting_until_ready(
    start_method: str,
) -> None:
    trace = run_experiment(SleepDataset(4, delay=0.0), batch_size=2, num_workers=2, start_method=start_method)
    ax = _drawn(plot_swimlanes(trace))
    (iter_called,) = trace.of(Kind.ITER_CALLED)
    created, starting = _points(ax, "created"), _bars(ax, "starting")
    rows = {pid: -row for row, (pid, _) in enumerate(lanes(trace))}
    for pid in trace.worker_pids:
        born = next(e for e in trace.of(Kind.PROCESS_CREATED) if e.pid == pid).start
        ready = next(e for e in trace.of(Kind.WORKER_READY) if e.pid == pid).start
        assert iter_called.start <= born <= iter_called.end
        assert any(x == born and abs(y - rows[pid]) <= 0.3 for x, y in created)
        assert any(abs(b.x0 - _x(ax, born)) < 0.5 and abs(b.x1 - _x(ax, ready)) < 0.5 for b in starting)
        assert (ready, rows[pid]) in _points(ax, "ready")
    labels = [label for _, label in lanes(trace)]
    children = [label for label in labels if label.endswith("child of fork server")]
    assert len(children) == (2 if start_method == "forkserver" else 0)
    assert any(label.startswith("fork server") for label in labels) == (start_method == "forkserver")


def test_a_worker_that_never_exited_normally_gets_a_red_cross_at_its_last_event() -> None:
    trace = _run(workers=2, batches=2)
    survivor = [e for e in trace.events if not (e.kind == Kind.WORKER_EXITED and e.worker_id == 1)]
    killed = Trace(
        tuple(survivor), main_pid=MAIN, start_method="spawn", error=RuntimeError("worker 1 was killed")
    )
    ax = _drawn(plot_swimlanes(killed))
    last = max(e.end for e in survivor if e.worker_id == 1)
    assert _points(ax, "died") == [(last, -2.0)] and len(_points(ax, "exit")) == 1
    assert "ended without a normal exit" in legend_entries(killed)


def test_a_fork_server_started_long_before_iter_is_a_note_not_a_stretched_axis() -> None:
    long_ago = _event(Kind.FORK_SERVER, -312.0, worker=FORK_SERVER_ID)
    trace = _run(workers=2, batches=2, method="forkserver", extra=(long_ago,))
    ax = _drawn(plot_swimlanes(trace))
    assert [label.split("\n")[0] for _, label in lanes(trace)] == [
        "main",
        "fork server",
        "worker 0",
        "worker 1",
    ]
    assert ax.get_xlim()[0] > -0.1
    assert "◀ fork server started 312 s before iter()" in _texts(ax)


def test_a_fork_server_started_by_this_run_is_drawn_starting() -> None:
    started = _event(Kind.FORK_SERVER, 0.001, 0.05, worker=FORK_SERVER_ID)
    trace = _run(workers=2, batches=2, method="forkserver", extra=(started,))
    ax = _drawn(plot_swimlanes(trace))
    assert (0.001, -1.0) in _points(ax, "created")
    assert any(
        abs(b.x0 - _x(ax, 0.001)) < 0.5 and abs(b.x1 - _x(ax, 0.05)) < 0.5 for b in _bars(ax, "starting")
    )
    assert "fork server starting" in _texts(ax)


@pytest.mark.parametrize(
    "trace",
    [
        _run(workers=5, batches=8, item=1e-4, ready=0.05, method="fork"),  # everything within ms
        _run(workers=3, batches=6, item=1e-5, ready=2.0),  # work invisible next to start-up
        _run(workers=4, batches=40, item=0.002, received=30),  # many batches, some wasted
        _run(workers=2, batches=4, item=0.1),  # items wide enough to be numbered
    ],
    ids=["fast", "slow start", "many", "roomy"],
)
def test_no_label_covers_another_or_a_bar_it_does_not_label(trace: Trace) -> None:
    ax = _drawn(plot_swimlanes(trace))
    assert _collated(ax) == {e.index for e in trace.of(Kind.COLLATED)}  # every batch, at every scale
    texts = [(t.get_text(), t.get_window_extent()) for t in ax.texts]
    overlapping = [
        (a, b) for (a, box_a), (b, box_b) in itertools.combinations(texts, 2) if box_a.overlaps(box_b)
    ]
    assert overlapping == []
    bars = [p.get_extents(c.get_transform()) for c in ax.collections for p in c.get_paths()]
    covering = [
        text
        for text, box in texts
        for bar in bars
        if box.overlaps(bar)
        and not (bar.x0 <= box.x0 and box.x1 <= bar.x1 and bar.y0 <= box.y0 and box.y1 <= bar.y1)
    ]
    assert covering == []


def test_in_a_cramped_axes_every_batch_and_wait_is_still_named() -> None:
    # Where no spot is free, a label that must be there goes where it covers least.
    trace = _run(workers=4, batches=12, item=0.01)
    fig = Figure(figsize=(2, 1.5))
    ax = _drawn(plot_swimlanes(trace, ax=fig.add_subplot(), legend=False))
    assert _collated(ax) == set(range(12)) and "end of data + shutdown" in _texts(ax)


def test_legend_lists_exactly_the_kinds_of_mark_drawn() -> None:
    trace = _run(workers=2, batches=4, received=3)
    ax = _drawn(plot_swimlanes(trace))
    drawn = {artist.get_gid() for artist in [*ax.collections, *ax.get_lines()]} - {None}
    entries = legend_entries(trace)
    assert len(entries) == len(drawn)
    assert "built, never received (unused)" in entries and "item failed" not in entries
    assert "starting: interpreter, imports, unpickling" in entries
    assert len(legend_figure(trace).legends[0].get_texts()) == len(entries)
    assert len(legend_figure().legends[0].get_texts()) > len(entries)


def test_compared_traces_share_one_time_axis_and_one_legend() -> None:
    slow, quick = _run(workers=3, batches=3), _run(workers=2, batches=2, method="fork", ready=0.01)
    fig = compare_swimlanes({"spawn": slow, "fork": quick})
    top, bottom = fig.axes
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["spawn", "fork"]
    last = max(e.end for e in slow.events)
    assert top.get_xlim() == bottom.get_xlim() and top.get_xlim()[1] > last
    assert len(top.get_yticks()) == 4 and len(bottom.get_yticks()) == 3
    assert len(fig.legends) == 1
