# %% [markdown]
# # Memory: what do workers share with your kernel?
#
# The article's second scenario is a dataset that builds a large NumPy array when it is created.
# It claims that because workers are created lazily, they do not inherit duplicated copies of that
# array (claim C3). Here we **measure each worker's memory** under every start method your machine
# offers, and find what really decides whether a worker holds a copy.
#
# **You will learn** to read RSS, USS and PSS; what `fork`, `spawn` and `forkserver` do with a
# dataset's array; and why a Python list of objects behaves differently from a NumPy array
# ("copy-on-read").
#
# **Prerequisites:** `01_when_workers_appear.ipynb`. **Time:** 15 minutes. The largest experiment
# here uses about 1 GB of memory in all, within Binder's 2 GB.

# %%
# %matplotlib inline
import multiprocessing

from helpers import ArrayDataset
from helpers.claims import verdict_c3
from helpers.datasets import ObjectListDataset
from helpers.measurements import private_growth
from helpers.memory import measure_memory
from helpers.plotting import plot_memory

available = multiprocessing.get_all_start_methods()
print("start methods on this machine:", available, "- default:", multiprocessing.get_start_method())

# %% [markdown]
# ## Three ways to count a process's memory
#
# psutil's `memory_full_info()` reports, for one process:
#
# - **RSS**: every page the process has mapped, including pages it shares with other processes.
#   Adding up RSS over processes counts shared pages many times.
# - **USS** (unique set size): pages only this process holds, which the system would get back if
#   it exited. A private **copy** of an array shows up here.
# - **PSS** (Linux only): its own pages plus a fair share of each shared page (a page shared by 3
#   processes counts 1/3 in each). PSS adds up to what the processes cost the machine together.
#
# ## The article's scenario, measured
#
# `ArrayDataset.of_mib(128)` builds a 128 MiB NumPy array in this kernel, before any `DataLoader`
# exists. Each item reads one block of rows, so one pass over the dataset reads the whole array.
# `measure_memory` runs one epoch with 2 persistent workers (together they read every row), then
# measures the kernel and each worker while they are still alive. A second run with a 1 MiB array
# is the baseline: the difference is what the *data* costs each worker.

# %%
dataset = ArrayDataset.of_mib(128)
small = ArrayDataset.of_mib(1)
methods = [m for m in ("fork", "spawn", "forkserver") if m in available]
reports, baselines = {}, {}  # start method -> MemoryReport
print(dataset, "|", small, "| start methods to measure:", methods)

# %% [markdown]
# First the baselines: the same runs with the 1 MiB array (`spawn` and `forkserver` workers take a
# second or two to start, as notebook 04 measures).

# %%
for method in methods:
    baselines[method] = measure_memory(small, start_method=method)
    print(f"{method:>10}: median worker USS {baselines[method].worker_uss / 2**20:.0f} MiB with the 1 MiB array")

# %%
if "fork" in methods:
    reports["fork"] = measure_memory(dataset, start_method="fork")
    print(reports["fork"])
else:
    print("fork is not available on this machine")

# %%
reports["spawn"] = measure_memory(dataset, start_method="spawn")
print(reports["spawn"])

# %%
if "forkserver" in methods:
    reports["forkserver"] = measure_memory(dataset, start_method="forkserver")
    print(reports["forkserver"])
else:
    print("forkserver is not available on this machine")

# %% [markdown]
# The chart shows each process as a bar: its private memory (USS) at the bottom, the pages it
# shares with other processes (RSS − USS) hatched above, a black tick at its PSS, and a dashed
# line at the array's size.

# %%
plot_memory(reports)

# %%
for method, report in reports.items():
    growth = private_growth(report, baselines[method]) / 2**20
    print(f"{method:>10}: the 128 MiB array added {growth:6.0f} MiB of private memory to each worker")

# %% [markdown]
# ## Claim C3
#
# The verdict below is worded from the numbers above, one per start method.

# %%
for method, report in reports.items():
    display(verdict_c3(report, baselines[method]))

# %% [markdown]
# What decides whether a worker holds a copy is **how the worker is made**, not when:
#
# - `fork` copies the kernel's page tables, not its pages: the worker sees the very pages that
#   hold the array, shared until someone writes to them (copy-on-write). They appear in the
#   worker's RSS but not in its USS.
# - `spawn` and `forkserver` start a fresh interpreter and send it the dataset **pickled**; each
#   worker unpickles its own full copy.
#
# The dataset has to exist before `DataLoader(dataset, ...)` is even called, so creating workers
# later than that can never stop them from receiving it. Add up the cost for the machine:

# %%
for method, report in reports.items():
    total = report.total_pss
    print(f"{method:>10}: kernel + 2 workers cost {'n/a (no PSS on this OS)' if total is None else f'{total / 2**20:.0f} MiB'}")

# %% [markdown]
# ## Copy-on-read: when fork's sharing breaks down
#
# Reading shared memory under `fork` is free only if reading does not *write*. Every Python
# object carries a reference count, and merely touching an object (putting it in a list, adding
# it up) changes that count, which writes to the page the object lives on. The kernel then gives
# the worker a private copy of that page. So a dataset held as a **list of Python floats** gets
# copied into each forked worker as the worker reads it, while a NumPy array (one block of raw
# numbers, no per-number objects) stays shared.
#
# Both datasets below hold about 64 MiB; each worker reads half of the items.

# %%
if "fork" in available:
    as_list, as_array = ObjectListDataset.of_mib(64), ArrayDataset.of_mib(64)
    reading = {
        "list of floats, fork": (measure_memory(as_list, start_method="fork"),
                                 measure_memory(ObjectListDataset.of_mib(1), start_method="fork")),
        "NumPy array, fork": (measure_memory(as_array, start_method="fork"),
                              measure_memory(ArrayDataset.of_mib(1), start_method="fork")),
    }
    for name, (report, baseline) in reading.items():
        print(f"{name:>22}: each worker's private memory grew by "
              f"{private_growth(report, baseline) / 2**20:5.1f} MiB while reading half of {report.data_bytes / 2**20:.0f} MiB")
else:
    reading = {}
    print("fork is not available here: copy-on-read is a fork effect, nothing to show")

# %%
if reading:
    display(plot_memory({name: report for name, (report, _) in reading.items()}))

# %% [markdown]
# Keep large datasets in NumPy arrays or tensors (or in files read by each worker), not in lists
# of Python objects, when you rely on `fork` to share them.
#
# ## Check yourself
#
# Your colleague's dataset keeps a 500 MB NumPy array and runs on a Mac (default `spawn`) with
# `num_workers=4`. Roughly how much memory do the array's copies take, and would creating the
# workers even later help?
#
# <details><summary>Answer</summary>
#
# About 5 × 500 MB = 2.5 GB: one in the kernel and one unpickled in each of the 4 workers, as the
# spawn measurement above shows (each worker's USS grew by the array's size). When the workers
# are created does not matter; what helps is not putting the array into the pickled dataset (open
# a memory-mapped file in each worker instead, e.g. `np.load(..., mmap_mode="r")`) or using `fork`.
# </details>
#
# ## Summary
#
# - Under `fork`, workers share the kernel's array pages (in RSS, not in USS); under `spawn` and
#   `forkserver`, each worker holds its own unpickled copy (USS grows by the array's size).
# - C3's verdict above is computed from these numbers: lazy creation is not what decides it.
# - Under `fork`, a list of Python objects is copied page by page as workers read it
#   (copy-on-read); a NumPy array is not.
#
# **Next:** `03_custom_collate.ipynb` — where `collate_fn` runs, and in what order batches return.
