"""Errors that deepmine reports to a user as one clear line.

Every function that rejects its input raises :class:`InputError` (a ``ValueError``), with a
message that names the file, option or parameter and says what to do. The command line prints
such errors as one line and exits non-zero; anything else is an internal error.
"""
from __future__ import annotations

import os


class DeepmineError(Exception):
    """Base class of errors meant for the user; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(DeepmineError, ValueError):
    """Bad input: a file, an array, an option or a parameter that cannot be used as given."""

    exit_code = 2


class MissingDependencyError(DeepmineError, ImportError):
    """An optional dependency (extra) is needed for this command."""

    exit_code = 3


def file_error(path: str | os.PathLike, problem: str) -> InputError:
    """Build an :class:`InputError` of the form ``"<path>: <problem>"``."""
    return InputError(f"{os.fspath(path)}: {problem}")


def require(module: str, extra: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in the torch-free venv test
        raise MissingDependencyError(
            f"this command needs {module!r} ({exc}); install it with: pip install 'deepmine[{extra}]'"
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name: the one-line
    reason put into error messages when a library (numpy, astropy, onnxruntime) fails.

    >>> first_line(ValueError("bad header\\n  at byte 2880"))
    'bad header'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
