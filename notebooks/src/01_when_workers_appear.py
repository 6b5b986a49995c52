# %% [markdown]
# # When do DataLoader workers appear?
#
# You write `DataLoader(dataset, num_workers=4)`. When do the four worker processes come into
# being: when `DataLoader(...)` returns, when your loop starts, or one at a time as batches are
# needed? The article this series checks says the last: workers are created lazily, "only as
# needed" while the loop runs, and the mixed-up print-out of workers and main loop proves it.
#
# This notebook runs the article's first scenario twice: first with prints, as the article
# does, then with a tracer that records every step of every process with exact times.
#
# **You will learn** when worker processes are created and by which line of PyTorch; how many
# batches are handed out before your loop asks for one (`prefetch_factor`); and what mixed-up
# prints really show.
#
# **Prerequisites:** [00 — start here](00_start_here.ipynb) (reading a swimlane chart).
# **Time:** 15 minutes.

# %%
# %matplotlib inline
import multiprocessing
import os
import warnings

from torch.utils.data import DataLoader
from torch.utils.data._utils import MP_STATUS_CHECK_INTERVAL
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from helpers import Kind, SleepDataset, descendants, plot_swimlanes, trace_loader
from helpers.checks import nb01
from helpers.claims import summary_table, verdict_c1, verdict_c2, verdict_c7
from helpers.measurements import ProcessCounts, most_at_once
from helpers.lessons import LoaderPanel, show_source
from helpers.scenarios import TalkingDataset
from helpers.system import wait_until_gone

# PyTorch warns when num_workers exceeds this kernel's CPUs; our items sleep, not compute, so that is fine here.
warnings.filterwarnings("ignore", message="This DataLoader will create")

cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
print(f"start method: {multiprocessing.get_start_method()}; CPUs this kernel may use: {cpus}")

# %% [markdown]
# ## The article's scenario, with prints
#
# Ten items; each takes 0.1 s to load and prints which process loaded it (`TalkingDataset`, in
# `helpers/scenarios.py`: worker processes must be able to import the dataset's class, as
# notebook 04 shows). Batches of 2, 4 workers, shuffled, and the loop leaves after its fourth
# batch. This is a plain `DataLoader`, nothing of ours in between.
#
# **Predict before you run it.**
# 1. The loop takes 4 batches of 2 items: 8 items. How many "loaded item" lines will you see?
# 2. If workers were created one at a time as batches are needed, in what order would you
#    expect the lines?

# %%
loader = DataLoader(TalkingDataset(size=10, delay=0.1), batch_size=2, num_workers=4, shuffle=True)
print("DataLoader(...) returned", flush=True)
for batch_idx, batch in enumerate(loader):
    print(f"main loop (process {os.getpid()}) received batch {batch_idx}", flush=True)
    if batch_idx == 3:
        break
print("left the loop", flush=True)

# %% [markdown]
# Lines from different processes mix, and the article reads that as proof of workers created
# "as needed". But a printed line only says that an item *finished* loading. It cannot say when
# its process was created, and the lines of different processes reach the notebook separately,
# so their order is only roughly the order of events. To find out, count processes and record
# times.
#
# ## Count the processes (claim C1)
#
# The next cell does what the article only asserts: it counts this kernel's new child processes
# after each step. `descendants()` (in `helpers/system.py`) lists every process below this kernel
# (under `forkserver`, workers are children of the fork server), leaving out multiprocessing's
# own long-lived helpers.
#
# **Predict:** how many new processes right after `DataLoader(...)`, right after `iter(loader)`,
# and after the first batch?

# %%
before = descendants()
loader = DataLoader(SleepDataset(size=10, delay=0.1), batch_size=2, num_workers=4, shuffle=True)
after_construction = len(descendants() - before)
iterator = iter(loader)
after_iter = len(descendants() - before)
first_batch = next(iterator)
after_first_batch = len(descendants() - before)
del iterator  # the iterator owns the workers: dropping it shuts them down
after_close = len(wait_until_gone(descendants() - before))

print(f"new processes after DataLoader(...):  {after_construction}")
print(f"new processes after iter(loader):     {after_iter}   (no batch asked for yet)")
print(f"new processes after the first batch:  {after_first_batch}")
print(f"new processes after del iterator:     {after_close}")

