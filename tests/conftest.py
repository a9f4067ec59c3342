"""Shared test configuration: quiet progress bars, hypothesis profile, no deadlines (Numba compiles)."""
import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("DEEPMINE_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

settings.register_profile(
    "deepmine", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("deepmine")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``rc, out, err = cli("rank", ...)``."""
    from deepmine.inference.cli.app import main

    def run(*args):
        rc = main([str(a) for a in args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return run
