# %% [markdown]
# # When things go wrong
#
# Datasets raise, workers get killed, loads hang, and containers give workers little shared
# memory. Each failure below is run for real, on your machine, and drawn on the swimlane, so you
# can see *where* it happened and what message reaches your loop.
#
# **You will learn** how a worker's exception reaches you (with its traceback); how to tell a
# killed worker from one that failed while starting, from one chained line of the error; what
# `timeout` measures, and why it can fire before any worker is ready; why a small `/dev/shm`
# breaks large batches; and how this series records its traces, so that even a killed worker's
# events survive.
#
# **Prerequisites:** [01 — when workers appear](01_when_workers_appear.ipynb) and
# [04 — start methods](04_start_methods.ipynb). **Time:** 20 minutes; the cells take a few
# seconds each, longer under `spawn` and `forkserver` (workers start a fresh Python).

# %%
# %matplotlib inline
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from IPython.display import display
from torch.utils.data import DataLoader

from helpers import Kind, SleepDataset, WaitEnd, plot_swimlanes, run_experiment, trace_loader
from helpers.checks import nb05
from helpers.measurements import run_script
from helpers.datasets import FaultyDataset
from helpers.lessons2 import crash_at_start, error_chain, show_source, timeout_panel
from helpers.plotting import compare_swimlanes
from helpers.queue_log import QueueTracedLoader
from helpers.system import private_shm_available, shm_bytes

# PyTorch warns "This DataLoader will create N worker processes" when N exceeds the CPUs it
# counts (on Binder: 1). These lessons start 2 workers on purpose, so the warning is noise here.
warnings.filterwarnings("ignore", message="This DataLoader will create")
method = torch.multiprocessing.get_start_method()
runs = {}  # every traced run of this notebook, to check at the end that none left a process behind
print("this kernel starts workers with:", method)

# %% [markdown]
# ## An exception in one worker
#
# Item 5 of this dataset raises `ValueError("item 5 is corrupt")`, inside a worker process.
#
# **Predict** before you run: what reaches your loop in the main process? Nothing (the worker
# just dies)? A generic "worker died"? Or the `ValueError` itself, and if so, with whose
# traceback?
#
# First with a plain `DataLoader`, as you would write it:

# %%
loader = DataLoader(FaultyDataset(size=8, fail_on=(5,)), batch_size=2, num_workers=2)
try:
    for batch in loader:
        pass
except ValueError as error:  # keep only its text: the error itself holds the loader's workers
    caught, message = type(error).__name__, str(error)
print("caught in the main process:", caught)
print("the last 6 lines of its message:")
print("\n".join(message.rstrip().splitlines()[-6:]))

# %% [markdown]
# The exception arrives as the same type, `ValueError`, and its message ends with the worker's
# own traceback, down to the line in the dataset that raised. That is how PyTorch does it: the
# worker catches the exception, wraps it with its traceback as text, and puts it on the result
# queue *instead of a batch*; the main process raises it again when that batch's turn comes.
# Here are both halves in the installed PyTorch:

# %%
from torch.utils.data import dataloader as dataloader_module
from torch.utils.data._utils import worker as worker_module

show_source(worker_module._worker_loop, "data = fetcher.fetch(index)", "data_queue.put((idx, data))")
print()
show_source(dataloader_module._MultiProcessingDataLoaderIter._process_data, "def _process_data", "data.reraise()")

# %% [markdown]
# The same run, traced and drawn. `run_experiment(..., raise_errors=False)` keeps the error in the
# trace instead of stopping the cell:

# %%
failed = runs["ValueError in item 5"] = run_experiment(
    FaultyDataset(size=8, fail_on=(5,)), batch_size=2, num_workers=2, raise_errors=False
)
print(failed.summary())
plot_swimlanes(failed, title="item 5 raises ValueError")

