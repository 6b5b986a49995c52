"""``python -m benchmarks [--quick] [--output PATH]``: measure, print a table, write JSON.

Every figure is a ratio or a count taken in this one run, the median of paired repetitions
(the two sides of a pair run back to back, in alternating order).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import nbformat
import psutil
import torch
from nbclient import NotebookClient
from torch.utils.data import DataLoader

from helpers import SleepDataset, SwimlanePanel, run_experiment, trace_loader
from helpers.events import EventLog
from helpers.internals import live_iterator, shut_down, worker_pids
from helpers.measurements import epoch_costs
from helpers.tracing import TracedDataset

from .workloads import SmallTensors

ROOT = Path(__file__).resolve().parent.parent
METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
warnings.filterwarnings("ignore", message="This DataLoader will create")


def interleaved_pairs(
    plain: Callable[[], Any], traced: Callable[[], Any], reps: int
) -> list[tuple[Any, Any]]:
    """``reps`` pairs of (plain result, traced result), the two run back to back in alternating order
    so that a drift in the machine's load falls on both sides alike."""
    pairs = []
    for rep in range(reps):
        gc.collect()
        if rep % 2:
            t, p = traced(), plain()
        else:
            p, t = plain(), traced()
        pairs.append((p, t))
    return pairs


def _epoch(loader: Any) -> tuple[float, float]:
    """Seconds from ``iter()`` to the last batch, and from the first batch to the last."""
    start = time.perf_counter()
    first = None
    for _ in loader:
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return end - start, end - (first or end)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def tracer_overhead(method: str, size: int, reps: int, epochs: int = 3) -> dict[str, Any]:
    """Throughput of a traced loader over an untraced one, same data and settings. Each side of a
    pair warms up its persistent workers with one epoch (start-up is the same for both and left
    out), then takes the fastest of ``epochs`` epochs; CPU seconds of main + workers are counted
    over those epochs too, a figure less disturbed by the scheduler on a small machine."""
    dataset = SmallTensors(size)
    settings: dict[str, Any] = {"batch_size": 64, "num_workers": 2, "persistent_workers": True}
    me = os.getpid()
    build: list[float] = []

    def measure(loader: Any, workers: Any) -> tuple[float, float]:
        _epoch(loader)
        pids = [me, *workers()]
        cpu = _cpu_seconds(pids)
        fastest = min(_epoch(loader)[0] for _ in range(epochs))
        return fastest, (_cpu_seconds(pids) - cpu) / epochs

    def plain() -> tuple[float, float]:
        loader = DataLoader(dataset, multiprocessing_context=method, **settings)
        result = measure(loader, lambda: worker_pids(live_iterator(loader)))
        shut_down(live_iterator(loader))  # persistent workers: stop them now
        return result

    def traced() -> tuple[float, float]:
        loader = trace_loader(dataset, start_method=method, **settings)
        result = measure(loader, loader.worker_processes)
        started = time.perf_counter()
        loader.close()
        build.append(time.perf_counter() - started)
        return result

    pairs = interleaved_pairs(plain, traced, reps)
    ratios = sorted(p[0] / t[0] for p, t in pairs)
    return {
        "items": size,
        "ratio": statistics.median(ratios),
        "ratio_range": [ratios[0], ratios[-1]],
        "cpu_ratio": statistics.median(p[1] / t[1] for p, t in pairs),
        "untraced_items_per_s": size / statistics.median(p[0] for p, _ in pairs),
        "traced_items_per_s": size / statistics.median(t[0] for _, t in pairs),
        "trace_build_s_per_epoch": statistics.median(build) / (epochs + 1),
    }


def _first_batch_s(make: Any) -> float:
    """Seconds from ``iter()`` to the first batch of the iterable ``make()`` returns (a loader),
    which is then closed: a worker's whole start-up, as the reader waits for it."""
    loader = make()
    try:
        started = time.perf_counter()
        iterator = iter(loader)
        next(iterator)
        took = time.perf_counter() - started
        if not hasattr(loader, "close"):  # a plain loader; closing a traced one stops its iterators
            shut_down(iterator)
        del iterator
        return took
    finally:
        if hasattr(loader, "close"):
            loader.close()


def startup_overhead(method: str, reps: int) -> dict[str, Any]:
    """Time to the first batch, traced over plain, under ``method``: the tracer must not lengthen
    the start-up it draws (what a spawned worker imports and unpickles of ours). Pairs run back to
    back in alternating order; the ratio is the median of the pairs' ratios."""
    dataset = SleepDataset(size=8, delay=0.0)
    settings: dict[str, Any] = {"batch_size": 2, "num_workers": 2}

    def plain() -> float:
        return _first_batch_s(lambda: DataLoader(dataset, multiprocessing_context=method, **settings))

    def traced() -> float:
        return _first_batch_s(lambda: trace_loader(dataset, start_method=method, **settings))

    plain()  # warm-up: the fork server, the resource tracker, the page cache
    pairs = interleaved_pairs(plain, traced, reps)
    ratios = sorted(t / p for p, t in pairs)
    return {
        "ratio": statistics.median(ratios),
        "ratio_range": [ratios[0], ratios[-1]],
        "plain_s": statistics.median(p for p, _ in pairs),
        "traced_s": statistics.median(t for _, t in pairs),
    }


