"""Events recorded in the main process and in DataLoader workers, the log that carries them, and
the :class:`Trace` that a finished run is read back as.

Every process appends fixed-size records to memory-mapped files of its own inside one temporary
directory. A write is one ``struct.pack_into`` into shared memory: no lock, no pipe, no feeder
thread, and the record is visible to the main process the moment it is written, so the events of
a worker that crashes or is killed are kept. The main process reads every file back at the end.
Timestamps come from ``time.perf_counter_ns``, a system-wide monotonic clock on Linux, macOS and
Windows, so times taken in different processes can be compared.
"""

from __future__ import annotations

import enum
import mmap
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np
import torch.utils.data

__all__ = ["FORK_SERVER_ID", "Event", "EventLog", "Kind", "Trace", "WaitEnd", "describe"]


class Kind(enum.IntEnum):
    """What happened. Instant events have ``start == end``.

    A worker's life, in order: ``PROCESS_CREATED`` (recorded by the main process around
    ``Process.start()``), ``PROCESS_RUNNING`` (its first moment of Python code of ours, after the
    interpreter started; under ``spawn`` and ``forkserver`` before it imports PyTorch and unpickles
    the dataset), ``WORKER_READY`` (``worker_init_fn`` ran: it waits for indices now), items and
    collates, then ``WORKER_EXITED``.
    """

    LOADER_CREATED = 1  #: main: ``DataLoader(...)`` ran from start to end
    ITER_CALLED = 2  #: main: ``iter(loader)`` ran from start to end; t = 0 is its start
    BATCH_REQUESTED = 3  #: main: batch ``index`` was handed out to be loaded
    WORKER_READY = 4  #: worker: ``worker_init_fn`` ran; ``index`` is the worker id
    ITEM_LOADED = 5  #: ``dataset[index]`` ran from start to end
    ITEM_FAILED = 6  #: ``dataset[index]`` raised
    COLLATED = 7  #: ``collate_fn`` built batch ``index``
    BATCH_RECEIVED = 8  #: main: the loop asked for the next batch (start) and got batch ``index`` (end)
    WORKER_EXITED = 9  #: worker: the process is exiting normally
    ITER_CLOSED = 10  #: main: the iterator and its workers were shut down
    PROCESS_CREATED = 11  #: main, on the worker's lane: ``Process.start()`` for it ran from start to end
    PROCESS_RUNNING = 12  #: worker: the first moment of Python code of ours in the new process
    WAIT_ENDED = (
        13  #: main: a ``next()`` that got no batch, from call to raise; ``index`` is a :class:`WaitEnd`
    )
    FORK_SERVER = 14  #: the fork server's lane: it was started (start to end) or already ran (instant)


class WaitEnd(enum.IntEnum):
    """How a ``next()`` that returned no batch ended (the ``index`` of a ``WAIT_ENDED`` event)."""

    END_OF_DATA = 0  #: ``StopIteration``: no batch left; PyTorch shut the workers down inside it
    TIMEOUT = 1  #: no batch within the loader's ``timeout``
    WORKER_DIED = 2  #: a worker process ended without a normal exit (killed, crashed)
    ERROR = 3  #: an exception from a worker (or the loader) was re-raised
    INTERRUPTED = 4  #: ``KeyboardInterrupt``

    @classmethod
    def of(cls, error: BaseException | None) -> WaitEnd:
        """How a ``next()`` that raised ``error`` (``None``: ``StopIteration``) ended."""
        if error is None or isinstance(error, StopIteration):
            return cls.END_OF_DATA
        if isinstance(error, KeyboardInterrupt):
            return cls.INTERRUPTED
        text = str(error)
        if isinstance(error, RuntimeError) and "DataLoader timed out" in text:
            return cls.TIMEOUT
        if isinstance(error, RuntimeError) and ("exited unexpectedly" in text or "killed by signal" in text):
            return cls.WORKER_DIED
        return cls.ERROR

    @property
    def label(self) -> str:
        return {
            WaitEnd.END_OF_DATA: "end of data (StopIteration)",
            WaitEnd.TIMEOUT: "timed out",
            WaitEnd.WORKER_DIED: "a worker died",
            WaitEnd.ERROR: "error raised",
            WaitEnd.INTERRUPTED: "interrupted",
        }[self]


FORK_SERVER_ID = -2  #: the ``worker_id`` of the fork server's events


