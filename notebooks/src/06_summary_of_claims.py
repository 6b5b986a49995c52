# %% [markdown]
# # The article's claims, measured on this machine
#
# Notebooks 01 to 05 measured each claim of the article on its own. This page re-runs a small
# version of every one of those measurements in this kernel and collects the verdicts in one
# table. Each verdict is worded from what the cell above it measured, so on a Mac (`spawn`), on
# Linux with Python 3.14 (`forkserver`) or on Binder it may read differently.
#
# **You will learn** nothing new here, but you get a one-page answer to hand on, measured where
# you are, and a few exercises that read the evidence behind each verdict.
#
# **Prerequisites:** notebooks [01](01_when_workers_appear.ipynb) to
# [05](05_when_things_go_wrong.ipynb). **Time:** 10 minutes; the cells run for a few seconds each,
# longer under `spawn` and `forkserver`.

# %%
import multiprocessing
import warnings

import torch

from helpers import ArrayDataset, Kind, SleepDataset, run_experiment, stack_collate
from helpers.checks import nb06
from helpers.claims import (summary_table, verdict_c1, verdict_c2, verdict_c3, verdict_c4, verdict_c5,
                            verdict_c6, verdict_c7)
from helpers.measurements import count_processes
from helpers.lessons2 import show_source
from helpers.memory import measure_memory

# PyTorch warns "This DataLoader will create N worker processes" when N exceeds the CPUs it
# counts; the article's setting uses 4 workers on purpose (notebook 00 explains the warning).
warnings.filterwarnings("ignore", message="This DataLoader will create")
method = multiprocessing.get_start_method()
verdicts = []
print("this kernel's default start method:", method)

# %% [markdown]
# ## C1, C2, C7 — when workers appear ([01](01_when_workers_appear.ipynb))
#
# The article's first scenario: 10 items of 0.1 s, batches of 2, 4 workers, shuffled, leaving
# after 4 batches. First a plain `DataLoader`, counting this kernel's child processes (recursively)
# after each step; then the same settings traced.

# %%
article = dict(batch_size=2, num_workers=4, shuffle=True)
counts = count_processes(SleepDataset(size=10, delay=0.1), **article)
print(f"new processes after DataLoader(): {counts.after_construction}; after iter(): {counts.after_iter}")

