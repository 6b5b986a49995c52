# %% [markdown]
# # DataLoader workers, measured live
#
# PyTorch's `DataLoader(..., num_workers=N)` loads data in separate **worker processes**. When do
# they appear? What do they share with your notebook? Where does `collate_fn` run? What does each
# way of starting a process cost? Articles answer these questions with confident prose; this
# series answers them by **measuring a real `DataLoader` on your machine**, in cells you run, and
# holds a popular article's seven claims against what it measures.
#
# **In this notebook you will** check what your machine offers (start methods, CPUs, memory,
# shared memory), see the whole pipeline of a multi-process `DataLoader` in one picture, learn to
# read a *swimlane chart*, and move your first sliders.
#
# **Prerequisites:** basic PyTorch (`Dataset`, `DataLoader`). **Time:** 10 minutes.
#
# ## The course
#
# Read the notebooks in this order. 01 to 05 each measure a part of the article; 06 collects every
# verdict in one table; 07 to 09 go beyond the article.
#
# | notebook | what you will measure |
# |---|---|
# | [00 — start here](00_start_here.ipynb) | your machine, the pipeline, and how to read a swimlane chart |
# | [01 — when workers appear](01_when_workers_appear.ipynb) | whether workers are created "only as needed", and what interleaved prints really show (claims C1, C2, C7) |
# | [02 — memory and large arrays](02_memory_and_large_arrays.ipynb) | what each worker copies of a large NumPy array, under each start method (C3) |
# | [03 — custom collate](03_custom_collate.ipynb) | where `collate_fn` runs, and in what order batches come back (C5) |
# | [04 — start methods](04_start_methods.ipynb) | what `fork`, `spawn` and `forkserver` cost, every epoch, and what they mean for CUDA (C4, C6) |
# | [05 — when things go wrong](05_when_things_go_wrong.ipynb) | exceptions, killed workers, `timeout`, a small `/dev/shm`, and how the traces are recorded |
# | [06 — the claims, measured](06_summary_of_claims.ipynb) | every claim of the article, judged on your machine, in one table |
# | [07 — how many workers](07_how_many_workers.ipynb) | throughput against `num_workers`, and what each worker costs |
# | [08 — many ranks](08_many_ranks.ipynb) | workers under distributed training: several ranks, each with its own loader |
# | [09 — trace your own loader](09_trace_your_own_loader.ipynb) | the tracer on your own dataset and settings |
#
# Run the cells in order with **Shift + Enter**. Every number you see is measured when you run
# the cell; it will differ a little from run to run and from machine to machine. The reference
# for all of it is PyTorch's own
# [Multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading)
# section.
#
# ## Your machine

# %%
# %matplotlib inline
import warnings

from IPython.display import display

from helpers import SleepDataset, SwimlanePanel, machine_info, plot_swimlanes, run_experiment
from helpers.checks import nb00
from helpers.diagrams import plot_pipeline

# PyTorch warns "This DataLoader will create N worker processes" whenever N is larger than the
# CPUs it counts for this process (on Binder, 1). The series starts 2 or more workers on purpose,
# and the sliders let you go higher, so we silence that one warning; notebook 07 measures when
# its advice matters.
warnings.filterwarnings("ignore", message="This DataLoader will create")

info = machine_info()
for name, value in info.items():
    print(f"{name:>29}: {value}")

# %% [markdown]
# What these mean for the series, worded from the values above:

# %%
method = info["default start method"]
print({
    "fork": "- Workers start as copies of this kernel (fork): with everything it has imported, sharing its "
            "memory pages until one of them writes to a page.",
    "spawn": "- Workers start as fresh Python interpreters (spawn): each must import PyTorch and receive the "
             "dataset pickled before it can load anything.",
    "forkserver": "- Workers are forked from a fork server (forkserver): each must import PyTorch and receive "
                  "the dataset pickled before it can load anything.",
}[method])
print("  Notebook 04 times what that costs under each start method.")
quota = info["CPU quota (cgroup)"]
usable = info["CPUs usable (affinity)"]
if quota != "no limit":
    print(f"- Your CPU quota is {quota}, though os.cpu_count() says {info['os.cpu_count()']}: "
          f"workers take turns on that much CPU time.")
else:
    print(f"- {usable} CPUs are usable and no quota limits them: up to {usable} workers can compute at the same moment.")
print(f"- The num_workers sliders go up to {info['num_workers sliders go up to']}: as many spawned workers "
      f"as fit beside this kernel in its memory limit ({info['memory limit (cgroup)']}).")
shm = info["/dev/shm"]
if shm == "none":
    print("- There is no /dev/shm: workers hand batches over another way (notebook 05).")
elif float(shm.split()[0]) < 256:
    print(f"- /dev/shm is only {shm}: large batches in flight will not fit (notebook 05 shows what breaks).")
else:
    print(f"- /dev/shm has {shm}: room for many batches in flight (notebook 05 shows a small one fail).")

