"""Small datasets and functions for the tests. They live in a module (not in a test function)
so that spawn and forkserver workers can import them."""

import os

import torch
from torch.utils.data import Dataset


class ParentPidDataset(Dataset):
    """Each item is the PID of the loading process's parent."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(os.getppid())


class EnvDataset(Dataset):
    """Each item is the worker id that ``remember_worker_id`` stored in this process."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(int(os.environ.get("TRACE_TEST_WORKER", "-1")))


def remember_worker_id(worker_id: int) -> None:
    os.environ["TRACE_TEST_WORKER"] = str(worker_id)


class UnpicklableDataset(Dataset):
    def __init__(self) -> None:
        self.transform = lambda x: x

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return index


class ExitingDataset(Dataset):
    """The worker that loads any item ends at once with exit status 1, as a crash in a C
    extension or an ``os._exit(1)`` would: no exception, no traceback."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        os._exit(1)
