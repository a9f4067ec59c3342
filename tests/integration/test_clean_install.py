"""A plain ``pip install .`` (no extras) into a fresh virtual environment gives a working,
torch-free ``deepmine`` command. Slow (builds a venv); runs in CI."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # copy the tree so the build never writes into the checkout
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return venv


def test_plain_install_has_no_torch_and_cli_works(clean_venv, tmp_path):
    py = clean_venv / "bin" / "python"
    exe = clean_venv / "bin" / "deepmine"
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "True", "torch must not be installed by a plain `pip install .`"
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.startswith("deepmine")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "n.npy", rng.normal(size=5000))
    np.save(tmp_path / "t.npy", rng.normal(2, 1, size=100))
    out = subprocess.run([str(exe), "rank", str(tmp_path / "n.npy"), "-t", str(tmp_path / "t.npy"),
                          "--plot", str(tmp_path / "trc.png")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ranking performance" in out.stdout and (tmp_path / "trc.png").exists()
    # nothing generic lands in site-packages: only the deepmine name
    site = next((clean_venv / "lib").glob("python*/site-packages"))
    for generic in ("inference", "lenscrafter", "export", "training"):
        assert not (site / generic).exists(), f"{generic} installed at top level"
    assert (site / "deepmine" / "inference" / "ranking" / "kernels.py").exists()


def test_every_subpackage_is_installed_and_every_command_has_help(clean_venv):
    """pyproject.toml names packages explicitly: each folder with an __init__.py must be listed
    (or it is missing from the wheel), and each command's --help works without torch."""
    py = clean_venv / "bin" / "python"
    packages = sorted("deepmine." + ".".join(p.parent.relative_to(ROOT).parts)
                      for top in ("inference", "lenscrafter", "export", "training")
                      for p in (ROOT / top).rglob("__init__.py"))
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('ok')"
    out = subprocess.run([str(py), "-c", code, *packages], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    exe = clean_venv / "bin" / "deepmine"
    for command in ("demo", "craft", "scan", "rank", "selection", "inspect", "train", "export", "generate",
                    "info", "bench"):
        out = subprocess.run([str(exe), command, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "Usage" in out.stdout, (command, out.stderr[-1000:])


def test_training_command_says_to_install_extra(clean_venv):
    exe = clean_venv / "bin" / "deepmine"
    out = subprocess.run([str(exe), "train", "eznet", "cfg.toml", "--positives", "p.npy", "--negatives", "n.npy",
                          "--out", "o"], capture_output=True, text=True)
    if "No such command 'train'" in out.stderr:
        pytest.skip("train command not built yet")
    assert out.returncode != 0
    assert "deepmine[train]" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def demo_result(clean_venv, tmp_path_factory):
    """The README's first command: `deepmine demo` on a plain install (bundled model, no torch)."""
    import json

    from deepmine.inference.model import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "default.onnx").exists():
        pytest.skip("no bundled model in this checkout")
    tmp_path = tmp_path_factory.mktemp("demo")
    exe = clean_venv / "bin" / "deepmine"
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1")
    out = subprocess.run([str(exe), "demo", "--out", str(tmp_path / "demo"), "--json"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_demo_in_torch_free_venv_runs_and_writes_its_pictures(demo_result):
    r = demo_result
    for key in ("catalog", "mosaic", "trc", "selection_plot"):
        assert Path(r[key]).stat().st_size > 1000, key
    assert r["ranking_performance"] > 0.6, r  # far above chance (0); the floors are the test below
    assert r["total_s"] < 120, r  # "under two minutes on 2 cores"


def test_demo_meets_its_floors(demo_result):
    # issue 10's floors: RP on the demo's own mock survey ≥ 0.95 and at least half of the hidden
    # lenses in the survey's top 0.5 % (ranked above 99.5 % of its non-lens scenes)
    r = demo_result
    assert r["ranking_performance"] >= 0.95, r
    assert r["lenses_in_top_0.5%"] >= r["n_lenses"] / 2, r
