"""Distributed scans and selection functions on Dask (the ``[cluster]`` extra).

The unit of distributed work is the same plain, picklable function a local run uses —
:func:`deepmine.inference.shards.run_shard` for a scan, :func:`deepmine.lenscrafter.selection.run_cells`
for a selection function — mapped over shards with :meth:`Backend.map`::

    with connect("local", workers=2) as backend:            # or "tcp://HOST:PORT", "slurm"
        parts = backend.map(functools.partial(run_shard, model, out_dir=out,
                                              threads=backend.threads_per_worker),
                            shards, weights=[s.n for s in shards], progress=True)

    parts = map_shards(fn, shards, cluster="local", workers=2)   # the same, in one call

Nothing here imports Dask at module level: a run without ``--cluster`` never imports it.

Clusters (``--cluster``)
------------------------
``local``
    An embedded :class:`distributed.LocalCluster` of worker *processes* (each behind a nanny
    that restarts it if it dies). Every worker runs one task at a time (Dask ``nthreads=1``)
    and gives ``threads_per_worker`` cores to that task (onnxruntime intra-op threads, Numba
    and OpenMP through the environment), so ``workers × threads_per_worker`` never exceeds
    the usable cores unless asked to. Defaults follow Dask's own split of the cores
    (:func:`distributed.deploy.local.nprocesses_nthreads`: up to 4 cores one single-thread
    worker per core, beyond that about √cores workers of √cores threads).
``tcp://HOST:PORT`` (any Dask scheme), or a scheduler file ``*.json``
    Attach to a running scheduler. ``--workers N`` waits for at least N workers.
    ``threads_per_worker`` defaults to the cores of the busiest host divided by the task
    slots (Dask threads) its workers offer; start workers with ``--nthreads 1`` for that to
    be every core of a worker.
``slurm`` / ``pbs``
    dask-jobqueue submits ``--workers`` batch jobs of one single-task worker each, booking
    ``threads_per_worker`` CPUs per job. Queue, account, walltime, memory, ... come from
    ``cluster_options`` (``--cluster-opt KEY=VALUE``) or the ``jobqueue.slurm`` section of
    the Dask configuration.

Shared filesystem
-----------------
Inputs are referenced, not shipped: a shard names its files and object range, and the
worker opens them; results come back as part files written beside the others in the output
folder, and only their paths travel. Every worker must therefore see the model, the inputs
and the output folder under the same paths (one machine, NFS, Lustre, GPFS, ...).

Faults
------
If a worker dies (killed, out of memory, node lost) the scheduler reruns its shards on
other workers; a shard that kills ``allowed_failures`` workers in a row stops the run with
one line naming it. An unexpected exception inside a shard is retried ``retries`` times;
a :class:`~deepmine.inference.errors.DeepmineError` (bad input) is not retried but reported
at once. Shard functions write their part file and completion marker atomically, so a
shard run twice (a worker lost after finishing) writes the same part once, and ``--resume``
after an interrupted cluster run redoes only the shards without a marker.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import DeepmineError, InputError, require

__all__ = [
    "ClusterSpec",
    "Backend",
    "parse_cluster",
    "parse_cluster_options",
    "connect",
    "map_shards",
    "usable_cores",
    "ModelSessionPlugin",
    "ClusterRun",
    "cli_cluster",
    "CLUSTER_HELP",
    "WORKERS_HELP",
    "CLUSTER_OPT_HELP",
]

BATCH_KINDS = ("slurm", "pbs")
SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "ucx://", "inproc://")
#: How many workers one task may kill before the run stops (Dask's ``allowed-failures``).
ALLOWED_FAILURES = 3
#: Retries of a task that raised an unexpected exception (not a DeepmineError).
DEFAULT_RETRIES = 2

CLUSTER_HELP = (
    "Run on Dask: `local` (an embedded cluster of worker processes), a scheduler address "
    "`tcp://HOST:PORT` (or a scheduler file .json), or `slurm`/`pbs` (dask-jobqueue). Needs "
    "`deepmine[cluster]` and a filesystem every worker sees. Default: this process only."
)
WORKERS_HELP = ("With --cluster: worker processes (local), batch jobs (slurm/pbs), or workers to wait "
                "for (address). Default (local): Dask's split of the cores.")
CLUSTER_OPT_HELP = ("With --cluster slurm/pbs: a dask-jobqueue setting KEY=VALUE (queue, account, walltime, "
                    "memory, job_extra_directives, ...); repeatable.")

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


def _thread_env(threads: int) -> dict[str, str]:
    t = str(int(threads))
    return {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t,
            "NUMBA_NUM_THREADS": t, "DEEPMINE_NO_PROGRESS": "1"}


# --------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------
class ModelSessionPlugin:
    """Worker plugin: open a model's onnxruntime session when a worker starts (and on every
    worker that joins later), so no shard pays for it and each worker holds exactly one
    session per (model, device, threads) — the process cache of
    :func:`deepmine.inference.model.get_model`, which the shard functions use too.

    Use :func:`model_session_plugin` to build one: it returns an instance of
    ``ModelSessionWorkerPlugin``, this class mixed with Dask's ``WorkerPlugin``, which the
    module creates on first use so that importing it does not import Dask.
    """

    def __init__(self, model_path, device: str = "auto", threads: int | None = None):
        self.model_path = None if model_path is None else str(model_path)
        self.device = device
        self.threads = threads
        tag = hashlib.sha1(str(self.model_path).encode()).hexdigest()[:8]
        self.name = f"deepmine-model-{Path(str(model_path)).name}-{tag}-{device}-{threads}"

    def setup(self, worker=None):
        from .model import get_model

        get_model(self.model_path, self.device, self.threads)

    def teardown(self, worker=None):
        from . import model

        with model._CACHE_LOCK:
            model._CACHE.clear()


def __getattr__(name: str):
    # PEP 562: ``ModelSessionWorkerPlugin`` is built on first access (here or when a worker
    # unpickles a plugin), so the class pickles by reference and Dask is imported only then.
    if name == "ModelSessionWorkerPlugin":
        from distributed.diagnostics.plugin import WorkerPlugin

        cls = type(name, (ModelSessionPlugin, WorkerPlugin), {"__module__": __name__, "__qualname__": name,
                                                              "__doc__": ModelSessionPlugin.__doc__})
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_session_plugin(model_path, device: str = "auto", threads: int | None = None):
    """A :class:`ModelSessionPlugin` that is also a Dask ``WorkerPlugin`` (imports Dask)."""
    cls = sys.modules[__name__].ModelSessionWorkerPlugin
    return cls(model_path, device, threads)


class _Failed:
    """A DeepmineError raised on a worker, returned instead of raised so Dask does not retry it."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class _Guarded:
    """``fn`` wrapped so that bad input (DeepmineError) comes back once instead of being retried."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, item):
        try:
            return self.fn(item)
        except DeepmineError as exc:
            return _Failed(exc)


def _worker_cores() -> tuple[str, int]:
    import socket

    return socket.gethostname(), usable_cores()


# --------------------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------------------
def _label(item) -> str:
    for attr in ("stem", "name", "shard_id"):
        if hasattr(item, attr):
            return str(getattr(item, attr))
    text = repr(item)
    return text if len(text) <= 60 else text[:57] + "..."


class Backend:
    """A connected Dask client plus what a shard function needs to know about its workers.

    Attributes
    ----------
    client : distributed.Client
    cluster : the cluster object this backend started (None when attached to a scheduler)
    spec : ClusterSpec
    threads_per_worker : cores each task may use — pass it as the shard function's ``threads``
    dashboard_link : URL of the Dask dashboard (None when unavailable)
    """

    def __init__(self, client, cluster, spec: ClusterSpec, threads_per_worker: int, log: Callable[[str], None]):
        self.client = client
        self.cluster = cluster
        self.spec = spec
        self.threads_per_worker = int(threads_per_worker)
        self.log = log
        self.dashboard_link = _dashboard(client)

    @property
    def n_workers(self) -> int:
        """Workers connected right now."""
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def describe(self) -> dict:
        """Provenance of the cluster (JSON-compatible), for catalogue headers."""
        return {"cluster": self.spec.kind if self.spec.target is None else self.spec.target,
                "workers": self.n_workers, "threads_per_worker": self.threads_per_worker,
                "scheduler": self.client.scheduler.address, "dashboard": self.dashboard_link}

    def preload_model(self, model_path, device: str = "auto", threads: int | None = None) -> None:
        """Open the model's session on every worker now and on every worker that joins later.

        Raises InputError when a worker cannot open it (it does not see the file: the shared
        filesystem assumption fails, or the path is relative to another folder).
        """
        path = None if model_path is None else str(Path(model_path).resolve())
        plugin = model_session_plugin(path, device, self.threads_per_worker if threads is None else threads)
        try:
            self.client.register_plugin(plugin, name=plugin.name)
        except DeepmineError as exc:
            raise InputError(f"--cluster: a worker cannot open the model ({exc}); every worker must see the model, "
                             "inputs and output folder under the same paths (shared filesystem)") from None

    def imap_unordered(
        self,
        fn: Callable[[Any], Any],
        items: Sequence,
        *,
        weights: Sequence[int] | None = None,
        progress: bool | Callable[[int], None] | None = None,
        description: str = "shards",
        retries: int = DEFAULT_RETRIES,
        errors: str = "raise",
    ) -> Iterator[tuple[int, Any]]:
        """Run ``fn(item)`` for every item on the cluster; yield ``(index, result)`` as each ends.

        Parameters
        ----------
        fn : picklable function of one item (e.g. ``functools.partial(run_shard, model, ...)``)
        items : picklable work descriptions (shards: file references, never pixels)
        weights : progress units of each item (e.g. objects per shard; default 1 each)
        progress : True for a rich progress bar, a callable ``advance(units)``, or None
        description : the progress bar's label
        retries : reruns of an item after an unexpected exception (a worker's death is
            handled separately: its items move to other workers)
        errors : ``"raise"``: stop at the first failed item; ``"return"``: yield
            ``(index, exception)`` for an item that failed with a DeepmineError (bad input, or
            killed too many workers) and go on

        Raises
        ------
        DeepmineError
            The first item that failed (bad input, or an item that killed
            :data:`ALLOWED_FAILURES` workers); the rest are cancelled, finished parts kept.
        """
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        items = list(items)
        if not items:
            return
        w = [1] * len(items) if weights is None else [int(x) for x in weights]
        if len(w) != len(items):
            raise ValueError(f"weights: {len(w)} values for {len(items)} items")
        if errors not in ("raise", "return"):
            raise ValueError(f"errors: expected 'raise' or 'return', got {errors!r}")
        token = uuid.uuid4().hex[:8]
        base = fn.func if isinstance(fn, functools.partial) else fn
        name = getattr(base, "__name__", None) or type(base).__name__  # the dashboard's task name
        keys = [f"{name}-{token}-{i:07d}" for i in range(len(items))]
        guarded = _Guarded(fn)
        futures = self.client.map(guarded, items, key=keys, pure=False, retries=int(retries))
        index = {f.key: i for i, f in enumerate(futures)}
        with _progress(progress, description, sum(w), self) as advance:
            try:
                done = as_completed(futures, loop=self.client.loop, with_results=True, raise_errors=False)
                for batch in done.batches():
                    for fut, value in batch:
                        i = index[fut.key]
                        if fut.status == "error":
                            value = fut.exception()
                            if not isinstance(value, KilledWorker):
                                raise value
                            value = _Failed(DeepmineError(
                                f"cluster: {_label(items[i])} killed {ALLOWED_FAILURES} workers in a row (out "
                                "of memory? see the worker logs); finished parts are kept: rerun with --resume"))
                        if isinstance(value, _Failed):
                            if errors == "raise":
                                raise value.exc
                            value = value.exc
                        fut.release()
                        advance(w[i])
                        yield i, value
            finally:
                pending = [f for f in futures if not f.done()]
                if pending:
                    self.client.cancel(pending)

    def map(self, fn: Callable[[Any], Any], items: Sequence, **kwargs) -> list:
        """:meth:`imap_unordered`, collected in the order of ``items``."""
        items = list(items)
        out: list = [None] * len(items)
        for i, value in self.imap_unordered(fn, items, **kwargs):
            out[i] = value
        return out

    def executor(self, fn: Callable, shards: Sequence) -> Iterator[tuple[Any, Any]]:
        """The ``executor(fn, shards)`` hook of :func:`deepmine.inference.scanner.scan`: yields
        ``(shard, part path or DeepmineError)`` as shards finish (the scanner counts progress).

        A ``functools.partial`` whose ``threads`` keyword is None gets
        :attr:`threads_per_worker`, so workers never start one onnxruntime thread per core each.
        """
        shards = list(shards)
        fn = _with_threads(fn, self.threads_per_worker)
        for i, value in self.imap_unordered(fn, shards, progress=None, errors="return"):
            yield shards[i], value

    def map_parts(self, fn: Callable, items: Sequence) -> Iterator:
        """``map_parts(fn, items)`` hook of :func:`deepmine.lenscrafter.selection.selection_function`:
        results as they finish (the caller counts progress itself)."""
        for _, value in self.imap_unordered(fn, items, progress=None, description="parts"):
            yield value

    def close(self) -> None:
        """Close the client and any cluster this backend started."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _with_threads(fn: Callable, threads: int) -> Callable:
    if isinstance(fn, functools.partial) and "threads" in fn.keywords and fn.keywords["threads"] is None:
        return functools.partial(fn.func, *fn.args, **{**fn.keywords, "threads": int(threads)})
    return fn


