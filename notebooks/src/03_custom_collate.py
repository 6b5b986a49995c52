# %% [markdown]
# # Where does `collate_fn` run, and in what order do batches come back?
#
# `collate_fn` turns a list of items into one batch: stacking tensors, padding sequences,
# building masks. If yours is slow, does it slow your training loop down, or does it run
# somewhere else? The article this series checks gives a custom `collate_fn` that prints its
# process ID and says it runs inside the worker processes (claim C5). It adds a reason: had the
# workers been created when the `DataLoader` was built, they would have had no way to use a
# custom collate function.
#
# This notebook runs that scenario with prints, then traces it, checks the outcome and the
# reason separately, and looks at what the prints hide: who builds which batch, what collate
# costs and where, and the order in which you receive the batches.
#
# **You will learn** which process runs `collate_fn` and which line of PyTorch decides it; that
# one worker builds each batch whole; what `in_order=False` changes; and where `pin_memory` does
# its work.
#
# **Prerequisites:** [01 — when workers appear](01_when_workers_appear.ipynb). **Time:** 15
# minutes.

# %%
# %matplotlib inline
import os
import threading
import warnings

import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.fetch import _MapDatasetFetcher
from torch.utils.data.dataloader import _BaseDataLoaderIter, _MultiProcessingDataLoaderIter

from helpers import Kind, SleepDataset, descendants, plot_swimlanes, run_experiment, stack_collate
from helpers.checks import nb03
from helpers.claims import verdict_c5
from helpers.lessons import LoaderPanel, compare_after_start, plot_after_start, show_source
from helpers.scenarios import SlowCollate, pid_collate

# PyTorch warns when num_workers exceeds this kernel's CPUs; our items sleep, not compute, so that is fine here.
warnings.filterwarnings("ignore", message="This DataLoader will create")

# %% [markdown]
# ## The article's scenario, with prints
#
# Twenty items; item `i` takes 0.1 s and is the number `i`. Batches of 2, 4 workers, and
# `pid_collate` (in `helpers/scenarios.py`), which prints the process it runs in and stacks the
# items. The loop leaves after 3 batches. A plain `DataLoader`.
#
# **Predict before you run it.**
# 1. Which process IDs will the collate lines show?
# 2. The loop takes 3 batches. How many collate lines will you see?

# %%
dataset = SleepDataset(size=20, delay=0.1, shape=())
print(f"this kernel, the main process, is process {os.getpid()}", flush=True)
loader = DataLoader(dataset, batch_size=2, num_workers=4, collate_fn=pid_collate)
for batch_idx, batch in enumerate(loader):
    print(f"main loop received batch {batch_idx}: {batch.tolist()}", flush=True)
    if batch_idx == 2:
        break
print("left the loop", flush=True)

# %% [markdown]
# ## The same scenario, traced (claim C5)
#
# Now with the tracer, and `stack_collate` (the same stacking, without the print). Each orange
# bar on a worker's lane is one call of `collate_fn`, labelled with the number of the batch it
# built; a batch built but never received is marked "unused". The chart starts when the first
# worker was ready: their start-up was notebook 01's subject.

# %%
with_workers = run_experiment(dataset, batch_size=2, num_workers=4, collate_fn=stack_collate, max_batches=3)
plot_after_start(with_workers)

# %%
for number, worker_id, pid, items in sorted(with_workers.batches()):
    print(f"batch {number}: items {items} loaded and collated by worker {worker_id} (pid {pid})")
wasted = with_workers.wasted_batches
print(f"collate ran {len(with_workers.of(Kind.COLLATED))} times for the {with_workers.batches_received} batches "
      f"the loop received; built but never received: {wasted}"
      + (" (handed out ahead by iter(), as in notebook 01)" if wasted else ""))

# %%
verdict_c5(with_workers)

