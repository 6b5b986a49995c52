"""Bad settings give a clear ValueError before any process starts, and leave nothing behind."""

import pytest
from workloads import UnpicklableDataset

from helpers import SleepDataset, descendants, run_experiment

BAD = [
    ({"num_workers": -1}, "num_workers must be a whole number >= 0"),
    ({"num_workers": 1.5}, "num_workers must be a whole number >= 0"),
    ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
    ({"num_workers": 2, "start_method": "teleport"}, "unknown start method 'teleport'"),
    ({"num_workers": 0, "prefetch_factor": 2}, "prefetch_factor only applies with workers"),
    ({"num_workers": 2, "prefetch_factor": 0}, "prefetch_factor must be a whole number >= 1"),
    ({"num_workers": 0, "persistent_workers": True}, "persistent_workers=True needs workers"),
    ({"num_workers": 2, "timeout": -1}, "timeout must be a number of seconds >= 0"),
    ({"num_workers": 2, "collate_fn": "stack"}, "collate_fn must be callable"),
    ({"epochs": 0}, "epochs must be a whole number >= 1"),
    ({"max_batches": 0}, "max_batches must be a whole number >= 1"),
]


@pytest.mark.parametrize(("settings", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_setting_is_named_and_starts_nothing(settings: dict, message: str, event_logs: list[str]) -> None:
    processes = descendants()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_experiment(SleepDataset(4, delay=0.0), **settings)
    assert descendants() == processes
    assert event_logs == [], "an event log was made before the settings were checked"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_dataset_is_refused_before_workers_start(method: str) -> None:
    processes = descendants()
    with pytest.raises(ValueError, match="dataset cannot be pickled"):
        run_experiment(UnpicklableDataset(), num_workers=2, start_method=method)
    assert descendants() == processes


def test_class_from_a_notebook_is_refused_under_spawn() -> None:
    NotebookDataset = type("NotebookDataset", (SleepDataset,), {"__module__": "__main__"})
    with pytest.raises(ValueError, match="NotebookDataset is defined in this notebook"):
        run_experiment(NotebookDataset(4, delay=0.0), num_workers=1, start_method="spawn")