# %%
counts = ProcessCounts(
    num_workers=4,
    start_method=multiprocessing.get_start_method(),
    after_construction=after_construction,
    after_iter=after_iter,
    after_first_batch=after_first_batch,
    after_close=after_close,
)
verdict_c1(counts)

# %% [markdown]
# The lines of PyTorch that do it: `iter(loader)` runs `DataLoader.__iter__`, which (unless
# persistent workers are already running, notebook 04) calls `_get_iterator()`, which, when there
# are workers, builds a `_MultiProcessingDataLoaderIter`:

# %%
show_source(DataLoader.__iter__, "if self.persistent_workers and self.num_workers > 0:", "return self._get_iterator()")
print()
show_source(DataLoader._get_iterator, "def _get_iterator", "_MultiProcessingDataLoaderIter(self)")

# %% [markdown]
# and that iterator's `__init__` runs this loop, once per worker, before `iter()` returns. Each
# turn builds a `Process` whose arguments are everything the worker needs (your dataset, your
# `collate_fn`, its queues) and starts it:

# %%
show_source(_MultiProcessingDataLoaderIter.__init__, "for i in range(self._num_workers):", "w.start()")

# %% [markdown]
# ## Measure it: the same scenario, traced (claim C2)
#
# `trace_loader` builds a real `DataLoader` with the same settings and records every step. It
# does not change your items or batches; it wraps the dataset (to time each item), the
# `collate_fn`, the batch sampler (to number each batch and time its hand-out to a worker),
# `worker_init_fn`, and the start method's `Process` class (to time each worker's creation and
# first moment). The dataset is the same as above without the prints.

# %%
with trace_loader(SleepDataset(size=10, delay=0.1), batch_size=2, num_workers=4, shuffle=True) as loader:
    for batch_idx, batch in enumerate(loader):
        if batch_idx == 3:
            break
trace = loader.trace
plot_swimlanes(trace)

# %% [markdown]
# Read each worker's lane from the left. A **white circle** is the moment the main process
# created that process. The **hatched bar** after it is the process starting: under `spawn` a new
# Python interpreter, under `forkserver` a fork of the fork server (which gets a lane of its
# own), each of which then imports PyTorch and unpickles the dataset; under `fork` a copy of this
# kernel setting itself up. A **tick** marks where its first line of our Python ran, and the
# **star** the worker ready (its `worker_init_fn` ran). Then come its items (blue, numbered by
# dataset index) and its collates (orange, `b` + batch number). The solid line is `iter()`, t = 0.
# Where did the circles fall?

# %%
iter_call = trace.first(Kind.ITER_CALLED)
created = {e.pid: e for e in trace.of(Kind.PROCESS_CREATED)}
ready = {e.pid: e for e in trace.of(Kind.WORKER_READY)}
first_item = trace.first(Kind.ITEM_LOADED)
inside = all(e.end <= iter_call.end for e in created.values())
print(f"iter() ran from t = 0 to t = {iter_call.end:.3f} s")
print(
    f"{len(created)} worker processes were created between t = {min(e.start for e in created.values()):.3f} "
    f"and {max(e.end for e in created.values()):.3f} s: {'all' if inside else 'NOT all'} inside iter()"
)
for pid, made in sorted(created.items(), key=lambda item: item[1].start):
    print(f"  worker {made.worker_id} (pid {pid}): created at t = {made.start:.3f} s, ready at t = "
          f"{ready[pid].start:.3f} s, so starting took {ready[pid].start - made.start:.2f} s")
print(f"the first item began loading at t = {first_item.start:.3f} s")
spread = max(e.start for e in ready.values()) - min(e.start for e in ready.values())
made = max(e.start for e in created.values()) - min(e.start for e in created.values())
took = [ready[pid].start - e.start for pid, e in created.items()]
print(
    f"The stars are spread over {spread:.2f} s because the processes were created one after another "
    f"inside iter() (over {made:.2f} s) and each took {min(took):.2f} to {max(took):.2f} s to start."
)

# %%
verdict_c2(counts, trace)

