"""deepmine.training — PyTorch: LensFlow, EZnet, LensGenerator (GAN), datasets, augmentation, recipes.

Public API (torch is imported only when a model, dataset or trainer is used)::

    create_model(name, **overrides)     # "lensflow", "eznet", "lensgenerator"
    register_model(name)                # decorator for new architectures
    available_models()
    load_checkpoint(path) -> (model, info)      # see deepmine.training.checkpoint
    load_recipe(path, **overrides) -> Recipe    # see deepmine.training.recipe
    train(recipe, positives, negatives, out_dir, ...) -> TrainResult   # deepmine.training.trainer
"""
from .registry import available_models, create_model, model_factory, register_model

_LAZY = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_recipe": "recipe",
    "Recipe": "recipe",
    "train": "trainer",
    "TrainResult": "trainer",
}

__all__ = ["available_models", "create_model", "model_factory", "register_model", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
