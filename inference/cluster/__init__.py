"""Distributed scans and selection functions on Dask (the ``[cluster]`` extra).

The unit of distributed work is the same plain, picklable function a local run uses —
:func:`deepmine.inference.scan.shards.run_shard` for a scan, :func:`deepmine.lenscrafter.selection.measure.run_cells`
for a selection function — mapped over shards with :meth:`Backend.map`::

    with connect("local", workers=2) as backend:            # or "tcp://HOST:PORT", "slurm"
        parts = backend.map(functools.partial(run_shard, model, out_dir=out,
                                              threads=backend.threads_per_worker),
                            shards, weights=[s.n for s in shards], progress=advance)

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

from .backend import Backend, ModelSessionPlugin, connect, map_shards, model_session_plugin
from .spec import ClusterSpec, local_layout, parse_cluster, parse_cluster_options, usable_cores

__all__ = [
    "ClusterSpec", "Backend", "parse_cluster", "parse_cluster_options", "connect", "map_shards",
    "usable_cores", "local_layout", "ModelSessionPlugin", "model_session_plugin",
]  # fmt: skip
