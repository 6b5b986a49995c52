"""The queue-based tracer kept for comparison delivers every event of a normal run, under every
start method, and leaves no thread behind, even when a worker is killed."""

import multiprocessing
import threading

import pytest

from helpers.datasets import FaultyDataset, SleepDataset
from helpers.queue_log import QueueTracedLoader


def _threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate()}


def test_every_event_arrives_through_the_queue(start_method: str) -> None:
    before = _threads()
    with QueueTracedLoader(
        SleepDataset(12, delay=0.0, shape=(2,)), batch_size=3, num_workers=2, start_method=start_method
    ) as loader:
        batches = list(loader)
    assert len(batches) == 4
    assert sorted(e.index for e in loader.events) == list(range(12))
    assert len({e.pid for e in loader.events}) == 2
    assert all(e.start <= e.end for e in loader.events)
    assert _threads() <= before


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="a quick kill needs fork")
def test_a_killed_worker_ends_the_run_without_hanging_or_leaving_a_thread() -> None:
    before = _threads()
    # PyTorch reports the death as RuntimeError, or fails to fetch a batch the dead worker sent
    # (EOFError, ConnectionResetError): which depends on timing.
    with (
        pytest.raises((RuntimeError, EOFError, OSError)),
        QueueTracedLoader(
            FaultyDataset(size=40, delay=0.0, kill_on=(30,), shape=(1,)),
            batch_size=10,
            num_workers=1,
            start_method="fork",
        ) as loader,
    ):
        list(loader)
    assert {e.index for e in loader.events} <= set(range(30))
    assert _threads() <= before
