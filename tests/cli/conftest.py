"""Fixtures of the command-line tests only: small training checkpoints for ``deepmine export``."""
from __future__ import annotations

import pytest

#: Small sizes of the exportable classifiers (seconds to build and export).
_SMALL = {"lensflow": dict(size=36, filters=[4, 6, 8], hidden=[16, 8]),
          "eznet": dict(table=[{"kernels": 4, "kernel": 3, "height": 12, "width": 12},
                               {"kernels": 4, "kernel": 3, "height": 6, "width": 6},
                               {"kernels": 4, "kernel": 1, "height": 1, "width": 1}],
                        size=16, hidden=8)}  # fmt: skip
_PROVENANCE = {"recipe_name": "test", "seed": 11, "epochs": 3,
               "heldout": {"ranking_performance": 0.5, "epoch": 3}, "data": {"positives": {"sha256": "sha256:abc"}}}  # fmt: skip


def _checkpoint(folder, name, **sizes):
    """Save an untrained ``name`` model (seed 0; ``sizes`` replace the small defaults) as
    ``folder/<name>.pt``; return (checkpoint path, model). Needs torch: callers importorskip it."""
    import torch

    from deepmine.training import create_model
    from deepmine.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model(name, **(sizes or _SMALL[name]))
    return save_checkpoint(folder / f"{name}.pt", model, _PROVENANCE), model


@pytest.fixture(scope="session")
def export_checkpoint():
    """``export_checkpoint(folder, name, **sizes)`` → (checkpoint path, model) of a small
    ``lensflow`` / ``eznet`` (or, with ``sizes``, any registered model)."""
    return _checkpoint
