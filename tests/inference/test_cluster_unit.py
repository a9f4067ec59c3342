"""The Dask backend's parts that need no running cluster: option checks, layouts, batch-queue
job scripts, and the promise that nothing imports Dask without ``--cluster``."""
import functools
import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("distributed")

from deepmine.inference import cluster as dmc  # noqa: E402
from deepmine.inference.cli.cluster_options import cli_cluster  # noqa: E402
from deepmine.inference.cluster import backend as dmc_backend  # noqa: E402
from deepmine.inference.errors import InputError  # noqa: E402

pytestmark = pytest.mark.cluster


def test_parse_cluster_kinds(tmp_path):
    assert dmc.parse_cluster("local", workers=3) == dmc.ClusterSpec("local", None, 3, None, {})
    assert dmc.parse_cluster(" LOCAL ").kind == "local"
    spec = dmc.parse_cluster("tcp://10.0.0.1:8786", workers="2")
    assert (spec.kind, spec.target, spec.workers) == ("address", "tcp://10.0.0.1:8786", 2)
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"address": "tcp://127.0.0.1:1"}))
    assert dmc.parse_cluster(str(sched)).kind == "scheduler_file"
    spec = dmc.parse_cluster("slurm", workers=4, threads_per_worker=8,
                             options=["queue=astro", "walltime=02:00:00", "job-extra-directives=--qos=low;--gres=gpu:1",
                                      "memory=16GiB", "port=0"])
    assert spec.kind == "slurm"
    assert spec.options == {"queue": "astro", "walltime": "02:00:00", "memory": "16GiB", "port": 0,
                            "job_extra_directives": ["--qos=low", "--gres=gpu:1"]}


@pytest.mark.parametrize("args, needle", [
    (("cluster9",), "--cluster: expected local, slurm, pbs, a scheduler address"),
    (("tcp://host",), "lacks a port"),
    (("missing-scheduler.json",), "scheduler file 'missing-scheduler.json' not found"),
    (("local", 0), "--workers: must be a whole number of at least 1, got 0"),
    (("local", "two"), "--workers: expected a whole number, got 'two'"),
    (("local", None, 0), "--threads: must be a whole number of at least 1"),
    (("local", None, None, ["queue=x"]), "--cluster-opt: only used with --cluster slurm or pbs"),
    (("slurm", None, None, ["queue"]), "--cluster-opt: expected KEY=VALUE, got 'queue'"),
    (("slurm", None, None, ["cores=4"]), "--cluster-opt: cores is set from --threads/--workers"),
])
def test_bad_cluster_options_give_one_line(args, needle):
    cluster, workers, threads, opts = (list(args) + [None, None, None])[:4]
    with pytest.raises(InputError) as err:
        dmc.parse_cluster(cluster, workers=workers, threads_per_worker=threads, options=opts)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_local_layout_never_oversubscribes_by_default():
    assert dmc.local_layout(None, None, cores=2) == (2, 1)
    assert dmc.local_layout(None, None, cores=16) == (4, 4)
    assert dmc.local_layout(3, None, cores=12) == (3, 4)
    assert dmc.local_layout(None, 3, cores=12) == (4, 3)
    assert dmc.local_layout(8, None, cores=2) == (8, 1)  # asked for: allowed (a notice is logged)
    for cores in range(1, 65):
        n, t = dmc.local_layout(None, None, cores=cores)
        assert n * t <= cores


def _shard_fn(item, *, threads=None, out=None):
    return item, threads


def test_executor_gives_unset_threads_to_the_shard_function():
    fn = functools.partial(_shard_fn, threads=None, out="x")
    assert dmc_backend._with_threads(fn, 3)(1) == (1, 3)
    fixed = functools.partial(_shard_fn, threads=2)
    assert dmc_backend._with_threads(fixed, 3) is fixed
    assert dmc_backend._with_threads(len, 3) is len


def test_cli_cluster_without_cluster_needs_no_dask():
    run = cli_cluster(None, None, 4)
    assert (run.threads, run.executor, run.map_parts) == (4, None, None)
    run.close()
    with pytest.raises(InputError, match="--workers: only used with --cluster"):
        cli_cluster(None, 2)
    with pytest.raises(InputError, match="--cluster-opt: only used with --cluster slurm or pbs"):
        cli_cluster(None, None, None, ["queue=x"])


def test_nothing_imports_dask_without_cluster(tmp_path, make_classifier, blobs):
    """Importing the backend, the scanner and the commands, and scanning, import no Dask (the model
    and the cutouts are made here: the subprocess imports nothing from tests/)."""
    import numpy as np

    model = make_classifier(tmp_path / "m.onnx", shape=(3, 16, 16))
    np.save(tmp_path / "x.npy", blobs(40, shape=(3, 16, 16)))
    code = textwrap.dedent(f"""
        import sys
        import deepmine.inference.cluster
        from deepmine.inference.cli.app import main
        rc = main(["scan", {str(tmp_path / 'x.npy')!r}, "-m", {str(model)!r}, "-o", {str(tmp_path / 'c.ecsv')!r},
                   "--format", "ecsv", "--threads", "1"])
        assert rc == 0, rc
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed", "dask_jobqueue"))
        print("DASK:", bad)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "DEEPMINE_NO_PROGRESS": "1"})
    assert res.returncode == 0, res.stderr
    assert "DASK: []" in res.stdout
    assert (tmp_path / "c.ecsv").is_file()


def _job_script(kind, **kwargs):
    pytest.importorskip("dask_jobqueue")
    spec = dmc.parse_cluster(kind, workers=2, **kwargs)
    cl, threads = dmc_backend._batch_cluster(spec, dashboard_address=None)
    try:
        return cl.job_script(), threads
    finally:
        cl.close()


def test_slurm_job_books_threads_cpus_for_one_single_task_worker():
    script, threads = _job_script("slurm", threads_per_worker=8,
                                  options=["queue=astro", "account=lenses", "walltime=02:00:00", "memory=16GiB",
                                           "job_extra_directives=--qos=low"])
    assert threads == 8
    assert "#SBATCH -p astro" in script
    assert "#SBATCH -A lenses" in script
    assert "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --cpus-per-task=8" in script
    assert "#SBATCH --qos=low" in script
    assert "--nthreads 1" in script  # one shard at a time; its task gets the 8 cores
    assert "export NUMBA_NUM_THREADS=8" in script and "export OMP_NUM_THREADS=8" in script
    assert sys.executable in script  # same Python on the shared filesystem


def test_pbs_job_and_bad_jobqueue_settings():
    script, threads = _job_script("pbs", threads_per_worker=4, options=["queue=long", "memory=8GiB"])
    assert "#PBS -q long" in script
    assert "#PBS -l select=1:ncpus=4:mem=8192MB" in script and "--nthreads 1" in script
    with pytest.raises(InputError, match="--cluster-opt: dask-jobqueue refused the slurm settings"):
        _job_script("slurm", options=["no_such_setting=1"])