# %% [markdown]
# Find item 5's failed bar on one worker's lane, and on the main lane the `next()` that got an
# error instead of a batch. The summary above says how many batches the loop received before it.
# The worker itself survived its exception: it sent the error in place of the batch and carried
# on, so its lane ends with a normal exit, when the main process shut it down.
#
# ## A worker that is killed
#
# Now item 5 makes its worker die of `SIGKILL`, as the kernel's out-of-memory killer would. A
# killed process runs no more code: it cannot catch anything or send a message.
#
# **Predict:** how does the main process find out, and how long does it take? (PyTorch's source
# has a constant `MP_STATUS_CHECK_INTERVAL`; its value is printed below.)

# %%
killed_dataset = FaultyDataset(size=8, kill_on=(5,))
killed = runs["worker killed at item 5"] = run_experiment(killed_dataset, batch_size=2, num_workers=2, raise_errors=False)
print("the error, and what it was raised from:")
for line in error_chain(killed.error):
    print("   ", line)
exited = {e.pid for e in killed.of(Kind.WORKER_EXITED)}
named = " ".join(error_chain(killed.error))
for pid, worker_id in killed.worker_pids.items():
    print(f"worker {worker_id} (pid {pid}): {'exited normally' if pid in exited else 'no normal exit'}; "
          f"named in the error: {str(pid) in named}")
victim = next(pid for pid in killed.worker_pids if str(pid) in named)
last_sign = max(e.end for e in killed.events if e.pid == victim)
gave_up = killed.waits_ended()[0][0]  # the next() that got no batch
interval = torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL
print(f"\nthe killed worker's last recorded event: t = {last_sign:.3f} s; the loop's next() raised at "
      f"t = {gave_up.end:.3f} s, {(gave_up.end - last_sign) * 1000:.0f} ms later (item 5 itself loaded for "
      f"{killed_dataset.delay * 1000:.0f} ms before the kill)")
print(f"MP_STATUS_CHECK_INTERVAL = {interval} s")
cause = error_chain(killed.error)[-1]
if "killed by signal" in cause:
    print("=> the cause names the signal: PyTorch's SIGCHLD handler (below) reported the death.")
else:
    print(f"=> the cause is '{cause}': no signal handler reported it; PyTorch's poll every {interval:.0f} s "
          f"found the worker gone, and cannot say how it ended.")

# %%
plot_swimlanes(killed, title="item 5 kills its worker")

# %% [markdown]
# The killed worker's lane ends without a normal exit, unlike its sibling's, and the error names
# its PID; item 5 never finished loading, so it has no bar. How fast the main process noticed, and what it could say, depends on who the worker's
# parent is. When a process ends, the operating system sends its **parent** the signal `SIGCHLD`.
# PyTorch installs a handler for it in the main process (on Linux and macOS) that checks every
# worker at once and raises in the main thread, naming the signal or the exit code:

# %%
from torch.utils.data._utils import signal_handling

show_source(signal_handling, "def handler(signum, frame)", "_error_if_any_worker_fails()")

# %% [markdown]
# Under `fork` and `spawn` your kernel is the workers' parent and gets that signal within
# milliseconds. Under `forkserver` the fork server is their parent ([04](04_start_methods.ipynb)
# shows it), so your kernel hears nothing; the same is true on Windows, which has no `SIGCHLD`.
# Then PyTorch notices only when its wait on the result queue times out, every
# `MP_STATUS_CHECK_INTERVAL` seconds, and finds the worker no longer alive: the error is then
# raised from `queue.Empty`, and says nothing about how the worker ended. The lines printed above
# say which happened here. Note also what the chart kept: every event the killed worker recorded
# before it died (the last section of this notebook explains how).
#
# ## A worker that fails while starting
#
# A worker can also end before it loads anything: it fails to import your dataset's module or to
# unpickle the dataset (notebook 04 shows a class defined in a notebook doing that under `spawn`),
# or it runs out of memory while starting. Here a `worker_init_fn` ends each worker with exit code
# 1 the moment it is ready, without a Python traceback:

# %%
crashed = runs["workers exit while starting"] = run_experiment(
    SleepDataset(size=8, delay=0.05), batch_size=2, num_workers=2, worker_init_fn=crash_at_start, raise_errors=False
)
print("killed while loading:")
for line in error_chain(killed.error):
    print("   ", line)
print("exited while starting:")
for line in error_chain(crashed.error):
    print("   ", line)
causes = [error_chain(killed.error)[-1], error_chain(crashed.error)[-1]]
if any(cause.startswith("Empty") for cause in causes):
    print("\n=> here at least one cause is queue.Empty: that death was found by the poll, and the error "
          "cannot tell you how the worker ended.")
else:
    print("\n=> the two causes differ: one names the signal, the other the exit code.")

# %% [markdown]
# The first line is the same for both: "exited unexpectedly". Where the `SIGCHLD` handler
# reported the death, the line it was **raised from** tells them apart: "killed by signal"
# (something killed the process: the out-of-memory killer, or a `kill`) or "exited unexpectedly
# with exit code 1" (Python ended it after an uncaught error, usually while importing or
# unpickling; run with `num_workers=0` to see that error in your own process). Where the poll
# found it (`forkserver`, Windows), the cause is `queue.Empty` either way: look for the worker's
# own traceback in the cell's red output, check the system log (`dmesg`) for the out-of-memory
# killer, or rerun under `spawn`. Jupyter and plain Python print the chain as "The above
# exception was the direct cause of the following exception"; read the traceback from the top.
#
# ## `timeout`
#
# `DataLoader(..., timeout=0.5)` makes the loop give up when a batch takes longer than 0.5 s to
# arrive. This is the whole of it, in the installed PyTorch:

# %%
show_source(dataloader_module._MultiProcessingDataLoaderIter._get_data, "if self._timeout > 0:", "DataLoader timed out")

# %% [markdown]
# Each `next()` waits at most `timeout` seconds on the result queue, whatever it is waiting
# *for*. Our dataset: 8 items of 0.05 s, batches of 2, 2 workers; item 4 takes 2 s.
#
# **Predict:** which `next()` will give up? Does your answer depend on the start method?
#
# A few lines turn a trace into the answer; they are used again for the panel below.

# %%
def what_happened(trace):
    """What a run with a timeout did, in words, from its trace."""
    ready = sorted(e.start for e in trace.of(Kind.WORKER_READY))
    received = trace.of(Kind.BATCH_RECEIVED)
    timeouts = [wait for wait, how in trace.waits_ended() if how == WaitEnd.TIMEOUT]
    head = f"{trace.start_method}, timeout={trace.settings['timeout']} s:"
    if not timeouts:
        longest = max((e.duration for e in received), default=0.0)
        return f"{head} no timeout fired; {len(received)} batches arrived, the longest wait for one was {longest:.2f} s."
    wait = timeouts[0]
    story = (f"{head} {len(received)} batches arrived; then a next() waited from t = {wait.start:.2f} s "
             f"and gave up at t = {wait.end:.2f} s")
    ready_by_then = sum(t <= wait.end for t in ready)
    if ready_by_then == 0:
        first_ready = f"the first was ready at t = {ready[0]:.2f} s" if ready else "none ever got that far"
        story += (f", before any worker was ready ({first_ready}): the wait for the first batch "
                  f"includes starting the workers.")
    else:
        slow = [e for e in trace.of(Kind.ITEM_LOADED) if e.duration > 1.0]
        if slow and slow[0].start < wait.end < slow[0].end:
            story += f", while item {slow[0].index} was still loading (from t = {slow[0].start:.2f} to {slow[0].end:.2f} s)."
        else:
            story += "."
    closed = trace.first(Kind.ITER_CLOSED)
    if closed is not None:
        story += f" Shutting the workers down took {closed.duration:.2f} s."
    return story


slow = SleepDataset(size=8, delay=0.05, slow_items=(4,), slow_factor=40)
timed_out = runs[f"timeout, {method}"] = run_experiment(slow, batch_size=2, num_workers=2, timeout=0.5, raise_errors=False)
print(what_happened(timed_out))

