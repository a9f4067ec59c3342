"""The pipelined crafting of ``deepmine craft`` (issue 22) makes the same images as one call."""
import numpy as np
import pytest

from deepmine.lenscrafter import craft_lenses, sample_lens_params
from deepmine.lenscrafter.synth import craft_lens_chunks


@pytest.mark.parametrize("output", ["uint8", "float32"])
def test_chunks_equal_one_call(output):
    params = sample_lens_params(37, seed=4)
    whole = craft_lenses(params, seed=9, output=output, index_offset=5)
    parts = list(craft_lens_chunks(params, 10, seed=9, output=output, index_offset=5))
    assert [(a, b) for a, b, _ in parts] == [(0, 10), (10, 20), (20, 30), (30, 37)]
    longer = list(craft_lens_chunks(params, 300, seed=9, output=output, index_offset=5))
    assert [(a, b) for a, b, _ in longer] == [(0, 37)]
    np.testing.assert_array_equal(np.concatenate([im for _, _, im in parts]), whole)


def test_a_short_first_chunk_fills_the_pipeline():
    params = sample_lens_params(600, seed=2)
    bounds = [(a, b) for a, b, _ in craft_lens_chunks(params, 500, output="float32", field=0, noise=False)]
    assert bounds == [(0, 256), (256, 600)]


def test_errors_surface_from_the_preparing_thread():
    params = sample_lens_params(4, seed=1)
    params["theta_e"][3] = -1.0
    with pytest.raises(Exception, match="theta_e"):
        list(craft_lens_chunks(params, 2))
