# %% [markdown]
# # Memory: what do workers share with your kernel?
#
# Your dataset builds a large NumPy array in `__init__`, and `DataLoader` starts 4 workers. Does
# every worker now hold its own copy of the array, multiplying your memory use by five? The
# article this series checks says no, and gives a reason: the workers are created lazily, after
# the array was built, so they "avoid inheriting duplicated copies" of it (claim C3).
#
# This notebook runs the article's second scenario with prints, then **measures each process's
# memory** under every start method your machine offers, to find what really decides whether a
# worker holds a copy.
#
# **You will learn** to read RSS, USS and PSS; what `fork`, `spawn` and `forkserver` do with a
# dataset's array; and why a list of Python objects is copied where a NumPy array is not
# ("copy-on-read").
#
# **Prerequisites:** [01 — when workers appear](01_when_workers_appear.ipynb). **Time:** 20
# minutes. Every run below prints what it costs against this kernel's memory limit.

# %%
# %matplotlib inline
import gc
import multiprocessing
import os
import warnings

from torch.utils.data import DataLoader

from helpers import ArrayDataset, Kind
from helpers.checks import nb02
from helpers.claims import verdict_c3
from helpers.datasets import ObjectListDataset
from helpers.lessons import MemoryPanel, mib, show_source
from helpers.measurements import private_growth
from helpers.memory import ProcessMemory, measure_memory
from helpers.plotting import plot_memory
from helpers.scenarios import RowsDataset
from helpers.system import memory_limit

# PyTorch warns when num_workers exceeds this kernel's CPUs; these runs measure memory, not speed, so that is fine.
warnings.filterwarnings("ignore", message="This DataLoader will create")

available = multiprocessing.get_all_start_methods()
default = multiprocessing.get_start_method()
limit = memory_limit()
print(f"start methods here: {available}; this kernel's default: {default}; memory limit: {mib(limit)}")

# %% [markdown]
# ## Three ways to count a process's memory
#
# psutil's `memory_full_info()` reports, for one process:
#
# - **RSS** (resident set size): every page the process has mapped, including pages it shares
#   with other processes. Adding up RSS over processes counts shared pages many times.
# - **USS** (unique set size): the pages only this process maps, which the system would get back
#   if it exited. A private **copy** of an array shows up here.
# - **PSS** (proportional set size, Linux only): its own pages plus a fair share of each shared
#   page (a page mapped by 3 processes counts 1/3 in each). PSS adds up to what the processes
#   cost the machine together.
#
# This kernel, right now:

# %%
me = ProcessMemory.of("kernel", os.getpid())
print(f"RSS {mib(me.rss)}, USS {mib(me.uss)}, PSS {'n/a on this OS' if me.pss is None else mib(me.pss)}")

# %% [markdown]
# ## The article's scenario, with prints
#
# A dataset of 20 items whose `__init__` builds a 1000 × 1000 array of float64 (8 MB) and says
# in which process; item `i` waits 0.1 s, says which process reads it, and returns row `i % 10`
# (`RowsDataset` in `helpers/scenarios.py`). Batches of 2, 4 workers, and the loop leaves after 3
# batches. A plain `DataLoader`.
#
# **Predict before you run it.**
# 1. How many times will "built the dataset's array" be printed: once, or also once per worker?
# 2. Under this kernel's start method (printed above), will each worker hold its own copy of the
#    8 MB array?

# %%
dataset = RowsDataset(size=20, delay=0.1)
loader = DataLoader(dataset, batch_size=2, num_workers=4)
print("DataLoader(...) returned", flush=True)
for batch_idx, batch in enumerate(loader):
    print(f"main loop (process {os.getpid()}) received batch {batch_idx}", flush=True)
    if batch_idx == 2:
        break
print("left the loop", flush=True)

# %% [markdown]
# The array was built once, in this kernel: a worker never runs the dataset's `__init__`; it
# receives the dataset already built (copied by `fork`, or pickled and unpickled). Then the
# workers read rows of it. Did they read this kernel's pages, or copies of their own? A printed
# row looks the same either way. Measure.
#
# ## The same scenario, measured
#
# `measure_memory` (in `helpers/memory.py`) runs one epoch over the dataset with persistent
# workers, then measures the kernel and every worker while they are still alive. A second run
# with a 10 × 10 array is the **baseline**: what a worker holds anyway (Python, PyTorch, its
# queues). The difference is what the *array* costs each worker.
#
# **Predict:** how much private memory (USS) will the array add to each worker?

