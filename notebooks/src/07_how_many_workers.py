# %% [markdown]
# # How many workers? Measure it
#
# Tutorials set `num_workers` to 2, 4, 8 or "the number of CPUs", and PyTorch warns when you go
# above its suggestion. Which is right depends on what loading an item costs: time spent
# **waiting** (a file read, a network request) or time spent **computing** (decoding,
# augmenting). Here we measure both kinds on this machine, see why they behave differently, count
# what each extra worker costs, and end with a helper that recommends a setting for your dataset.
#
# **You will learn** how throughput grows with `num_workers` when items wait and when they
# compute; why PyTorch warns above its suggested maximum and when the warning does not apply;
# what each worker costs in memory, in batches held in flight and in start-up time; how
# `persistent_workers` and the fork server's preload cut the start-up; and how to pick
# `num_workers` from a short sweep of your own dataset.
#
# **Prerequisites:** `01_when_workers_appear.ipynb`, `02_memory_and_large_arrays.ipynb`,
# `04_start_methods.ipynb`. **Time:** 20 minutes.

# %%
# %matplotlib inline
import inspect
import json
import math
import multiprocessing
import os
import sys
import textwrap
import warnings

import psutil
import torch
from torch.utils.data import DataLoader

from helpers import Kind, SleepDataset, plot_swimlanes, run_experiment
from helpers.measurements import epoch_costs, run_script
from helpers.memory import measure_memory
from helpers.sweep import plot_sweeps, recommend, sweep, usable_cpus
from helpers.system import cpu_quota, memory_limit, shm_bytes, workers_that_fit
from helpers.workloads import CpuDataset, MixedDataset

MiB = 2**20
method = multiprocessing.get_start_method()
methods = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
cpus = usable_cpus()
print(f"os.cpu_count():                  {os.cpu_count()}")
print(f"CPUs this process may run on:    {affinity if affinity is not None else 'not reported on this OS'}")
print(f"CPU quota of its cgroup:         {cpu_quota() or 'none'}")
print(f"CPUs usable (the smaller):       {cpus:g}")
print(f"start method of this kernel:     {method}")
print(f"load average, last minute:       {psutil.getloadavg()[0]:.1f} (processes wanting a CPU, this kernel's and others')")

# %% [markdown]
# ## Two datasets that cost the same, differently
#
# Both datasets below cost 20 ms per item, of different things:
#
# - `SleepDataset(delay=0.02)` **waits** 20 ms per item, as a read from a slow disk would. A waiting
#   process needs no CPU.
# - `CpuDataset(cpu_seconds=0.02)` **computes** for 20 ms of CPU time per item (pure Python
#   arithmetic, as a decode or an augmentation written in Python would). It counts its budget on
#   its own CPU clock, so an item costs 20 ms of CPU on any machine; on an idle CPU that is 20 ms
#   of wall time too.
#
# **Predict** before you run the next cells: with 1, 2 and 4 workers, how many items per second
# will each dataset load, on the CPUs printed above? Write your guesses down.
#
# `sweep` loads a dataset once per `num_workers` setting, each time with a warm-up (so that every
# worker is started) and then one timed epoch of 32 items in batches of 2. The settings depend on
# this machine: 0, 1, 2 and 4, the CPUs usable and twice that, as many as fit in memory.
#
# The timed epoch runs on warm workers, so the start method does not change it; it changes the
# start-up, which we measure on its own further down. To keep the sweep short, it starts its
# workers with `fork` on Linux (quick), and with this kernel's start method elsewhere (macOS and
# Windows use `spawn`: there the sweep takes longer).

# %%
most = workers_that_fit()
settings = sorted({n for n in (0, 1, 2, 4, math.ceil(cpus), 2 * math.ceil(cpus)) if n <= most})
sweep_method = "fork" if sys.platform.startswith("linux") else method
print("num_workers settings swept:", settings, "- start method:", sweep_method)
waits = sweep(SleepDataset(size=32, delay=0.02), num_workers=settings, start_method=sweep_method)
waits

# %%
computes = sweep(CpuDataset(size=32, cpu_seconds=0.02), num_workers=settings, start_method=sweep_method)
computes

# %% [markdown]
# Each table has a row per setting: items per second in the timed epoch, that throughput
# against `num_workers=0`, the median wall time of one item, and the time from the first
# `iter()` to the first batch (the start-up, which the timed epoch leaves out). Where this
# machine has fewer CPUs than the largest setting, PyTorch printed a warning above; we come back
# to it below.

