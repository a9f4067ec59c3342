"""deepmine.inference and deepmine.lenscrafter never import torch, directly or indirectly (the
``torch_blocker`` fixture of tests/conftest.py makes any import of torch fail)."""
import subprocess
import sys
import textwrap


def _run(blocker: str, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter after ``blocker`` (the ``torch_blocker`` fixture)."""
    return subprocess.run([sys.executable, "-c", blocker + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=600)


def test_every_inference_and_lenscrafter_module_imports_without_torch(torch_blocker):
    proc = _run(
        torch_blocker,
        """
        import importlib, pkgutil, sys
        names = []
        for pkg_name in ("deepmine.inference", "deepmine.lenscrafter"):
            pkg = importlib.import_module(pkg_name)
            for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
                if info.name.endswith("__main__"):
                    continue
                importlib.import_module(info.name)
                names.append(info.name)
        assert "torch" not in sys.modules, "torch was imported"
        print(len(names), "modules:", " ".join(names))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deepmine.inference.ranking" in proc.stdout


def test_cli_runs_without_torch(tmp_path, torch_blocker):
    proc = _run(
        torch_blocker,
        f"""
        import numpy as np, sys
        np.save({str(tmp_path / 'n.npy')!r}, np.random.default_rng(0).normal(size=1000))
        np.save({str(tmp_path / 't.npy')!r}, np.random.default_rng(1).normal(2, 1, size=50))
        from deepmine.inference.cli.app import main
        assert main(["--help"]) == 0
        assert main(["rank", {str(tmp_path / 'n.npy')!r}, "--tracers", {str(tmp_path / 't.npy')!r}]) == 0
        assert "torch" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ranking performance" in proc.stdout
