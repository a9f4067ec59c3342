"""deepmine.inference — the torch-free side of deepmine.

Model loading (ONNX + metadata), preprocessing, readers, the scanner, ranking, catalogues,
mosaics and the ``deepmine`` command line. Nothing in this package imports torch, directly or
indirectly (``tests/integration/test_torch_free.py`` proves it with torch blocked).
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("deepmine")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

from .errors import DeepmineError, InputError  # noqa: E402

__all__ = ["__version__", "DeepmineError", "InputError"]
