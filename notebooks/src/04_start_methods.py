# %% [markdown]
# # Start methods: what `fork`, `spawn` and `forkserver` cost
#
# Every DataLoader worker is a new process, and Python can make one three ways. The article says
# workers are deferred "to avoid overhead of creating workers when not immediately required"
# (claim C6) and to keep CUDA out of trouble with `fork` (claim C4). Both depend on *how* a worker
# is made. Here we time each start method on your machine, find out who each worker's parent is,
# see what breaks when a class lives in a notebook or a script has no `__main__` guard, and watch
# what every new epoch costs.
#
# **You will learn** what each start method costs before the first batch and why; why a class
# defined in a notebook breaks `spawn` and `forkserver`; why scripts need
# `if __name__ == "__main__":`; what `persistent_workers` saves; and why the start method, not
# lazy creation, decides whether CUDA survives in a worker.
#
# **Prerequisites:** [01 — when workers appear](01_when_workers_appear.ipynb) and
# [02 — memory](02_memory_and_large_arrays.ipynb). **Time:** 20 minutes; under `spawn` and
# `forkserver` some cells take several seconds, because that is what this notebook measures.

# %%
# %matplotlib inline
import multiprocessing
import os
import time
import warnings

import psutil
import torch
from IPython.display import display
from torch.utils.data import DataLoader, Dataset

from helpers import Kind, SleepDataset, plot_swimlanes, run_experiment, trace_loader
from helpers.checks import nb04
from helpers.claims import verdict_c4, verdict_c6
from helpers.measurements import epoch_costs, run_script
from helpers.lessons2 import epochs_panel, error_chain, show_source
from helpers.plotting import compare_swimlanes
from helpers.system import default_start_methods

# PyTorch warns "This DataLoader will create N worker processes" when N exceeds the CPUs it
# counts (on Binder: 1). These lessons start 2 workers on purpose, so the warning is noise here.
warnings.filterwarnings("ignore", message="This DataLoader will create")
methods = multiprocessing.get_all_start_methods()
method = multiprocessing.get_start_method()
print("start methods on this machine:", ", ".join(methods), "- this kernel's default:", method)

# %% [markdown]
# ## Three ways to make a worker
#
# - **`fork`** copies the running process, memory and all: the worker starts with PyTorch
#   imported and the dataset already in place. Linux's default until Python 3.13.
# - **`spawn`** starts a fresh Python interpreter, which imports what it needs and receives the
#   dataset **pickled** through a pipe. The only method on Windows, and macOS's default.
# - **`forkserver`** starts one small, clean server process once; each worker is forked from
#   that server, then imports and unpickles like a spawned one. Linux's default from Python 3.14.
#
# ([Python's documentation](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods)
# has the details.) In PyTorch, the dataset is simply an argument of each worker process, made in
# `_MultiProcessingDataLoaderIter.__init__` (which `iter(loader)` runs):

# %%
from torch.utils.data import dataloader as dataloader_module

show_source(dataloader_module._MultiProcessingDataLoaderIter.__init__, "w = multiprocessing_context.Process(", "self._dataset,")
show_source(dataloader_module._MultiProcessingDataLoaderIter.__init__, "w.start()", lines=1)

# %% [markdown]
# ## Predict, then measure
#
# The same loader (8 items of 0.05 s, batches of 2, 2 workers) under each start method.
#
# **Predict:** how long after `iter()` does each method deliver its first batch? Which part of a
# worker's start-up takes the time: creating the process, starting the interpreter, or what comes
# after?
#
# Each run below also asks the operating system for each worker's parent process while the loop
# runs. One cell per start method, since some take seconds:

# %%
dataset = SleepDataset(size=8, delay=0.05)
traces, parents = {}, {}


def run_under(start_method):
    """One traced run of `dataset` under `start_method`; notes each worker's parent PID."""
    if start_method not in methods:
        print(f"{start_method}: this machine does not offer it")
        return
    with trace_loader(dataset, batch_size=2, num_workers=2, start_method=start_method) as loader:
        for number, batch in enumerate(loader):
            if number == 0:
                parents[start_method] = {pid: psutil.Process(pid).ppid() for pid in loader.worker_processes()}
    traces[start_method] = loader.trace
    print(f"{start_method}: first batch {epoch_costs(loader.trace)[0].first_batch_s:.2f} s after iter()")


run_under("fork")

# %%
run_under("spawn")

# %%
run_under("forkserver")

# %%
compare_swimlanes(traces)

