"""deepmine.inference — the torch-free side of deepmine.

Model loading (ONNX + metadata), preprocessing, readers, the scanner, ranking, catalogues,
mosaics and the ``deepmine`` command line. Nothing in this package imports torch, directly or
indirectly (``tests/integration/test_torch_free.py`` proves it with torch blocked).
"""
from .errors import DeepmineError, InputError

__all__ = ["__version__", "DeepmineError", "InputError"]


def __getattr__(name: str):
    """``__version__`` is looked up on first use (PEP 562): importlib.metadata costs ~30-50 ms
    of start-up that a scan only needs when it writes its provenance."""
    if name == "__version__":
        from importlib import metadata

        try:
            version = metadata.version("deepmine")
        except metadata.PackageNotFoundError:  # running from a source tree without an install
            version = "0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