# %%
dataset.verbose = False  # the same dataset, without the prints
article = measure_memory(dataset, num_workers=4)  # this kernel's start method
print(article)

# %%
article_baseline = measure_memory(RowsDataset(size=20, delay=0.1, rows=10, cols=10, verbose=False), num_workers=4)
growth = private_growth(article, article_baseline)
copies = max(round(growth / dataset.nbytes, 2), 0.0)  # a small negative difference is noise: no copy
print(f"median worker USS: {mib(article.worker_uss)} with the 8 MB array, "
      f"{mib(article_baseline.worker_uss)} with a 10 × 10 one")
print(f"difference: {round(growth / 2**20, 1) + 0.0:+.1f} MiB per worker, that is {copies:.2f} copies of "
      f"the {mib(dataset.nbytes, 1)} array")
print(
    f"Under {article.start_method}, "
    + ("each worker holds a copy of its own." if copies >= 0.5
       else "no worker holds a copy of its own: they read the kernel's pages.")
)

# %% [markdown]
# ## The start method decides
#
# Creating the workers after the array cannot keep it from them: the dataset, array included,
# exists before `DataLoader(dataset, ...)` is even called, and it is exactly what the workers
# are given. What decides whether they hold a **copy** is **how** they are made. To see it
# clearly, the next cells use a 128 MiB array (`ArrayDataset`, whose items together read every
# row), 2 workers, and each start method in turn. First the baselines: the same runs with an
# array of 16 × 16 numbers.

# %%
methods = [m for m in ("fork", "spawn", "forkserver") if m in available]
reports, baselines = {}, {}  # start method -> MemoryReport
for method in methods:
    baselines[method] = measure_memory(ArrayDataset(size=16, rows=16, cols=16), start_method=method)
    print(f"{method:>10}: a worker holds {mib(baselines[method].worker_uss)} of its own (USS) with an almost empty array")

# %%
big = ArrayDataset.of_mib(128)
print(big)


def measure(method):
    reports[method] = measure_memory(big, start_method=method)
    report = reports[method]
    print(f"{method}: each worker USS {mib(report.worker_uss)} (baseline {mib(baselines[method].worker_uss)}), "
          f"RSS {mib(report.worker_rss)}; the kernel USS {mib(report.main.uss)}, RSS {mib(report.main.rss)}")
    starts = ", ".join(f"{e.duration:.2f}" for e in report.trace.of(Kind.PROCESS_CREATED))
    print(f"    iter() took {report.trace.first(Kind.ITER_CALLED).duration:.2f} s; Process.start() for each "
          f"worker took {starts} s")


# %%
if "fork" in methods:
    measure("fork")
else:
    print("fork is not available on this machine")

# %%
measure("spawn")

# %%
if "forkserver" in methods:
    measure("forkserver")
else:
    print("forkserver is not available on this machine")

# %% [markdown]
# Each bar below is one process: its private memory (USS, solid) at the bottom, the pages it
# shares with other processes (RSS − USS, hatched) above, a black tick at its PSS, and a dashed
# line at the array's size.

# %%
plot_memory(reports)

# %%
for method, report in reports.items():
    grew = private_growth(report, baselines[method])
    print(f"{method:>10}: with the array, each worker's private memory differs by {round(grew / 2**20) + 0:+d} MiB "
          f"({max(round(grew / big.nbytes, 2), 0.0):.2f} copies); the kernel's own USS is {mib(report.main.uss)}")

# %% [markdown]
# - `fork` copies the kernel's *page tables*, not its pages: a forked worker maps the very pages
#   that hold the array, shared until someone writes to them (copy-on-write). They count in its
#   RSS, not in its USS. Look at the kernel's bar under `fork` too (where your machine has
#   `fork`): its USS is small, because USS
#   counts only pages *no other process* maps, and after the fork nearly all of the kernel's pages,
#   the array included, are mapped by the workers as well. Nothing was freed: PSS shares them out.
# - `spawn` and `forkserver` start a fresh interpreter and send it the dataset **pickled**; each
#   worker unpickles its own full copy of the array, which lands in its USS, and the kernel keeps
#   its own pages to itself.
#
# The copy costs time as well. Compare the `Process.start()` times printed above: under `spawn`,
# `start()` writes the pickled process object, dataset and all, into a pipe to the new process,
# and the write ends only as the process reads it, which it does while unpickling, after it has
# imported PyTorch. Until then `iter()` cannot create the next worker. (A `forkserver` worker is
# handed its pickled dataset in the same way, through the fork server.) Here is spawn's write:

# %%
try:
    from multiprocessing.popen_spawn_posix import Popen as SpawnPopen

    show_source(SpawnPopen._launch, "self.pid = util.spawnv_passfds(", "f.write(fp.getbuffer())")
except ImportError:  # Windows starts processes another way (popen_spawn_win32)
    print("not shown: this is not a POSIX system")

# %% [markdown]
# ## Claim C3: the outcome and the article's reason
#
# The verdicts below are worded from the numbers above, one per start method. The article makes
# two claims at once: an **outcome** (workers do not hold duplicated copies) and a **reason**
# (because they are created lazily, after the array). The next cell checks each separately.

# %%
for method, report in reports.items():
    display(verdict_c3(report, baselines[method]))

# %%
for method, report in reports.items():
    grew = private_growth(report, baselines[method])
    created = report.trace.first(Kind.PROCESS_CREATED)
    duplicated = grew / big.nbytes >= 0.5
    print(f"{method}:")
    print("  outcome: " + (f"each worker holds a duplicate ({mib(grew)} more private memory each): the "
                           "article's outcome does not hold" if duplicated else
                           f"no worker holds a duplicate ({mib(max(grew, 0))} more private memory each): the "
                           "article's outcome holds"))
    print(f"  reason:  the workers were created at t = {created.start:.3f} s after iter(), after the array was "
          "built, " + ("and each still received it, pickled" if duplicated else
                       f"and each still maps all of it (RSS {mib(report.worker_rss)}), shared by fork") +
          ": being created late did not keep the array from them")

# %% [markdown]
# And what do the kernel and its 2 workers cost the machine together? Add up PSS:

# %%
for method, report in reports.items():
    total = report.total_pss
    print(f"{method:>10}: " + ("n/a (no PSS on this OS)" if total is None else
                               f"{mib(total)}, {100 * total / limit:.0f} % of this kernel's memory limit"))

# %% [markdown]
# ## Try it: workers, start method and array size
#
# The panel builds an array of the size you choose in this kernel and runs a loader over it.
# Beside each process's swimlane it draws that process's memory; below, what all of them cost
# together against this kernel's memory limit. A setting that would not fit in the limit is not
# run. Things to try: under `spawn`, add workers one at a time: by how much does the total grow
# each time, and where on its lane is each new worker created? Under `fork`, double the array:
# which bars grow?

# %%
panel = MemoryPanel(num_workers=2, array_mib=64)
panel

# %% [markdown]
# ## Copy-on-read: when fork's sharing breaks down
#
# Reading shared memory under `fork` is free only if reading does not *write*. Every Python
# object carries a reference count, and merely touching an object (putting it in a list, adding
# it up) changes that count, which writes to the page the object lives on. The kernel then gives
# the worker a private copy of that page. So a dataset held as a **list of Python floats** gets
# copied into each forked worker as the worker reads it, while a NumPy array (one block of raw
# numbers, no per-number objects) stays shared. Below, each of 2 forked workers reads half of a
# 64 MiB list, then half of a 64 MiB array; one dataset at a time is alive.

# %%
del big, dataset, loader  # free the arrays above before building more
gc.collect()
reading = {}
if "fork" in available:
    as_list = ObjectListDataset.of_mib(64)
    reading["list of floats, fork"] = (measure_memory(as_list, start_method="fork"),
                                       measure_memory(ObjectListDataset.of_mib(1), start_method="fork"))
    del as_list
    as_array = ArrayDataset.of_mib(64)
    reading["NumPy array, fork"] = (measure_memory(as_array, start_method="fork"),
                                    measure_memory(ArrayDataset.of_mib(1), start_method="fork"))
    del as_array
    for name, (report, baseline) in reading.items():
        print(f"{name:>22}: each worker's private memory changed by "
              f"{round(private_growth(report, baseline) / 2**20) + 0:+d} MiB while reading half of {mib(report.data_bytes)}")
else:
    print("fork is not available here: copy-on-read is a fork effect, nothing to show")

# %%
if reading:
    display(plot_memory({name: report for name, (report, _) in reading.items()}))

