# %% [markdown]
# # Start methods: what `fork`, `spawn` and `forkserver` cost
#
# A worker process can be made three ways. `fork` copies the running kernel; `spawn` starts a fresh
# Python that imports what it needs and receives the dataset pickled; `forkserver` starts one small
# clean server once, and forks each worker from it. The article says workers are deferred "to avoid
# overhead" (claim C6) and to prevent CUDA problems with fork (claim C4). Here we time each start
# method, see who the workers' parent is, and watch what happens at every new epoch.
#
# **You will learn** what each start method costs at `iter()` and before the first batch, why a
# class defined in a notebook breaks `spawn`, why scripts need `if __name__ == "__main__":`, and
# what `persistent_workers` saves.
#
# **Prerequisites:** `01_when_workers_appear.ipynb`, `02_memory_and_large_arrays.ipynb`.
# **Time:** 15 minutes.

# %%
# %matplotlib inline
import inspect
import multiprocessing
import warnings

from torch.utils.data import Dataset

from helpers import Kind, SleepDataset, run_experiment, trace_loader
from helpers.claims import verdict_c4, verdict_c6
from helpers.measurements import epoch_costs, first_batch_with, run_script, worker_parents
from helpers.plotting import compare_swimlanes
from helpers.system import default_start_methods

methods = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
print("start methods here:", methods, "- default:", multiprocessing.get_start_method())

# %% [markdown]
# ## Side by side
#
# The same loader (8 items of 0.05 s, batches of 2, 2 workers) under each start method, on one
# time axis. Watch where each worker's green star lands, and when the first batch arrives.

# %%
dataset = SleepDataset(size=8, delay=0.05)
traces = {method: run_experiment(dataset, batch_size=2, num_workers=2, start_method=method) for method in methods}
compare_swimlanes(traces)

# %%
print(f"{'start method':>12} {'iter() took':>12} {'first batch after':>18} {'workers up after':>17}")
for method, trace in traces.items():
    cost = epoch_costs(trace)[0]
    up = max(e.start for e in trace.of(Kind.WORKER_READY))
    print(f"{method:>12} {cost.iter_s * 1000:>9.0f} ms {cost.first_batch_s:>16.2f} s {up:>15.2f} s")

# %% [markdown]
# `iter()` itself returns quickly under every method: it launches the processes and hands out
# the first batches. The real cost shows as the time until a worker runs its first line of our
# code: a forked worker already has PyTorch loaded; a spawned one must start Python and import
# PyTorch and the dataset's module first. `benchmarks/` measures the same on your machine over
# several repetitions.
#
# ## Who is the workers' parent?

# %%
for method in methods:
    for pid, parent, what in worker_parents(SleepDataset(size=4, delay=0.0), method):
        print(f"{method:>10}: worker pid {pid} was started by pid {parent} ({what})")


# %% [markdown]
# Under `forkserver` the workers are children of the fork server, not of your kernel, which is why
# this series counts processes recursively.
#
# ## A `Dataset` defined in the notebook
#
# Spawned and forkserver workers start a fresh Python and *import* the dataset's class by its module
# and name. A class defined in a notebook lives in the kernel's `__main__`, which a fresh Python
# cannot import. Let us try it with a plain `DataLoader` (PyTorch checks on its workers every
# 5 s, so a dead one is noticed within that):