# %%
sweeps = {"waits (I/O-bound)": waits, "computes (CPU-bound)": computes}
advice = {label: recommend(s) for label, s in sweeps.items()}
print(f"both sweeps took {waits.seconds + computes.seconds:.1f} s")
plot_sweeps(sweeps, advice, cpus=cpus)

# %% [markdown]
# Compare the two lines with your prediction. The dashed line marks the CPUs this kernel may
# use; the rings mark what `recommend` (below) picks from each sweep. In numbers:

# %%
top = settings[-1]
for label, s in sweeps.items():
    print(
        f"{label}: {top} workers load {s.speedup(top, over=1):.1f}x as many items per second as 1 worker; "
        f"one item took {s.point(top).item_s * 1000:.0f} ms of wall time with {top} workers, "
        f"{s.point(1).item_s * 1000:.0f} ms with 1"
    )
cpu_per_item = 0.02  # CpuDataset(cpu_seconds=0.02)
print(
    f"the CPU-bound ceiling: {cpus:g} CPUs / {cpu_per_item * 1000:.0f} ms of CPU per item = "
    f"{cpus / cpu_per_item:.0f} items/s; measured at best {max(computes.throughput.values()):.0f} items/s; "
    f"one item alone (num_workers=0) took {computes.point(0).item_s * 1000:.0f} ms of wall time"
)

# %% [markdown]
# ### Why the two lines differ
#
# A worker that **waits** holds no CPU while it waits: the operating system runs another worker
# meanwhile. So `n` workers wait `n` items at once, and throughput grows with `n` past the number
# of CPUs, until something else runs out: the disk, the network, memory, or the main process that
# has to receive every batch.
#
# A worker that **computes** needs a CPU for every millisecond of its item. With more computing
# workers than CPUs, they take turns: each item takes longer in wall time (the "one item" column),
# and the total can never pass *CPUs ÷ CPU time per item*, the ceiling printed above. On a shared
# machine (a Binder pod, a laptop running a browser) other processes take their turns too: one
# item alone then takes longer than its 20 ms of CPU, the measured throughput stays below the
# ceiling, and more workers can still win a little more, by taking a larger share of the CPUs
# from the other programs. The load average printed at the top says how busy the machine was.
#
# Here is the CPU-bound run with the most workers. The first `iter()` is the warm-up: the loop
# leaves after one batch per worker, but the workers go on loading the batches they were already
# handed, and the second `iter()` waits (green) until they are done. Then comes the timed epoch.
# Compare the length of the blue item bars with the 20 ms of CPU each item needs:

# %%
plot_swimlanes(
    computes.point(top).trace,
    title=f"CpuDataset (20 ms of CPU per item), num_workers={top}, {cpus:g} CPUs usable",
)

# %% [markdown]
# ## Why PyTorch warns above its suggested maximum
#
# Ask for more workers than PyTorch suggests and `DataLoader(...)` warns. These are the lines of
# the installed PyTorch that decide (the rest of the method builds the message):

# %%
source = inspect.getsource(DataLoader.check_worker_number_rationality).splitlines()
start = next(i for i, line in enumerate(source) if "if not self.num_workers" in line)
print(textwrap.dedent("\n".join(source[start:])))
if "torch._utils.cpu_count" in "\n".join(source):
    print("\n# and the count it uses:\n" + inspect.getsource(torch._utils.cpu_count))

# %% [markdown]
# The suggestion is the number of CPUs the process may *run on* (its affinity). Let us trigger the
# warning (building a `DataLoader` starts no process, so this is free) and compare the suggestion
# with what we measured:

# %%
suggested = torch._utils.cpu_count() if hasattr(torch._utils, "cpu_count") else (affinity or os.cpu_count())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    DataLoader(SleepDataset(size=4), num_workers=suggested + 1)
print("warning:", caught[0].message if caught else "none")
decides = "\n".join(source)
if hasattr(torch._utils, "cpu_count"):
    decides += inspect.getsource(torch._utils.cpu_count)
print(f"\nPyTorch's suggested maximum here: {suggested}; CPUs usable with the cgroup quota: {cpus:g}")
print(f"does the code above read the cgroup's CPU quota? {'cpu.max' in decides or 'cfs_quota' in decides}")
above = [n for n in settings if n > suggested]
if above and suggested in settings:
    n = above[-1]
    print(
        f"above the suggestion, {n} workers loaded the waiting dataset {waits.speedup(n, over=suggested):.1f}x "
        f"and the computing one {computes.speedup(n, over=suggested):.1f}x as fast as {suggested} workers"
    )
