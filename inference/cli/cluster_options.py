"""``--cluster/--workers/--threads/--cluster-opt`` for the commands that run on Dask
(``deepmine scan``, ``deepmine selection``): option help texts and :func:`cli_cluster`, which
opens the cluster the options ask for and closes it when the command ends."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import InputError
from .common import err_console

if TYPE_CHECKING:  # the Dask side loads only when a command asks for --cluster
    from ..cluster import Backend

CLUSTER_HELP = (
    "Run on Dask: `local` (an embedded cluster of worker processes), a scheduler address "
    "`tcp://HOST:PORT` (or a scheduler file .json), or `slurm`/`pbs` (dask-jobqueue). Needs "
    "`deepmine[cluster]` and a filesystem every worker sees. Default: this process only."
)
WORKERS_HELP = ("With --cluster: worker processes (local), batch jobs (slurm/pbs), or workers to wait "
                "for (address). Default (local): Dask's split of the cores.")
CLUSTER_OPT_HELP = ("With --cluster slurm/pbs: a dask-jobqueue setting KEY=VALUE (queue, account, walltime, "
                    "memory, job_extra_directives, ...); repeatable.")


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
        """``executor`` for :func:`deepmine.inference.scan.scanner.scan` (None without a cluster)."""
        return None if self.backend is None else self.backend.executor

    @property
    def map_parts(self) -> Callable | None:
        """``map_parts`` for :func:`deepmine.lenscrafter.selection.measure.selection_function`."""
        return None if self.backend is None else self.backend.map_parts

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def __enter__(self) -> ClusterRun:
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
    from ..cluster import connect, parse_cluster

    spec = parse_cluster(cluster, workers=workers, threads_per_worker=threads, options=options)
    if log is None:

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
