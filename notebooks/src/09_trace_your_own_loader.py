# %% [markdown]
# # Trace your own DataLoader
#
# The earlier notebooks traced loaders this series built. Here you trace **yours**: an existing
# `DataLoader` over images decoded from files, in a training loop you do not change except for one
# line. Then you read its swimlane like a profiler: is the loop starved for data, is one worker
# slower than the others, is a finished batch stuck behind a slow one? Finally you save the trace
# for Perfetto, which zooms into a million events.
#
# **You will learn** how to wrap a loader with `trace(loader)`, what each lane of its chart says
# about your pipeline, and how to export a trace to Perfetto.
#
# **Prerequisites:** `01_when_workers_appear.ipynb`, `03_custom_collate.ipynb`. **Time:** 15 minutes.

# %%
# %matplotlib inline
import shutil
import tempfile
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from torch.utils.data import DataLoader

from helpers import Kind, plot_swimlanes, trace_loader
from helpers.examples import DecodedImages, ShardedImageStream
from helpers.experiment import trace
from helpers.export import write_chrome_trace

START_METHOD = None  # this kernel's default; or "fork", "spawn", "forkserver"

# %% [markdown]
# ## A small image dataset on disk
#
# Forty-eight 96×96 PNG images in four classes, written to a temporary folder, plus two large
# 768×768 photos (numbers 5 and 6) that take much longer to decode, as real datasets always have
# a few. The dataset class, `DecodedImages`, lives in `helpers/examples.py` (a module, so that
# `spawn` workers can import it): each item decodes a file, crops a random 48×48 window and
# flips it half the time.

# %%
folder = Path(tempfile.mkdtemp(prefix="trace-your-loader-"))
rng = np.random.default_rng(0)
for number in range(48):
    side = 768 if number in (5, 6) else 96
    matplotlib.image.imsave(folder / f"{number:03d}_class{number % 4}.png", rng.random((side, side, 3)))
dataset = DecodedImages(folder)
image, label, number = dataset[0]
print(dataset, "- one item:", tuple(image.shape), "class", label, "from file", number)

# %% [markdown]
# ## Your training loop, as it is
#
# A plain loader, and a training loop that knows nothing about tracing: a small linear model,
# one optimiser step per batch.

# %%
loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context=START_METHOD,
                    generator=torch.Generator().manual_seed(0))


