# %% [markdown]
# # When things go wrong
#
# Datasets raise, workers get killed, loads hang, and containers give workers little shared memory.
# Each failure below is run for real and drawn on the swimlane, so you can see *where* it happened
# and what message reaches your loop.
#
# **You will learn** how a worker's exception reaches you (with its traceback), what a killed
# worker looks like, what `timeout` does, and why a small `/dev/shm` breaks large batches.
#
# **Prerequisites:** `01_when_workers_appear.ipynb`. **Time:** 10 minutes.

# %%
# %matplotlib inline
import torch

from helpers import Kind, SleepDataset, plot_swimlanes, run_experiment
from helpers.datasets import FaultyDataset
from helpers.measurements import run_script
from helpers.system import private_shm_available, shm_bytes

# %% [markdown]
# ## An exception in one worker
#
# Item 5 raises `ValueError`. `run_experiment(..., raise_errors=False)` keeps the error in the trace
# instead of stopping the cell, so we can draw what happened.

# %%
failed = run_experiment(FaultyDataset(size=8, fail_on=(5,)), batch_size=2, num_workers=2, raise_errors=False)
print(type(failed.error).__name__, "-", str(failed.error)[:600])

# %%
plot_swimlanes(failed, title="item 5 raises ValueError")

# %% [markdown]
# The red cross-hatched bar on one worker's lane is item 5 failing. The worker caught the exception,
# sent it to the main process with its traceback as text, and the main process raised it again in
# your loop: same type (`ValueError`), with the worker's traceback inside the message. Processes
# left behind afterwards:

# %%
print(list(failed.leftover_processes) or "none")

# %% [markdown]
# ## A worker that is killed
#
# Item 5 now makes its worker die of `SIGKILL`, as the out-of-memory killer would. A killed
# process cannot send anything, so the main process only finds out by checking on its workers.

# %%
killed = run_experiment(FaultyDataset(size=8, kill_on=(5,)), batch_size=2, num_workers=2, raise_errors=False)
print(type(killed.error).__name__, "-", killed.error)
exited = {e.pid for e in killed.of(Kind.WORKER_EXITED)}
for pid, worker_id in killed.worker_pids.items():
    print(f"worker {worker_id} (pid {pid}): {'exited normally' if pid in exited else 'no normal exit'}; "
          f"named in the message: {str(pid) in str(killed.error)}; events kept: {sum(e.pid == pid for e in killed.events)}")
plot_swimlanes(killed, title="item 5 kills its worker")

# %% [markdown]
# The red cross marks the killed worker's last recorded moment: it has no normal exit (black
# cross), unlike its sibling, and the message names its PID. Every event it
# recorded before dying is still in the trace, because events are written to shared memory at
# once, not sent at the end.
#
# ## `timeout`
#
# `timeout=0.5` tells the loader to give up when a batch takes longer than 0.5 s to arrive. Item 4
# takes 2 s:

# %%
slow = SleepDataset(size=8, delay=0.05, slow_items=(4,), slow_factor=40)
timed_out = run_experiment(slow, batch_size=2, num_workers=2, timeout=0.5, raise_errors=False)
print(type(timed_out.error).__name__, "-", timed_out.error)
last = timed_out.of(Kind.BATCH_RECEIVED)[-1]
item_4 = next(e for e in timed_out.of(Kind.ITEM_LOADED) if e.index == 4)
closed = timed_out.first(Kind.ITER_CLOSED)
print(f"batch {last.index} arrived at t = {last.end:.2f} s; the loop gave up waiting for the next one and began "
      f"shutting down at t = {closed.start:.2f} s, which lasted until {closed.end:.2f} s; "
      f"item 4 loaded from {item_4.start:.2f} to {item_4.end:.2f} s")
plot_swimlanes(timed_out, title="timeout=0.5 s, item 4 takes 2 s")

# %% [markdown]
# After the last batch it received, the loop waited `timeout` seconds for the next one, then gave
# up and began shutting the workers down (purple bar) while item 4 was still loading. A worker
# asleep in `__getitem__` cannot stop midway, so the shutdown lasted until its item was done.
#
# ## A small `/dev/shm`
#
# On Linux, a worker hands each batch to the main process through shared memory in `/dev/shm`.
# Many containers (Docker's default, often Binder) give it only 64 MB. Every batch in flight
# (`num_workers × prefetch_factor` of them) needs room there:

# %%
shm = shm_bytes()
batch = 8 * 3 * 224 * 224 * 4  # 8 images of 3 x 224 x 224 float32
in_flight = 2 * 2  # num_workers=2, prefetch_factor=2
print(f"/dev/shm here: {'none' if shm is None else f'{shm / 2**20:.0f} MiB'}; "
      f"one batch of 8 ImageNet-size images: {batch / 2**20:.1f} MiB; {in_flight} in flight: {in_flight * batch / 2**20:.0f} MiB")
print("sharing strategies here:", sorted(torch.multiprocessing.get_all_sharing_strategies()),
      "- in use:", torch.multiprocessing.get_sharing_strategy())

# %% [markdown]
# What happens when it fills up? The next cell gives a fresh Python its own 64 MiB `/dev/shm`
# (a private mount, which needs Linux and root: it is skipped elsewhere) and loads small, then
# large batches with 2 workers:

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
    print(run_script(SMALL_SHM_SCRIPT, shm_mib=64).tail(3))
else:
    print("this kernel cannot make a private /dev/shm (needs Linux, root and unshare): skipped")

# %% [markdown]
# A clear error, not a hang: two 48 MiB batches in flight do not fit in 64 MiB. The remedies:
# smaller batches or fewer in flight (`prefetch_factor`), a larger `/dev/shm` (for Docker,
# `--shm-size=1g`), or keeping the data in the workers' files rather than in large tensors.
# `torch.multiprocessing.set_sharing_strategy("file_system")` is the remedy for a different limit,
# running out of open file descriptors when many tensors are shared; it still needs room in
# `/dev/shm`.
#
# ## Check yourself
#
# Your loop crashes with "DataLoader worker (pid(s) 4242) exited unexpectedly" and no traceback
# from your dataset. Which two causes from this notebook fit, and how do you tell them apart?
#
# <details><summary>Answer</summary>
#
# A killed worker (out of memory, or a signal) or a worker that crashed outside Python. An
# exception in your dataset would have come back with its own type and traceback. Run with
# `num_workers=0` to see any error in the main process, and check `dmesg` or your container's
# memory limit for the out-of-memory killer; a bus error mentions shared memory.
# </details>
#
# ## Summary
#
# - An exception in `__getitem__` is re-raised in your loop with the worker's traceback.
# - A killed worker is reported by PID, without a traceback; its events up to the kill are kept.
# - `timeout` bounds how long the loop waits for one batch; the workers are then shut down.
# - Batches travel through `/dev/shm`; where it is too small for the batches in flight, the
#   loader fails with a "No space left on device" error.
# - After each of these runs, no worker process was left behind.
#
# **Next:** `06_summary_of_claims.ipynb` — every claim of the article, measured in one table.