# %%
print(f"{'':>11} {'iter() took':>12} {'all created by':>15} {'all running Python by':>22} "
      f"{'all ready by':>13} {'first batch':>12}")
for name, trace in traces.items():
    created = max(e.end for e in trace.of(Kind.PROCESS_CREATED))
    running = max(e.start for e in trace.of(Kind.PROCESS_RUNNING))
    ready = max(e.start for e in trace.of(Kind.WORKER_READY))
    cost = epoch_costs(trace)[0]
    print(f"{name:>11} {cost.iter_s * 1000:>9.0f} ms {created:>13.3f} s {running:>20.3f} s "
          f"{ready:>11.2f} s {cost.first_batch_s:>10.2f} s")
slowest = max(traces, key=lambda name: epoch_costs(traces[name])[0].first_batch_s)
fastest = min(traces, key=lambda name: epoch_costs(traces[name])[0].first_batch_s)
print(f"\niter() returned within {max(epoch_costs(t)[0].iter_s for t in traces.values()) * 1000:.0f} ms under "
      f"every method; the first batch came soonest under {fastest} and latest under {slowest}.")
before_return = [name for name, trace in traces.items()
                 if max(e.end for e in trace.of(Kind.PROCESS_CREATED)) <= trace.first(Kind.ITER_CALLED).end]
print(f"every worker process had been created before iter() returned under: {', '.join(before_return) or 'none'}")

# %% [markdown]
# All times are seconds after `iter()` was called; "all … by" is when the last of the workers got
# there (the first batch can come sooner, from the first worker ready). Read the table from left
# to right. `iter()` creates the worker processes before it returns (the last line above says
# under which methods it did here). What differs is what comes after, between **running Python**
# (our first line of code in the new process) and **ready** (the worker ran `worker_init_fn` and
# waits for indices). A forked worker has little to do there: it is a copy of a kernel that has
# PyTorch imported. A spawned worker starts an
# interpreter, then imports PyTorch and unpickles the dataset. A worker forked from the fork
# server skips the interpreter start but not the rest, because the server has not imported
# PyTorch: `multiprocessing.set_forkserver_preload(["torch"])` makes it import PyTorch once, before
# it forks ([07 — how many workers](07_how_many_workers.ipynb) measures that).
#
# Who started each worker?

# %%
server = traces["forkserver"].fork_server_pid if "forkserver" in traces else None
for name, found in parents.items():
    for pid, parent in sorted(found.items()):
        what = "this kernel" if parent == os.getpid() else "the fork server" if parent == server else "another process"
        print(f"{name:>10}: worker pid {pid} was started by pid {parent} ({what})")

# %% [markdown]
# Under `forkserver` the workers are children of the fork server, not of your kernel. That is why
# this series counts processes recursively, and why the fork server has its own lane in the
# chart above.
#
# ## A `Dataset` defined in the notebook
#
# Spawned and forkserver workers unpickle the dataset, and unpickling a class means *importing*
# it by its module and name. A class defined in a notebook lives in the kernel's `__main__`, which
# a fresh Python cannot import.
#
# **Predict:** under which start methods can a worker load this class?