# %% [markdown]
# The counts, the trace and the source agree: constructing a `DataLoader` starts nothing, and
# `iter()` creates **every** worker before it returns, not one at a time as batches are needed.
# How long each then takes to be ready depends on the start method; notebook 04 compares them.
#
# ## What `iter()` hands out before you ask
#
# `iter()` does one more thing before it returns: it gives the workers batches to load, so that
# they are busy before your loop asks for anything. **Predict:** with 4 workers and the default
# `prefetch_factor=2`, how many batches does it hand out, for an epoch of 5 batches?

# %%
workers, prefetch = 4, 2  # prefetch_factor=None means 2 when there are workers
batches_in_epoch = len(loader)
print(f"handed out before the loop asked for its first batch: {trace.handed_out_before_first_batch}")
print(
    f"min(num_workers × prefetch_factor = {workers} × {prefetch} = {workers * prefetch}, "
    f"batches in the epoch = {batches_in_epoch}) = {min(workers * prefetch, batches_in_epoch)}"
)

# %% [markdown]
# On the chart they are the blue triangles under the main lane, counted "×n" where they fall
# together. The loop that hands them out is at the end of the iterator's `_reset`, which
# `__init__` calls before returning:

# %%
show_source(_MultiProcessingDataLoaderIter._reset, "# prime the prefetch loop", "self._try_put_index()")

# %% [markdown]
# Each call hands out one batch, or returns without one when the sampler has none left. That
# is why the count is *at most* the number of batches:

# %%
show_source(_MultiProcessingDataLoaderIter._try_put_index, "def _try_put_index", "return")

# %% [markdown]
# After that, each batch your loop receives frees a place, and one more batch is handed out.
#
# ## What mixed-up output really shows (claim C7)
#
# Here is the traced run as a log in the order things finished, like the article's prints but
# with times and PIDs:

# %%
print(trace.log_lines())

# %%
loaded = trace.of(Kind.ITEM_LOADED)
closed = trace.first(Kind.ITER_CLOSED)
busy = [e for e in loaded if e.end > closed.start]
print(f"most items loading at the same moment: {most_at_once(loaded)}, on {cpus} CPUs (sleeping needs no CPU)")
print(f"items loaded: {len(loaded)}, for the {2 * trace.batches_received} items of the "
      f"{trace.batches_received} batches the loop took")
print(f"batches built but never received: {trace.wasted_batches}")
print(f"leaving the loop began shutting the workers down at t = {closed.start:.2f} s; it took {closed.duration:.2f} s")
if busy:
    print(f"  item(s) {sorted(e.index for e in busy)} were still loading then, and ended "
          f"{max(e.end for e in busy) - closed.start:.2f} s into the shutdown: a worker finishes the batch it is on")
else:
    print("  no item was still loading then")
exits = [e.start for e in trace.of(Kind.WORKER_EXITED)]
if exits and closed.end - max(exits) > 1:
    print(f"  every worker had run its exit code by t = {max(exits):.2f} s, yet the shutdown lasted until "
          f"t = {closed.end:.2f} s: the processes themselves ended later, and PyTorch waits for each to end "
          f"(for up to {MP_STATUS_CHECK_INTERVAL:g} s, then it terminates it)")

# %%
verdict_c7(counts, trace)

# %% [markdown]
# Output from workers mixes because several workers load items **at the same time**, each
# building a whole batch, while the main loop receives batches in order. It says nothing about
# when the processes were created: all of them existed before the first item was loaded. Nor
# does it show the work the loop never used: the batches built but never received, listed above.
#
# ## Try it: sliders
#
# The panel below runs a real `DataLoader` over 16 items (0.05 s each) and redraws for each new
# setting. Its status line counts the batches handed out before the first arrived. Things to
# try: raise `prefetch_factor` until the count stops growing, and say why it stops; pick another
# start method: do the white circles ever leave the `iter()` bar?

# %%
panel = LoaderPanel(SleepDataset(size=16, delay=0.05), num_workers=3, batch_size=2, prefetch_factor=2,
                    choose_start_method=True)
panel

# %% [markdown]
# ## Check yourself

# %%
nb01.QUESTIONS[0]

# %%
nb01.QUESTIONS[1]

