"""The ``>>>`` examples in the docstrings of the shared helpers run and say what they show."""
import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["deepmine.inference.progress", "deepmine.inference.formats",
                                  "deepmine.inference.errors", "deepmine.inference.inputs.survey",
                                  "deepmine.inference.inputs.planes", "deepmine.inference.fitspath"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
