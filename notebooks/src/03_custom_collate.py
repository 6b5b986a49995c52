# %% [markdown]
# # Where does `collate_fn` run, and in what order do batches come back?
#
# The article's third scenario passes a custom `collate_fn` that prints its process ID, and says
# that collate runs inside the worker processes (claim C5). We trace the same setup and read the
# answer off the swimlanes, for `num_workers=0` and for workers, then look at two things the
# prints hide: which worker builds which batch, and how `in_order` decides the order you receive
# them in.
#
# **You will learn** which process runs `collate_fn`, that one worker builds a whole batch, what
# `in_order=False` changes, and where `pin_memory` does its work.
#
# **Prerequisites:** `01_when_workers_appear.ipynb`. **Time:** 10 minutes.

# %%
# %matplotlib inline
import inspect
import warnings

import torch
from helpers import Kind, SleepDataset, plot_swimlanes, run_experiment, stack_collate
from helpers.claims import verdict_c5
from helpers.measurements import threads_added_by_pin_memory
from helpers.plotting import compare_swimlanes

# PyTorch warns when num_workers exceeds the CPU count; notebook 01 explains why that is fine here.
warnings.filterwarnings("ignore", message="This DataLoader will create")

# %% [markdown]
# ## The article's scenario
#
# Twenty items that each take 0.05 s and are a single number (their index); batches of 2; our
# `stack_collate` stacks the items into one tensor, as the article's collate does; the loop leaves
# after 3 batches. First with no workers at all:

# %%
dataset = SleepDataset(size=20, delay=0.05, shape=())
no_workers = run_experiment(dataset, batch_size=2, num_workers=0, collate_fn=stack_collate, max_batches=3)
plot_swimlanes(no_workers)

# %%
verdict_c5(no_workers)

# %% [markdown]
# One lane only: the main process loads the items *and* collates them (the orange bars), between
# your loop's requests. Now with 4 workers, as in the article:

# %%
with_workers = run_experiment(dataset, batch_size=2, num_workers=4, collate_fn=stack_collate, max_batches=3)
plot_swimlanes(with_workers)

# %%
verdict_c5(with_workers, without_workers=no_workers)

# %% [markdown]
# So C5 holds only when there are workers: `collate_fn` runs wherever the items were loaded.
#
# ## One worker builds a whole batch
#
# The DataLoader never splits a batch between workers: it hands each worker the *list of indices*
# of one batch; the worker loads all of them and collates them. The trace shows it:

# %%
for number, worker_id, pid, items in with_workers.batches():
    print(f"batch {number}: items {items} loaded and collated by worker {worker_id} (pid {pid})")

# %% [markdown]
# ## `in_order`: who waits for whom
#
# Workers take batches in turns (batch 0 to worker 0, batch 1 to worker 1, …). With the default
# `in_order=True` the loop receives them strictly by number, so one slow batch holds back every
# batch behind it, even those already finished. Below, items 0 and 1 (batch 0) take 6 times
# longer than the rest. Compare with `in_order=False`:

# %%
slow_start = SleepDataset(size=12, delay=0.04, shape=(), slow_items=(0, 1), slow_factor=6)
ordered = run_experiment(slow_start, batch_size=2, num_workers=3, in_order=True)
unordered = run_experiment(slow_start, batch_size=2, num_workers=3, in_order=False)
compare_swimlanes({"in_order=True (default)": ordered, "in_order=False": unordered})

# %%
for name, trace in (("in_order=True", ordered), ("in_order=False", unordered)):
    received = trace.of(Kind.BATCH_RECEIVED)
    first = received[0]
    print(f"{name:>15}: batches received in the order {[e.index for e in received]}; "
          f"first batch after {first.end:.2f} s")

# %% [markdown]
# With `in_order=False` the loop gets whatever batch is ready first: the slow batch 0 arrives late
# instead of holding the others back. The price: your batches no longer come in sampler order.
#
# ## `pin_memory`: a thread of the main process
#
# `pin_memory=True` copies each batch into page-locked memory so it can move to a GPU faster. That
# copy does not happen in the workers: the DataLoader starts a **thread in the main process** for
# it. Here is the place in your installed PyTorch where that thread is created:

# %%
source = inspect.getsource(torch.utils.data.dataloader._MultiProcessingDataLoaderIter)
print("\n".join(line for line in source.splitlines() if "pin_memory_thread" in line and "=" in line))

# %%
accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
new_threads = threads_added_by_pin_memory(SleepDataset(size=4, delay=0.01))
print(f"accelerator: {accelerator}; threads added by pin_memory=True: {new_threads or 'none'}")
if accelerator is None:
    print("Without an accelerator PyTorch turns pin_memory off (its warning says so), so no thread starts here.")

# %% [markdown]
# ## Check yourself
#
# Your `collate_fn` pads sequences and takes 30 ms per batch; `num_workers=0`. Which lane carries
# those 30 ms, and what changes when you set `num_workers=2`?
#
# <details><summary>Answer</summary>
#
# With `num_workers=0` the main lane does: your training loop waits 30 ms per batch for collate
# (as in the first chart above). With workers, each worker collates the batches it loaded, in
# parallel with your loop, and the main process only receives finished batches.
# </details>
#
# ## Summary
#
# - `collate_fn` runs in whichever process loaded the batch's items: the main process with
#   `num_workers=0`, a worker otherwise (C5 holds only with workers, measured above).
# - Each batch is loaded and collated whole by one worker.
# - `in_order=True` returns batches by number, so a slow batch delays those behind it;
#   `in_order=False` returns them as they finish.
# - `pin_memory` runs in a thread of the main process, and only where an accelerator exists.
#
# **Next:** `04_start_methods.ipynb` — what `fork`, `spawn` and `forkserver` cost.