@contextlib.contextmanager
def _progress(progress, description: str, total: int, backend: Backend):
    if progress is None or progress is False:
        yield lambda k: None
    elif callable(progress):
        yield progress
    else:
        from .cli.common import progress as make_progress

        t0 = time.perf_counter()
        done = [0]
        with make_progress() as bar:
            tid = bar.add_task(f"{description} on {backend.n_workers} workers", total=total, rate="")

            def advance(k: int) -> None:
                done[0] += k
                rate = done[0] / max(time.perf_counter() - t0, 1e-9)
                bar.update(tid, advance=k, rate=f"{rate:,.0f}/s")

            yield advance


def _dashboard(client) -> str | None:
    import importlib.util

    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no http server on this scheduler
        return None
    if importlib.util.find_spec("bokeh") is None and client.cluster is not None:
        return None  # the embedded scheduler serves no dashboard without bokeh
    return link


def _threads(t: int) -> str:
    return f"{t} thread" + ("" if t == 1 else "s")


def _default_log(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def _quiet_logs(level: int):
    import logging

    names = ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker",
             "distributed.core", "distributed.client", "distributed.comm", "tornado")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(level)
    try:
        yield
    finally:
        for n, lv in old.items():
            logging.getLogger(n).setLevel(lv)


@contextlib.contextmanager
def connect(
    cluster: str | ClusterSpec = "local",
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    options: Iterable[str] | dict | None = None,
    dashboard_address: str | None = ":8787",
    wait_timeout: float = 30.0,
    log: Callable[[str], None] | None = _default_log,
    quiet: bool = True,
) -> Iterator[Backend]:
    """Start or attach to a Dask cluster; yield a :class:`Backend`; close what was started.

    Parameters
    ----------
    cluster : ``"local"``, ``"tcp://HOST:PORT"``, a scheduler file, ``"slurm"``/``"pbs"``, or a
        ClusterSpec from :func:`parse_cluster`
    workers, threads_per_worker, options : see the module docstring
    dashboard_address : where an embedded scheduler serves its dashboard (``":0"``: any free port)
    wait_timeout : seconds to wait for ``workers`` workers of an attached scheduler (s)
    log : where one-line notices go (the dashboard address, the layout); None for silence
    quiet : hide Dask's own log lines below ERROR (a killed worker is expected, not news)
    """
    spec = cluster if isinstance(cluster, ClusterSpec) else parse_cluster(
        cluster, workers=workers, threads_per_worker=threads_per_worker, options=options)
    require("distributed", "cluster")
    import logging

    import dask
    from distributed import Client

    log = log or (lambda message: None)
    with contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(_quiet_logs(logging.ERROR))
        stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}))
        if spec.kind == "local":
            n, t = local_layout(spec.workers, spec.threads_per_worker)
            if n * t > usable_cores():
                log(f"cluster: {n} workers × {t} threads exceed the {usable_cores()} usable cores (oversubscribed)")
            from distributed import LocalCluster

            cl = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=dashboard_address,
                              silence_logs=logging.CRITICAL if quiet else logging.WARNING, env=_thread_env(t))
            stack.callback(cl.close)
            client = Client(cl, set_as_default=False)
            backend = Backend(client, cl, spec, t, log)
            summary = f"local cluster: {n} workers × {_threads(t)}"
        elif spec.kind in BATCH_KINDS:
            cl, t = _batch_cluster(spec, dashboard_address)
            stack.callback(cl.close)
            n = spec.workers or 1
            cl.scale(n)
            client = Client(cl, set_as_default=False)
            backend = Backend(client, cl, spec, t, log)
            summary = f"{spec.kind} cluster: {n} jobs of 1 worker × {t} cores submitted (workers start as the queue allows)"
        else:
            try:
                if spec.kind == "address":
                    client = Client(spec.target, timeout=f"{max(wait_timeout, 1)}s", set_as_default=False)
                else:
                    client = Client(scheduler_file=spec.target, timeout=f"{max(wait_timeout, 1)}s",
                                    set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise InputError(f"--cluster: cannot reach the scheduler at {spec.target} ({exc})") from None
            if spec.workers:
                try:
                    client.wait_for_workers(spec.workers, timeout=wait_timeout)
                except TimeoutError:
                    have = len(client.scheduler_info(n_workers=-1).get("workers", {}))
                    client.close()
                    raise InputError(f"--workers {spec.workers}: only {have} workers joined {spec.target} "
                                     f"within {wait_timeout:.0f} s") from None
            t = spec.threads_per_worker or _attached_threads(client)
            backend = Backend(client, None, spec, t, log)
            summary = f"attached to {spec.target}: {backend.n_workers} workers, {_threads(t)} per task"
        stack.callback(client.close)
        log(summary)
        log(f"dashboard: {backend.dashboard_link}" if backend.dashboard_link
            else "dashboard: unavailable (install bokeh for Dask's live dashboard)")
        yield backend


def _attached_threads(client) -> int:
    """Cores per task slot on the busiest host of an attached cluster (at least 1)."""
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    if not info:
        return 1
    cores = client.run(_worker_cores)  # {worker address: (host, cores)}
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for addr, (host, n) in cores.items():
        slots[host] = slots.get(host, 0) + int(info.get(addr, {}).get("nthreads", 1))
        host_cores[host] = n
    return max(1, min(host_cores[h] // max(1, s) for h, s in slots.items()))


def _batch_cluster(spec: ClusterSpec, dashboard_address: str | None):
    """A dask-jobqueue cluster of single-task workers booking ``threads_per_worker`` CPUs each."""
    jobqueue = require("dask_jobqueue", "cluster")
    import dask

    t = spec.threads_per_worker or 4
    opts = dict(spec.options)
    section = f"jobqueue.{spec.kind}"
    if opts.get("memory") is None and dask.config.get(f"{section}.memory", None) is None:
        opts["memory"] = f"{2 * t}GiB"
    prologue = list(opts.pop("job_script_prologue", None) or dask.config.get(f"{section}.job-script-prologue", None)
                    or [])
    prologue += [f"export {k}={v}" for k, v in _thread_env(t).items()]
    kwargs = dict(cores=1, processes=1, python=sys.executable, job_script_prologue=prologue,
                  scheduler_options={"dashboard_address": dashboard_address} if dashboard_address else {})
    if spec.kind == "slurm":
        cls = jobqueue.SLURMCluster
        kwargs["job_cpu"] = t
    else:
        cls = jobqueue.PBSCluster
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        memory = opts["memory"] if opts.get("memory") else dask.config.get(f"{section}.memory")
        opts.setdefault("resource_spec", f"select=1:ncpus={t}:mem={pbs_format_bytes_ceil(parse_bytes(memory))}")
    kwargs.update(opts)
    try:
        return cls(**kwargs), t
    except (TypeError, ValueError) as exc:
        raise InputError(f"--cluster-opt: dask-jobqueue refused the {spec.kind} settings ({exc})") from None


def map_shards(
    fn: Callable[[Any], Any],
    items: Sequence,
    *,
    cluster: str = "local",
    workers: int | None = None,
    threads_per_worker: int | None = None,
    options: Iterable[str] | dict | None = None,
    weights: Sequence[int] | None = None,
    progress: bool | Callable[[int], None] | None = None,
    retries: int = DEFAULT_RETRIES,
    log: Callable[[str], None] | None = _default_log,
) -> list:
    """Run ``fn(item)`` for every item on a cluster started (or attached to) for this call.

    The one-call form of :func:`connect` + :meth:`Backend.map`; results in the order of
    ``items``. Prefer :func:`connect` when ``fn`` needs ``threads_per_worker`` or several maps
    share one cluster.
    """
    with connect(cluster, workers=workers, threads_per_worker=threads_per_worker, options=options, log=log) as be:
        return be.map(fn, items, weights=weights, progress=progress, retries=retries)


# --------------------------------------------------------------------------------------
# command-line glue (``deepmine scan`` and ``deepmine selection``)
# --------------------------------------------------------------------------------------
class ClusterRun:
    """What a command needs from ``--cluster``: the threads each task may use, and the hooks.

    Without a cluster: ``threads`` is the command's own ``--threads``; ``executor`` and
    ``map_parts`` are None (run here), and Dask is never imported.
    """

    def __init__(self, threads: int | None, backend: Backend | None = None, stack: contextlib.ExitStack | None = None):
        self.threads = threads
        self.backend = backend
        self._stack = stack

    @property
    def executor(self) -> Callable | None:
        """``executor`` for :func:`deepmine.inference.scanner.scan` (None without a cluster)."""
        return None if self.backend is None else self.backend.executor

    @property
    def map_parts(self) -> Callable | None:
        """``map_parts`` for :func:`deepmine.lenscrafter.selection.selection_function`."""
        return None if self.backend is None else self.backend.map_parts

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def __enter__(self) -> "ClusterRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _click_context():
    """The running (typer-vendored or plain) click context, or None."""
    import importlib

    import typer

    base = next(c for c in typer.Context.__mro__ if c.__name__ == "Context" and c.__module__ != "typer.models")
    try:
        glob = importlib.import_module(base.__module__.rsplit(".", 1)[0] + ".globals")
        return glob.get_current_context(silent=True)
    except (ImportError, AttributeError):  # pragma: no cover - a click without globals
        return None


def cli_cluster(
    cluster: str | None,
    workers: int | None = None,
    threads: int | None = None,
    options: Iterable[str] | None = None,
    *,
    model=None,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> ClusterRun:
    """Open the cluster a command's ``--cluster/--workers/--threads/--cluster-opt`` ask for.

    Returns a :class:`ClusterRun`; inside a command the cluster is closed when the command
    ends (the click context's close callbacks), otherwise call ``close()`` or use ``with``.
    With ``model`` given, every worker opens the model's session when it starts (and the
    command stops at once, with a clear line, if a worker cannot read the file: every worker
    must see the same paths).
    """
    if cluster is None:
        if workers is not None:
            raise InputError("--workers: only used with --cluster (local, an address, slurm or pbs)")
        if options:
            raise InputError("--cluster-opt: only used with --cluster slurm or pbs")
        return ClusterRun(threads)
    spec = parse_cluster(cluster, workers=workers, threads_per_worker=threads, options=options)
    if log is None:
        from .cli.common import err_console

        def log(message: str) -> None:
            err_console.print(message, markup=False, highlight=False)

    stack = contextlib.ExitStack()
    try:
        backend = stack.enter_context(connect(spec, log=log))
        if model is not None:
            backend.preload_model(model, device)
    except BaseException:
        stack.close()
        raise
    run = ClusterRun(backend.threads_per_worker, backend, stack)
    ctx = _click_context()
    if ctx is not None:
        ctx.call_on_close(run.close)
    return run
