"""The kernel-side tools of notebooks 00, 04, 05 and 06: source excerpts, error chains, the pipeline
picture, and the panels that re-run a DataLoader when a control changes."""

import multiprocessing

import pytest
from torch.utils.data import dataloader

from helpers import SleepDataset
from helpers.diagrams import plot_pipeline
from helpers.lessons2 import epochs_panel, error_chain, source_block, timeout_panel


def test_a_source_block_is_contiguous_and_numbered_from_the_installed_file() -> None:
    text = source_block(
        dataloader._MultiProcessingDataLoaderIter._get_data, "if self._timeout > 0:", "timed out"
    )
    header, *lines = text.splitlines()
    assert header.startswith("torch/utils/data/dataloader.py, lines ")
    numbers = [int(line.split()[0]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert "if self._timeout > 0:" in lines[0] and "timed out" in lines[-1]


def test_the_default_start_method_excerpt_reaches_the_else_branch() -> None:
    text = source_block(multiprocessing.context, "if sys.platform == 'darwin':", "DefaultContext(", nth=2)
    assert "else:" in text and text.count("DefaultContext(") == 2


def test_a_missing_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no line"):
        source_block(multiprocessing.context, "no such line anywhere")


def test_an_error_chain_follows_the_causes() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer\nlast line") from inner
    except RuntimeError as outer:
        assert error_chain(outer) == ["RuntimeError: last line", "KeyError: 'inner'"]
    assert error_chain(None) == []


def test_the_pipeline_picture_names_every_stage() -> None:
    texts = " ".join(t.get_text() for t in plot_pipeline().axes[0].texts)
    for stage in (
        "sampler",
        "index queue 0",
        "worker 1",
        "collate_fn",
        "result queue",
        "shared memory",
        "reorder",
        "pin-memory",
        "your loop",
    ):
        assert stage in texts


@pytest.mark.parametrize("make", ["epochs", "timeout"])
def test_a_panel_keeps_its_first_chart_and_redraws_on_a_change(make: str) -> None:
    value: float
    if make == "epochs":
        panel = epochs_panel(SleepDataset(size=4, delay=0.0), lambda t: "ok", epochs=1, start_method="fork")
        control, value = panel.controls["epochs"], 2
    else:
        panel = timeout_panel(lambda t: "ok", timeout=0.0, slow_seconds=0.1, start_method="fork")
        control, value = panel.controls["slow_seconds"], 0.2
    assert panel.first_figure is not None and bytes(panel.image.value) == b""
    control.value = value
    assert panel.wait(60)
    assert panel.charts_drawn == 2 and bytes(panel.image.value).startswith(b"\x89PNG")
    assert panel.trace.leftover_processes == ()
