# %% [markdown]
# # Many ranks: DataLoader workers under `torch.distributed`
#
# Data-parallel training (PyTorch's `DistributedDataParallel`) runs one process per GPU, a
# **rank**. Every rank runs the same script, with a `DataLoader` of its own, and a
# `DistributedSampler` gives each rank its own share of the dataset. Here we start 2 ranks from
# this notebook (on the CPU, with the `gloo` backend), each with 2 workers, trace them all, and
# draw them on one time axis.
#
# **You will learn** how many worker processes a distributed job starts, which items each rank
# reads (and which it reads twice), what `set_epoch` changes, and how traces taken on different
# machines, whose clocks disagree, are put on one time axis.
#
# **Prerequisites:** `01_when_workers_appear.ipynb`, `04_start_methods.ipynb`,
# `07_how_many_workers.ipynb`. **Time:** 15 minutes.

# %%
# %matplotlib inline
import inspect
import multiprocessing
import tempfile
import time
from collections import Counter
from dataclasses import replace

import torch.multiprocessing
from torch.utils.data import DistributedSampler

from helpers import Kind, SleepDataset
from helpers.ranks import RankJob, barrier_offsets, merge_traces, offsets_from_barriers, plot_ranks, rank_main

method = multiprocessing.get_start_method()
dataset = SleepDataset(size=11, delay=0.05, shape=(1,))  # item i is a tensor holding i
print(f"start method for the ranks and their workers: {method}")
print(f"dataset: {dataset}")

# %% [markdown]
# **Predict** before running: with 2 ranks and `num_workers=2`, how many worker processes run?
# With 11 items and 2 ranks, how many items does each rank read, and does every item get read
# exactly once?
#
# ## Starting the ranks
#
# A real job is started by `torchrun`, once per rank. From a notebook,
# `torch.multiprocessing.start_processes` does the same: it starts `nprocs` processes and calls
# `rank_main(rank, job)` in each. The function lives in `helpers/ranks.py`, so that ranks started
# with `spawn` (which import it) find it. Read it: it joins the process group, times a few
# barriers (we need them at the end), then loads its share of the data with a traced loader.

# %%
print(inspect.getsource(rank_main))

# %% [markdown]
# It does not hand the sampler to the loader: this series' `trace_loader` builds its own sampler
# to number the batches it traces. So each rank loads `RankShare(dataset, list(sampler))`, the
# sampler's items in the sampler's order, which is what `DataLoader(dataset, sampler=sampler)`
# would read. Each rank also reads off the items in the batches it received, so we can check that.

# %%
started = time.perf_counter()
with tempfile.TemporaryDirectory() as folder:
    job = RankJob(dataset, folder, world_size=2, num_workers=2, batch_size=2, start_method=method)
    torch.multiprocessing.start_processes(rank_main, args=(job,), nprocs=job.world_size, start_method=method)
    runs = job.results()
print(f"{len(runs)} ranks finished in {time.perf_counter() - started:.1f} s")
for run in runs:
    print(f"rank {run.rank}: pid {run.pid}, its workers: pids {run.worker_pids()}")
workers = {pid for run in runs for pid in run.worker_pids()}
print(
    f"worker processes in all: {len(workers)}; world size x num_workers = {job.world_size * job.num_workers}: "
    f"{len(workers) == job.world_size * job.num_workers}"
)

# %% [markdown]
# ## Every rank starts its own workers
#
# One panel per rank: its main process, then its workers, on one time axis (seconds since
# rank 0's `iter()`). The dotted line is the barrier that the ranks' clocks were aligned on (the
# last section explains how).

# %%
alignment = barrier_offsets(runs)
merged = merge_traces(
    [run.traces[0] for run in runs],
    alignment.offsets,
    aligned_at=runs[0].barrier_exits()[alignment.repetition],
)
for rank in range(merged.world_size):
    lanes = merged.rank(rank)
    print(f"rank {rank}: {len(lanes.worker_pids)} worker lanes, items {sorted(e.index for e in lanes.of(Kind.ITEM_LOADED))}")
