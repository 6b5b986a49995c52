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
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any, overload

import numpy as np
import torch.utils.data

__all__ = ["FORK_SERVER_ID", "Event", "EventLog", "Events", "Kind", "Trace", "WaitEnd", "describe"]


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
_UNSET = -1  #: the start of an item whose start is the previous item's end
_BY_BATCH = 1 << 32  #: in an item's kind word: timed with its batch (see ``_Writer.load_items``)
_BY_BATCH_BELOW_NS = 5_000  #: items faster than this on average are timed a batch at a time
assert _DTYPE.itemsize == _RECORD.size == 40


class _Writer:
    """Appends records to this process's memory-mapped chunk files."""

    def __init__(self, directory: str, worker_id: int | None = None) -> None:
        self.pid = os.getpid()
        if worker_id is None:
            info = torch.utils.data.get_worker_info()
            worker_id = info.id if info is not None else -1
        self.worker_id = worker_id
        self._directory = directory
        self._map: mmap.mmap | None = None
        self._records: np.ndarray | None = None
        self._words: memoryview | None = None
        self._offset = _CHUNK_BYTES
        self._by_batch = False  # the last batch's items were too fast to time one by one

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

    def load_items(self, load: Callable[[Any], Any], indices: Sequence[Any]) -> list[Any]:
        """``[load(i) for i in indices]``, recording each item's load (or failure) as it ends.

        This is the tracer's hot loop. The batch's records are laid out before loading (index,
        pid, worker id, kind; with no end time yet, so :meth:`EventLog.read` skips them), and each
        item then costs one clock read and one store into shared memory: its end. Its start is the
        previous item's end, filled in when the log is read (``_UNSET``). A record is complete the
        moment its item is loaded, so a worker killed mid-batch keeps the records of the items it
        finished. An index that is no integer (a key, a list for a bulk load) is recorded as -1.

        That costs about 0.2 µs an item: more than 5 % of an item that loads in under 5 µs. After a
        batch of such items, the next is timed as a whole (:meth:`_load_by_batch`) until a batch is
        slower again."""
        n = len(indices)
        if n > _CHUNK_RECORDS:
            return [
                item
                for start in range(0, n, _CHUNK_RECORDS)
                for item in self.load_items(load, indices[start : start + _CHUNK_RECORDS])
            ]
        if n == 0:
            return []
        if self._by_batch:
            return self._load_by_batch(load, indices)
        words, word = self._lay_out(Kind.ITEM_LOADED, indices, start=_UNSET)
        clock = perf_counter_ns
        items: list[Any] = []
        append = items.append
        first = end = words[word] = clock()  # the first item's start; word + 1 is its end
        word += 1
        for index in indices:
            try:
                item = load(index)
            except BaseException:
                words[word + _KIND_WORD - 1] = Kind.ITEM_FAILED
                words[word] = clock()
                raise
            end = words[word] = clock()
            word += _WORDS
            append(item)
        self._by_batch = end - first < _BY_BATCH_BELOW_NS * n
        return items

    def _load_by_batch(self, load: Callable[[Any], Any], indices: Sequence[Any]) -> list[Any]:
        """:meth:`load_items` for fast items: two clock reads and stores for the whole batch. Its
        records are flagged (``_BY_BATCH``); reading the log spreads the batch's time evenly over
        its items. A worker killed mid-batch leaves none of them."""
        words, word = self._lay_out(Kind.ITEM_LOADED, indices, flag=_BY_BATCH)
        items: list[Any] = []
        append = items.append
        words[word] = start = perf_counter_ns()
        try:
            for index in indices:
                append(load(index))
        except BaseException:
            failed = word + len(items) * _WORDS
            words[failed + _KIND_WORD] = Kind.ITEM_FAILED | _BY_BATCH
            words[failed + 1] = perf_counter_ns()
            raise
        words[word + (len(indices) - 1) * _WORDS + 1] = end = perf_counter_ns()
        self._by_batch = end - start < _BY_BATCH_BELOW_NS * len(indices)
        return items

    def record_many(self, kind: Kind, start: int, end: int, indices: Sequence[Any]) -> None:
        """One record of ``kind`` from ``start`` to ``end`` for each of ``indices``."""
        if len(indices) > _CHUNK_RECORDS:
            for at in range(0, len(indices), _CHUNK_RECORDS):
                self.record_many(kind, start, end, indices[at : at + _CHUNK_RECORDS])
            return
        words, word = self._lay_out(kind, indices)
        for _ in range(len(indices)):
            words[word], words[word + 1] = start, end
            word += _WORDS

    def _lay_out(
        self, kind: Kind, indices: Sequence[Any], start: int = 0, flag: int = 0
    ) -> tuple[memoryview, int]:
        """Reserve records of ``kind`` (with ``flag``) for ``indices``, with ``start`` as their
        start; return the chunk's words and the first record's first word."""
        n = len(indices)
        if self._offset + n * _RECORD.size > _CHUNK_BYTES:
            self._next_chunk()
        first = self._offset // _RECORD.size
        records = self._records[first : first + n]  # type: ignore[index]
        try:
            records["index"] = indices  # pid and worker id were laid out with the chunk
        except (TypeError, ValueError, OverflowError):
            records["index"] = -1
        records["kind"] = kind
        if flag:
            records["pad"] = flag >> 32
        if start:
            records["start"] = start
        self._offset += n * _RECORD.size
        return self._words, first * _WORDS  # type: ignore[return-value]

    def stream_items(self, items: Iterator[Any]) -> Iterator[Any]:
        """Yield what ``items`` yields, recording each item's production (from asking for it to
        getting it) with its position in this stream as the index."""
        clock, record, position = perf_counter_ns, self.record, 0
        while True:
            start = clock()
            try:
                item = next(items)
            except StopIteration:
                return
            except BaseException:
                record(Kind.ITEM_FAILED, start, clock(), position)
                raise
            record(Kind.ITEM_LOADED, start, clock(), position)
            position += 1
            yield item

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
            if self._words is not None:
                self._words.release()
            self._map.close()
            self._map = None


