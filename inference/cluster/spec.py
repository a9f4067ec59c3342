"""What to connect to: ``--cluster`` values and jobqueue options, validated without Dask;
the split of local cores into workers × threads (see :mod:`deepmine.inference.cluster`)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

BATCH_KINDS = ("slurm", "pbs")
SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "ucx://", "inproc://")
#: How many workers one task may kill before the run stops (Dask's ``allowed-failures``).
ALLOWED_FAILURES = 3
#: Retries of a task that raised an unexpected exception (not a DeepmineError).
DEFAULT_RETRIES = 2

#: jobqueue settings given as KEY=VALUE that are lists (values separated by ';').
_LIST_OPTIONS = ("job_extra_directives", "job_script_prologue", "worker_extra_args", "job_directives_skip")
#: jobqueue settings this module sets itself.
_RESERVED_OPTIONS = ("cores", "processes", "job_cpu", "python")


# --------------------------------------------------------------------------------------
# what to connect to (validated without importing Dask)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster`` value.

    Attributes
    ----------
    kind : ``"local"``, ``"address"``, ``"scheduler_file"``, ``"slurm"`` or ``"pbs"``
    target : the address or scheduler file (None otherwise)
    workers : worker processes / batch jobs / workers to wait for (None: default)
    threads_per_worker : cores per worker (None: default)
    options : dask-jobqueue settings for ``slurm``/``pbs``
    """

    kind: str
    target: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    options: dict = field(default_factory=dict)


def _positive(value, option: str) -> int | None:
    if value is None:
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{option}: expected a whole number, got {value!r}") from None
    if v < 1 or (isinstance(value, float) and value != v):
        raise InputError(f"{option}: must be a whole number of at least 1, got {value!r}")
    return v


def parse_cluster_options(pairs: Iterable[str] | dict | None) -> dict:
    """``["queue=gpu", "walltime=02:00:00"]`` → ``{"queue": "gpu", "walltime": "02:00:00"}``.

    Values that look like integers become ints; the list settings
    (``job_extra_directives``, ``job_script_prologue``, ``worker_extra_args``) split on ``;``.
    """
    if pairs is None:
        return {}
    if isinstance(pairs, dict):
        items = list(pairs.items())
    else:
        items = []
        for text in pairs:
            key, sep, value = str(text).partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise InputError(f"--cluster-opt: expected KEY=VALUE, got {text!r}")
            items.append((key, value.strip()))
    out: dict[str, Any] = {}
    for key, value in items:
        if key in _RESERVED_OPTIONS:
            raise InputError(f"--cluster-opt: {key} is set from --threads/--workers; do not give it")
        if key in _LIST_OPTIONS and isinstance(value, str):
            value = [v.strip() for v in value.split(";") if v.strip()]
        elif isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        out[key] = value
    return out


def parse_cluster(
    cluster: str,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    options: Iterable[str] | dict | None = None,
) -> ClusterSpec:
    """Check a ``--cluster`` value and its companions; raise a one-line InputError if bad."""
    text = str(cluster).strip()
    workers = _positive(workers, "--workers")
    threads_per_worker = _positive(threads_per_worker, "--threads")
    opts = parse_cluster_options(options)
    low = text.lower()
    if low == "local":
        kind, target = "local", None
    elif low in BATCH_KINDS:
        kind, target = low, None
    elif low.startswith(SCHEMES):
        rest = text.split("://", 1)[1]
        if not rest or (low.startswith(("tcp://", "tls://")) and ":" not in rest):
            raise InputError(f"--cluster: scheduler address {text!r} lacks a port; give tcp://HOST:PORT")
        kind, target = "address", text
    elif low.endswith(".json"):
        if not Path(text).is_file():
            raise InputError(f"--cluster: scheduler file {text!r} not found (start the scheduler with "
                             "`dask scheduler --scheduler-file FILE` on a shared filesystem)")
        kind, target = "scheduler_file", text
    else:
        raise InputError(
            f"--cluster: expected local, slurm, pbs, a scheduler address tcp://HOST:PORT or a scheduler "
            f"file .json, got {text!r}"
        )
    if opts and kind not in BATCH_KINDS:
        raise InputError(f"--cluster-opt: only used with --cluster slurm or pbs, not {text!r}")
    return ClusterSpec(kind, target, workers, threads_per_worker, opts)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a Slurm allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def local_layout(workers: int | None, threads_per_worker: int | None, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) of a LocalCluster: fill in what is missing from the cores."""
    from distributed.deploy.local import nprocesses_nthreads

    cores = usable_cores() if cores is None else int(cores)
    if workers is None and threads_per_worker is None:
        return nprocesses_nthreads(cores)
    if workers is None:
        return max(1, cores // threads_per_worker), threads_per_worker
    if threads_per_worker is None:
        return workers, max(1, cores // workers)
    return workers, threads_per_worker
