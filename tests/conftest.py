import os

import pytest

import helpers.experiment
from helpers.events import EventLog
from helpers.system import START_METHODS


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def event_logs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directories of the event logs that traced loaders make during the test, wherever each
    log chose to put its own (``/dev/shm`` is shared with every other run on the machine, so a
    look at all the logs there would see theirs come and go)."""
    made: list[str] = []

    def make() -> EventLog:
        log = EventLog()
        made.append(log.directory)
        return log

    monkeypatch.setattr(helpers.experiment, "EventLog", make)
    return made


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests are slow tests too, so ``-m "not slow"`` leaves them out."""
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)


def pytest_report_header() -> str:
    return f"start methods tested: {', '.join(START_METHODS)}; cpus: {os.cpu_count()}"