plot_ranks(merged, title=f"{job.world_size} ranks x {job.num_workers} workers, {method}")

# %% [markdown]
# Each rank is an ordinary program with an ordinary `DataLoader`: its `iter()` starts its own
# workers, and nothing is shared between ranks. So a job runs *world size × num_workers* worker
# processes: with 8 GPUs and `num_workers=8`, 64 workers plus 8 ranks, competing for the same
# CPUs and memory (notebook 07 measured what each costs).
#
# ## Which items each rank reads

# %%
for run in runs:
    print(f"rank {run.rank}: the sampler gave {list(run.indices[0])}; its batches held {list(run.received[0])}")
print(
    "the batches held exactly the sampler's items, in its order:",
    all(run.received[0] == run.indices[0] for run in runs),
)

slots = [(position * job.world_size + run.rank, run.rank, item) for run in runs for position, item in enumerate(run.indices[0])]
padding = [(rank, item) for slot, rank, item in slots if slot >= len(dataset)]
shares = [
    {item for slot, rank, item in slots if rank == r and slot < len(dataset)} for r in range(job.world_size)
]
counts = Counter(item for _, _, item in slots)
print(f"\n{len(slots)} slots for {len(dataset)} items: {len(slots) - len(dataset)} padded slot(s), {padding} (rank, item)")
print(f"items read twice: {sorted(i for i, n in counts.items() if n > 1)}")
print(f"apart from the padding, the ranks' shares are disjoint: {not set.intersection(*shares)}")
print(f"together they cover every item: {set.union(*shares) == set(range(len(dataset)))}")

# %% [markdown]
# Every rank must run the same number of steps (at each step DDP averages the ranks'
# gradients, and a rank with nothing left would leave the others waiting), so
# `DistributedSampler` gives every rank `ceil(len / world_size)` items. When the dataset does
# not divide evenly, it pads the shuffled order with its first items again: those are read twice
# per epoch, once by each of two ranks. With `drop_last=True` it cuts the order instead, and
# those items are not read in that epoch.
#
# How do the ranks agree without talking? Every rank computes the *same* shuffled order, from
# the same seed, and keeps every `world_size`-th slot starting at its rank. The lines of the
# installed PyTorch that do it:

# %%
source = inspect.getsource(DistributedSampler.__iter__).splitlines()
for line in source:
    if any(key in line for key in ("manual_seed", "randperm", "indices += indices[", "indices[self.rank")):
        print(line.strip())

# %% [markdown]
# ## What `set_epoch` changes
#
# The seed is `seed + epoch`, and the epoch is whatever `set_epoch` last set. Each rank also
# recorded its sampler's order for three epochs, with `set_epoch(epoch)` before each, and without:

# %%
for run in runs:
    print(f"rank {run.rank}")
    for epoch, (told, untold) in enumerate(zip(run.indices, run.without_set_epoch)):
        print(f"  epoch {epoch}: with set_epoch {list(told)}   without {list(untold)}")
rank0 = runs[0]
print(f"\nwith set_epoch, every epoch has a new order: {len(set(rank0.indices)) == len(rank0.indices)}")
print(f"and rank 0's share of items changes: {len({frozenset(share) for share in rank0.indices}) > 1}")
print(f"without set_epoch, every epoch repeats epoch 0: {len(set(rank0.without_set_epoch)) == 1}")