# %%
nb01.QUESTIONS[2]

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 1. **0.** `DataLoader(...)` only stores its settings; `iter()` creates the workers (the
#    process counts above).
# 2. **Several workers load at the same time, each building its own batch.** The log above
#    shows the items of one batch loaded by one PID, and other PIDs loading at the same moment.
# 3. **5.** `_reset` calls `_try_put_index` `4 × 2 = 8` times, but the sampler runs out after
#    5 batches.
# </details>
#
# ## Exercises
#
# Each exercise runs a real loader. Put your prediction in `prediction` *before* you run the
# cell; the check compares it with what the cell measured.
#
# **Exercise 1.** 3 workers, `prefetch_factor=2`, 16 items in batches of 2. How many batches are
# handed out before the loop receives its first?

# %%
prediction = None  # your number
with trace_loader(SleepDataset(size=16, delay=0.02), batch_size=2, num_workers=3, prefetch_factor=2) as loader:
    for batch in loader:
        pass
nb01.EXERCISES[0].check(prediction, trace=loader.trace)

# %% [markdown]
# <details><summary>Solution</summary>
#
# `min(num_workers × prefetch_factor, batches) = min(3 × 2, 8) = 6`. With `prefetch_factor=4`
# it would be `min(12, 8) = 8`: every batch of the epoch.
# </details>
#
# **Exercise 2.** 10 items in batches of 2, 4 workers, and the loop leaves after **2** batches.
# How many items do the workers load in all?

# %%
prediction = None  # your number
with trace_loader(SleepDataset(size=10, delay=0.1), batch_size=2, num_workers=4) as loader:
    for batch_idx, batch in enumerate(loader):
        if batch_idx == 1:
            break
nb01.EXERCISES[1].check(prediction, trace=loader.trace)

# %% [markdown]
# <details><summary>Solution</summary>
#
# `iter()` hands out all 5 batches at once (`min(4 × 2, 5)`), and each worker loads its batch
# while the loop takes only 2. When the loop leaves, PyTorch tells the workers to stop, but a
# worker finishes the batch it is loading first, and batches still waiting in its queue are
# skipped. So it depends on what was in progress at that moment; the check prints what your run
# did, and the chart of `loader.trace` shows it (`plot_swimlanes(loader.trace)`).
# </details>
#
# **Exercise 3.** A dataset of 2 items with `batch_size=2` has a single batch. With
# `num_workers=3`, how many worker processes exist right after `iter()` returns?

# %%
prediction = None  # your number
before = descendants()
loader = DataLoader(SleepDataset(size=2, delay=0.1), batch_size=2, num_workers=3)
iterator = iter(loader)
alive = len(descendants() - before)
del iterator
wait_until_gone(descendants() - before)
nb01.EXERCISES[2].check(prediction, alive=alive, batches=len(loader), num_workers=3)

# %% [markdown]
# <details><summary>Solution</summary>
#
# 3. The loop in `__init__` above runs `num_workers` times whatever the dataset: all three
# processes are created by `iter()`, though there is only one batch, so at most one of them will
# ever load anything.
# </details>
#
# ## Summary
#
# - `DataLoader(...)` only stores its settings: it creates no process.
# - `iter()` creates **every** worker before it returns, in the loop of
#   `_MultiProcessingDataLoaderIter.__init__`. How long each then takes to be ready depends on
#   the start method.
# - Before your loop asks for anything, `iter()` hands out
#   `min(num_workers × prefetch_factor, batches in the epoch)` batches.
# - Mixed-up prints reflect workers loading whole batches at the same time, not processes
#   appearing on demand.
#
# The article's claims, as this kernel measured them:

# %%
summary_table([verdict_c1(counts), verdict_c2(counts, trace), verdict_c7(counts, trace)])

# %% [markdown]
#
# ## Where next
#
# - Next: [02 — memory and large arrays](02_memory_and_large_arrays.ipynb): what the workers share
#   with your kernel.
# - Back to [00 — start here](00_start_here.ipynb) for the whole series.
# - PyTorch's documentation: [multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading)
#   and [platform-specific behaviors](https://pytorch.org/docs/stable/data.html#platform-specific-behaviors).
