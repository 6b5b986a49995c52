# %% [markdown]
# # When do DataLoader workers appear?
#
# A popular article explains that `DataLoader` creates its worker processes lazily, "only as
# needed" while the loop runs, and that the interleaved print-out of workers and main loop proves
# it. Here we rebuild its first scenario — a dataset that sleeps 0.1 s per item — and **measure**
# instead of reading prints.
#
# **You will learn** when worker processes are created, how many batches are requested before
# your loop asks for one (`prefetch_factor`), and what interleaved output really reflects.
#
# **Prerequisites:** `00_start_here.ipynb`. **Time:** 10 minutes.

# %%
# %matplotlib inline
from helpers import SleepDataset, SwimlanePanel, plot_swimlanes, trace_loader
from helpers.claims import verdict_c1, verdict_c2, verdict_c7
from helpers.measurements import count_processes

# %% [markdown]
# ## The article's scenario, traced
#
# Ten items, each taking 0.1 s to load; batches of 2; 4 workers; shuffled; and the loop leaves
# after its fourth batch. `trace_loader` builds a real `DataLoader` with these settings and records
# every step without changing your dataset or the batches you get.

# %%
dataset = SleepDataset(size=10, delay=0.1)
with trace_loader(dataset, batch_size=2, num_workers=4, shuffle=True) as loader:
    for batch_idx, batch in enumerate(loader):
        print(f"main loop received batch {batch_idx}: items {batch[:, 0, 0, 0].int().tolist()}")
        if batch_idx > 2:
            break
trace = loader.trace
print(trace.summary())

# %% [markdown]
# If PyTorch warned that it suggests fewer than 4 workers, your machine has fewer CPUs than that
# (see notebook 00). Our items *sleep* rather than compute, so extra workers still help here.

# %%
plot_swimlanes(trace)

# %% [markdown]
# Look at where the green stars (each worker's first moment) fall: after the `iter()` line, and
# close together. Workers are started *by* `iter()`, not by `DataLoader(...)`. But are they
# started one by one as batches are needed? Let us count processes.
#
# ## Claims C1 and C2: counting processes
#
# The next cell builds a plain, untraced `DataLoader` with the same settings and counts this
# kernel's child processes (recursively: under `forkserver` the workers are grandchildren)
# right after `DataLoader(...)` returns, right after `iter()` returns, after the first batch and
# after closing.

# %%
counts = count_processes(SleepDataset(size=10, delay=0.1), batch_size=2, num_workers=4, shuffle=True)
counts

# %%
verdict_c1(counts)

# %%
verdict_c2(counts, trace)

# %% [markdown]
# So the article is right that *constructing* a `DataLoader` starts nothing (C1), but wrong about
# *how* workers appear (C2): `iter()` starts all `num_workers` processes at once and immediately
# hands each of them `prefetch_factor` batches of indices (the blue triangles in the main lane),
# before your loop has asked for anything.
#
# ## Claim C7: what interleaved output shows
#
# Here is the same run as a log, in the order things finished, like the article's prints but with
# exact times and PIDs:

# %%
print(trace.log_lines())

# %%
verdict_c7(counts, trace)

# %% [markdown]
# Output from workers interleaves because several workers load items **at the same time**, each
# building a whole batch, while the main loop receives batches in order. It says nothing about
# when the processes were created: they all existed before the first item was loaded.
#
# ## Try it: sliders
#
# Change `num_workers`, `batch_size` and `prefetch_factor`. Count the blue triangles before the
# first black one, and watch the green stars: do they ever spread out over the run?

# %%
panel = SwimlanePanel(SleepDataset(size=16, delay=0.05), num_workers=4, batch_size=2)
panel

# %% [markdown]
# ## Check yourself
#
# With `num_workers=3`, `prefetch_factor=2` and a dataset of 16 items in batches of 2, how many
# batches are handed out before the loop receives its first one? Check with the sliders.
#
# <details><summary>Answer</summary>
#
# Six: `iter()` hands each of the 3 workers `prefetch_factor = 2` batches at once (at most the
# number of batches there are, here 8). After that, each batch the loop receives frees a slot,
# and one more batch is handed out.
# </details>
#
# ## Summary
#
# - `DataLoader(...)` starts no process (C1 holds, measured above).
# - `iter()` starts **all** workers at once and hands out `num_workers × prefetch_factor` batches
#   before the first `next()` (C2 does not hold).
# - Interleaved prints reflect parallel workers each building whole batches, not on-demand
#   creation (C7 does not hold).
#
# **Next:** what workers share with your kernel's memory, and where `collate_fn` runs.
