# %% [markdown]
# # DataLoader workers, measured live
#
# PyTorch's `DataLoader(..., num_workers=N)` loads data in separate **worker processes**. When do
# they appear? What do they share with your notebook? Where does `collate_fn` run? What does each
# way of starting a process cost? Articles answer these questions with confident prose; this
# series answers them by **measuring a real `DataLoader` on your machine**, in cells you run.
#
# **In this notebook you will** check what your machine offers (start methods, CPUs, shared
# memory), learn to read a *swimlane chart*, and move your first sliders.
#
# **Prerequisites:** basic PyTorch (`Dataset`, `DataLoader`). **Time:** 5 minutes.
#
# ## The series
#
# | notebook | what you will measure |
# |---|---|
# | `00_start_here` | your machine, and how to read a swimlane chart |
# | `01_when_workers_appear` | when worker processes are created, and what "interleaved" output really shows |
#
# Run the cells in order with **Shift + Enter**. Every number you see is measured when you run
# the cell; it will differ a little from run to run and from machine to machine.

# %%
# %matplotlib inline
from helpers import SleepDataset, SwimlanePanel, machine_info, plot_swimlanes, run_experiment

for name, value in machine_info().items():
    print(f"{name:>24}: {value}")

# %% [markdown]
# What to look for above:
#
# - **default start method**: how a worker process is made. `fork` copies this process as it is
#   (Linux before Python 3.14); `spawn` starts a fresh Python that imports what it needs (macOS and
#   Windows); `forkserver` forks workers from a small clean server process (the Linux default
#   from Python 3.14). Notebook 04 compares them on one timeline.
# - **CPU quota**: on Binder you may see many CPUs from `os.cpu_count()` but a quota of 1 CPU:
#   workers then take turns on that one CPU.
# - **memory limit**: on Binder about 2 GB. The `num_workers` sliders in this series offer only as
#   many workers as fit in it (a spawned worker holds about 175 MiB of its own, as notebook 02
#   measures).
# - **/dev/shm**: worker results travel to the main process through shared memory; containers
#   often give it only 64 MiB.
#
# ## Reading a swimlane chart
#
# The next cell runs a real `DataLoader` over a dataset whose every item takes 0.05 s to load,
# with 2 workers and batches of 2, and draws what each process did.

# %%
trace = run_experiment(SleepDataset(size=8, delay=0.05), batch_size=2, num_workers=2)
plot_swimlanes(trace)

# %% [markdown]
# - Each **lane** is one process: the main process (your kernel) on top, then each worker with its
#   worker id and PID. Under `forkserver` a lane for the **fork server** comes next (with when it
#   was started, which may be long before `iter()`), and each worker's label says it is a *child
#   of fork server*.
# - Time runs left to right in **seconds since `iter(loader)`** was called (the solid line, t = 0).
#   The dashed line just before it is `DataLoader(...)`; the **green dotted bar** is each call
#   running.
# - A worker's life, left to right: a **white circle** where the main process **created** it; a
#   **light green hatched bar** while it is **starting** (under `spawn`: a new Python interpreter,
#   imports, unpickling the dataset; under `fork`: the copy and PyTorch's set-up), with a **black
#   tick** at the first moment our Python code ran in it; a **green star** when it is **ready**
#   (`worker_init_fn` ran); its work; a **black ×** at its exit (a **red ×**: it ended without a
#   normal exit).
# - **Blue bars** are items loading, labelled with the dataset index where the number fits;
#   **orange hatched bars** are `collate_fn` building a batch, always labelled with its batch
#   number (`b3`). A **grey hatched bar** labelled `b5 unused` is a batch a worker built that the
#   loop never received.
# - Below the main lane, **blue triangles** mark batches handed out to workers; `×5` beside them
#   counts triangles too close together to tell apart. Above it, **black triangles** mark batches
#   the loop received (`b0`; `b0–3` for several at once). **Grey** is the loop waiting for a batch.
# - A **yellow bar** on the main lane is a `next()` that got **no batch**, labelled with how it
#   ended: `end of data + shutdown` (PyTorch shuts the workers down inside that last `next()`),
#   `timed out`, `a worker died`, `error raised`. **Purple** is the loop shutting the workers down.
# - Labels never cover one another; batches too close together share one (`b0, b4`). The legend
#   under a chart lists exactly the marks in it.
#
# ## Sliders
#
# Move a slider (drag it, or click it and press the arrow keys): a new `DataLoader` with those
# settings runs and the chart is redrawn. If you move it quickly, only the last setting is drawn.

# %%
panel = SwimlanePanel(SleepDataset(size=12, delay=0.05), num_workers=2, batch_size=2)
panel

# %% [markdown]
# ## Check yourself
#
# Set `num_workers` to 0. Which lane loads the items now, and where does collate run?
#
# <details><summary>Answer</summary>
#
# There is only the main lane: with `num_workers=0` the main process loads every item and runs
# `collate_fn` itself, between the loop's requests. No process is started at all.
# </details>
#
# ## Summary
#
# - The cell above reported this machine's start method, CPU quota and `/dev/shm` size.
# - A swimlane chart shows one lane per process on a shared time axis with t = 0 at `iter()`.
#
# **Next:** `01_when_workers_appear.ipynb` — do workers really appear "only as needed"?