# %% [markdown]
# Now the same loader with the other kind of start method: if this kernel forks its workers, with
# `spawn`; if it spawns them (or uses a fork server), with `fork` where this machine offers it.

# %%
available = torch.multiprocessing.get_all_start_methods()
other = "spawn" if method == "fork" else ("fork" if "fork" in available and sys.platform.startswith("linux") else None)
if other is None:
    print("no second kind of start method to compare here (fork is missing, or unsafe outside Linux)")
    compared = {f"timeout=0.5, {method}": timed_out}
else:
    contrast = runs[f"timeout, {other}"] = run_experiment(
        slow, batch_size=2, num_workers=2, timeout=0.5, start_method=other, raise_errors=False
    )
    print(what_happened(contrast))
    compared = {f"timeout=0.5, {method}": timed_out, f"timeout=0.5, {other}": contrast}
compare_swimlanes(compared)

# %%
for name, trace in compared.items():
    timeouts = [wait for wait, how in trace.waits_ended() if how == WaitEnd.TIMEOUT]
    ready = [e.start for e in trace.of(Kind.WORKER_READY)]
    if not timeouts:
        print(f"{name}: the timeout never fired.")
    elif not any(t <= timeouts[0].end for t in ready):
        print(f"{name}: the timeout fired at the first batch, while the workers were still starting.")
    else:
        print(f"{name}: the workers were ready; the timeout fired after {trace.batches_received} batches, "
              f"waiting for a slow one.")

# %% [markdown]
# Where the timeout fired while the workers were still starting, the first `next()` was waiting
# through their start-up: under `spawn` (and `forkserver`, whose server has not imported PyTorch)
# each worker must first start Python, import PyTorch and unpickle the dataset, and `timeout`
# counts that wait too. A forked worker is a copy of a process that has all of that already. On a
# Mac or Windows laptop, where `spawn` is the default, a `timeout` shorter than the start-up fails
# every run at its first batch.
#
# Then the shutdown. PyTorch tells each worker to stop and waits for it (a worker asleep in
# `__getitem__`, or still importing, finishes that first), for up to `MP_STATUS_CHECK_INTERVAL`
# seconds per worker, after which it terminates the process:

# %%
shutdown = dataloader_module._MultiProcessingDataLoaderIter._shutdown_workers
show_source(shutdown, "for w in self._workers:", "w.join(timeout=_utils.MP_STATUS_CHECK_INTERVAL)")
print("...")
show_source(shutdown, "if w.is_alive():", "w.terminate()")

# %% [markdown]
# So choose `timeout` above your slowest batch **plus** the workers' start-up under your start
# method, or leave it at 0 (wait forever) and watch for hangs another way. Try it: move `timeout`,
# how long item 4 takes, and the start method. The status line uses `what_happened` from above.

# %%
timeout_controls = timeout_panel(what_happened, timeout=0.5, slow_seconds=2.0, start_method=method)
runs["timeout panel, first run"] = timeout_controls.trace
display(timeout_controls.first_figure)
timeout_controls

# %% [markdown]
# ## A small `/dev/shm`
#
# On Linux, a worker hands each batch to the main process through shared memory in `/dev/shm`.
# Docker gives a container 64 MB there unless told otherwise
# ([`--shm-size`](https://docs.docker.com/reference/cli/docker/container/run/#shm-size)), and so
# do many hosted notebooks. Every batch in flight needs room there at once: up to
# `num_workers × prefetch_factor` of them, and never more than the loader's number of batches.