# %% [markdown]
# Forgetting `set_epoch` does not raise anything: every epoch silently sees the same order, and
# each rank the same items. Call `sampler.set_epoch(epoch)` at the start of every epoch, before
# `iter()`.
#
# ## Across machines: whose clock?
#
# On one machine all ranks read one clock, so merging their traces is easy. Ranks on different
# machines read different clocks, and even synchronised wall clocks (NTP) disagree by
# milliseconds, the length of a batch. So the ranks make a moment they all see: each rank reads
# its clock just before it enters `dist.barrier()` and just after it leaves, and knows where its
# trace's *t* = 0 (its `iter()`) lies on the same clock.
#
# No rank can leave a barrier before the last one has entered it. If every rank left at that
# same instant, then with *b<sub>r</sub>* the time rank *r* left, on its trace's clock,
#
# > offset<sub>r</sub> = *b<sub>r</sub>* − *b<sub>0</sub>*, and an event of rank *r* at *t*
# > happened at *t* − offset<sub>r</sub> on rank 0's clock.
#
# Ranks do not leave at exactly the same instant, so the offset is wrong by the **exit skew**:
# the spread of the barrier's exit times. Each rank left within the barrier's duration on that
# rank (exit minus entry, measured on its own clock, no shared clock needed), so the skew is at
# most the longest duration. The first barrier waits for the slowest rank to start, so it is
# long; the ranks enter the later ones almost together, and those are short unless the operating
# system pauses a rank in the middle. Repeating the barrier and keeping the repetition whose
# longest duration is shortest gives the smallest bound. `helpers/ranks.py`
# implements this in `offsets_from_barriers` and `merge_traces`; here are the measurements:

# %%
durations = [max(run.barrier_durations()[k] for run in runs) for k in range(job.barriers)]
print("longest duration of each barrier (µs):", [round(d * 1e6) for d in durations])
print(f"barrier used: repetition {alignment.repetition}; offsets right to within {alignment.bound_s * 1e6:.0f} µs")
print("offsets (rank r's clock minus rank 0's, ms):", [round(o * 1e3, 3) for o in alignment.offsets])
if alignment.true_offsets is not None:
    print("true offsets, from this machine's shared clock (ms):", [round(o * 1e3, 3) for o in alignment.true_offsets])
    print(
        f"error of the barrier offsets: {max(abs(e) for e in alignment.errors_s) * 1e6:.0f} µs; "
        f"the exit spread measured on the shared clock: {alignment.exit_spread_s * 1e6:.0f} µs; "
        f"within the bound: {max(abs(e) for e in alignment.errors_s) <= alignment.bound_s}"
    )

# %% [markdown]
# Now pretend rank 1 ran on a machine whose clock reads 2.5 s ahead. Lining the traces up by
# each rank's own reading of its `iter()` (the naive way) puts rank 1 2.5 s late. The barrier
# offsets do not change at all: rank 1 read both its barrier exit and its `iter()` on the same
# clock, so the clock's error cancels.

# %%
ahead = 2.5
skewed = [runs[0], replace(
    runs[1],
    barriers_ns=tuple((entered + int(ahead * 1e9), left + int(ahead * 1e9)) for entered, left in runs[1].barriers_ns),
    origins_ns=tuple(origin + int(ahead * 1e9) for origin in runs[1].origins_ns),
)]
naive = [(skewed[0].origins_ns[0] - run.origins_ns[0]) / 1e9 for run in skewed]
offsets, _, bound = offsets_from_barriers(
    [run.barrier_exits() for run in skewed], [run.barrier_durations() for run in skewed]
)
print(f"naive offsets (s): {[round(o, 4) for o in naive]}")
print(f"barrier offsets (s): {[round(o, 4) for o in offsets]}, the same as before: {offsets == alignment.offsets}")
first_item = runs[1].traces[0].first(Kind.ITEM_LOADED).start
print(
    f"rank 1's first item, on rank 0's clock: {first_item - naive[1]:.3f} s merged naively, "
    f"{first_item - offsets[1]:.3f} s merged on the barrier"
)
plot_ranks(
    merge_traces([run.traces[0] for run in skewed], naive),
    title=f"Merged by raw clock readings, rank 1's clock {ahead} s ahead: its lanes land {ahead} s late",
)