# %% [markdown]
# Each batch was loaded *and* collated by one worker (the list above): the main process hands a
# worker the whole list of indices of a batch, never single items.
#
# Why in the workers? Collate runs wherever a batch's items are fetched. A worker's loop calls
# its fetcher, and the fetcher ends by calling your `collate_fn` on the items it just loaded:

# %%
show_source(_MapDatasetFetcher.fetch, "def fetch", "return self.collate_fn(data)")

# %% [markdown]
# ## And with `num_workers=0`?
#
# The article does not say, but it is the setting many people debug with. **Predict:** which
# lane will show the collates?

# %%
no_workers = run_experiment(dataset, batch_size=2, num_workers=0, collate_fn=stack_collate, max_batches=3)
plot_swimlanes(no_workers)

# %%
in_main = [e for e in no_workers.of(Kind.COLLATED) if e.pid == no_workers.main_pid]
print(f"num_workers=0: {len(in_main)} of {len(no_workers.of(Kind.COLLATED))} collate calls ran in the main "
      f"process (pid {no_workers.main_pid}), and no worker process was started "
      f"({len(no_workers.worker_pids)} worker lanes)")

# %% [markdown]
# Without workers the main process's own iterator fetches the items and collates them, inside
# your loop's `next()`: one lane, items and collates one after another, and a slow
# `collate_fn` slows every step of your loop. This is context, not a verdict on C5: the article
# spoke of a loader with workers.
#
# ## The article's reason
#
# The article argues that workers created at construction could not have handled a custom
# `collate_fn`. Where is `collate_fn` right after `DataLoader(...)` returns, before any worker
# exists?

# %%
before = descendants()
built = DataLoader(dataset, batch_size=2, num_workers=4, collate_fn=pid_collate)
stored, alive = built.collate_fn is pid_collate, len(descendants() - before)
print(f"right after DataLoader(...): loader.collate_fn is pid_collate: {stored}; worker processes: {alive}")

# %% [markdown]
# The loader holds it from construction on, and the loop in `iter()` that creates each worker
# (notebook 01) passes it in the new process's arguments:

# %%
show_source(_MultiProcessingDataLoaderIter.__init__, "w = multiprocessing_context.Process(", "self._collate_fn,")

# %% [markdown]
# A worker created at construction would have received `self._collate_fn` in exactly the same
# way. The article's outcome and its reason, checked separately:

# %%
collates = with_workers.of(Kind.COLLATED)
in_workers = sum(e.pid != with_workers.main_pid for e in collates)
print(f"outcome: with 4 workers, {in_workers} of {len(collates)} collate calls ran in worker processes: "
      + ("the article's outcome holds" if collates and in_workers == len(collates) else "the article's outcome does not hold"))
print(f"reason:  right after DataLoader(...), loader.collate_fn is pid_collate: {stored}, with {alive} worker "
      "processes alive; each worker receives it as a Process argument whenever it is created: "
      + ("the article's reason does not hold" if stored else "(the loader did not hold it: look again)"))
#
# ## `in_order`: who waits for whom
#
# Batches are handed to workers in turn, and with the default `in_order=True` the loop receives
# them strictly by number, so one slow batch holds back every batch behind it, even those
# already built. Below, items 0 and 1 (batch 0) take 6 times longer than the rest, with 3
# workers. **Predict:** with `in_order=False`, which batch arrives first? (The chart starts when
# the first worker was ready: how long the workers take to start is notebook 04's subject.)

# %%
slow_start = SleepDataset(size=12, delay=0.04, shape=(), slow_items=(0, 1), slow_factor=6)
ordered = run_experiment(slow_start, batch_size=2, num_workers=3, in_order=True)
unordered = run_experiment(slow_start, batch_size=2, num_workers=3, in_order=False)
compare_after_start({"in_order=True (the default)": ordered, "in_order=False": unordered})

# %%
for name, trace in (("in_order=True", ordered), ("in_order=False", unordered)):
    received = trace.of(Kind.BATCH_RECEIVED)
    print(f"{name:>15}: batches received in the order {[e.index for e in received]}; "
          f"first batch after {received[0].end:.2f} s, last after {received[-1].end:.2f} s")

