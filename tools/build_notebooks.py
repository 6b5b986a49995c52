"""Build ``notebooks/*.ipynb`` from their sources, ``notebooks/src/*.py`` (Jupytext percent format).

The sources are what you edit and review; the ``.ipynb`` files are generated, committed without
outputs so that Binder and JupyterLab open them directly. Usage::

    python tools/build_notebooks.py           # write every notebook from its source
    python tools/build_notebooks.py --check   # exit 1 naming each notebook that differs from its source

The output is deterministic (cell ids ``cell-00``, ``cell-01``, ...; a fixed kernelspec), so a
notebook and its source agree exactly when rebuilding changes no byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = NOTEBOOKS / "src"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def sources() -> list[Path]:
    """Every notebook source, in series order."""
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def notebook_for(source: Path) -> Path:
    return NOTEBOOKS / f"{source.stem}.ipynb"


def render(source: Path) -> str:
    """The ``.ipynb`` text that ``source`` builds."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    for number, cell in enumerate(nb.cells):
        cell.id = f"cell-{number:02d}"
        cell.metadata = nbformat.from_dict(
            {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        )
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.nbformat, nb.nbformat_minor = 4, 5
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; fail if a notebook is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        target, text = notebook_for(source), render(source)
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target)
        if not args.check:
            target.write_text(text)
    orphans = sorted(set(NOTEBOOKS.glob("*.ipynb")) - {notebook_for(s) for s in sources()})
    for path in orphans:
        print(f"{path.relative_to(NOTEBOOKS.parent)} has no source in notebooks/src/", file=sys.stderr)
    if args.check:
        for path in stale:
            print(
                f"{path.relative_to(NOTEBOOKS.parent)} differs from its source: run `make notebooks`",
                file=sys.stderr,
            )
        return 1 if stale or orphans else 0
    for path in stale:
        print(f"wrote {path.relative_to(NOTEBOOKS.parent)}")
    return 1 if orphans else 0


if __name__ == "__main__":
    sys.exit(main())
