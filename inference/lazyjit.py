"""``lazy_njit``: a Numba kernel whose module imports without importing Numba.

Importing Numba costs 0.3–0.5 s (it pulls in parts of SciPy), more than all the rest of the
scanner's start-up. A self-contained kernel (one that calls no other compiled function) that
only some inputs need — flags of float cutouts, say — is declared with ``@lazy_njit(...)``
instead of ``@numba.njit(...)``: Numba is imported, and the kernel loaded from its on-disk
cache (``cache=True``) or compiled, at the first call. The cache is keyed by the Python
function's file and line exactly as for ``numba.njit``, so both forms share it.
"""
from __future__ import annotations

import functools


def lazy_njit(**options):
    """Decorator: ``numba.njit(**options)`` applied at the first call, not at import.

    Parameters
    ----------
    **options
        Passed to :func:`numba.njit` (``cache=True``, ``nogil=True``, ...).

    Returns
    -------
    A decorator; the decorated function keeps the Python function as ``py_func`` and the
    compiled dispatcher (once made) as ``dispatcher()``.
    """
    def wrap(fn):
        @functools.cache
        def dispatcher():
            import numba

            return numba.njit(**options)(fn)

        @functools.wraps(fn)
        def call(*args):
            return dispatcher()(*args)

        call.py_func = fn
        call.dispatcher = dispatcher
        return call

    return wrap
