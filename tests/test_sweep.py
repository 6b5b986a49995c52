"""The num_workers sweep measures what it says, and its recommendation follows the measurement."""

import time

import numpy as np
import pytest

from helpers import Kind, SleepDataset
from helpers.sweep import Point, Sweep, measure, plot_sweeps, recommend, sweep, usable_cpus
from helpers.workloads import CpuDataset, MixedDataset, burn_cpu


def made(throughput: dict[int, float], cpus: float | None = 2) -> Sweep:
    """A sweep with these items per second (100 items each), built by hand."""
    return Sweep(tuple(Point(n, 100, 100 / rate) for n, rate in throughput.items()), cpus=cpus)


@pytest.mark.parametrize(
    ("throughput", "expected", "says"),
    [
        # waits (I/O): every worker helps, past the CPU count
        ({0: 50, 1: 50, 2: 100, 4: 200}, 4, ["still rising", "more workers than the 2 CPUs"]),
        # computes: flat from the CPU count on
        (
            {0: 50, 1: 49, 2: 98, 4: 97},
            2,
            ["Fastest measured: num_workers=2", "num_workers=1 reaches only 50%"],
        ),
        # the best is 4, but 2 is within 5% of it: fewer processes win
        ({0: 50, 1: 50, 2: 100, 4: 103}, 2, ["num_workers=2 reaches 100 items/s (97% of that)", "2 fewer"]),
        # just outside the tolerance: the faster setting is worth it
        ({0: 50, 1: 50, 2: 100, 4: 110}, 4, ["num_workers=2 reaches only 91%"]),
        # workers do not pay off at all
        ({0: 100, 1: 98, 2: 97}, 0, ["num_workers=0 loads in the main process"]),
    ],
)
def test_recommends_the_fewest_workers_within_tolerance_of_the_best(
    throughput: dict[int, float], expected: int, says: list[str]
) -> None:
    advice = recommend(made(throughput))
    assert advice.num_workers == expected
    assert advice.items_per_s == pytest.approx(throughput[expected])
    assert advice.best.items_per_s == pytest.approx(max(throughput.values()))
    for words in says:
        assert words in advice.reason
    assert str(advice) == advice.reason


def test_a_wider_tolerance_accepts_fewer_workers() -> None:
    measured = made({0: 50, 1: 50, 2: 100, 4: 110})
    assert recommend(measured, tolerance=0.05).num_workers == 4
    assert recommend(measured, tolerance=0.10).num_workers == 2


def test_more_workers_than_cpus_is_only_called_out_when_chosen() -> None:
    assert "more workers than" not in recommend(made({0: 50, 1: 49, 2: 98, 4: 97})).reason
    assert "more workers than" not in recommend(made({0: 50, 1: 50, 2: 100, 4: 200}, cpus=None)).reason
    assert "more workers than the 4 CPUs" not in recommend(made({0: 50, 2: 100, 4: 200}, cpus=4)).reason


def test_a_sweep_is_sorted_and_refuses_nonsense() -> None:
    s = made({4: 200, 0: 50, 2: 100})
    assert [p.num_workers for p in s.points] == [0, 2, 4]
    assert s.throughput == pytest.approx({0: 50, 2: 100, 4: 200})
    assert s.speedup(4) == pytest.approx(4.0)
    assert "num_workers" in s.table()
    with pytest.raises(ValueError, match="at least one"):
        Sweep(())
    with pytest.raises(ValueError, match="once"):
        Sweep((Point(1, 10, 1.0), Point(1, 10, 2.0)))
    with pytest.raises(ValueError, match="tolerance"):
        recommend(s, tolerance=1.5)
    with pytest.raises(KeyError):
        s.point(3)


def test_a_real_sweep_times_one_full_warm_epoch_per_setting(start_method: str) -> None:
    dataset = SleepDataset(size=8, delay=0.001)
    measured = sweep(dataset, num_workers=(0, 2), batch_size=2, start_method=start_method)
    assert [p.num_workers for p in measured.points] == [0, 2]
    assert measured.start_method == start_method
    assert measured.cpus == usable_cpus()
    for point in measured.points:
        trace = point.trace
        assert trace is not None and trace.error is None
        assert len(trace.worker_pids) == point.num_workers
        timed = trace.of(Kind.ITER_CALLED)[1]  # the second iter(): the timed epoch
        received = [e for e in trace.of(Kind.BATCH_RECEIVED) if e.start >= timed.start]
        assert [e.index for e in received] == [0, 1, 2, 3]  # every batch of the epoch
        assert sorted(e.index for e in trace.of(Kind.ITEM_LOADED)[-8:]) == list(range(8))
        assert point.items == 8 and point.first_batch_s > 0
        assert 0 < point.seconds <= received[-1].end - timed.start  # inside the timed epoch
        assert point.items_per_s == pytest.approx(8 / point.seconds)
    assert recommend(measured).num_workers in (0, 2)


def test_warm_up_starts_every_worker_before_the_timed_epoch() -> None:
    point = measure(SleepDataset(size=8, delay=0.001), 2, batch_size=1)
    trace = point.trace
    assert trace is not None
    timed = trace.of(Kind.ITER_CALLED)[1]
    ready = trace.of(Kind.WORKER_READY)
    assert len(ready) == 2 and all(e.start < timed.start for e in ready)
    assert not [e for e in ready if e.start > timed.start]  # persistent: none started again


def test_cpu_dataset_burns_the_cpu_time_it_promises() -> None:
    before = time.thread_time()
    burn_cpu(0.05)
    assert time.thread_time() - before >= 0.05
    item = CpuDataset(size=4, cpu_seconds=0.0)[3]
    assert item.shape == (3, 32, 32) and float(item.max()) == 3.0
    with pytest.raises(IndexError):
        CpuDataset(size=4)[4]
    with pytest.raises(ValueError):
        CpuDataset(cpu_seconds=-1)
    before = time.thread_time()
    item = MixedDataset(size=4, wait_seconds=0.001, cpu_seconds=0.02)[2]
    assert time.thread_time() - before >= 0.02 and float(item.max()) == 2.0


def test_chart_draws_a_line_per_dataset_the_cpu_count_and_the_choices() -> None:
    sweeps = {"waits": made({0: 50, 1: 50, 2: 100, 4: 200}), "computes": made({0: 50, 1: 49, 2: 98, 4: 97})}
    advice = {label: recommend(s) for label, s in sweeps.items()}
    fig = plot_sweeps(sweeps, advice, cpus=2)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "waits",
        "recommended for waits: 4",
        "computes",
        "recommended for computes: 2",
    ]
    assert np.asarray(lines["waits"].get_ydata()).tolist() == pytest.approx([50, 50, 100, 200])
    assert np.asarray(lines["computes"].get_xdata()).tolist() == [0, 1, 2, 4]
    assert np.asarray(lines["recommended for computes: 2"].get_xdata()).tolist() == [2]
    assert any(np.asarray(line.get_xdata()).tolist() == [2, 2] for line in ax.get_lines())  # the CPU line
    assert any("2 CPUs usable" in t.get_text() for t in ax.texts)
