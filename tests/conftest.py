import multiprocessing
import os

import pytest

START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return request.param


def pytest_report_header() -> str:
    return f"start methods tested: {', '.join(START_METHODS)}; cpus: {os.cpu_count()}"
