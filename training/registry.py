"""Models by name: ``create_model("lensflow")``, ``create_model("eznet", table=...)``.

A model factory (a class or a function) registers itself with :func:`register_model`; every
keyword argument of the factory is an override a user may give (in a recipe's ``[model]``
table, or to :func:`create_model`). Unknown names and unknown overrides are refused with a
one-line :class:`~deepmine.inference.errors.InputError`.

The GAN helper registers ``"lensgenerator"`` the same way::

    @register_model("lensgenerator")
    class LensGenerator(nn.Module): ...

Every model built here carries ``model.deepmine_config`` — a dict whose keys are fields of
:class:`deepmine.inference.metadata.ModelMetadata` (``architecture``, ``task``,
``architecture_config``, ``input_shape``, ``bands``, ``pixel_scale``, ``preprocessing``), so
``ModelMetadata(**model.deepmine_config)`` is valid — and ``model.deepmine_overrides``, the
overrides it was built with (JSON-compatible), so that :func:`create_model` rebuilds it.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from deepmine.inference.errors import InputError

_REGISTRY: dict[str, Callable[..., Any]] = {}

#: Modules that register the built-in models when imported (lazily, on first lookup).
_BUILTIN_MODULES = (
    "deepmine.training.lensflow",
    "deepmine.training.eznet",
    "deepmine.training.generator",  # written by the GAN helper; skipped while absent
    "deepmine.training.gan",
)


def register_model(name: str) -> Callable:
    """Class/function decorator: make ``create_model(name, **overrides)`` build it."""
    key = name.lower()

    def deco(factory):
        _REGISTRY[key] = factory
        factory.registry_name = key
        return factory

    return deco


def _load_builtins() -> None:
    for modname in _BUILTIN_MODULES:
        try:
            importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise


def available_models() -> list[str]:
    """Sorted names of the registered models."""
    _load_builtins()
    return sorted(_REGISTRY)


def model_factory(name: str) -> Callable:
    """The factory registered under ``name`` (case-insensitive), or InputError."""
    if not isinstance(name, str):
        raise InputError(f"model name must be a string, got {name!r}")
    key = name.lower()
    if key not in _REGISTRY:
        _load_builtins()
    if key not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return _REGISTRY[key]


def create_model(name: str, **overrides):
    """Build the model registered as ``name`` with keyword ``overrides``.

    Parameters
    ----------
    name : str
        ``"lensflow"``, ``"eznet"`` or ``"lensgenerator"`` (once registered), case-insensitive.
    **overrides
        Keyword arguments of the model's constructor (see each model's docstring).

    Returns
    -------
    torch.nn.Module with ``deepmine_config`` and ``deepmine_overrides`` attributes.
    """
    factory = model_factory(name)
    params = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_kwargs:
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            allowed = ", ".join(p for p in params if p != "self")
            raise InputError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; allowed: {allowed}")
    try:
        model = factory(**overrides)
    except TypeError as exc:
        raise InputError(f"model {name!r}: bad options ({exc})") from None
    if not hasattr(model, "deepmine_overrides"):
        model.deepmine_overrides = dict(overrides)
    return model
