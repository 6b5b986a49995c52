"""A picture of the whole DataLoader pipeline with workers, drawn with matplotlib (boxes and
arrows), so that it renders in JupyterLab and stays in a saved notebook as an image.

Built with matplotlib's object API, in the series' colour-blind-safe palette and projector-size
fonts. Nothing is measured here: the picture is the map; the swimlanes are the territory.
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["plot_pipeline"]

#: Okabe-Ito colours, lightened for box fills; the ink stays black.
_FILL = {
    "main": "#D6ECFA",  # sky blue, light: the main process
    "worker": "#FBE3B5",  # orange, light: worker processes
    "queue": "#E6E6E6",  # grey: queues
    "shm": "#BFE8DA",  # bluish green, light: shared memory
    "optional": "#F3D9E8",  # reddish purple, light: only with pin_memory=True
}
_EDGE = {"main": "#0072B2", "worker": "#E69F00", "queue": "#555555", "shm": "#009E73", "optional": "#CC79A7"}
_LABEL = {"main": "#005A8C", "worker": "#8A5200"}  #: darker, for text on the light bands
_FONT = 14


def _box(
    ax: Axes,
    centre: tuple[float, float],
    size: tuple[float, float],
    text: str,
    kind: str,
    *,
    dashed: bool = False,
) -> None:
    """A rounded box of ``size`` (width, height) centred on ``centre``."""
    (x, y), (w, h) = centre, size
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.08,rounding_size=0.18",
            facecolor=_FILL[kind],
            edgecolor=_EDGE[kind],
            linewidth=2.2,
            linestyle="--" if dashed else "-",
            zorder=2,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=_FONT, zorder=3, linespacing=1.3)


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    text: str = "",
    *,
    bend: float = 0.0,
    dashed: bool = False,
    where: tuple[float, float] | None = None,
) -> None:
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=22,
            linewidth=2.2,
            color="#000000",
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={bend}",
            zorder=1,
        )
    )
    if text:
        x, y = where if where is not None else ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=_FONT - 2,
            style="italic",
            zorder=3,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
        )


def _band(ax: Axes, y0: float, y1: float, label: str, kind: str, *, x: float = 0.25) -> None:
    """A shaded band for one kind of process, labelled at its top, from ``x``."""
    ax.add_patch(
        FancyBboxPatch(
            (0.1, y0),
            17.8,
            y1 - y0,
            boxstyle="square,pad=0",
            facecolor=_FILL[kind],
            alpha=0.35,
            edgecolor="none",
            zorder=0,
        )
    )
    ax.text(x, y1 - 0.2, label, ha="left", va="top", fontsize=_FONT + 1, weight="bold", color=_LABEL[kind])


def plot_pipeline() -> Figure:
    """The DataLoader's pipeline with 2 workers: the sampler in the main process hands out batches
    of indices through one index queue per worker; each worker fetches its batch's items and runs
    ``collate_fn``; finished batches come back through one result queue, their tensors in shared
    memory; the main process puts them back in order, optionally pins them in a thread, and hands
    them to your loop, which then hands out one more batch of indices."""
    fig = Figure(figsize=(15, 7.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 18)
    ax.set_ylim(0, 9.2)
    ax.axis("off")

    _draw_bands_and_boxes(ax)
    _draw_arrows(ax)
    return fig


def _draw_bands_and_boxes(ax: Axes) -> None:
    """The two process bands of :func:`plot_pipeline` and its boxes."""
    _band(ax, 5.3, 9.1, "main process (your kernel or script)", "main")
    _band(ax, 0.1, 4.7, "worker processes\n(started by iter(loader))", "worker", x=14.0)

    _box(ax, (2.0, 7.0), (3.0, 1.35), "sampler\nbatches of indices\n[7, 2], [0, 9], …", "main")
    _box(ax, (3.0, 3.35), (2.5, 0.9), "index queue 0", "queue")
    _box(ax, (3.0, 1.25), (2.5, 0.9), "index queue 1", "queue")
    _box(ax, (7.0, 3.35), (4.2, 1.4), "worker 0\ndataset[i] for each index\n→ collate_fn(items)", "worker")
    _box(ax, (7.0, 1.25), (4.2, 1.4), "worker 1\ndataset[i] for each index\n→ collate_fn(items)", "worker")
    _box(
        ax,
        (11.9, 2.3),
        (3.4, 1.6),
        "result queue\nbatch tensors in\nshared memory\n(/dev/shm on Linux)",
        "shm",
    )
    _box(ax, (8.9, 7.0), (3.0, 1.35), "reorder\nby batch number\n(in_order=True)", "main")
    _box(ax, (12.3, 7.0), (3.0, 1.35), "pin-memory\nthread\n(pin_memory=True)", "optional", dashed=True)
    _box(ax, (15.9, 7.0), (3.2, 1.35), "your loop\nfor batch in loader:", "main")


def _draw_arrows(ax: Axes) -> None:
    """The arrows (and the round-robin note) of :func:`plot_pipeline`."""
    _arrow(ax, (2.6, 6.3), (3.0, 3.85))
    _arrow(ax, (0.9, 6.3), (1.6, 1.3))
    ax.text(2.0, 5.0, "round-robin", ha="center", va="center", fontsize=_FONT - 2, style="italic")
    _arrow(ax, (4.3, 3.35), (4.9, 3.35))
    _arrow(ax, (4.3, 1.25), (4.9, 1.25))
    _arrow(ax, (9.1, 3.35), (10.2, 2.75))
    _arrow(ax, (9.1, 1.25), (10.2, 1.85))
    _arrow(ax, (11.9, 3.1), (9.3, 6.3), "whole batches, in any order", where=(11.2, 4.6))
    _arrow(ax, (10.4, 7.0), (10.8, 7.0))
    _arrow(ax, (13.8, 7.0), (14.3, 7.0))
    _arrow(
        ax,
        (15.4, 7.7),
        (2.4, 7.7),
        "each batch received: one more batch of indices handed out",
        bend=0.14,
        dashed=True,
        where=(8.9, 8.75),
    )