# %%
trace = run_experiment(SleepDataset(size=10, delay=0.1), max_batches=4, **article)
verdicts += [verdict_c1(counts), verdict_c2(counts, trace), verdict_c7(counts, trace)]
batches = -(-10 // article["batch_size"])
print(f"batches handed out before the loop received its first: {trace.handed_out_before_first_batch} "
      f"(at most {article['num_workers']} workers x prefetch_factor 2 = {article['num_workers'] * 2}, "
      f"and never more than the {batches} batches there are)")

# %% [markdown]
# ## C3 — a large array and the workers' memory ([02](02_memory_and_large_arrays.ipynb))
#
# A 64 MiB array under this kernel's default start method, with 2 workers that each read half
# of it; then a 1 MiB baseline, to subtract what a worker holds without the data:

# %%
report = measure_memory(ArrayDataset.of_mib(64), start_method=method)
print(f"with the 64 MiB array: each worker holds {report.worker_uss / 2**20:.0f} MiB of its own (USS)")

# %%
baseline = measure_memory(ArrayDataset.of_mib(1), start_method=method)
verdicts.append(verdict_c3(report, baseline))
print(f"each worker's private memory (USS): {report.worker_uss / 2**20:.0f} MiB with the 64 MiB array, "
      f"{baseline.worker_uss / 2**20:.0f} MiB with the 1 MiB one ({report.start_method})")

# %% [markdown]
# ## C5 — where `collate_fn` runs ([03](03_custom_collate.ipynb))
#
# The article's third scenario: 20 items, batches of 2, **4 workers**, a custom `collate_fn` that
# stacks the items, leaving after 3 batches (items take 0.02 s here instead of 0.1 s). The
# verdict judges the claim at that setting:

# %%
collate_dataset = SleepDataset(size=20, delay=0.02, shape=())
in_workers = run_experiment(collate_dataset, batch_size=2, num_workers=4, collate_fn=stack_collate, max_batches=3)
verdicts.append(verdict_c5(in_workers))
print(verdicts[-1].evidence)

# %% [markdown]
# For context, not as a verdict (the article does not claim it): with `num_workers=0` there are
# no workers, and the main process runs `collate_fn` itself.

# %%
in_main = run_experiment(collate_dataset, batch_size=2, num_workers=0, collate_fn=stack_collate, max_batches=3)
in_main_pids = {e.pid for e in in_main.of(Kind.COLLATED)}
print(f"num_workers=0: {len(in_main.of(Kind.COLLATED))} collate calls, in "
      f"{'the main process only' if in_main_pids == {in_main.main_pid} else f'processes {sorted(in_main_pids)}'}")

# %% [markdown]
# The article's *reason* for C5 is another matter: it says that if workers were created at
# construction "there would be no way" for them to handle a custom collate function. But the
# collate function is known at construction, and PyTorch hands it to each worker as one more
# argument of its process, like the dataset:

# %%
from torch.utils.data import dataloader as dataloader_module

show_source(dataloader_module._MultiProcessingDataLoaderIter.__init__, "w = multiprocessing_context.Process(", "self._collate_fn,")

# %% [markdown]
# ## C4 and C6 — CUDA, and the cost of every epoch ([04](04_start_methods.ipynb))
#
# C6 is judged under `spawn`, which every machine offers and whose start-up is long enough to
# see: two epochs without, then with, `persistent_workers=True`. One cell per run:

# %%
epochs = dict(epochs=2, batch_size=2, num_workers=2, start_method="spawn")
fresh = run_experiment(SleepDataset(size=8, delay=0.02), **epochs)
print(f"without persistent_workers: {len(fresh.worker_pids)} worker processes over 2 epochs")

# %%
kept = run_experiment(SleepDataset(size=8, delay=0.02), persistent_workers=True, **epochs)
verdicts.append(verdict_c6(fresh, kept))
print(f"with persistent_workers=True: {len(kept.worker_pids)} worker processes over 2 epochs")

# %%
verdicts.append(verdict_c4())
if not verdicts[-1].measured:
    print("C4 was not run: no CUDA GPU is visible to this kernel. What a forked worker would meet is "
          "this guard in the installed PyTorch:\n")
    show_source(torch.cuda._lazy_init, "if _is_in_bad_fork():", "multiprocessing, you must use")
else:
    print(verdicts[-1].evidence)

# %% [markdown]
# ## The table

# %%
summary_table(verdicts)

# %% [markdown]
# ## Check yourself

# %%
nb06.QUESTIONS[0]

# %%
nb06.QUESTIONS[1]

# %% [markdown]
# ## Exercises
#
# **1.** C2: how many batches had `iter()` handed out before the loop received its first? Work it
# out from the settings (`num_workers`, the default `prefetch_factor` of 2, and the number of
# batches), then check it against the trace.

# %%
answer = None  # a number of batches
nb06.EXERCISES[0].check(answer, trace=trace)

# %% [markdown]
# <details><summary>Solution</summary>
#
# `answer = min(4 * 2, 10 // 2)`, which is 5: each worker is given up to `prefetch_factor`
# batches, but there are only 5 batches in all. (`trace.handed_out_before_first_batch` counts
# them in the trace.)
# </details>
#
# **2.** C3: how many MiB of private memory (USS) did each worker hold for the 64 MiB array, over
# and above the 1 MiB baseline? Use `report.worker_uss` and `baseline.worker_uss` (bytes).

# %%
answer = None  # MiB
nb06.EXERCISES[1].check(answer, report=report, baseline=baseline)

# %% [markdown]
# <details><summary>Solution</summary>
#
# `answer = (report.worker_uss - baseline.worker_uss) / 2**20`. Close to 0 under `fork` (the pages
# are shared until written), close to the whole array under `spawn` and `forkserver` (each worker
# unpickles its own copy).
# </details>
#
# **3.** C5: in how many different worker processes did `collate_fn` run, in the 4-worker run
# (`in_workers`)?

# %%
answer = None  # a number of processes
nb06.EXERCISES[2].check(answer, trace=in_workers)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# answer = len({e.pid for e in in_workers.of(Kind.COLLATED) if e.pid != in_workers.main_pid})
# ```
# Every worker that was handed a batch built it whole, collate included.
# </details>
#
# ## Summary
#
# - Constructing a `DataLoader` starts no process (C1), but `iter()` starts **all** workers at
#   once, not "as needed" (C2), and hands them up to `num_workers × prefetch_factor` batches,
#   never more than there are, before your loop asks for one.
# - Interleaved prints show workers loading whole batches in parallel, not workers being created
#   (C7).
# - What a worker copies of your data depends on the start method, not on when it starts (C3;
#   notebook 02 measures all three).
# - `collate_fn` runs in the workers when there are workers (C5), because it is one of their
#   arguments, not because they start late.
# - Every epoch starts its workers again unless `persistent_workers=True` (C6), and only the
#   start method keeps CUDA out of forked workers (C4).
#
# ## Read more
#
# - PyTorch: [Multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading)
#   and [Platform-specific behaviors](https://pytorch.org/docs/stable/data.html#platform-specific-behaviors).
# - Python: [Contexts and start methods](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods)
#   and [Safe importing of main module](https://docs.python.org/3/library/multiprocessing.html#the-spawn-and-forkserver-start-methods).
#
# **Next:** beyond the article, [07 — how many workers](07_how_many_workers.ipynb): how many to
# use, and what each costs. **Back to** [00 — start here](00_start_here.ipynb), or move the
# sliders in any notebook.