@dataclass(frozen=True, slots=True)
class Event:
    """One event, with times in seconds since ``iter()`` was called.

    >>> e = Event(pid=7, worker_id=0, kind=Kind.ITEM_LOADED, start=0.5, end=0.75, index=3)
    >>> e.duration
    0.25
    """

    pid: int
    worker_id: int  #: -1 in the main process, ``FORK_SERVER_ID`` for the fork server
    kind: Kind
    start: float
    end: float
    index: int  #: dataset index for items, batch number for batches, -1 otherwise

    @property
    def duration(self) -> float:
        return self.end - self.start


_RECORD = struct.Struct("<qqqiii4x")
_DTYPE = np.dtype(
    [
        ("start", "<i8"),
        ("end", "<i8"),
        ("index", "<i8"),
        ("pid", "<i4"),
        ("worker_id", "<i4"),
        ("kind", "<i4"),
        ("pad", "<i4"),
    ]
)
_CHUNK_RECORDS = 4096
_CHUNK_BYTES = _CHUNK_RECORDS * _RECORD.size
_WORDS = _RECORD.size // 8  #: a record as 64-bit words: start, end, index, pid + worker id, kind
_KIND_WORD = 4
assert _DTYPE.itemsize == _RECORD.size == 40


class _Writer:
    """Appends records to this process's memory-mapped chunk files."""

    def __init__(self, directory: str, worker_id: int | None = None) -> None:
        self.pid = os.getpid()
        if worker_id is None:
            info = torch.utils.data.get_worker_info()
            worker_id = info.id if info is not None else -1
        self.worker_id = worker_id
        self.current_batch = -1  # the batch this process is loading, for the collate event
        self._directory = directory
        self._map: mmap.mmap | None = None
        self._records: np.ndarray | None = None
        self._words: memoryview | None = None
        self._offset = _CHUNK_BYTES

    def record(
        self,
        kind: Kind,
        start: int,
        end: int,
        index: int = -1,
        pid: int | None = None,
        worker_id: int | None = None,
    ) -> None:
        """Append one record; ``pid`` and ``worker_id`` default to this process's (the main process
        gives a worker's, to draw on its lane what it did for that worker)."""
        if self._offset == _CHUNK_BYTES:
            self._next_chunk()
        pid = self.pid if pid is None else pid
        worker_id = self.worker_id if worker_id is None else worker_id
        _RECORD.pack_into(self._map, self._offset, start, end, index, pid, worker_id, kind)  # type: ignore[arg-type]
        self._offset += _RECORD.size

    def load_items(self, load: Callable[[int], Any], indices: Sequence[int]) -> list[Any]:
        """``[load(i) for i in indices]``, recording each item's load (or failure) as it ends.

        This is the tracer's hot loop. The batch's records are laid out before loading (index,
        pid, worker id, kind; with no end time yet, so :meth:`EventLog.read` skips them), and each
        item then costs one clock read and two stores into shared memory: its start (the previous
        item's end) and its end. A record is complete the moment its item is loaded, so a worker
        killed mid-batch keeps the records of the items it finished."""
        n = len(indices)
        if n > _CHUNK_RECORDS:
            return [
                item
                for start in range(0, n, _CHUNK_RECORDS)
                for item in self.load_items(load, indices[start : start + _CHUNK_RECORDS])
            ]
        if self._offset + n * _RECORD.size > _CHUNK_BYTES:
            self._next_chunk()
        first = self._offset // _RECORD.size
        records = self._records[first : first + n]
        records["index"] = indices  # pid and worker id were laid out with the chunk
        records["kind"] = Kind.ITEM_LOADED
        self._offset += n * _RECORD.size
        words, word, clock = self._words, first * _WORDS, perf_counter_ns
        items: list[Any] = []
        append = items.append
        start = clock()
        for index in indices:
            try:
                item = load(index)
            except BaseException:
                words[word + _KIND_WORD] = Kind.ITEM_FAILED
                words[word] = start
                words[word + 1] = clock()
                raise
            words[word] = start
            start = words[word + 1] = clock()
            word += _WORDS
            append(item)
        return items

    def _next_chunk(self) -> None:
        self.close()
        fd, _ = tempfile.mkstemp(dir=self._directory, prefix=f"{self.pid}-", suffix=".events")
        try:
            os.ftruncate(fd, _CHUNK_BYTES)
            self._map = mmap.mmap(fd, _CHUNK_BYTES)
        finally:
            os.close(fd)
        self._records = np.frombuffer(self._map, dtype=_DTYPE)  # views for load_items
        self._records["pid"] = self.pid
        self._records["worker_id"] = self.worker_id
        self._words = memoryview(self._map).cast("q")
        self._offset = 0

    def close(self) -> None:
        if self._map is not None:
            self._records = None  # views must go before the map can close
            self._words.release()
            self._map.close()
            self._map = None


