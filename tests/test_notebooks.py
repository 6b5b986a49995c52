"""Every notebook runs top to bottom on a fresh kernel, twice in a row, and is committed clean."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert [p.stem for p in NOTEBOOKS] == [
        "00_start_here",
        "01_when_workers_appear",
        "02_memory_and_large_arrays",
        "03_custom_collate",
        "04_start_methods",
        "05_when_things_go_wrong",
        "06_summary_of_claims",
        "07_how_many_workers",
        "08_many_ranks",
        "09_trace_your_own_loader",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_with_a_kernelspec(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.kernelspec.language == "python"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_reads_like_a_lesson(path: Path) -> None:
    """One title on top, then sections; a "check yourself" question and a summary."""
    nb = nbformat.read(path, as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    titles = [line for text in markdown for line in text.splitlines() if line.startswith("# ")]
    assert markdown and markdown[0] == nb.cells[0].source and titles == [markdown[0].splitlines()[0]]
    headings = {
        line.lstrip("#").strip() for text in markdown for line in text.splitlines() if line.startswith("## ")
    }
    assert {"Check yourself", "Summary"} <= headings


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_twice_on_a_fresh_kernel(path: Path) -> None:
    for _ in range(2):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert errors == []
        if any("plot_" in c.source or "Panel(" in c.source for c in nb.cells if c.cell_type == "code"):
            images = [
                o
                for c in nb.cells
                if c.cell_type == "code"
                for o in c.outputs
                if "image/png" in o.get("data", {})
            ]
            assert images, "no chart was drawn"


def test_every_notebook_is_built_from_its_source() -> None:
    """``notebooks/src/*.py`` are the sources; an edited source that was not rebuilt fails here."""
    done = subprocess.run(
        [sys.executable, "tools/build_notebooks.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [p.stem for p in sorted((ROOT / "notebooks" / "src").glob("*.py"))] == [p.stem for p in NOTEBOOKS]