def at_scale(size: int, reps: int) -> dict[str, Any]:
    """A whole traced run (construct, iterate, close) over a plain one, on ``size`` one-int items
    (batches of 64, 2 workers, fork where there is fork): throughput traced / plain, the time
    closing takes as a share of the loop, and the bytes the trace holds per event."""
    data: Any = list(range(size))  # a list is a map-style dataset to DataLoader
    settings: dict[str, Any] = {"batch_size": 64, "num_workers": 2, "multiprocessing_context": METHODS[0]}

    def plain() -> float:
        started = time.perf_counter()
        for _ in DataLoader(data, **settings):
            pass
        return time.perf_counter() - started

    def traced() -> tuple[float, float, float]:
        started = time.perf_counter()
        loader = trace_loader(data, **settings)
        for _ in loader:
            pass
        looped = time.perf_counter()
        trace = loader.close()
        closed = time.perf_counter()
        return (
            closed - started,
            (closed - looped) / (looped - started),
            trace.events.nbytes / len(trace.events),
        )

    pairs = interleaved_pairs(plain, traced, reps)
    ratios = sorted(p / t[0] for p, t in pairs)
    return {
        "items": size,
        "ratio": statistics.median(ratios),
        "ratio_range": [ratios[0], ratios[-1]],
        "close_share": statistics.median(t[1] for _, t in pairs),
        "bytes_per_event": statistics.median(t[2] for _, t in pairs),
    }


def item_cost(size: int, reps: int) -> dict[str, Any]:
    """Microseconds per item to load a batch in this process, plainly and through the tracer:
    the tracer's own cost per item, without workers or a scheduler in the way."""
    dataset = SmallTensors(size)
    batches = [list(range(i, min(i + 64, size))) for i in range(0, size, 64)]
    log = EventLog()
    traced = TracedDataset(dataset, log)
    load = dataset.__getitem__
    pairs = []
    try:
        for _ in range(reps):
            started = time.perf_counter()
            for batch in batches:
                [load(i) for i in batch]
            middle = time.perf_counter()
            for batch in batches:
                traced.__getitems__(batch)
            pairs.append((middle - started, time.perf_counter() - middle))
    finally:
        log.close()
    plain_us = 1e6 * statistics.median(p for p, _ in pairs) / size
    traced_us = 1e6 * statistics.median(t for _, t in pairs) / size
    return {"untraced_us": plain_us, "traced_us": traced_us, "added_us": traced_us - plain_us}


def redraw(method: str, reps: int, delay: float) -> dict[str, Any]:
    """Seconds from a slider change to the new chart, over the ideal time of the experiment it
    runs: rounds of batches per worker x batch size x delay (the article's sleep scenario)."""
    size, batch_size = 10, 2
    panel = SwimlanePanel(
        SleepDataset(size=size, delay=delay), num_workers=2, batch_size=batch_size, start_method=method
    )
    ratios, seconds = [], []
    values = [4, 3, 2] * math.ceil(reps / 3)
    for workers in values[:reps]:
        drawn = panel.charts_drawn
        start = time.perf_counter()
        panel.num_workers.value = workers
        if not panel.wait(timeout=300) or panel.charts_drawn != drawn + 1:
            raise RuntimeError("the panel did not draw exactly one chart")
        took = time.perf_counter() - start
        rounds = math.ceil(math.ceil(size / batch_size) / workers)
        ratios.append(took / (rounds * batch_size * delay))
        seconds.append(took)
    return {"ratio": statistics.median(ratios), "median_s": statistics.median(seconds), "changes": reps}


class PeakMemory:
    """Samples the summed PSS (USS where there is no PSS) of this process's descendants: the
    kernels it started and their workers."""

    def __init__(self, every: float = 0.2) -> None:
        self.peak = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self._every):
            total = 0
            for child in me.children(recursive=True):
                try:
                    info = child.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total += getattr(info, "pss", info.uss)
            self.peak = max(self.peak, total)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def series(notebooks: list[Path]) -> dict[str, Any]:
    """Execute each notebook headless on a fresh kernel: wall time, slowest cell, peak memory."""
    per_notebook, slowest = {}, (0.0, "")
    with PeakMemory() as memory:
        started = time.perf_counter()
        for path in notebooks:
            nb = nbformat.read(path, as_version=4)
            began = time.perf_counter()
            NotebookClient(
                nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
            ).execute()
            per_notebook[path.name] = time.perf_counter() - began
            for number, cell in enumerate(nb.cells):
                timing = cell.get("metadata", {}).get("execution", {})
                if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
                    took = (
                        datetime.fromisoformat(timing["shell.execute_reply"])
                        - datetime.fromisoformat(timing["iopub.execute_input"])
                    ).total_seconds()
                    slowest = max(slowest, (took, f"{path.name} cell {number}"))
        total = time.perf_counter() - started
    return {
        "wall_s": total,
        "per_notebook_s": per_notebook,
        "slowest_cell_s": slowest[0],
        "slowest_cell": slowest[1],
        "peak_pss_mib": memory.peak / 2**20,
    }