def _memory_backed_dir() -> str | None:
    """``/dev/shm`` where there is one we may write to: writing to a file mapped from disk makes
    the kernel fault on pages it has written back, which slows the hot loop; tmpfs does not."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class EventLog:
    """A directory of per-process event files, shared by a main process and its workers.

    It pickles as its path, so it travels to ``spawn`` and ``forkserver`` workers inside the
    traced dataset; a ``fork`` child notices it has a new PID and opens files of its own.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="dataloader-trace-", dir=_memory_backed_dir())
        self._writer: _Writer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directory = state["directory"]
        self._writer = None

    def writer(self, worker_id: int | None = None) -> _Writer:
        """The writer for the calling process (hot paths fetch it once per batch). ``worker_id``
        names a worker process whose DataLoader worker info is not set yet."""
        writer = self._writer
        if writer is None or writer.pid != os.getpid():
            writer = self._writer = _Writer(self.directory, worker_id)
        return writer

    def record(self, kind: Kind, start: int, end: int | None = None, index: int = -1) -> None:
        """Record an event; ``end`` defaults to ``start`` (an instant)."""
        self.writer().record(kind, start, start if end is None else end, index)

    def record_for(self, pid: int, worker_id: int, kind: Kind, start: int, end: int, index: int = -1) -> None:
        """Record, from this process, an event on another process's lane (its creation, say)."""
        self.writer().record(kind, start, end, index, pid=pid, worker_id=worker_id)

    def read(self) -> np.ndarray:
        """Every record written so far by any process, ordered by start time."""
        chunks = [np.fromfile(path, dtype=_DTYPE) for path in sorted(Path(self.directory).glob("*.events"))]
        records = np.concatenate(chunks) if chunks else np.empty(0, dtype=_DTYPE)
        records = records[(records["kind"] != 0) & (records["end"] != 0)]  # laid out but never finished
        return records[np.argsort(records["start"], kind="stable")]

    def close(self) -> None:
        """Close this process's files and delete the directory."""
        if self._writer is not None and self._writer.pid == os.getpid():
            self._writer.close()
        self._writer = None
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class Trace:
    """What one traced run recorded, with times in seconds since the first ``iter()``."""

    events: tuple[Event, ...]
    main_pid: int
    start_method: str | None  #: ``None`` when ``num_workers == 0``
    settings: dict[str, Any] = field(default_factory=dict)
    processes_after_construction: tuple[int, ...] = ()  #: new child processes right after ``DataLoader()``
    leftover_processes: tuple[int, ...] = ()  #: new child processes still alive after the run
    error: BaseException | None = None  #: what ended the loop early, if anything did

    @classmethod
    def from_records(cls, records: np.ndarray, **fields: Any) -> Trace:
        iters = records["start"][records["kind"] == Kind.ITER_CALLED]
        t0 = int(iters[0]) if len(iters) else (int(records["start"][0]) if len(records) else 0)
        events = tuple(
            Event(
                int(r["pid"]),
                int(r["worker_id"]),
                Kind(int(r["kind"])),
                (int(r["start"]) - t0) / 1e9,
                (int(r["end"]) - t0) / 1e9,
                int(r["index"]),
            )
            for r in records
        )
        return cls(events=events, **fields)

    def of(self, *kinds: Kind) -> list[Event]:
        """The events of the given kinds, in time order."""
        return [e for e in self.events if e.kind in kinds]

    def first(self, kind: Kind) -> Event | None:
        """The earliest event of ``kind``, or ``None``."""
        return next((e for e in self.events if e.kind == kind), None)

    @property
    def worker_pids(self) -> dict[int, int]:
        """PID -> worker id of every worker process that recorded anything."""
        return {e.pid: e.worker_id for e in self.events if e.worker_id >= 0}

    def batches(self) -> list[tuple[int, int, int, list[int]]]:
        """``(batch number, worker id, pid, item indices)`` for each batch collated, in time order:
        the items a process loaded since its previous collate are the ones it collated."""
        pending: dict[int, list[int]] = {}
        found = []
        for e in self.events:
            if e.kind == Kind.ITEM_LOADED:
                pending.setdefault(e.pid, []).append(e.index)
            elif e.kind == Kind.COLLATED:
                found.append((e.index, e.worker_id, e.pid, pending.pop(e.pid, [])))
        return found

    @property
    def batches_received(self) -> int:
        """How many batches the loop received."""
        return sum(1 for e in self.events if e.kind == Kind.BATCH_RECEIVED)

    @property
    def handed_out_before_first_batch(self) -> int:
        """How many batches were handed out to be loaded before the loop asked for the batch it
        received first (all of them if it received none): what ``iter()`` primed the workers
        with, ``num_workers × prefetch_factor`` or the number of batches if that is smaller. (As
        each batch arrives, PyTorch hands out one more; those are not counted.)"""
        first = self.first(Kind.BATCH_RECEIVED)
        limit = first.start if first is not None else float("inf")
        return sum(1 for e in self.of(Kind.BATCH_REQUESTED) if e.start < limit)

    @property
    def wasted_batches(self) -> list[int]:
        """Numbers of the batches a worker built that the loop never received (after a ``break``,
        an error or a timeout), in order."""
        received = {e.index for e in self.of(Kind.BATCH_RECEIVED)}
        return sorted({e.index for e in self.of(Kind.COLLATED) if e.index >= 0 and e.index not in received})

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's PID, for a run under ``forkserver``."""
        event = next((e for e in self.events if e.kind == Kind.FORK_SERVER), None)
        return None if event is None else event.pid

    def waits_ended(self) -> list[tuple[Event, WaitEnd]]:
        """Each ``next()`` that returned no batch, and how it ended."""
        return [(e, WaitEnd(e.index)) for e in self.of(Kind.WAIT_ENDED)]

    def log_lines(
        self,
        kinds: tuple[Kind, ...] = (
            Kind.WORKER_READY,
            Kind.ITEM_LOADED,
            Kind.ITEM_FAILED,
            Kind.COLLATED,
            Kind.BATCH_RECEIVED,
            Kind.WAIT_ENDED,
        ),
    ) -> str:
        """The events as lines of text in time order, like prints with exact times and PIDs."""
        lines = []
        for e in sorted(self.of(*kinds), key=lambda e: e.end):
            who = "main" if e.worker_id < 0 else f"worker {e.worker_id}"
            lines.append(f"t = {e.end:6.3f} s  {who:>8} (pid {e.pid}): {describe(e)}")
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines that describe the run in words."""
        counts = {kind.name.lower(): len(self.of(kind)) for kind in Kind if self.of(kind)}
        lines = [
            f"start method: {self.start_method or 'none (num_workers=0)'}; main pid {self.main_pid}; "
            f"worker processes: {len(self.worker_pids)}",
            "events: " + ", ".join(f"{name} {n}" for name, n in counts.items()),
            f"batches received: {self.batches_received}; handed out before the first was received: "
            f"{self.handed_out_before_first_batch}; built but never received: {len(self.wasted_batches)}",
        ]
        last = max((e.end for e in self.events), default=0.0)
        lines.append(f"last event at t = {last:.3f} s after iter()")
        for wait, how in self.waits_ended():
            lines.append(
                f"a next() from t = {wait.start:.3f} s to {wait.end:.3f} s got no batch: {how.label}"
            )
        if self.error is not None:
            lines.append(f"ended by {type(self.error).__name__}: {self.error}")
        return "\n".join(lines)


def describe(event: Event) -> str:
    """What ``event`` means, in a few words.

    >>> describe(Event(pid=7, worker_id=0, kind=Kind.COLLATED, start=0.5, end=0.5, index=3))
    'collated batch 3'
    """
    kind, index = event.kind, event.index
    if kind == Kind.WAIT_ENDED:
        return f"next() got no batch: {WaitEnd(index).label}"
    return {
        Kind.LOADER_CREATED: "DataLoader() ran",
        Kind.ITER_CALLED: "iter() ran",
        Kind.BATCH_REQUESTED: f"handed out batch {index}",
        Kind.PROCESS_CREATED: "process created by main",
        Kind.PROCESS_RUNNING: "process runs Python",
        Kind.WORKER_READY: "worker ready (worker_init_fn ran)",
        Kind.ITEM_LOADED: f"loaded item {index}",
        Kind.ITEM_FAILED: f"failed to load item {index}",
        Kind.COLLATED: f"collated batch {index}",
        Kind.BATCH_RECEIVED: f"received batch {index}",
        Kind.WORKER_EXITED: "worker exited",
        Kind.ITER_CLOSED: "workers shut down",
        Kind.FORK_SERVER: "fork server",
    }[kind]
