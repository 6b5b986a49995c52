# %% [markdown]
# # Summary: the article's claims, measured on this machine
#
# Each claim of the article was settled by a measurement in notebooks 01–04. This page re-runs a
# small version of every one of those measurements in this kernel and collects the verdicts in one
# table. Nothing here is typed in: each verdict is worded from what the cell above it measured, so
# on a Mac (`spawn`), on Linux with Python 3.14 (`forkserver`) or on Binder it may read differently.
#
# **You will learn** nothing new, but you get a one-page answer to hand on, measured where you are.
#
# **Prerequisites:** notebooks 01–04. **Time:** 5 minutes (the cells compute for a few seconds under `fork`, up to about half a
# minute under `spawn`).

# %%
import multiprocessing
import warnings

from helpers import ArrayDataset, SleepDataset, run_experiment, stack_collate
from helpers.claims import (summary_table, verdict_c1, verdict_c2, verdict_c3, verdict_c4, verdict_c5, verdict_c6,
                            verdict_c7)
from helpers.measurements import count_processes
from helpers.memory import measure_memory

warnings.filterwarnings("ignore", message="This DataLoader will create")  # see notebook 01
method = multiprocessing.get_start_method()
verdicts = []
print("default start method here:", method)

# %% [markdown]
# ## C1, C2, C7 — when workers appear (notebook 01)

# %%
article = dict(batch_size=2, num_workers=4, shuffle=True)
counts = count_processes(SleepDataset(size=10, delay=0.1), **article)
trace = run_experiment(SleepDataset(size=10, delay=0.1), max_batches=4, **article)
verdicts += [verdict_c1(counts), verdict_c2(counts, trace), verdict_c7(counts, trace)]
print(f"processes after DataLoader(): {counts.after_construction}; after iter(): {counts.after_iter}")

# %% [markdown]
# ## C3 — a large array and the workers' memory (notebook 02)
#
# Under this kernel's default start method, with a 64 MiB array and a 1 MiB baseline:

# %%
report = measure_memory(ArrayDataset.of_mib(64), start_method=method)
baseline = measure_memory(ArrayDataset.of_mib(1), start_method=method)
verdicts.append(verdict_c3(report, baseline))
print(report)

# %% [markdown]
# ## C5 — where `collate_fn` runs (notebook 03)

# %%
collate_dataset = SleepDataset(size=8, delay=0.02, shape=())
in_main = run_experiment(collate_dataset, batch_size=2, num_workers=0, collate_fn=stack_collate)
in_workers = run_experiment(collate_dataset, batch_size=2, num_workers=2, collate_fn=stack_collate)
verdicts.append(verdict_c5(in_workers, without_workers=in_main))
print(verdicts[-1].evidence)

# %% [markdown]
# ## C4 and C6 — CUDA, and the cost of every epoch (notebook 04)

# %%
epochs = dict(epochs=2, batch_size=2, num_workers=2)
fresh = run_experiment(SleepDataset(size=8, delay=0.02), **epochs)
kept = run_experiment(SleepDataset(size=8, delay=0.02), persistent_workers=True, **epochs)
verdicts += [verdict_c4(), verdict_c6(fresh, kept)]
print(f"C4: {verdicts[-2].outcome}; C6: {verdicts[-1].outcome}")

# %% [markdown]
# ## The table

# %%
summary_table(verdicts)

# %% [markdown]
# ## Check yourself
#
# A colleague on a Mac reads this table on your Linux laptop and says "so workers never copy my
# array". Which row should make them run this notebook on their own machine first?
#
# <details><summary>Answer</summary>
#
# C3: its verdict depends on the start method. With `fork` the workers share the array's pages;
# with `spawn`, the Mac default, every worker holds its own copy (notebook 02 measures both).
# </details>
#
# ## Summary
#
# - Constructing a `DataLoader` starts no process, but `iter()` starts all workers at once,
#   not "as needed", and hands out `num_workers × prefetch_factor` batches.
# - What workers share with the kernel depends on the start method, not on when they start.
# - `collate_fn` runs in the workers only when there are workers.
# - Every epoch starts its workers again unless `persistent_workers=True`.
#
# **Next:** `05_when_things_go_wrong.ipynb` if you have not read it, or go back to any notebook
# and move the sliders.