def start_methods(reps: int) -> dict[str, Any]:
    """``iter()`` cost and time to the first batch, per start method (2 workers)."""
    found: dict[str, Any] = {}
    for method in METHODS:
        costs = [
            epoch_costs(
                run_experiment(
                    SleepDataset(size=8, delay=0.0), batch_size=2, num_workers=2, start_method=method
                )
            )[0]
            for _ in range(reps)
        ]
        found[method] = {
            "iter_ms": 1000 * statistics.median(c.iter_s for c in costs),
            "first_batch_ms": 1000 * statistics.median(c.first_batch_s for c in costs),
        }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one repetition: a smoke run, not a measurement"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results.json")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else 5
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))

    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
        },
        "quick": args.quick,
        "repetitions": reps,
    }
    print(f"benchmarks on {results['machine']}, {reps} paired repetition(s)", flush=True)
    results["tracer_overhead"] = {
        m: tracer_overhead(m, 2_000 if args.quick else 50_000, reps)
        for m in ("fork", "spawn")
        if m in METHODS
    }
    results["startup_overhead"] = {
        m: startup_overhead(m, 2 if args.quick else 9) for m in ("spawn", "forkserver") if m in METHODS
    }
    results["at_scale"] = {
        "end_to_end": at_scale(5_000 if args.quick else 100_000, reps),
        "close": at_scale(5_000 if args.quick else 1_000_000, 1 if args.quick else 3),
    }
    results["item_cost"] = item_cost(2_000 if args.quick else 50_000, reps)
    results["redraw"] = {
        m: redraw(m, 1 if args.quick else 6, 0.01 if args.quick else 0.1)
        for m in ("fork", "spawn")
        if m in METHODS
    }
    results["start_methods"] = start_methods(reps)
    results["series"] = series(notebooks[:1] if args.quick else notebooks)

    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.output}")
    return 0


def table(results: dict[str, Any]) -> str:
    lines = ["", f"{'measure':<48} {'value':>10}   target"]
    for method, r in results["tracer_overhead"].items():
        lines.append(f"{'tracer: traced/untraced throughput, ' + method:<48} {r['ratio']:>10.3f}   >= 0.95")
        lines.append(f"{'  pairs ranged from':<48} {r['ratio_range'][0]:>10.3f} to {r['ratio_range'][1]:.3f}")
        lines.append(f"{'tracer: untraced/traced CPU seconds, ' + method:<48} {r['cpu_ratio']:>10.3f}")
    for method, r in results["startup_overhead"].items():
        lines.append(
            f"{'tracer: traced/plain time to first batch, ' + method:<48} {r['ratio']:>10.3f}   <= 1.05"
        )
        lines.append(f"{'  pairs ranged from':<48} {r['ratio_range'][0]:>10.3f} to {r['ratio_range'][1]:.3f}")
    scale = results["at_scale"]
    e2e, close = scale["end_to_end"], scale["close"]
    lines.append(
        f"{'tracer at scale: traced/plain, construct to close, ' + format(e2e['items'], ','):<48} "
        f"{e2e['ratio']:>10.3f}   >= 0.95"
    )
    lines.append(f"{'  pairs ranged from':<48} {e2e['ratio_range'][0]:>10.3f} to {e2e['ratio_range'][1]:.3f}")
    lines.append(
        f"{'tracer at scale: close / loop time, ' + format(close['items'], ','):<48} "
        f"{close['close_share']:>10.3f}   <= 0.05"
    )
    lines.append(
        f"{'tracer at scale: bytes per event in the trace':<48} {close['bytes_per_event']:>10.1f}   <= 64"
    )
    c = results["item_cost"]
    lines.append(
        f"{'tracer: µs per item, untraced / traced':<48} {c['untraced_us']:>10.2f} / {c['traced_us']:.2f}"
    )
    for method, r in results["redraw"].items():
        lines.append(
            f"{'redraw: slider to chart / ideal, ' + method:<48} {r['ratio']:>10.2f}   "
            + ("<= 1.3" if method == "fork" else "(reported)")
        )
    s = results["series"]
    lines.append(f"{'series: every notebook, wall time (s)':<48} {s['wall_s']:>10.1f}   <= 120")
    lines.append(
        f"{'series: slowest cell (s) — ' + s['slowest_cell']:<48} {s['slowest_cell_s']:>10.1f}   <= 10"
    )
    lines.append(f"{'series: peak PSS of kernels + workers (MiB)':<48} {s['peak_pss_mib']:>10.0f}   <= 1536")
    for method, r in results["start_methods"].items():
        lines.append(f"{'start method ' + method + ': iter() (ms)':<48} {r['iter_ms']:>10.1f}")
        lines.append(f"{'start method ' + method + ': first batch (ms)':<48} {r['first_batch_ms']:>10.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
