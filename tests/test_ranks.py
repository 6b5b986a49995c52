"""Ranks load disjoint shares with workers of their own, and their traces merge onto one clock."""

import random
import tempfile
from collections import Counter
from collections.abc import Iterator

import pytest
import torch.multiprocessing

from helpers import Event, Kind, SleepDataset, Trace
from helpers.ranks import (
    RankJob,
    RankRun,
    RankShare,
    barrier_offsets,
    merge_traces,
    offsets_from_barriers,
    plot_ranks,
    rank_main,
    with_dataset_indices,
)


def simulated_ranks(
    clock_ahead: list[float], seed: int = 0
) -> tuple[list[tuple[int, int]], list[Trace], list[list[float]], list[list[float]]]:
    """Events of ranks on one true timeline, seen through clocks that are ``clock_ahead[r]``
    seconds ahead, with barrier times taken on those same clocks.

    Returns the true order of ``(rank, event index)``, each rank's trace on its own clock, and
    each rank's barrier exits and durations (the first barrier waits for a late rank)."""
    rng = random.Random(seed)
    ranks = len(clock_ahead)
    true_times = sorted(rng.uniform(0.0, 2.0) for _ in range(40))
    true_times = [t + 0.01 * i for i, t in enumerate(true_times)]  # at least 10 ms apart
    owner = [rng.randrange(ranks) for _ in true_times]
    true_order = [(r, i) for i, r in enumerate(owner)]
    traces = []
    for rank, ahead in enumerate(clock_ahead):
        events = tuple(
            Event(
                pid=1000 + rank, worker_id=-1, kind=Kind.ITEM_LOADED, start=t + ahead, end=t + ahead, index=i
            )
            for i, (t, r) in enumerate(zip(true_times, owner, strict=True))
            if r == rank
        )
        traces.append(Trace(events=events, main_pid=1000 + rank, start_method="fork"))
    # Barrier k is released at true time E_k, once the last rank has entered. Each rank entered
    # some time before and leaves within its duration: 0 <= leave - E_k <= duration.
    exits: list[list[float]] = [[] for _ in clock_ahead]
    durations: list[list[float]] = [[] for _ in clock_ahead]
    for k in range(8):
        released = -1.0 + 0.01 * k
        for rank, ahead in enumerate(clock_ahead):
            duration = rng.uniform(0.2, 0.5) if k == 0 else rng.uniform(0.0002, 0.001)
            exits[rank].append(released + rng.uniform(0, duration) + ahead)
            durations[rank].append(duration)
    return true_order, traces, exits, durations


@pytest.mark.parametrize("clock_ahead", [[0.0, 2.5], [0.0, -3.7, 0.42], [1.0, 1.0]])
def test_merging_with_barrier_offsets_restores_the_true_order(clock_ahead: list[float]) -> None:
    true_order, traces, exits, durations = simulated_ranks(clock_ahead)
    offsets, repetition, bound = offsets_from_barriers(exits, durations)
    assert repetition != 0  # the first barrier, waiting for a late rank, is the loosest
    assert bound <= 0.001
    for measured, ahead in zip(offsets, clock_ahead, strict=True):
        assert abs(measured - (ahead - clock_ahead[0])) <= bound
    merged = merge_traces(traces, offsets)
    assert [(r, e.index) for e, r in zip(merged.events, merged.ranks, strict=True)] == true_order
    assert [e.start for e in merged.events] == sorted(e.start for e in merged.events)


def test_without_offsets_clocks_that_disagree_scramble_the_order() -> None:
    true_order, traces, _, _ = simulated_ranks([0.0, 2.5])
    merged = merge_traces(traces, [0.0, 0.0])
    assert [(r, e.index) for e, r in zip(merged.events, merged.ranks, strict=True)] != true_order


def test_a_merged_trace_keeps_each_ranks_events_apart() -> None:
    _, traces, exits, durations = simulated_ranks([0.0, 2.5])
    offsets, _, _ = offsets_from_barriers(exits, durations)
    merged = merge_traces(traces, offsets)
    assert merged.world_size == 2 and merged.offsets == offsets
    for rank, trace in enumerate(traces):
        mine = merged.rank(rank)
        assert mine.main_pid == trace.main_pid
        assert [e.index for e in mine.events] == [e.index for e in trace.events]
        assert [e.start for e in mine.events] == pytest.approx(
            [e.start - offsets[rank] for e in trace.events]
        )
    with pytest.raises(ValueError, match="one offset per trace"):
        merge_traces(traces, [0.0])
    with pytest.raises(ValueError, match="same number"):
        offsets_from_barriers([[0.0, 1.0], [0.0]], [[0.1, 0.1], [0.1]])