# %%
shm = shm_bytes()
workers, prefetch, per_batch, items = 2, 2, 4, 8
batch_bytes = per_batch * 3 * 1024 * 1024 * 4  # 4 images of 3 x 1024 x 1024 float32
in_flight = min(workers * prefetch, items // per_batch)
print(f"/dev/shm here: {'none' if shm is None else f'{shm / 2**20:.0f} MiB'}")
print(f"one batch of {per_batch} images of 3 x 1024 x 1024 float32: {batch_bytes / 2**20:.0f} MiB; "
      f"batches in flight: min({workers} workers x prefetch_factor {prefetch}, {items // per_batch} batches) = {in_flight}; "
      f"room they need: {in_flight * batch_bytes / 2**20:.0f} MiB")
print("sharing strategies here:", sorted(torch.multiprocessing.get_all_sharing_strategies()),
      "- in use:", torch.multiprocessing.get_sharing_strategy())

# %% [markdown]
# **Predict:** in a `/dev/shm` of 64 MiB, do those batches fit? The next cell gives a fresh Python
# its own 64 MiB `/dev/shm` (a private mount, which needs Linux and root: elsewhere it says so and
# skips) and loads small batches, then those large ones, with 2 workers:

# %%
SMALL_SHM_SCRIPT = """
    from torch.utils.data import DataLoader
    from helpers import SleepDataset
    from helpers.system import shm_bytes

    if __name__ == "__main__":
        print(f"/dev/shm: {shm_bytes() / 2**20:.0f} MiB")
        for side in (64, 1024):  # batches of 4 images: 0.2 MiB, then 48 MiB
            try:
                for batch in DataLoader(SleepDataset(size=8, delay=0.0, shape=(3, side, side)), batch_size=4, num_workers=2):
                    pass
                print(f"batches of 4 x 3 x {side} x {side}: ok")
            except RuntimeError as error:
                print(f"batches of 4 x 3 x {side} x {side}: {str(error).strip().splitlines()[-1]}")
"""
if private_shm_available():
    output = run_script(SMALL_SHM_SCRIPT, shm_mib=64).tail(3)
    print(output)
    if "No space left on device" in output:
        print(f"\n=> the large batches failed with a clear error, not a hang: {in_flight} batches of "
              f"{batch_bytes / 2**20:.0f} MiB need {in_flight * batch_bytes / 2**20:.0f} MiB, more than the 64 MiB there.")
else:
    print("this kernel cannot make a private /dev/shm (needs Linux, root and unshare): skipped")

# %% [markdown]
# The remedies: smaller batches or fewer in flight
# (`prefetch_factor`), a larger `/dev/shm` (for Docker, `--shm-size=1g`), or keeping large data in
# files the workers read rather than in large tensors they send.
# `torch.multiprocessing.set_sharing_strategy("file_system")` is the remedy for a different limit,
# running out of open file descriptors when many tensors are shared; it still needs room in
# `/dev/shm`.
#
# ## How the trace is recorded
#
# Every chart in this series is drawn from events that the main process and each worker record as
# they happen. Recording changes what it records (the *observer effect*), and a killed worker gives
# no warning, so the way the events travel matters. This series writes them to an **event log**:
#
# - one folder per run, in `/dev/shm` where there is one (memory, not disk);
# - one file per process in it, memory-mapped, that only that process writes;
# - one fixed-size record per event (start, end, index, PID, worker id, kind), written with a
#   single `struct.pack_into` into the mapped memory: no lock, no pipe, no thread.
#
# A record is in shared memory, readable by the main process, the moment it is written. The
# record's layout and the write, from `helpers/events.py`:

# %%
from helpers import events

show_source(events, "_RECORD = struct.Struct(", lines=1)
print(f"(one record: {events._RECORD.size} bytes)\n")
show_source(events._Writer.record, "if self._offset == _CHUNK_BYTES:", "self._offset += _RECORD.size")

# %% [markdown]
# Look inside a run while it is still going: after the loop's second batch, list the run's folder
# and read back what every process has written so far. (`loader._log` is the tracer's private log
# object; we only look.)

# %%
with trace_loader(SleepDataset(size=8, delay=0.05), batch_size=2, num_workers=2) as loader:
    for number, batch in enumerate(loader):
        if number == 1:
            folder = Path(loader._log.directory)
            print(f"after batch 1, the run's folder {folder} holds:")
            for path in sorted(folder.glob("*.events")):
                records = np.fromfile(path, dtype=events._DTYPE)
                written = records[records["kind"] != 0]
                kinds = Counter(Kind(int(k)).name.lower() for k in written["kind"])
                who = "main process" if int(path.name.split("-")[0]) == os.getpid() else "a worker"
                print(f"  {path.name} ({who}; {path.stat().st_size:,} bytes mapped): {len(written)} records: "
                      + ", ".join(f"{kind} {n}" for kind, n in kinds.items()))
runs["looking inside the log"] = loader.trace

# %% [markdown]
# A first design of this series sent each event through a `multiprocessing.Queue` instead, which
# is what most people would write. `helpers/queue_log.py` keeps that design so we can measure it:
# each item's event is `put` on a queue, which pickles it and hands it to a *feeder thread* in
# the worker that writes it to a pipe later; a thread in the main process reads the pipe.
#
# **Predict:** (1) how much slower than a plain `DataLoader` does each tracer make a fast loop?
# (2) If a worker is killed, which tracer loses events it had already recorded?
#
# First the speed. 20,000 tiny items that take no time to load, batches of 64, 2 workers, so the
# loop measures mostly the cost of moving items and events. Only the loop is timed, from the first
# batch received to the last: the workers' start-up and shutdown are left out. Each loader runs
# two epochs and keeps its faster one, since a busy machine slows some runs. One cell per loader:

# %%
BIG = SleepDataset(size=20000, delay=0.0, shape=(8,))


def items_per_second(loader):
    """Items per second received, from the first batch to the last (start-up and shutdown excluded)."""
    first = last = None
    items = 0
    for batch in loader:
        last = time.perf_counter()
        if first is None:
            first = last
        else:
            items += len(batch)
    return items / (last - first)


plain = DataLoader(BIG, batch_size=64, num_workers=2, persistent_workers=True)
rates = {"plain DataLoader": max(items_per_second(plain) for epoch in range(2))}
del plain  # shuts its workers down
print(f"plain DataLoader: {rates['plain DataLoader']:,.0f} items/s")

# %%
with trace_loader(BIG, batch_size=64, num_workers=2, persistent_workers=True) as loader:
    rates["event log (this series)"] = max(items_per_second(loader) for epoch in range(2))
runs["event log, speed"] = loader.trace
print(f"event log: {rates['event log (this series)']:,.0f} items/s; events recorded: {len(loader.trace.events):,}")

# %%
with QueueTracedLoader(BIG, batch_size=64, num_workers=2) as queued:  # no persistent workers: two start-ups
    rates["multiprocessing.Queue"] = max(items_per_second(queued) for epoch in range(2))
print(f"multiprocessing.Queue: {rates['multiprocessing.Queue']:,.0f} items/s; events received: {len(queued.events):,}")

# %%
plain_rate = rates["plain DataLoader"]
for name, rate in rates.items():
    cost = (1 / rate - 1 / plain_rate) * 1e6
    print(f"{name:>24}: {rate:>9,.0f} items/s = {rate / plain_rate:5.0%} of plain; "
          f"{cost:+.1f} µs per item compared with plain")
ranking = sorted(rates, key=rates.get, reverse=True)
print("\nfastest to slowest here:", " > ".join(ranking))
if ranking[0] != "plain DataLoader":
    print("A traced loader does strictly more work than the plain one, so it cannot really be faster: "
          "the machine's load changed between these cells. Run the three cells again.")
if max(rates.values()) / min(rates.values()) < 1.1:
    print("All three are within 10% of each other: at this size the tracers' cost is lost in the noise here.")

# %% [markdown]
# These are a few runs on a machine that may be busy (rerun the four cells to see how much they
# vary). What the queue adds to every item is certain, though: a pickle, a lock, a hand-over to
# the feeder thread and a pipe write in the worker, and a reader thread in the main process, the
# one your training loop runs in. The event log adds one clock read and two stores into shared
# memory per item (`load_items` in `helpers/events.py`).
#
# Now the killed worker. 400 items that take no time, batches of 50, **one** worker; item 300
# kills it. That worker finished items 0 to 299 before it died. How many of those 300 events does
# each tracer still have? A few runs each, because the loss depends on timing:

# %%
KILL = FaultyDataset(size=400, delay=0.0, kill_on=(300,), shape=(1,))
FINISHED = 300  # items 0-299, loaded in order by the one worker before item 300 killed it


def kept_by_event_log():
    with trace_loader(KILL, batch_size=50, num_workers=1) as loader:
        try:
            for batch in loader:
                pass
        except Exception:  # RuntimeError, EOFError or ConnectionResetError, depending on timing
            pass
    (pid,) = loader.trace.worker_pids
    return sum(e.pid == pid and e.index < FINISHED for e in loader.trace.of(Kind.ITEM_LOADED))


def kept_by_queue():
    with QueueTracedLoader(KILL, batch_size=50, num_workers=1) as loader:
        try:
            for batch in loader:
                pass
        except Exception:
            pass
    return sum(e.index < FINISHED for e in loader.events)


kept = {"event log (this series)": [kept_by_event_log() for run in range(2)]}
print("event log kept:", kept["event log (this series)"], f"of {FINISHED}")

# %%
kept["multiprocessing.Queue"] = [kept_by_queue() for run in range(2)]
print("queue kept:", kept["multiprocessing.Queue"], f"of {FINISHED}")

# %%
for name, counts in kept.items():
    lost = [FINISHED - n for n in counts]
    print(f"{name:>24}: kept {counts} of {FINISHED} in {len(counts)} runs; lost {sum(lost)} in all")
if sum(FINISHED - n for n in kept["multiprocessing.Queue"]) == 0:
    print("\nIn these runs the queue lost nothing: its feeder thread had written every event to the pipe "
          "before the kill. Nothing guarantees that: see below.")
else:
    print("\nThe queue lost events the worker had already `put`: they were still in its feeder thread's "
          "buffer when the process was killed.")

# %% [markdown]
# Why a queue *can* lose them: `Queue.put` returns as soon as the event is in a buffer in the
# putting process; a feeder thread writes it to the pipe when it next gets to run. See it in this
# kernel: put 1,000 small events on a queue as fast as possible, and count how many are still in
# this process's buffer (`_buffer`, a private attribute of the queue) when the last `put` returns:

# %%
events_queue = torch.multiprocessing.get_context().Queue()
for number in range(1000):
    events_queue.put((os.getpid(), number, time.perf_counter_ns(), time.perf_counter_ns()))
waiting = len(events_queue._buffer)
print(f"after 1,000 put() calls returned: {waiting} events still in this process's buffer, "
      f"{1000 - waiting} written to the pipe")
events_queue.close()
events_queue.join_thread()

# %% [markdown]
# A worker killed at such a moment takes its buffer with it; killed while its feeder thread is
# writing, it can also leave the queue's lock held, so no one can use the queue again. Python's
# documentation warns about both
# ([programming guidelines: "Avoid terminating processes"](https://docs.python.org/3/library/multiprocessing.html#all-start-methods)).
# Whether the kills above hit such a moment is luck (the printout says what happened in yours).
# The event log has no buffer and no lock: a record is complete in shared memory the moment it is
# written, which is why the chart of the killed worker kept every event before the kill.
#
# ## Did anything stay behind?
#
# After each traced run of this notebook, are any of its worker processes still alive?

# %%
for name, trace in runs.items():
    ends = ", ".join(how.label for _, how in trace.waits_ended()) or "no failed next()"
    print(f"{name:>30}: {len(trace.worker_pids)} worker processes; last next(): {ends}; "
          f"left behind: {list(trace.leftover_processes) or 'none'}")

# %% [markdown]
# ## Check yourself

# %%
nb05.QUESTIONS[0]

# %%
nb05.QUESTIONS[1]

# %%
nb05.QUESTIONS[2]

# %% [markdown]
# ## Exercises
#
# **1.** In the killed run (`killed`), how many items did the killed worker finish loading
# before it died? Count its `Kind.ITEM_LOADED` events (each has a `pid`); `victim` above is its
# PID. Compare with its lane on the chart.

# %%
answer = None  # a whole number of items
nb05.EXERCISES[0].check(answer, trace=killed)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# answer = sum(e.pid == victim for e in killed.of(Kind.ITEM_LOADED))
# ```
# Every item the worker finished is in the trace, because each event was in shared memory the
# moment it was written; item 5, the one that killed it, never finished and has no event.
# </details>
#
# **2.** What is the smallest `timeout` (in seconds) with which the slow loader (`slow`, 2
# workers, batches of 2) finishes under this kernel's start method? Run it once **without** a
# timeout and take the longest wait of any `next()` in its trace.

# %%
untimed = None  # run_experiment(slow, batch_size=2, num_workers=2)
answer = None  # seconds
nb05.EXERCISES[1].check(answer, trace=untimed)

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# untimed = run_experiment(slow, batch_size=2, num_workers=2)
# answer = max(e.duration for e in untimed.of(Kind.BATCH_RECEIVED))
# ```
# Under `fork` the longest wait is the batch that holds item 4; under `spawn` or `forkserver` it
# can be the first batch, which waits for the workers to start. Set the panel's `timeout` just
# below and just above your answer to see it fire and not fire (start-up varies, so leave a
# margin in real code).
# </details>
#
# **3.** Your images are 3 × 224 × 224 float32, batches of 16, `num_workers=4`,
# `prefetch_factor=2`, 1,000 items. How many MiB of `/dev/shm` do the batches in flight need at
# most? Would 64 MiB do?

# %%
answer = None  # MiB
nb05.EXERCISES[2].check(answer)

# %% [markdown]
# <details><summary>Solution</summary>
#
# Batches in flight: min(4 × 2, 1000 / 16 rounded up) = 8. One batch: 16 × 3 × 224 × 224 × 4 bytes.
# `answer = 8 * 16 * 3 * 224 * 224 * 4 / 2**20`, which is more than 64: lower `prefetch_factor`
# or the batch size, or give the container more `/dev/shm`.
# </details>
#
# ## Summary
#
# - An exception in `__getitem__` comes back to your loop as the same type, with the worker's
#   traceback at the end of its message: the worker sends it in place of the batch.
# - A killed worker sends nothing. Where your kernel is its parent (`fork`, `spawn`), PyTorch's
#   `SIGCHLD` handler notices within milliseconds, and the chained cause says how it ended:
#   "killed by signal" or "exit code 1". Under `forkserver` and on Windows only a poll every
#   `MP_STATUS_CHECK_INTERVAL` seconds notices, and the cause cannot say how.
# - `timeout` bounds every `next()`, the first one included, and the first one also waits for
#   the workers to start: under `spawn` and `forkserver` that can be seconds.
# - Batches in flight need room in `/dev/shm` at once; too little gives a clear error.
# - The series records events into per-process files in shared memory, so a killed worker keeps
#   what it recorded; a `multiprocessing.Queue` can lose it. The last table above shows whether any
#   run left a process behind.
#
# ## Read more
#
# - PyTorch: [Multi-process data loading](https://pytorch.org/docs/stable/data.html#multi-process-data-loading)
#   and [Platform-specific behaviors](https://pytorch.org/docs/stable/data.html#platform-specific-behaviors).
# - Python: [Contexts and start methods](https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods),
#   [Safe importing of main module](https://docs.python.org/3/library/multiprocessing.html#the-spawn-and-forkserver-start-methods),
#   and the [programming guidelines](https://docs.python.org/3/library/multiprocessing.html#programming-guidelines)
#   on queues and killed processes.
#
# **Next:** [06 — the article's claims, measured](06_summary_of_claims.ipynb), every verdict in one
# table. **Back to** [00 — start here](00_start_here.ipynb).