# %% [markdown]
# Compare the workers' solid (private) parts: the list's workers hold private pages, the array's
# do not. (The kernel's bar in each panel is the kernel with that one dataset alive.) Keep large datasets in NumPy arrays or tensors (or in files that each
# worker opens), not in lists of Python objects, when you rely on `fork` to share them.
#
# ## Check yourself

# %%
nb02.QUESTIONS[0]

# %%
nb02.QUESTIONS[1]

# %%
nb02.QUESTIONS[2]

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 1. **Once, in the kernel.** Unpickling (`spawn`, `forkserver`) restores an object's attributes
#    without calling `__init__`, and `fork` copies the process as it is. Prints in `__init__` can
#    never show how many copies of the array exist.
# 2. **It maps the kernel's pages, shared with it.** RSS counts every mapped page; USS only the
#    pages no other process maps. An array in RSS but not in USS is shared, not copied.
# 3. **About 2.5 GB.** One array in the kernel and one unpickled in each of the 4 workers. Each
#    worker also holds its own Python and PyTorch (the spawn baseline above), on top of that.
# </details>
#
# ## Exercises
#
# Put your answer in `answer` before you run each cell; the check compares it with what the cell
# measured, or with what the cells above measured.
#
# **Exercise 1.** Using the spawn baseline measured above, predict the **total private memory
# (USS) of 2 spawn workers** whose dataset holds a 64 MiB array, in MiB. Then run the cell.

# %%
answer = None  # MiB
print(f"spawn baseline measured above: {mib(baselines['spawn'].worker_uss)} per worker")
two = measure_memory(ArrayDataset.of_mib(64), start_method="spawn", num_workers=2)
nb02.EXERCISES[0].check(answer, report=two)

# %% [markdown]
# <details><summary>Solution</summary>
#
# Each spawned worker holds its baseline (Python, PyTorch) plus its own unpickled 64 MiB copy:
# `2 × (baseline + 64)` MiB. The check prints the measured total.
# </details>
#
# **Exercise 2.** Under `fork`, each of 2 workers reads half of a **32 MiB list of floats**. By
# how many MiB does each worker's private memory (USS) grow? (Within a factor of 1.5 counts.)

# %%
answer = None  # MiB per worker
if "fork" in available:
    grown = private_growth(measure_memory(ObjectListDataset.of_mib(32), start_method="fork"),
                           measure_memory(ObjectListDataset.of_mib(1), start_method="fork"))
else:
    grown = None
nb02.EXERCISES[1].check(answer, growth=grown)

# %% [markdown]
# <details><summary>Solution</summary>
#
# About half of 32 MiB: a worker that touches an object writes its reference count, so every
# page holding an object it reads becomes its own, and each worker reads half of the objects.
# </details>
#
# **Exercise 3.** From the spawn run above (2 workers, 128 MiB array), how many spawn workers
# with that array would fit beside this kernel in its memory limit? Use the kernel's USS and one
# worker's USS from that run.

# %%
answer = None  # number of workers
spawned = reports["spawn"]
print(f"memory limit {mib(limit)}; kernel USS {mib(spawned.main.uss)}; one worker's USS {mib(spawned.worker_uss)}")
nb02.EXERCISES[2].check(answer, limit=limit, kernel=spawned.main.uss, worker=spawned.worker_uss)

# %% [markdown]
# <details><summary>Solution</summary>
#
# `(limit − kernel USS) // worker USS`, rounded down: each spawned worker costs its own Python and
# PyTorch plus a full copy of the array. Under `fork` the same workers would cost their small
# USS only, as long as nothing writes to the array's pages.
# </details>
#
# ## Summary
#
# - Under `fork`, workers share the kernel's array pages (in RSS, not in USS); under `spawn` and
#   `forkserver`, each worker holds its own unpickled copy (USS grows by the array's size).
# - When workers are created does not decide it: they are always created after the dataset
#   exists, and they always receive it. C3's outcome and its reason are computed above.
# - Under `fork`, a list of Python objects is copied page by page as workers read it
#   (copy-on-read); a NumPy array is not.
#
# ## Where next
#
# - Next: [03 — custom collate](03_custom_collate.ipynb): where `collate_fn` runs, and in what
#   order batches come back.
# - Back: [01 — when workers appear](01_when_workers_appear.ipynb), or
#   [00 — start here](00_start_here.ipynb) for the whole series.
# - PyTorch's documentation on [multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading)
#   (its note on copy-on-access of Python objects) and Python's on
#   [start methods](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods).