# %% [markdown]
# In a real job each rank writes its trace and its barrier readings to a file, and one process
# merges them afterwards with the same two functions. Events of different ranks closer together
# than the bound cannot be ordered with confidence; everything farther apart is in the right order
# (`tests/test_ranks.py` checks this with clocks set apart by known amounts).
#
# ## Check yourself
#
# **1.** With `drop_last=True`, how many of the 11 items does each of the 2 ranks read, and how
# many items are not read in an epoch? Predict, then check (a `DistributedSampler` given
# `num_replicas` and `rank` needs no process group):

# %%
world_size = 2
for drop_last in (False, True):
    shares = [
        list(DistributedSampler(dataset, num_replicas=world_size, rank=r, shuffle=True, seed=0, drop_last=drop_last))
        for r in range(world_size)
    ]
    read = Counter(item for share in shares for item in share)
    print(
        f"drop_last={drop_last}: items per rank {[len(share) for share in shares]}; "
        f"read twice: {sorted(i for i, n in read.items() if n > 1)}; "
        f"not read: {sorted(set(range(len(dataset))) - set(read))}"
    )

# %% [markdown]
# <details><summary>Solution</summary>
#
# `drop_last=True` gives each rank `floor(11 / 2) = 5` items and cuts the shuffled order after
# 10, so 1 item is not read in that epoch (a different one each epoch, with `set_epoch`). With
# `drop_last=False` each rank reads 6, and 1 item is read twice.
# </details>
#
# **2.** With 3 ranks and 11 items, how many items does each rank read, and how many are read
# twice? Set `world_size = 3` above and run the check again.
#
# <details><summary>Solution</summary>
#
# `ceil(11 / 3) = 4` items each, 12 slots, so 1 padded slot: one item read twice. In general
# `world_size × ceil(len / world_size) − len` items are read twice per epoch.
# </details>
#
# **3.** A machine with 8 CPUs and 4 GPUs runs 4 ranks with `num_workers=4`. How many worker
# processes run, and what would you change if loading computes rather than waits?
#
# <details><summary>Solution</summary>
#
# 4 × 4 = 16 workers (plus 4 ranks) on 8 CPUs. Each rank's `DataLoader` warns only about its own
# 4 workers, which is within the 8 CPUs, so PyTorch does not warn at all. For loading that
# computes, notebook 07's rule applies to the whole machine: about 8 CPUs ÷ 4 ranks = 2 workers
# per rank, fewer if the training step uses the CPU. Memory per worker is multiplied by 16 too.
# </details>
#
# **4.** The bound printed above is the longest barrier duration. Can you tell which of two
# events on different ranks came first if they are 10 µs apart? 10 ms apart?
#
# <details><summary>Solution</summary>
#
# Only if they are farther apart than the bound: compare both with the bound printed on this
# machine. Between machines the bound is the network's round trip, tens of microseconds on a fast
# interconnect, more on ordinary Ethernet.
# </details>
#
# ## Summary
#
# - Each rank runs its own `DataLoader` and starts its own workers at its own `iter()`: a job
#   runs world size × `num_workers` worker processes (counted above).
# - `DistributedSampler` gives each rank every `world_size`-th slot of one shuffled order that
#   every rank computes from the same seed; the shares are disjoint and cover the dataset, except
#   that padding repeats a few items when the size does not divide evenly (computed above).
# - `set_epoch(epoch)` changes the order (and each rank's share) every epoch; without it every
#   epoch repeats the first.
# - Traces from different machines are aligned by a barrier: offset<sub>r</sub> = *b<sub>r</sub>*
#   − *b<sub>0</sub>*, right to within the barrier's exit skew, which is at most the barrier's
#   duration; repeating the barrier and keeping the quickest repetition tightens the bound.
#
# **Further reading:** [`DistributedSampler`](https://pytorch.org/docs/stable/data.html#torch.utils.data.distributed.DistributedSampler),
# [`torchrun`](https://pytorch.org/docs/stable/elastic/run.html), and the
# [DDP tutorial](https://pytorch.org/tutorials/intermediate/ddp_tutorial.html).