def test_share_loads_the_samplers_items_and_the_trace_names_them() -> None:
    share = RankShare(SleepDataset(size=6, delay=0.0, shape=(1,)), [5, 0, 3])
    assert len(share) == 3 and [int(share[i]) for i in range(3)] == [5, 0, 3]
    trace = Trace(
        events=tuple(Event(1, 0, Kind.ITEM_LOADED, 0.0, 0.1, position) for position in range(3)),
        main_pid=1,
        start_method="fork",
    )
    assert [e.index for e in with_dataset_indices(trace, share.indices).events] == [5, 0, 3]


@pytest.fixture(scope="module")
def ranks_run(request: pytest.FixtureRequest) -> Iterator[list[RankRun]]:
    method = request.param
    with tempfile.TemporaryDirectory() as folder:
        job = RankJob(SleepDataset(size=11, delay=0.01, shape=(1,)), folder, start_method=method)
        torch.multiprocessing.start_processes(
            rank_main, args=(job,), nprocs=job.world_size, start_method=method
        )
        yield job.results()


METHODS = [m for m in ("fork", "spawn", "forkserver") if m in torch.multiprocessing.get_all_start_methods()]


@pytest.mark.parametrize("ranks_run", METHODS, indirect=True)
def test_two_ranks_each_start_their_own_workers_and_split_the_dataset(ranks_run: list[RankRun]) -> None:
    runs = ranks_run
    assert [r.rank for r in runs] == [0, 1]
    workers = [pid for r in runs for pid in r.worker_pids()]
    assert len(workers) == len(set(workers)) == 2 * 2  # world size x num_workers processes
    for r in runs:
        trace = r.traces[0]
        assert trace.error is None and trace.leftover_processes == ()
        assert trace.main_pid == r.pid
        assert list(r.received[0]) == list(r.indices[0])  # the batches hold what the sampler chose
        assert sorted(e.index for e in trace.of(Kind.ITEM_LOADED)) == sorted(r.indices[0])
    shares = [r.indices[0] for r in runs]
    assert len(shares[0]) == len(shares[1]) == 6  # 11 items padded to 12
    assert set(shares[0]) | set(shares[1]) == set(range(11))
    repeated = [i for i, n in Counter(shares[0] + shares[1]).items() if n > 1]
    assert len(repeated) == 1 and shares[1][-1] == repeated[0]  # the padding: one item read twice
    assert runs[0].indices[0] != runs[0].indices[1]  # set_epoch: a new shuffle
    assert len(set(runs[0].without_set_epoch)) == 1  # without it: the same one every epoch
    assert runs[0].without_set_epoch[0] == runs[0].indices[0]


@pytest.mark.parametrize("ranks_run", METHODS[:1], indirect=True)
def test_barrier_offsets_on_one_machine_are_within_their_bound(ranks_run: list[RankRun]) -> None:
    alignment = barrier_offsets(ranks_run)
    assert alignment.true_offsets is not None and alignment.errors_s is not None
    assert alignment.exit_spread_s is not None
    # A rank cannot leave a barrier before the last one entered it: the offsets' error is the
    # exit skew, which cannot exceed the barrier's longest duration.
    assert all(abs(e) <= alignment.exit_spread_s + 1e-9 for e in alignment.errors_s)
    assert alignment.exit_spread_s <= alignment.bound_s


@pytest.mark.parametrize("ranks_run", METHODS[:1], indirect=True)
def test_plot_ranks_draws_each_rank_with_its_own_worker_lanes(ranks_run: list[RankRun]) -> None:
    alignment = barrier_offsets(ranks_run)
    merged = merge_traces([r.traces[0] for r in ranks_run], alignment.offsets, aligned_at=-0.01)
    fig = plot_ranks(merged)
    panels = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("rank")]
    assert len(panels) == 2
    for rank, ax in enumerate(panels):
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels[0].startswith("main") and sum(label.startswith("worker") for label in labels) == 2
        assert str(ranks_run[rank].pid) in labels[0]