# %%
first_in = [e.index for e in unordered.of(Kind.BATCH_RECEIVED)]
slow_done = next(e.end for e in unordered.of(Kind.COLLATED) if e.index == 0)
others_ready = sorted(e.start for e in unordered.of(Kind.WORKER_READY))[1:]
if first_in[0] != 0:
    print(f"With in_order=False the loop did not wait for the slow batch 0: it took {first_in.index(0)} "
          f"other batches first. The price: the batches no longer came in sampler order.")
else:
    print(f"Batch 0 still came first here: it was built at t = {slow_done:.2f} s, and the other workers were "
          f"ready only at t = {', '.join(f'{t:.2f}' for t in others_ready)} s, so no other batch was ready "
          f"before it. Try the panel below with a longer collate, or run this cell again.")

# %% [markdown]
# The place in PyTorch that decides: when a batch arrives that is not the next in line, it is
# returned at once with `in_order=False`, or stored until its turn:

# %%
show_source(_MultiProcessingDataLoaderIter._next_data, "if idx != self._rcvd_idx:", "self._rcvd_idx += 1", more=1)

# %% [markdown]
# ## `pin_memory`: a thread of the main process
#
# `pin_memory=True` copies each batch into page-locked memory so it can move to a GPU faster.
# That copy does not happen in the workers: PyTorch starts a **thread in the main process** for
# it, and only where an accelerator exists. The next cell runs a plain loader with
# `pin_memory=True` and lists this kernel's threads while it runs.

# %%
accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
loader = DataLoader(SleepDataset(size=8, delay=0.01), batch_size=2, num_workers=2, pin_memory=True)
iterator = iter(loader)
next(iterator)
pinning = [t.name for t in threading.enumerate() if "pin_memory" in t.name]
del iterator
print(f"accelerator: {accelerator}; threads running _pin_memory_loop: {pinning or 'none'}")

# %% [markdown]
# Where no accelerator exists, PyTorch warns and turns pinning off:

# %%
show_source(_BaseDataLoaderIter.__init__, "if loader.pin_memory and not torch.accelerator.is_available():",
            "self._pin_memory = loader.pin_memory")

# %% [markdown]
# and where one does, the iterator starts the thread, right after the workers:

# %%
show_source(_MultiProcessingDataLoaderIter.__init__, "if self._pin_memory:", "pin_memory_thread.start()")

# %% [markdown]
# ## Try it: collate cost, batch size, `in_order`, workers
#
# The panel runs a loader over 12 items (0.05 s each) with a `collate_fn` that takes the time you
# set (`SlowCollate`, which sleeps, as waiting for a disk or a decoder would), and draws each run
# from its first worker ready on. Its status line says how often collate ran in the main process
# and in workers, and how long the main process spent in it. Things to try: set `num_workers` to 0 and raise the collate cost: where do the
# orange bars go, and what happens to the last event's time? With workers, untick `in_order`.

# %%
panel = LoaderPanel(SleepDataset(size=12, delay=0.05, shape=()), num_workers=2, batch_size=2, collate_ms=20,
                    in_order=True, after_start=True)
panel

# %% [markdown]
# ## Check yourself

# %%
nb03.QUESTIONS[0]

# %%
nb03.QUESTIONS[1]

# %%
nb03.QUESTIONS[2]

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 1. **The main process, between the loop's requests**: the `num_workers=0` run above has one
#    lane, and its collates are on it.
# 2. **No**: the traced run lists, for each batch, the one worker that loaded and collated it.
# 3. **`collate_fn` is stored at construction and passed to each worker as a `Process`
#    argument**, as the source excerpt shows.
# </details>
#
# ## Exercises
#
# Put your answer in `answer` before you run each cell; the check compares it with what the cell
# measured.
#
# **Exercise 1.** 12 items in batches of 2, **2** workers, `in_order=False`, and items 4 and 5
# (batch 2) take 6 times longer. At which position, counting from 0, does the loop receive
# batch 2?