else:
    print(f"the sweep tried no setting above the suggestion of {suggested} workers")

# %% [markdown]
# The rule is a guard against a *computing* loader starting more processes than it has CPUs. It
# cannot know what your items do, and it counts the CPUs the process may run on, not the share of
# them its cgroup may use (on Binder the affinity can list many more CPUs than the quota allows).
# For items that wait, workers above the suggestion can still pay off: the last line above says
# whether they did in this machine's sweep.
#
# ## What each extra worker costs
#
# ### Memory
#
# Each worker is a process with memory of its own. `measure_memory` runs a loader with a
# persistent worker and reads the worker's USS (pages only it holds: what it frees when it
# exits) and PSS (its own pages plus its share of pages it shares). One cell per start method,
# each a few seconds:

# %%
memory = {}


def measure_workers(start_method):
    if start_method not in methods:
        print(f"{start_method} is not available on this system")
        return
    report = measure_memory(SleepDataset(size=4, delay=0.0), start_method=start_method, num_workers=1)
    memory[start_method] = report
    pss = [w.pss for w in report.workers]
    pss_text = "n/a" if None in pss else f"{sum(pss) / len(pss) / MiB:.0f} MiB"
    print(f"{start_method}: each worker holds {report.worker_uss / MiB:.0f} MiB of its own (USS); PSS {pss_text}")


measure_workers("fork")

# %%
measure_workers("spawn")

# %%
measure_workers("forkserver")

# %%
print(f"this kernel and its children may use {memory_limit() / 2**30:.1f} GiB")
for start_method, report in memory.items():
    costs = ", ".join(f"{n} worker{'s' * (n > 1)} {n * report.worker_uss / MiB:.0f} MiB" for n in settings if n)
    print(f"{start_method:>10}: {costs}")

# %% [markdown]
# A forked worker starts as a copy of the kernel and shares its pages until it writes to them, so
# it holds little of its own. A spawned worker, or one forked from a fork server that has not
# imported PyTorch, imports PyTorch itself and holds its own copy of it. Multiply by
# `num_workers` (and by the ranks of a distributed job, notebook 08) before choosing a large value
# on a machine with little memory.
#
# ### Batches in flight
#
# Each worker is handed `prefetch_factor` batches (2 by default) at `iter()`, so up to
# `num_workers × prefetch_factor` batches are being built or wait to be received (each batch
# the loop takes is replaced by a new one). On Linux each finished batch waits in shared memory
# (`/dev/shm`); notebook 05 shows what a full `/dev/shm` does. The sweep's trace counts the
# batches `iter()` handed out before it returned:

# %%
def handed_out_by_iter(trace):
    first_iter = trace.first(Kind.ITER_CALLED)
    return sum(1 for e in trace.of(Kind.BATCH_REQUESTED) if e.start <= first_iter.end)


trace = waits.point(top).trace
in_flight = handed_out_by_iter(trace)
batch_bytes = next(iter(DataLoader(SleepDataset(size=2, delay=0.0), batch_size=2))).nbytes
print(
    f"num_workers={top}, prefetch_factor=2: iter() handed out {in_flight} batches; "
    f"at {batch_bytes / 1024:.0f} KiB each they hold {in_flight * batch_bytes / MiB:.1f} MiB"
)
images = 64 * 3 * 224 * 224 * 4  # a batch of 64 RGB images of 224 x 224, float32
shm = shm_bytes()
for workers in (4, 8):
    held = workers * 2 * images
    fits = "" if shm is None else (" (fits in" if held <= shm else " (more than") + f" /dev/shm here, {shm / MiB:.0f} MiB)"
    print(f"{workers} workers x 2 batches of 64 images: {held / MiB:.0f} MiB in flight{fits}")

# %% [markdown]
# ### Start-up, every epoch
#
# The "first batch" column of the sweeps is the start-up: from `iter()` to the first batch,
# workers included. Without `persistent_workers`, every epoch pays it again. Two epochs with one
# worker, without and with `persistent_workers=True`, under this kernel's start method:

# %%
for persistent in (False, True):
    run = run_experiment(
        SleepDataset(size=8, delay=0.02), epochs=2, batch_size=2, num_workers=1, persistent_workers=persistent
    )
    costs = "; ".join(
        f"epoch {c.epoch}: {c.workers_started} worker{'s' * (c.workers_started != 1)} started, "
        f"first batch after {c.first_batch_s:.2f} s"
        for c in epoch_costs(run)
    )
    print(f"persistent_workers={persistent}: {costs}")

# %% [markdown]
# ### The fork server's preload
#
# Under `forkserver` (the Linux default from Python 3.14) every worker is forked from a small
# server process that starts clean. Unless the server has imported PyTorch, each worker imports
# it: the cost of `spawn`, paid by every worker of every epoch. `multiprocessing.set_forkserver_preload`
# names modules for the server to import when it *starts*, so the call must come before the first
# use of `forkserver`: once a program's fork server runs, it keeps running, and a later call
# changes nothing. This kernel's fork server may already run (the memory cell above started it),
# so we measure in fresh Pythons. The script below runs two loaders of one worker in a row: the
# first starts the fork server, the second uses the running one.

# %%
def forkserver_script(preload):
    setting = "" if preload is None else f"multiprocessing.set_forkserver_preload({preload!r})"
    return f"""
import json
import multiprocessing

if __name__ == "__main__":
    {setting}
    from helpers import SleepDataset, run_experiment
    from helpers.measurements import epoch_costs
    from helpers.memory import measure_memory

    dataset = SleepDataset(size=4, delay=0.0)
    first = run_experiment(dataset, batch_size=2, num_workers=1, start_method="forkserver")
    second = measure_memory(dataset, start_method="forkserver", num_workers=1)
    print(json.dumps({{
        "first loader": epoch_costs(first)[0].first_batch_s,
        "second loader": epoch_costs(second.trace)[0].first_batch_s,
        "worker USS": second.worker_uss / 2**20,
    }}))
"""


def measure_forkserver(preload):
    if "forkserver" not in methods:
        print("forkserver is not available on this system")
        return None
    done = run_script(forkserver_script(preload), timeout=120)
    found = [line for line in done.output.splitlines() if line.startswith('{"first loader"')]
    if done.returncode != 0 or not found:
        print(done.tail())
        return None
    result = json.loads(found[0])
    print(
        f"preload {preload}: first batch after {result['first loader']:.2f} s (first loader, server starts), "
        f"{result['second loader']:.2f} s (second loader); each worker holds {result['worker USS']:.0f} MiB"
    )
    return result


print(forkserver_script(["torch", "helpers.datasets"]))
without = measure_forkserver(None)

# %%
preloaded = measure_forkserver(["torch", "helpers.datasets"])
if without and preloaded:
    print(
        f"with the preload the second loader's first batch came {without['second loader'] / preloaded['second loader']:.0f}x "
        f"sooner, and each worker held {preloaded['worker USS']:.0f} MiB of its own instead of {without['worker USS']:.0f} MiB"
    )

# %% [markdown]
# With the preload, the server pays the import once when it starts (the first loader), and every
# worker forked from it afterwards, in every epoch, starts with PyTorch already loaded and shares
# those pages with the server instead of holding a copy.
#
# ## A rule of thumb, from your measurement
#
# Look at the chart and the numbers above and complete, in your own words: *for loading that
# waits, use ... workers; for loading that computes, use ... workers.* Then compare with what
# `recommend` says for each sweep: the fewest workers whose throughput is within 5% of the best
# measured, because every extra worker costs memory and start-up, and a few per cent is about the
# noise of a short run.

# %%
for label, advice_for in advice.items():
    print(f"{label}: num_workers={advice_for.num_workers}. {advice_for.reason}\n")

# %% [markdown]
# <details><summary>Solution</summary>
#
# For loading that **computes**, throughput stops growing at about the number of CPUs you may use
# (the quota, not `os.cpu_count()`); on a busy machine it stops lower, or creeps on past the CPU
# count only by taking CPU from other programs. More workers only take turns, hold more memory
# and leave less CPU to the training loop, so use about that many, or one fewer when the
# training step needs a CPU of its own. For loading that **waits**, workers can usefully outnumber the CPUs, until the
# storage, the network or memory gives out; PyTorch's warning does not know this, so measure. Most
# real loaders do some of each, so sweep your own dataset (next section). Do the
# recommendations printed above agree with your rule on this machine?
# </details>
#
# ## Sweep your own dataset
#
# Import your dataset from a module (a class defined in a notebook cannot reach `spawn` or
# `forkserver` workers, notebook 04) and give `sweep` the settings to try. Keep the dataset short:
# a few dozen items that take some milliseconds each are enough. Here, a dataset that waits
# 15 ms and then computes for 5 ms per item:

# %%
mine = sweep(
    MixedDataset(size=24, wait_seconds=0.015, cpu_seconds=0.005), num_workers=(0, 1, 2, 4), start_method=sweep_method
)
print(mine)
recommend(mine)

# %% [markdown]
# ## Check yourself
#
# **1.** With `num_workers=3` and `prefetch_factor=4`, how many batches does `iter()` hand out
# before your loop asks for its first one? How much memory do they hold if each batch is 64 images of
# 3 × 224 × 224 float32? Write your answers, then run the check.

# %%
check = run_experiment(
    SleepDataset(size=40, delay=0.01),
    batch_size=2,
    num_workers=3,
    prefetch_factor=4,
    max_batches=1,
    start_method=sweep_method,
)
print(f"batches handed out by iter(): {handed_out_by_iter(check)}")
print(f"64 images of 3 x 224 x 224 float32: {images / MiB:.1f} MiB a batch")

# %% [markdown]
# <details><summary>Solution</summary>
#
# `num_workers × prefetch_factor` batches: each of the 3 workers gets 4 at `iter()` (the check
# prints the count). They hold that many times the size of one batch, printed by the check, in
# the workers and, once built, in shared memory: a reason to lower `prefetch_factor` before
# lowering `num_workers` when memory or `/dev/shm` is short.
# </details>
#
# **2.** The `MixedDataset` above waits 15 ms and computes 5 ms per item. Without running
# anything, at how many workers should its throughput stop growing on this machine? Then compare
# with its sweep, printed above.
#
# <details><summary>Solution</summary>
#
# Each worker finishes one item per 20 ms, so `n` workers load at most `n / 0.02` items per
# second; but each item needs 5 ms of CPU, so all workers together load at most `CPUs / 0.005`.
# Throughput grows with `n` until the two limits meet, at about `n = 4 × CPUs` workers. If the
# sweep stopped growing earlier, something else took CPU: the main process, which receives and
# unpickles every batch, or other programs on the machine.
# </details>
#
# **3.** Why might a training job want *more* workers than `recommend` picks from a sweep of the
# loader alone, or fewer?
#
# <details><summary>Solution</summary>
#
# More: the sweep times loading alone, and in training the main process also runs the model,
# so it receives batches less often; a slow, uneven item (a large image) then stalls the loop
# unless more workers have batches ready. Fewer: a training step that uses the CPU (a CPU
# model, or data moved to the GPU in the main process) competes with computing workers, and
# every worker's memory is multiplied by the number of ranks on the machine (notebook 08).
# Sweep again with your training step in the loop when it matters.
# </details>
#
# ## Summary
#
# - Items that **wait** can load faster with more workers than CPUs; items that **compute** can
#   never load faster than *CPUs you may use ÷ CPU time per item*, however many workers you
#   start. The chart and the printed speed-ups show where each stopped on your machine.
# - PyTorch's warning compares `num_workers` with the CPUs the process may run on. It ignores CPU
#   quotas and cannot tell waiting from computing: measure instead.
# - Every worker costs memory (a little under `fork`, a Python with PyTorch under `spawn` or a
#   fork server without preload), up to `num_workers × prefetch_factor` batches in flight, and
#   start-up at every `iter()` unless `persistent_workers=True`.
# - Under `forkserver`, `multiprocessing.set_forkserver_preload(["torch", ...])`, called before
#   the fork server starts, makes every worker start with PyTorch loaded.
# - `helpers.sweep.sweep` and `recommend` pick the fewest workers within 5% of the best from a
#   short run of your own dataset.
#
# **Next:** `08_many_ranks.ipynb`: the same loaders under `torch.distributed`, one per rank.
#
# **Further reading:** PyTorch's [`torch.utils.data` documentation](https://pytorch.org/docs/stable/data.html)
# (multi-process data loading, `prefetch_factor`, `persistent_workers`), and Python's
# [`multiprocessing.set_forkserver_preload`](https://docs.python.org/3/library/multiprocessing.html#multiprocessing.set_forkserver_preload).