def _memory_backed_dir() -> str | None:
    """``/dev/shm`` where there is one we may write to: writing to a file mapped from disk makes
    the kernel fault on pages it has written back, which slows the hot loop; tmpfs does not."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def _spread_batches(words: np.ndarray) -> int:
    """Give each item of a batch timed as a whole (flagged ``_BY_BATCH``: its first record holds
    the batch's start, its last loaded or failed one the end) an even share of the batch's time.
    Items of a batch that never ended stay unfinished. Return how many items got a share."""
    flagged = np.flatnonzero(words[:, _KIND_WORD] >> 32 == _BY_BATCH >> 32)
    heads = flagged[words[flagged, 0] != 0]
    ends = flagged[words[flagged, 1] != 0]
    tails = ends[np.minimum(np.searchsorted(ends, heads), len(ends) - 1)] if len(ends) else heads
    ended = (tails >= heads) & (tails < np.append(heads[1:], len(words)))  # before the next batch
    heads, tails = heads[ended], tails[ended]
    counts = tails - heads + 1
    rows = np.arange(counts.sum()) + np.repeat(heads - (np.cumsum(counts) - counts), counts)
    share = np.repeat(heads, counts)
    start, end, n = words[share, 0], np.repeat(words[tails, 1], counts), np.repeat(counts, counts)
    step = rows - share
    words[rows, 0] = start + (end - start) * step // n
    words[rows, 1] = start + (end - start) * (step + 1) // n
    return int(counts.sum())


def _remove_directory(path: str, owner: int) -> None:
    """Delete the log directory ``path``, unless this is a process forked from its ``owner``."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


class EventLog:
    """A directory of per-process event files, shared by a main process and its workers.

    It pickles as its path, so it travels to ``spawn`` and ``forkserver`` workers inside the
    traced dataset; a ``fork`` child notices it has a new PID and opens files of its own. The
    process that made it deletes the directory when it is closed, or at the latest when Python
    exits.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="dataloader-trace-", dir=_memory_backed_dir())
        self._writer: _Writer | None = None
        self._remove: weakref.finalize[Any, EventLog] | None = weakref.finalize(
            self, _remove_directory, self.directory, os.getpid()
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directory = state["directory"]
        self._writer = None
        self._remove = None  # the directory is the main process's to delete

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
        """Every record written so far by any process, ordered by start time (a structured array
        with the fields of the record)."""
        words, order, _ = self._finished_in_order()
        return words[order].reshape(-1).view(_DTYPE)

    def read_events(self) -> tuple[Events, int]:
        """Every event written so far by any process as columns, in time order, with times in
        seconds since the first ``ITER_CALLED`` (or the first event); and how many items were
        timed with their batch (see :meth:`_Writer.load_items`)."""
        words, order, by_batch = self._finished_in_order()
        halves = words.view("<i4")  # 10 32-bit halves a record: pid, worker id and kind are 6, 7, 8
        kinds = halves[:, 8]
        iters = order[kinds[order] == Kind.ITER_CALLED]
        t0 = words[iters[0] if len(iters) else order[0], 0] if len(order) else 0
        seconds = [np.subtract(words[order, field], t0, dtype=np.float64) for field in (0, 1)]
        for column in seconds:
            np.divide(column, 1e9, out=column)
        events = Events(
            start=seconds[0], end=seconds[1], index=words[order, 2], pid=halves[order, 6],
            worker_id=halves[order, 7], kind=kinds[order],
        )  # fmt: skip
        return events, by_batch

    def _finished_in_order(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Every record as a row of five 64-bit words, with the start times only implied filled
        in; the rows of the finished ones (not just laid out) ordered by start time; and how many
        of them were timed with their batch."""
        paths = sorted(Path(self.directory).glob("*.events"))
        words = np.empty((len(paths) * _CHUNK_RECORDS, _WORDS), dtype="<i8")
        into, filled = memoryview(words.data).cast("B"), 0
        for path in paths:  # one copy, straight from each file into the array
            with path.open("rb", buffering=0) as file:
                filled += file.readinto(into[filled:]) or 0
        words = words[: filled // _RECORD.size]
        by_batch = _spread_batches(words)
        finished = np.flatnonzero(words[:, 1])  # an end time: written, not just laid out
        unset = finished[words[finished, 0] == _UNSET]
        words[unset, 0] = words[unset - 1, 1]  # an item starts when the one before it (in its batch) ended
        return words, finished[np.argsort(words[finished, 0], kind="stable")], by_batch

    def close(self) -> None:
        """Close this process's files and, in the process that made the log, delete the directory."""
        if self._writer is not None and self._writer.pid == os.getpid():
            self._writer.close()
        self._writer = None
        if self._remove is not None:
            self._remove()


_KINDS = {int(kind): kind for kind in Kind}
_COLUMNS = ("start", "end", "index", "pid", "worker_id", "kind")


class Events:
    """Events held as columns, one NumPy array per field (33 bytes an event), in time order.

    It reads as a sequence of :class:`Event` (``len``, ``[i]``, iteration); each one is built only
    when it is read, so a trace of a million items costs no million Python objects. Vectorised
    code reads the columns directly.

    >>> events = Events.of([Event(pid=7, worker_id=0, kind=Kind.ITEM_LOADED, start=0.5, end=0.75, index=3)])
    >>> len(events), events[0].index, events.kind.dtype.name
    (1, 3, 'int8')
    """

    __slots__ = _COLUMNS
    start: np.ndarray  #: seconds since the first ``iter()`` (float64)
    end: np.ndarray
    index: np.ndarray  #: int64
    pid: np.ndarray  #: int32
    worker_id: np.ndarray  #: int32
    kind: np.ndarray  #: int8, a :class:`Kind`

    def __init__(self, **columns: np.ndarray) -> None:
        dtypes = {"start": np.float64, "end": np.float64, "index": np.int64, "pid": np.int32}
        for name in _COLUMNS:
            dtype = dtypes.get(name, np.int8 if name == "kind" else np.int32)
            setattr(self, name, np.ascontiguousarray(columns[name], dtype=dtype))

    @classmethod
    def of(cls, events: Iterable[Event]) -> Events:
        """Columns holding ``events`` (in the order given)."""
        rows = [(e.start, e.end, e.index, e.pid, e.worker_id, int(e.kind)) for e in events]
        return cls(**{name: np.array([row[i] for row in rows]) for i, name in enumerate(_COLUMNS)})

    def __len__(self) -> int:
        return len(self.kind)

    @overload
    def __getitem__(self, position: int) -> Event: ...
    @overload
    def __getitem__(self, position: slice | np.ndarray) -> Events: ...
    def __getitem__(self, position: int | slice | np.ndarray) -> Event | Events:
        if isinstance(position, (slice, np.ndarray)):
            return Events(**{name: getattr(self, name)[position] for name in _COLUMNS})
        i = range(len(self))[position]  # IndexError as a sequence raises it
        return Event(
            int(self.pid[i]),
            int(self.worker_id[i]),
            _KINDS[int(self.kind[i])],
            float(self.start[i]),
            float(self.end[i]),
            int(self.index[i]),
        )

    def __iter__(self) -> Iterator[Event]:
        step = 65536
        for at in range(0, len(self), step):
            part = [getattr(self, name)[at : at + step].tolist() for name in _COLUMNS]
            for start, end, index, pid, worker_id, kind in zip(*part, strict=True):
                yield Event(pid, worker_id, _KINDS[kind], start, end, index)

    def where(self, *kinds: Kind) -> Events:
        """The events of the given kinds."""
        return self[np.isin(self.kind, kinds)]

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        return sum(getattr(self, name).nbytes for name in _COLUMNS)


_TRACE_FIELDS = (
    "events",
    "main_pid",
    "start_method",
    "settings",
    "processes_after_construction",
    "leftover_processes",
    "error",
    "notes",
)


class Trace:
    """What one traced run recorded, with times in seconds since the first ``iter()``.

    ``events`` may be given as any sequence of :class:`Event`; it is kept as :class:`Events`.

    >>> trace = Trace(events=[Event(7, 0, Kind.COLLATED, 0.1, 0.2, 0)], main_pid=1, start_method="fork")
    >>> trace.worker_pids, trace.wasted_batches
    ({7: 0}, [0])
    """

    def __init__(
        self,
        events: Iterable[Event] = (),
        *,
        main_pid: int = 0,
        start_method: str | None = None,  #: ``None`` when ``num_workers == 0``
        settings: dict[str, Any] | None = None,
        processes_after_construction: tuple[
            int, ...
        ] = (),  #: new child processes right after ``DataLoader()``
        leftover_processes: tuple[int, ...] = (),  #: new child processes still alive after the run
        error: BaseException | None = None,  #: what ended the loop early, if anything did
        notes: tuple[str, ...] = (),  #: what this trace could not record, and why
    ) -> None:
        self.events = events if isinstance(events, Events) else Events.of(events)
        self.main_pid = main_pid
        self.start_method = start_method
        self.settings = settings if settings is not None else {}
        self.processes_after_construction = processes_after_construction
        self.leftover_processes = leftover_processes
        self.error = error
        self.notes = notes

    def __repr__(self) -> str:
        return (
            f"<Trace: {len(self.events)} events, start method {self.start_method}, main pid {self.main_pid}>"
        )

    def replace(self, **changes: Any) -> Trace:
        """A copy of this trace with ``changes`` made (``events=...``, ``settings=...``).

        >>> Trace(main_pid=1).replace(events=[Event(7, 0, Kind.COLLATED, 0.1, 0.2, 0)]).count(Kind.COLLATED)
        1
        """
        fields = {name: getattr(self, name) for name in _TRACE_FIELDS} | changes
        return Trace(fields.pop("events"), **fields)

    def of(self, *kinds: Kind) -> list[Event]:
        """The events of the given kinds, in time order."""
        return list(self.events.where(*kinds))

    def count(self, *kinds: Kind) -> int:
        """How many events of the given kinds there are."""
        return int(np.isin(self.events.kind, kinds).sum())

    def first(self, kind: Kind) -> Event | None:
        """The earliest event of ``kind``, or ``None``."""
        hits = np.flatnonzero(self.events.kind == kind)
        return self.events[int(hits[0])] if len(hits) else None

    @property
    def worker_pids(self) -> dict[int, int]:
        """PID -> worker id of every worker process that recorded anything, in order of appearance."""
        mine = self.events.worker_id >= 0
        pids, ids = self.events.pid[mine], self.events.worker_id[mine]
        _, first = np.unique(pids, return_index=True)
        return {int(pids[i]): int(ids[i]) for i in np.sort(first)}

    def batches(self) -> list[tuple[int, int, int, list[int]]]:
        """``(batch number, worker id, pid, item indices)`` for each batch collated, in time order:
        the items a process loaded since its previous collate (or failed item) are the ones it
        collated."""
        events = self.events
        rows = np.flatnonzero(np.isin(events.kind, (Kind.ITEM_LOADED, Kind.ITEM_FAILED, Kind.COLLATED)))
        rows = rows[np.argsort(events.pid[rows], kind="stable")]  # by process, each in time order
        pids, kinds = events.pid[rows], events.kind[rows]
        ends = np.flatnonzero(kinds != Kind.ITEM_LOADED)  # collates and failed items end a batch
        since = np.concatenate(([0], ends[:-1] + 1))  # after the previous end...
        since = np.maximum(since, np.searchsorted(pids, pids[ends]))  # ...in the same process
        collated = kinds[ends] == Kind.COLLATED
        ends, since = ends[collated], since[collated]
        order = np.argsort(rows[ends])
        return [
            (
                int(events.index[row]),
                int(events.worker_id[row]),
                int(events.pid[row]),
                events.index[rows[a:b]].tolist(),
            )
            for row, a, b in zip(rows[ends][order], since[order], ends[order], strict=True)
        ]

    @property
    def batches_received(self) -> int:
        """How many batches the loop received."""
        return self.count(Kind.BATCH_RECEIVED)

    @property
    def handed_out_before_first_batch(self) -> int:
        """How many batches were handed out to be loaded before the loop asked for the batch it
        received first (all of them if it received none): what ``iter()`` primed the workers
        with, ``num_workers × prefetch_factor`` or the number of batches if that is smaller. (As
        each batch arrives, PyTorch hands out one more; those are not counted.)"""
        first = self.first(Kind.BATCH_RECEIVED)
        limit = first.start if first is not None else np.inf
        requested = self.events.kind == Kind.BATCH_REQUESTED
        return int((requested & (self.events.start < limit)).sum())

    @property
    def wasted_batches(self) -> list[int]:
        """Numbers of the batches a worker built that the loop never received (after a ``break``,
        an error or a timeout), in order."""
        events = self.events
        built = events.index[(events.kind == Kind.COLLATED) & (events.index >= 0)]
        received = events.index[events.kind == Kind.BATCH_RECEIVED]
        return np.setdiff1d(built, received).tolist()

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's PID, for a run under ``forkserver``."""
        event = self.first(Kind.FORK_SERVER)
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
        counts = np.bincount(self.events.kind, minlength=max(Kind) + 1)
        lines = [
            (
                f"start method: {self.start_method or 'none (num_workers=0)'}; main pid {self.main_pid}; "
                f"worker processes: {len(self.worker_pids)}"
            ),
            "events: " + ", ".join(f"{kind.name.lower()} {counts[kind]}" for kind in Kind if counts[kind]),
            (
                f"batches received: {self.batches_received}; handed out before the first was received: "
                f"{self.handed_out_before_first_batch}; built but never received: {len(self.wasted_batches)}"
            ),
            f"last event at t = {self.events.end.max(initial=0.0):.3f} s after iter()",
        ]
        for wait, how in self.waits_ended():
            lines.append(
                f"a next() from t = {wait.start:.3f} s to {wait.end:.3f} s got no batch: {how.label}"
            )
        if self.error is not None:
            lines.append(f"ended by {type(self.error).__name__}: {self.error}")
        lines += [f"note: {note}" for note in self.notes]
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
