"""Datasets that report on the worker process that loads them. They live in a module so that
spawn and forkserver workers can import them."""

import sys

import torch
from torch.utils.data import Dataset

HEAVY_MODULES = ("matplotlib", "ipywidgets", "IPython", "psutil")


class ModulesDataset(Dataset):
    """Item ``i`` is a tensor of flags: is each of :data:`HEAVY_MODULES` imported in the process
    that loads it?"""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([name in sys.modules for name in HEAVY_MODULES])


class DatasetTypeDataset(Dataset):
    """Item: 1 if the worker's ``worker_init_fn`` saw this very class as ``get_worker_info().dataset``."""

    seen_in_worker_init = 0

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(DatasetTypeDataset.seen_in_worker_init)


def remember_dataset_type(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    assert info is not None, "runs in a worker"
    DatasetTypeDataset.seen_in_worker_init = int(type(info.dataset) is DatasetTypeDataset)