# %%
class NotebookDataset(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index


chains = {}


def first_batch(dataset, start_method):
    """Take one batch from a plain DataLoader; print 'ok', or the error and what it was raised from."""
    if start_method not in methods:
        print(f"{start_method}: this machine does not offer it")
        return
    loader = DataLoader(dataset, num_workers=1, multiprocessing_context=start_method)
    start = time.perf_counter()
    try:
        next(iter(loader))
        chains[start_method] = []
        print(f"{start_method}: ok")
    except Exception as error:
        chains[start_method] = error_chain(error)
        print(f"{start_method}, after {time.perf_counter() - start:.1f} s: " + "\n    raised from: ".join(chains[start_method]))


first_batch(NotebookDataset(), "fork")
first_batch(NotebookDataset(), "spawn")

# %%
first_batch(NotebookDataset(), "forkserver")

# %% [markdown]
# Under `fork` the worker is a copy of the kernel, class included, so it works. Under the others
# the worker dies while starting, and writes its **own** traceback to its standard error before
# it exits; Jupyter shows it in red under the cell: `AttributeError: Can't get attribute
# 'NotebookDataset' on <module '__main__' (built-in)>`. The loader's error in your process says
# less, and how much depends on who noticed the death:

# %%
interval = torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL
for name, chain in chains.items():
    if not chain:
        print(f"{name:>10}: no error")
    elif "exit code" in chain[-1]:
        print(f"{name:>10}: raised from '{chain[-1][:70]}...': this kernel, the worker's parent, got the "
              f"signal that its child ended, and knows its exit code")
    else:
        print(f"{name:>10}: raised from '{chain[-1]}': no signal reached this kernel (the fork server is the "
              f"worker's parent); PyTorch's {interval:.0f}-second poll found the worker gone, without its exit code")

# %% [markdown]
# Exit code 1 means the worker ended by itself after an error; a killed worker says "killed by
# signal" instead ([05](05_when_things_go_wrong.ipynb) compares the two, and explains the signal).
# The same `SleepDataset`, imported from a module, worked under every method in the runs above:

# %%
for name, trace in traces.items():
    print(f"{name:>10}: {trace.batches_received} batches received from a dataset of module {type(dataset).__module__!r}")

# %% [markdown]
# This series' `trace_loader` checks for the problem before starting any process, and says what
# to do:

# %%
try:
    trace_loader(NotebookDataset(), num_workers=2, start_method="spawn")
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# ## A script without `if __name__ == "__main__":`
#
# A spawned worker imports your *script* as its `__main__` module, to find the classes and
# functions it unpickles. If the script starts its loop at the top level, the worker would start
# one too, and its workers theirs.
#
# **Predict:** what stops this? The next cell runs such a script in a fresh Python and prints the
# lines of its output that explain what happened:

# %%
unguarded = run_script("""
    from torch.utils.data import DataLoader
    from helpers import SleepDataset

    loader = DataLoader(SleepDataset(size=4, delay=0.0), num_workers=1, multiprocessing_context="spawn")
    for batch in loader:
        print("got a batch")
""")
print("exit code:", unguarded.returncode)
lines = unguarded.output.splitlines()
first = next(n for n, line in enumerate(lines) if line.startswith("RuntimeError"))
end = next((n for n in range(first + 1, len(lines)) if lines[n].startswith("Traceback")), len(lines))
print("\n".join(line for line in lines[first:end] if line.strip()))
print("...")
print(lines[-1])

# %% [markdown]
# The first error above comes from the worker: importing the script as its main module, it
# reached the loop and tried to start a worker of its own, and a check in `multiprocessing`
# refused to start a process while the main module is still being imported ("bootstrapping"),
# naming the fix. The worker exited; the script itself then failed with the DataLoader's "exited
# unexpectedly", its last line. With the guard:

# %%
guarded = run_script("""
    from torch.utils.data import DataLoader
    from helpers import SleepDataset

    if __name__ == "__main__":
        loader = DataLoader(SleepDataset(size=4, delay=0.0), num_workers=1, multiprocessing_context="spawn")
        for batch in loader:
            print("got a batch")
""")
print("exit code:", guarded.returncode)
print(guarded.tail(4))

# %% [markdown]
# Python's documentation calls this
# ["Safe importing of main module"](https://docs.python.org/3/library/multiprocessing.html#the-spawn-and-forkserver-start-methods).
# It applies to `forkserver` too.
#
# ## Python 3.14 changed the Linux default
#
# Every Python this notebook can find on this machine, asked for its default start method, and
# the lines of this kernel's own `multiprocessing` that choose it:

# %%
found = default_start_methods()
for version, default in found.items():
    print(f"Python {version}: {default}")
if not any(version.startswith("3.14") for version in found):
    print("(no Python 3.14 on this machine's PATH, so the change cannot be run here)")
print()
show_source(multiprocessing.context, "if sys.platform == 'darwin':", "_default_context = DefaultContext(", nth=2)

# %% [markdown]
# On macOS the first branch applies (`spawn`); elsewhere the `else:` branch. From Python 3.14 that
# last line names `forkserver`
# ([Contexts and start methods](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods),
# "Changed in version 3.14"), and a notebook that relied on `fork` to share a notebook-defined
# class fails as shown above. Pass `multiprocessing_context="fork"` if you need the old behaviour
# on Linux, or better, move the class into a module.
#
# ## Claim C6: every epoch pays again
#
# The article says creation is deferred "to avoid overhead of creating workers when not
# immediately required". A `DataLoader` that is never iterated indeed costs nothing. But a loop
# over epochs calls `iter()` once per epoch.
#
# **Predict:** over 2 epochs under `spawn`, how many worker processes start, without and with
# `persistent_workers=True`? How long does epoch 2 wait for its first batch in each case?
#
# `spawn` exists on every machine, and its start-up is long enough to see. One cell per run:

# %%
two_epochs = run_experiment(dataset, epochs=2, batch_size=2, num_workers=2, start_method="spawn")
print(f"without persistent_workers: {len(two_epochs.worker_pids)} worker processes over 2 epochs")

# %%
kept = run_experiment(dataset, epochs=2, batch_size=2, num_workers=2, start_method="spawn", persistent_workers=True)
print(f"with persistent_workers=True: {len(kept.worker_pids)} worker processes over 2 epochs")

# %%
compare_swimlanes({"2 epochs, spawn": two_epochs, "2 epochs, spawn, persistent_workers=True": kept})

# %%
verdict_c6(two_epochs, kept)

# %% [markdown]
# The cost is moved, not avoided: each `iter()` starts the workers again, and under `spawn` pays
# the whole start-up again. `persistent_workers=True` keeps them between epochs (at the price of
# their memory while the loop is not running). Try the combinations, under any start method:
# the status line gives each epoch's new workers and its wait for the first batch.

# %%
def epoch_report(trace):
    """Each epoch's new worker processes and its wait for the first batch, in words."""
    parts = [f"epoch {c.epoch}: {c.workers_started} new workers, first batch after {c.first_batch_s:.2f} s"
             for c in epoch_costs(trace)]
    last = max(e.end for e in trace.events)
    return f"{trace.start_method}: " + "; ".join(parts) + f"; everything done {last:.2f} s after the first iter()"


epochs_controls = epochs_panel(dataset, epoch_report, num_workers=2, batch_size=2, epochs=2, start_method=method)
print(epoch_report(epochs_controls.trace))
display(epochs_controls.first_figure)
epochs_controls

# %% [markdown]
# ## And after a `break`?
#
# The loop below leaves after 2 of the 4 batches. Leaving the loop drops the iterator, and
# dropping it shuts the workers down.
#
# **Predict:** do the workers stop at once, or finish what they hold?

# %%
left = run_experiment(dataset, max_batches=2, batch_size=2, num_workers=2)
closed = left.first(Kind.ITER_CLOSED)
exits = [e.start for e in left.of(Kind.WORKER_EXITED)]
print(f"received {left.batches_received} batches, then left the loop; shutdown began at t = {closed.start:.2f} s "
      f"and ended at t = {closed.end:.2f} s; batches built but never received: {left.wasted_batches or 'none'}")
print(f"{len(exits)} of {len(left.worker_pids)} workers exited normally, the last exit mark at t = {max(exits):.2f} s; "
      f"processes left behind: {list(left.leftover_processes) or 'none'} ({left.start_method})")
plot_swimlanes(left, title="the loop leaves after 2 batches")

# %% [markdown]
# Shutdown starts the moment the loop is left, but a worker in the middle of `__getitem__` finishes
# its item (and its batch) before it reads the signal to stop; PyTorch waits for each worker up
# to `MP_STATUS_CHECK_INTERVAL` seconds, then terminates it ([05](05_when_things_go_wrong.ipynb)
# shows the code). Batches already built are thrown away.
#
# Compare the end of the shutdown with the last exit mark, printed above. The exit mark is a
# worker's last line of Python of ours; then the process must end, and PyTorch waits for it. A
# forked child (and one forked by the fork server) ends at once with `os._exit`; a spawned one
# returns from `spawn_main` and ends its interpreter the orderly way, with `sys.exit`, tearing down
# every module it imported, PyTorch included. Under `spawn` that is paid at the end of every epoch
# too (the "end of data + shutdown" bars in the C6 chart above; measured below):
#
# %%
from multiprocessing import popen_fork, spawn

show_source(popen_fork.Popen._launch, "code = process_obj._bootstrap(", "os._exit(code)")
show_source(spawn.spawn_main, "exitcode = _main(", "sys.exit(exitcode)")

ends = [wait for wait, how in two_epochs.waits_ended()]
iters = [e.start for e in two_epochs.of(Kind.ITER_CALLED)] + [float("inf")]
for number, wait in enumerate(ends):
    marks = [e.start for e in two_epochs.of(Kind.WORKER_EXITED) if iters[number] <= e.start < iters[number + 1]]
    if marks:
        print(f"spawn, C6 run, epoch {number + 1}: the last worker's exit mark at t = {max(marks):.2f} s; "
              f"its end of data + shutdown ended at t = {wait.end:.2f} s, {wait.end - max(marks):.2f} s later")

# %% [markdown]
# ## Claim C4: CUDA and fork
#
# A CUDA context does not survive `fork`. PyTorch guards against using it in a forked child. The
# guard, in the installed `torch/cuda/__init__.py` (`_is_in_bad_fork()` is true in a child forked
# after the parent initialised CUDA):

# %%
show_source(torch.cuda._lazy_init, "if _is_in_bad_fork():", "multiprocessing, you must use")

# %% [markdown]
# The article says lazy creation prevents that problem. But look at the order of events in every
# chart above: workers are created inside `iter()`, and in a training script `iter()` comes
# *after* `model.to("cuda")` has initialised CUDA in the main process. So a forked worker that
# touches CUDA meets this guard however late it is created; what avoids it is the start method
# (`spawn` or `forkserver` start a process without the parent's CUDA state). The next cell runs
# that experiment where this kernel sees a GPU, and otherwise says it did not:

# %%
c4 = verdict_c4()
if not c4.measured:
    print("Not run here: no CUDA GPU is visible to this kernel. The guard's source above is what a "
          "forked worker would hit; run this notebook on a machine with a GPU to see it happen.")
c4

# %% [markdown]
# ## Check yourself

# %%
nb04.QUESTIONS[0]

# %%
nb04.QUESTIONS[1]

# %%
nb04.QUESTIONS[2]

# %% [markdown]
# ## Exercises
#
# **1.** You train for 50 epochs with 2 workers under `spawn`, without `persistent_workers`. From
# the C6 run (`two_epochs`), how many seconds in all do those epochs spend waiting for their first
# batch? (Use the average of its two epochs.)

# %%
answer = None  # seconds
nb04.EXERCISES[0].check(answer, trace=two_epochs)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# waits = [c.first_batch_s for c in epoch_costs(two_epochs)]
# answer = 50 * sum(waits) / len(waits)
# ```
# `persistent_workers=True` pays that start-up once instead of 50 times.
# </details>
#
# **2.** In the `spawn` run of the side-by-side comparison (`traces["spawn"]`), how many seconds
# passed between worker 0's process being created and it being ready? Use the events
# `Kind.PROCESS_CREATED` and `Kind.WORKER_READY` (each has `worker_id`, `start` and `end`).

# %%
answer = None  # seconds
nb04.EXERCISES[1].check(answer, trace=traces.get("spawn"))

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# trace = traces["spawn"]
# created = next(e for e in trace.of(Kind.PROCESS_CREATED) if e.worker_id == 0)
# ready = next(e for e in trace.of(Kind.WORKER_READY) if e.worker_id == 0)
# answer = ready.start - created.end
# ```
# Nearly all of a spawned worker's start-up lies there: the interpreter, importing PyTorch and
# unpickling the dataset.
# </details>
#
# **3.** After the `break` (`left`), how many batches had workers built that the loop never
# received? Count them from the trace's `COLLATED` and `BATCH_RECEIVED` events (each has an
# `index`, the batch number).

# %%
answer = None  # a number of batches
nb04.EXERCISES[2].check(answer, trace=left)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# built = {e.index for e in left.of(Kind.COLLATED)}
# received = {e.index for e in left.of(Kind.BATCH_RECEIVED)}
# answer = len(built - received)
# ```
# (`left.wasted_batches` lists them.) Every one cost a worker the time to load and collate it.
# </details>
#
# ## Summary
#
# - `iter()` creates every worker under every start method. What differs is what each worker
#   does before it is ready: nothing much under `fork`; start Python, import PyTorch and unpickle
#   the dataset under `spawn`; the same minus the interpreter under `forkserver`.
# - `forkserver` workers are children of the fork server; `fork` and `spawn` workers are children
#   of the kernel.
# - Classes defined in a notebook fail under `spawn` and `forkserver` (exit code 1 while
#   starting); keep datasets in modules. Scripts need `if __name__ == "__main__":`.
# - Python 3.14 made `forkserver` Linux's default; macOS uses `spawn`, Windows has only `spawn`.
# - Every `iter()` starts new workers unless `persistent_workers=True` (C6: the cost is moved,
#   not avoided), and lazy creation does not protect forked workers from CUDA (C4): the start
#   method does.
#
# ## Read more
#
# - PyTorch: [Multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading)
#   and [Platform-specific behaviors](https://pytorch.org/docs/stable/data.html#platform-specific-behaviors).
# - Python: [Contexts and start methods](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods)
#   and [Safe importing of main module](https://docs.python.org/3/library/multiprocessing.html#the-spawn-and-forkserver-start-methods).
#
# **Next:** [05 — when things go wrong](05_when_things_go_wrong.ipynb): errors, killed workers,
# timeouts and `/dev/shm`. **Back to** [00 — start here](00_start_here.ipynb).