def train_one_epoch(batches, model=None):
    model = model or torch.nn.Linear(3 * 48 * 48, 4)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    for images, labels, _numbers in batches:
        loss = torch.nn.functional.cross_entropy(model(images.flatten(1)), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return loss.item()


# %% [markdown]
# ## Trace it: one line changes
#
# `trace(loader)` builds a traced copy of your loader — same dataset, sampler, collate function,
# workers and settings, so the same batches — and leaves your `loader` untouched. Pass the copy
# where you passed the loader; leaving the `with` block shuts its workers down and makes the trace.

# %%
with trace(loader) as traced:
    train_one_epoch(traced)
first_epoch = traced.trace
print(first_epoch.summary())

# %%
plot_swimlanes(first_epoch)

# %% [markdown]
# ## Reading the swimlane
#
# - **Main lane** (top): `DataLoader()` and `iter()`, the hand-outs of batches (blue triangles),
#   then each `next()` of your loop: a grey bar is time your loop spent *waiting* for a batch,
#   the black triangle the moment it got one.
# - **Worker lanes**: each blue bar is one item decoded (labelled with its index), each orange bar
#   a batch collated. A worker builds whole batches, in turns with the others.
#
# Two numbers say whether the loop is **starved**: how much of its time it spent waiting inside
# `next()`, and how long the workers took per item.

# %%
def waiting_share(trace):
    """The share of the loop's time spent waiting inside next(), from its first batch to its last
    (the start-up before the first batch is left out: every loader pays it once)."""
    received = trace.of(Kind.BATCH_RECEIVED)
    waited = sum(e.duration for e in received[1:])
    return waited / (received[-1].end - received[0].end)


def item_times(trace):
    """Mean milliseconds per item, for each worker id."""
    times = {}
    for e in trace.of(Kind.ITEM_LOADED):
        times.setdefault(e.worker_id, []).append(e.duration * 1000)
    return {worker: round(float(np.mean(ms)), 1) for worker, ms in sorted(times.items())}


share = waiting_share(first_epoch)
print(f"the loop waited {share:.0%} of its time in next(); ms per item by worker: {item_times(first_epoch)}")
print("starved: data comes slower than the loop uses it" if share > 0.25 else "fed: the loop rarely waits")
slowest = max(first_epoch.of(Kind.ITEM_LOADED), key=lambda e: e.duration)
print(f"slowest item: {slowest.index} ({slowest.duration * 1000:.0f} ms, worker {slowest.worker_id})")

# %% [markdown]
# The training step is tiny here, so unless your machine is much faster at decoding than at
# stepping, the loop is **starved**: a large share of its time goes to waiting in `next()`, and on
# the chart grey bars fill the main lane. The two large photos stand out as long blue bars, and
# the batches holding them are the longest waits. Feeding a starved loop means making items
# cheaper (smaller files, decoding once and caching) or adding workers — as long as there are
# CPUs for them.
#
# ## A slow worker
#
# Now one worker is slower than the other: every item it loads takes 40 ms more, as if its disk
# (or its share of the CPU) were slower. The trace shows it per worker:

# %%
slow = DecodedImages(folder, slow_workers={1: 0.04})
slow_loader = DataLoader(slow, batch_size=4, num_workers=2, multiprocessing_context=START_METHOD)
with trace(slow_loader) as traced:
    train_one_epoch(traced)
in_order = traced.trace
print("ms per item by worker:", item_times(in_order))
print("batches received, in order:", [e.index for e in in_order.of(Kind.BATCH_RECEIVED)])
plot_swimlanes(in_order)

# %% [markdown]
# ## Head-of-line blocking, and `in_order`
#
# Workers take batches in turns: worker 0 gets batches 0, 2, 4, …; worker 1 (the slow one) gets
# 1, 3, 5, …. With the default `in_order=True` your loop receives batches strictly by number, so
# while it waits for slow batch 1, worker 0's finished batches 2 and 4 wait too, and worker 0
# runs out of hand-outs and idles. That is **head-of-line blocking**. With `in_order=False`
# the loop takes whatever batch is ready:

# %%
unordered_loader = DataLoader(slow, batch_size=4, num_workers=2, in_order=False,
                              multiprocessing_context=START_METHOD)
with trace(unordered_loader) as traced:
    train_one_epoch(traced)
out_of_order = traced.trace
for name, run in (("in_order=True", in_order), ("in_order=False", out_of_order)):
    received = run.of(Kind.BATCH_RECEIVED)
    items = {w: sum(1 for e in run.of(Kind.ITEM_LOADED) if e.worker_id == w) for w in (0, 1)}
    print(f"{name:>15}: batches in the order {[e.index for e in received]}; last at "
          f"{received[-1].end:.2f} s; items loaded by worker 0 / 1: {items[0]} / {items[1]}")
plot_swimlanes(out_of_order)

# %% [markdown]
# Without the order constraint the fast worker keeps working and loads more of the epoch, and the
# epoch ends sooner. The price: batches no longer come in sampler order, which matters if your
# loop (or its reproducibility) depends on it.
#
# ## An iterable-style stream, sharded by worker
#
# An `IterableDataset` has no indices: each worker runs its own copy of `__iter__`, and unless
# that copy reads a different part of the data, every file is read once *per worker*.
# `ShardedImageStream` asks `get_worker_info()` which worker it is and reads every second file
# from its id on. `trace_loader` takes `DataLoader`'s own arguments; each item on a worker's lane
# is numbered by its position in that worker's stream.

# %%
with trace_loader(ShardedImageStream(folder), batch_size=8, num_workers=2,
                  multiprocessing_context=START_METHOD) as stream_loader:
    files_in = {int(batch_number): numbers.tolist()
                for batch_number, (_images, _labels, numbers) in enumerate(stream_loader)}
stream = stream_loader.trace
for number, worker, _pid, positions in stream.batches():
    print(f"batch {number}: worker {worker} yielded its items {positions[0]}–{positions[-1]}: "
          f"files {files_in[number]}")

# %% [markdown]
# Worker 0 yielded the even-numbered files, worker 1 the odd ones: no file twice. Remove the
# sharding line from `__iter__` and each file would appear twice in the epoch.
#
# ## Export to Perfetto
#
# Perfetto (https://ui.perfetto.dev) draws traces of millions of events and lets you zoom, select
# and measure. `write_chrome_trace` saves a trace in the Chrome trace format it reads: each
# process is a track, each item and collate a slice inside its batch's slice, and arrows follow
# each batch from hand-out to worker to your loop. Open the file with "Open trace file" in
# Perfetto, or "Load" in `chrome://tracing`.

# %%
path = write_chrome_trace(in_order, folder / "slow_worker.json")
print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); copy it somewhere to keep it")

# %% [markdown]
# ## Check yourself
#
# In the `in_order=True` chart, find batch 2. When did worker 0 finish collating it, and when
# did your loop receive it? What was the loop doing in between?
#
# <details><summary>Answer</summary>
#
# Worker 0 finished batch 2 well before the loop received it. In between, the loop was waiting
# in `next()` for batch 1 from the slow worker 1: with `in_order=True` a finished batch is
# held back until every batch before it has been received. The gap between the orange collate
# bar and the black triangle is the head-of-line delay.
# </details>
#
# ## Summary
#
# - `with trace(loader) as traced:` traces an existing `DataLoader` without changing it; pass
#   `traced` where you passed `loader`. `trace_loader(...)` takes `DataLoader`'s own arguments.
# - A **starved** loop shows as grey waits filling the main lane; its share of waiting time says
#   how much faster the data has to come.
# - A **slow worker** shows as longer bars on its lane; with `in_order=True` its batches hold
#   back the others (**head-of-line blocking**), `in_order=False` lets the loop go on.
# - An iterable-style dataset must shard itself with `get_worker_info()`; the trace shows what
#   each worker yielded.
# - `write_chrome_trace` saves a trace for Perfetto or `chrome://tracing`.

# %%
shutil.rmtree(folder)  # the images and the exported trace