# %%
class NotebookDataset(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index

for method in methods:
    print(f"{method:>10}: {first_batch_with(NotebookDataset(), method)}")

# %% [markdown]
# Under `fork` the worker is a copy of the kernel, class included, so it works. Under the others
# the worker died unpickling the dataset (its own traceback went to the kernel's log, not to this
# notebook), and the loader only reports, after its next check, that the worker exited. The same
# class imported from a module works everywhere:

# %%
for method in methods:
    print(f"{method:>10}: {first_batch_with(SleepDataset(size=4, delay=0.0), method)}")

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
# A spawned worker imports your *script* as a module to find its classes. If the script starts
# training at the top level, the worker would start training too, and so on. Python stops this
# with an error. The next cell runs such a script in a fresh Python:

# %%
unguarded = run_script("""
    from torch.utils.data import DataLoader
    from helpers import SleepDataset

    loader = DataLoader(SleepDataset(size=4, delay=0.0), num_workers=1, multiprocessing_context="spawn")
    for batch in loader:
        print("got a batch")
""")
print("exit code:", unguarded.returncode)
print(unguarded.tail(4))

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
# ## Python 3.14 changed the Linux default
#
# Until Python 3.13, Linux used `fork` by default; from 3.14 it uses `forkserver` (macOS has used
# `spawn` since 3.8; Windows has only `spawn`). Every Python we can find on this machine, asked
# for its default:

# %%
found = default_start_methods()
for version, method in found.items():
    print(f"Python {version}: {method}")
if not any(version.startswith("3.14") for version in found):
    print("(no Python 3.14 on this machine's PATH, so the change cannot be run here)")
print("\nThis kernel's multiprocessing picks its default here:")
lines = inspect.getsource(multiprocessing.context).splitlines()
for number, line in enumerate(lines):
    if "_default_context = DefaultContext(" in line:
        print(lines[number - 1].rstrip(), "\n", line.rstrip(), sep="")

# %% [markdown]
# On Python 3.14 that line names `forkserver` for Linux. Notebooks that relied on `fork` to
# share a notebook-defined class then fail as shown above; pass `start_method="fork"` (or
# `multiprocessing_context="fork"`) explicitly if you need the old behaviour.
#
# ## Claim C6: every epoch pays again
#
# Two epochs of the same loader, without and with `persistent_workers=True`:

# %%
warnings.filterwarnings("ignore", message="This DataLoader will create")
method = multiprocessing.get_start_method()
two_epochs = run_experiment(dataset, epochs=2, batch_size=2, num_workers=2, start_method=method)
kept = run_experiment(dataset, epochs=2, batch_size=2, num_workers=2, start_method=method, persistent_workers=True)
compare_swimlanes({f"2 epochs, {method}": two_epochs, f"2 epochs, {method}, persistent_workers=True": kept})

# %%
verdict_c6(two_epochs, kept)

# %% [markdown]
# And after a `break`? The loop below leaves after 2 of 4 batches. Leaving the loop drops the
# iterator, which shuts its workers down at once (the purple bar), rather than at the end of the
# data:

# %%
left = run_experiment(dataset, max_batches=2, batch_size=2, num_workers=2)
exits = left.of(Kind.WORKER_EXITED)
print(f"received {left.batches_received} batches; {len(exits)} of {len(left.worker_pids)} workers exited normally; "
      f"processes left behind: {list(left.leftover_processes) or 'none'}")

# %% [markdown]
# ## Claim C4: CUDA and fork
#
# A CUDA context cannot survive `fork`. The article says lazy creation prevents that problem. But
# look at the order of events in every chart above: workers start at `iter()`, which in a training
# script comes *after* `model.to("cuda")` has already initialised CUDA in the main process. So a
# forked worker that touches CUDA fails however late it is created; what protects it is the start
# method (`spawn` or `forkserver`). The next cell tests this where a GPU exists:

# %%
verdict_c4()

# %% [markdown]
# ## Check yourself
#
# You train for 50 epochs with `num_workers=4` under `spawn`. From the tables above, roughly how
# much time do worker start-ups cost you in total, and how do you avoid most of it?
#
# <details><summary>Answer</summary>
#
# Each epoch waits about as long for its first batch as the "first batch after" column shows for
# `spawn` (workers start Python and import PyTorch), so 50 epochs pay that 50 times.
# `persistent_workers=True` starts them once: in the C6 run above, the second epoch started no
# new workers.
# </details>
#
# ## Summary
#
# - `iter()` returns quickly under every start method, but `spawn` and `forkserver` workers take
#   much longer than `fork` ones to run their first line, so the first batch comes later.
# - `forkserver` workers are children of the fork server; `spawn` and `fork` workers are
#   children of the kernel.
# - Classes defined in a notebook fail under `spawn` and `forkserver`; keep datasets in modules.
#   Scripts need `if __name__ == "__main__":` under `spawn`.
# - Every `iter()` starts new workers unless `persistent_workers=True` (C6), and lazy creation
#   does not protect forked workers from CUDA (C4).
#
# **Next:** `05_when_things_go_wrong.ipynb` — errors, killed workers, timeouts and `/dev/shm`.