# %%
answer = None  # a position: 0, 1, 2, ...
slow_middle = SleepDataset(size=12, delay=0.04, shape=(), slow_items=(4, 5), slow_factor=6)
run = run_experiment(slow_middle, batch_size=2, num_workers=2, in_order=False)
nb03.EXERCISES[0].check(answer, trace=run)

# %% [markdown]
# <details><summary>Solution</summary>
#
# Worker 0 gets batches 0 and 2, worker 1 batches 1 and 3. Batch 2 arrives when worker 0 has
# built it, and every batch worker 1 delivers in the meantime comes before it; the batches queued
# behind it on worker 0 wait with it. How many places that makes depends on when each worker
# started and how slow batch 2 is: the check prints your run's order, and
# `plot_swimlanes(run)` shows why.
# </details>
#
# **Exercise 2.** A `collate_fn` that costs 30 ms a batch, 12 items in batches of 2 (6 batches).
# How many seconds of collate run in the main process with `num_workers=0`, and with
# `num_workers=2`? Answer with a pair, like `(0.5, 0.5)`.

# %%
answer = None  # (seconds with num_workers=0, seconds with num_workers=2)
items = SleepDataset(size=12, delay=0.01, shape=())
alone = run_experiment(items, batch_size=2, num_workers=0, collate_fn=SlowCollate(30))
helped = run_experiment(items, batch_size=2, num_workers=2, collate_fn=SlowCollate(30))
nb03.EXERCISES[1].check(answer, without_workers=alone, with_workers=helped)

# %% [markdown]
# <details><summary>Solution</summary>
#
# About `6 × 0.03 = 0.18` s with `num_workers=0`, all of it inside your loop's `next()` calls;
# and 0 s with workers, where each worker collates the batches it loaded.
# </details>
#
# **Exercise 3.** 2 workers; each item takes 20 ms and `collate_fn` 60 ms per batch of 2. Once
# the workers are running, how many seconds pass between two batches the loop receives?

# %%
answer = None  # seconds
steady = run_experiment(SleepDataset(size=24, delay=0.02, shape=()), batch_size=2, num_workers=2,
                        collate_fn=SlowCollate(60))
nb03.EXERCISES[2].check(answer, trace=steady)

# %% [markdown]
# <details><summary>Solution</summary>
#
# A worker needs `2 × 20 + 60 = 100` ms per batch, and 2 workers build batches side by side:
# about 50 ms between batches. `SlowCollate` sleeps, so the workers overlap even on one CPU; a
# `collate_fn` that keeps a CPU busy gains from more workers only while there are free CPUs.
# </details>
#
# ## Summary
#
# - `collate_fn` runs in whichever process fetched the batch's items: a worker when there are
#   workers, the main process with `num_workers=0`, inside your loop's `next()`.
# - When a worker is created has nothing to do with it: `collate_fn` is stored at construction
#   and handed to each worker as a `Process` argument, whenever the worker is created.
# - Each batch is loaded and collated whole by one worker.
# - `in_order=True` returns batches by number, so a slow batch delays those behind it;
#   `in_order=False` returns them as they are ready.
# - `pin_memory` runs in a thread of the main process, and only where an accelerator exists.
#
# ## Where next
#
# - Next: [04 — start methods](04_start_methods.ipynb): what `fork`, `spawn` and `forkserver`
#   cost, every epoch.
# - Back: [02 — memory](02_memory_and_large_arrays.ipynb), or [00 — start here](00_start_here.ipynb)
#   for the whole series.
# - PyTorch's documentation: [working with `collate_fn`](https://pytorch.org/docs/stable/data.html#working-with-collate-fn),
#   [memory pinning](https://pytorch.org/docs/stable/data.html#memory-pinning) and
#   [multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading).
