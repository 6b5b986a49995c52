"""Facts about this machine and its processes: start methods, CPU quota, ``/dev/shm``, and the
child processes a run leaves behind."""

from __future__ import annotations

import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import torch

__all__ = [
    "MIB",
    "START_METHODS",
    "cpu_quota",
    "default_start_methods",
    "descendants",
    "machine_info",
    "memory_limit",
    "private_shm_available",
    "private_shm_command",
    "shm_bytes",
    "wait_until_gone",
    "workers_that_fit",
]

MIB = 2**20  #: bytes in a mebibyte

#: The start methods this machine offers, in the order the notebooks compare them: ``fork`` and
#: ``forkserver`` exist on Linux and macOS, ``spawn`` everywhere.
START_METHODS: tuple[str, ...] = tuple(
    m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()
)

# Long-lived helpers that multiprocessing and torch start once per kernel and keep on purpose.
_SERVICES = ("multiprocessing.forkserver", "multiprocessing.resource_tracker", "torch_shm_manager")


def _is_service(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline()) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(name in command for name in _SERVICES)


def descendants(pid: int | None = None) -> set[int]:
    """PIDs of all processes below ``pid`` (default: this one), however deep: under forkserver the
    workers are children of the fork server. The fork server and resource tracker themselves are
    left out: they are started once and kept on purpose.

    >>> import subprocess, sys
    >>> child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    >>> child.pid in descendants()
    True
    >>> _ = child.communicate(b"\\n")
    >>> wait_until_gone([child.pid])
    ()
    """
    root = psutil.Process(pid)
    found = set()
    for child in root.children(recursive=True):
        try:
            if child.ppid() == root.pid and _is_service(child):
                continue
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_until_gone(pids: Iterable[int], timeout: float = 10.0) -> tuple[int, ...]:
    """Wait up to ``timeout`` seconds for the processes to end; return those still running."""
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return tuple(sorted(p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE))


def cpu_quota() -> float | None:
    """CPUs this process may use according to its cgroup (Binder: 1.0), or ``None`` if unlimited."""
    if os.environ.get("CPU_LIMIT"):
        return float(os.environ["CPU_LIMIT"])
    v2 = Path("/sys/fs/cgroup/cpu.max")
    v1_quota, v1_period = (
        Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
        Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    )
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
        elif v1_quota.exists():
            quota, period = v1_quota.read_text().strip(), v1_period.read_text().strip()
        else:
            return None
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def memory_limit() -> int:
    """Bytes this process and its children may use: the cgroup's limit (Binder: about 2 GB) where
    there is one, else the machine's memory."""
    total = psutil.virtual_memory().total
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), total)
    return total


#: What one idle spawned worker holds on its own (Python and PyTorch imported), measured in
#: notebook 02 at about 175 MiB; with some room for the data it loads.
WORKER_BYTES = 200 * MIB
#: What the kernel itself holds with PyTorch and matplotlib loaded, with some room.
KERNEL_BYTES = 512 * MIB


def workers_that_fit(most: int = 8) -> int:
    """How many spawned workers fit beside the kernel in :func:`memory_limit` (between 2 and
    ``most``): the most a slider should offer.

    >>> 2 <= workers_that_fit(most=4) <= 4
    True
    """
    return max(2, min(most, (memory_limit() - KERNEL_BYTES) // WORKER_BYTES))


def shm_bytes() -> int | None:
    """Size of ``/dev/shm``, where worker tensors travel on Linux (``None`` where there is none)."""
    try:
        return shutil.disk_usage("/dev/shm").total
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """What this kernel runs on, as the notebooks report it."""
    shm = shm_bytes()
    quota = cpu_quota()
    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "default start method": multiprocessing.get_context().get_start_method(),
        "available start methods": ", ".join(multiprocessing.get_all_start_methods()),
        "os.cpu_count()": os.cpu_count(),
        "CPUs usable (affinity)": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "CPU quota (cgroup)": "no limit" if quota is None else f"{quota:g} CPUs",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "memory limit (cgroup)": f"{memory_limit() / 2**30:.1f} GiB",
        "num_workers sliders go up to": workers_that_fit(),
        "/dev/shm": "none" if shm is None else f"{shm / MIB:.0f} MiB",
        "torch sharing strategy": torch.multiprocessing.get_sharing_strategy(),
    }


def default_start_methods(
    versions: Iterable[str] = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"),
) -> dict[str, str]:
    """Ask every ``python3.X`` found on ``PATH`` (and this kernel's Python) which start method it
    uses by default. Keys are full version numbers; interpreters that do not answer are left out."""
    ask = "import multiprocessing, platform; print(platform.python_version(), multiprocessing.get_start_method())"
    found = {platform.python_version(): multiprocessing.get_start_method()}
    for version in versions:
        command = shutil.which(f"python{version}")
        if command is None:
            continue
        try:
            done = subprocess.run([command, "-c", ask], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        words = done.stdout.split()
        if done.returncode == 0 and len(words) == 2:
            found[words[0]] = words[1]
    return dict(sorted(found.items(), key=lambda item: tuple(int(p) for p in item[0].split(".")[:2])))


def private_shm_command(mib: int, *command: str) -> list[str]:
    """``command`` as a command line that runs it with a private ``/dev/shm`` of ``mib`` MiB: a
    tmpfs mounted in a new mount namespace, leaving the machine's own untouched. It needs Linux,
    root and ``unshare`` (see :func:`private_shm_available`).

    >>> private_shm_command(64, "python", "train.py")[-3:]
    ['mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$0" "$@"', 'python', 'train.py']
    """
    mount = f'mount -t tmpfs -o size={int(mib)}m tmpfs /dev/shm && exec "$0" "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, *command]


def private_shm_available() -> bool:
    """Whether this process may give a child its own small ``/dev/shm``
    (:func:`private_shm_command`)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(private_shm_command(1, "true"), capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