# %% [markdown]
# On Binder, in most containers and in many cloud notebooks, the CPU quota, the memory limit and
# `/dev/shm` are all small; on a laptop they are not. Each start method is explained in
# [04](04_start_methods.ipynb), and in Python's
# [Contexts and start methods](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods).
#
# ## The whole pipeline, in one picture
#
# Before measuring anything, here is what a `DataLoader` with workers does, as PyTorch's
# [documentation](https://pytorch.org/docs/stable/data.html#multi-process-data-loading) and
# source describe it. Two workers are drawn; a loader has `num_workers` of them, each with its own
# index queue.

# %%
plot_pipeline()

# %% [markdown]
# Follow one batch around the picture:
#
# 1. The **sampler**, in the main process, turns the dataset's indices into batches of indices.
#    `iter(loader)` starts the workers and hands each a few batches of indices at once, through
#    its own **index queue** ([01](01_when_workers_appear.ipynb) counts them).
# 2. A **worker** loads each item of its batch with `dataset[i]` and joins them with
#    `collate_fn` ([03](03_custom_collate.ipynb)). It holds its own copy of the dataset, how much of
#    a copy depending on the start method ([02](02_memory_and_large_arrays.ipynb)).
# 3. The finished batch goes back through the shared **result queue**; its tensors travel through
#    shared memory ([05](05_when_things_go_wrong.ipynb) fills it up).
# 4. The main process puts batches back **in order** (unless `in_order=False`), optionally copies
#    them into pinned memory in a **pin-memory thread** (`pin_memory=True`, with an accelerator),
#    and gives them to **your loop**. Each batch received lets the sampler hand out one more.
#
# The picture is the map; the charts below are measurements of the real thing.
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
# The first chart is also shown as a picture above the panel, so that a saved copy of this
# notebook keeps it.
#
# **Predict** before you move anything: with `num_workers=1`, how many worker lanes will there
# be, and will the last batch arrive sooner or later than with 2? Then try it, and try 0.

# %%
panel = SwimlanePanel(SleepDataset(size=12, delay=0.05), num_workers=2, batch_size=2)
display(panel.figure)
panel

# %% [markdown]
# ## Check yourself

# %%
nb00.QUESTIONS[0]

# %%
nb00.QUESTIONS[1]

# %%
nb00.QUESTIONS[2]

# %% [markdown]
# ## Exercises
#
# **1.** How many CPUs can this kernel's workers compute on at the same moment? Work it out from
# the machine report at the top (the CPUs usable, and the CPU quota if there is one, rounded up).

# %%
answer = None  # a whole number of CPUs
nb00.EXERCISES[0].check(answer)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# import math
# quota = info["CPU quota (cgroup)"]
# answer = info["CPUs usable (affinity)"]
# if quota != "no limit":
#     answer = min(answer, math.ceil(float(quota.split()[0])))
# ```
# `os.cpu_count()` counts the host's CPUs, not what your container may use: the usable CPUs and
# the quota do.
# </details>
#
# **2.** Read the first chart (`trace`): how many seconds after `iter()` did the loop receive
# its first batch? Read it off the chart, then compute it from the trace.

# %%
answer = None  # seconds
nb00.EXERCISES[1].check(answer, trace=trace)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# from helpers import Kind
# answer = trace.first(Kind.BATCH_RECEIVED).end
# ```
# Times on the chart are seconds since `iter()` was called, so the end of the first "batch
# received" event is the answer.
# </details>
#
# **3.** In the same run, which worker (its worker id) built batch 1?

# %%
answer = None  # a worker id: 0, 1, ...
nb00.EXERCISES[2].check(answer, trace=trace)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# answer = next(worker for number, worker, pid, items in trace.batches() if number == 1)
# ```
# `trace.batches()` lists each batch with the worker that built it and its items. Workers take
# batches in turn: notebook 03 shows that a batch is never split between workers.
# </details>
#
# ## Summary
#
# - The cells at the top reported this machine's start method, CPUs, memory limit and
#   `/dev/shm`, and what each means for the series.
# - A multi-process `DataLoader` is a pipeline: sampler and index queues in the main process,
#   workers that load and collate whole batches, a result queue through shared memory, reordering
#   and an optional pin-memory thread back in the main process.
# - A swimlane chart shows one lane per process on a shared time axis, with t = 0 at `iter()`.
#
# ## Read more
#
# - PyTorch: [Multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading)
#   and [Platform-specific behaviors](https://pytorch.org/docs/stable/data.html#platform-specific-behaviors).
# - Python: [Contexts and start methods](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods)
#   and [Safe importing of main module](https://docs.python.org/3/library/multiprocessing.html#the-spawn-and-forkserver-start-methods).
#
# **Next:** [01 — when workers appear](01_when_workers_appear.ipynb): are workers really created
# "only as needed"?
