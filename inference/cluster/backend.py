"""The Dask backend: start or attach to a cluster, map picklable shard functions over it
with retries and worker-loss handling (see :mod:`deepmine.inference.cluster`)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DeepmineError, InputError, require
from .spec import ALLOWED_FAILURES, BATCH_KINDS, DEFAULT_RETRIES, ClusterSpec, local_layout, parse_cluster, usable_cores


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
        from ..model import get_model

        get_model(self.model_path, self.device, self.threads)

    def teardown(self, worker=None):
        from .. import model

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
        progress: Callable[[int], None] | None = None,
        retries: int = DEFAULT_RETRIES,
        errors: str = "raise",
    ) -> Iterator[tuple[int, Any]]:
        """Run ``fn(item)`` for every item on the cluster; yield ``(index, result)`` as each ends.

        Parameters
        ----------
        fn : picklable function of one item (e.g. ``functools.partial(run_shard, model, ...)``)
        items : picklable work descriptions (shards: file references, never pixels)
        weights : progress units of each item (e.g. objects per shard; default 1 each)
        progress : ``advance(units)`` (:class:`deepmine.inference.progress.Advance`) or None
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
        advance = progress or (lambda k: None)
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
        """The ``executor(fn, shards)`` hook of :func:`deepmine.inference.scan.scanner.scan`: yields
        ``(shard, part path or DeepmineError)`` as shards finish (the scanner counts progress).

        A ``functools.partial`` whose ``threads`` keyword is None gets
        :attr:`threads_per_worker`, so workers never start one onnxruntime thread per core each.
        """
        shards = list(shards)
        fn = _with_threads(fn, self.threads_per_worker)
        for i, value in self.imap_unordered(fn, shards, progress=None, errors="return"):
            yield shards[i], value

    def map_parts(self, fn: Callable, items: Sequence) -> Iterator:
        """``map_parts(fn, items)`` hook of :func:`deepmine.lenscrafter.selection.measure.selection_function`:
        results as they finish (the caller counts progress itself)."""
        for _, value in self.imap_unordered(fn, items, progress=None):
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
    progress: Callable[[int], None] | None = None,
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
