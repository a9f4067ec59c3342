"""LensCrafter's field population (lenscrafter.field): counts, colours, determinism, no import cycle."""
import ast
from pathlib import Path

import numba
import numpy as np
import pytest

from deepmine.inference.errors import InputError
from deepmine.lenscrafter import (
    craft_lenses,
    craft_negatives,
    field_population,
    reference_lens_params,
    sample_lens_params,
)
from deepmine.lenscrafter import field as fieldmod

AREA = (64 * 0.168) ** 2  # arcsec² of a 64×64 HSC cutout
BINS = (17.0, 20.0, 22.0, 23.0, 24.0, 25.0, 26.0)


@pytest.fixture(scope="module")
def pop():
    return field_population(6000, seed=11)


def test_published_numbers_as_cited():
    # LSST Science Book eq. 3.7: N(<25) = 46 per arcmin², slope 0.31 → 1.18e5 per deg² per mag at i = 25
    dndm = fieldmod.galaxy_counts_between(24.995, 25.005, 3600.0**2) / 0.01
    assert dndm == pytest.approx(0.31 * np.log(10) * 46 * 3600, rel=1e-3)
    assert fieldmod.galaxy_counts_between(17, 26, AREA) == pytest.approx(3.0, abs=0.05)
    assert 5000 < fieldmod.star_counts_between(16, 26, 3600.0**2) < 12000


def test_galaxies_per_cutout_by_magnitude_follow_the_published_counts(pop):
    n = 6000
    gal = pop[pop["inside"] & (pop["kind"] == "galaxy")]
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        got = int(((gal["m_i"] >= lo) & (gal["m_i"] < hi)).sum())
        want = n * fieldmod.galaxy_counts_between(lo, hi, AREA)
        assert abs(got - want) < 4 * np.sqrt(want) + 2, (lo, hi, got, want)
    assert gal["m_i"].max() <= 26.0 and gal["m_i"].min() >= 17.0


def test_stars_per_cutout_follow_the_star_counts():
    n = 12000
    t = field_population(n, seed=12)
    stars = t[t["inside"] & (t["kind"] == "star")]
    want = n * fieldmod.star_counts_between(16.0, 26.0, AREA)
    assert abs(len(stars) - want) < 4 * np.sqrt(want), (len(stars), want)
    bright = n * fieldmod.star_counts_between(16.0, 20.0, AREA)
    got = int((stars["m_i"] < 20.0).sum())
    assert abs(got - bright) < 4 * np.sqrt(bright) + 2


def test_faint_field_galaxies_are_blue_and_deflectors_red(pop):
    gal = pop[pop["kind"] == "galaxy"]
    faint = gal[gal["m_i"] > 24.0]
    assert np.mean(faint["g_r"] < 1.0) > 0.9 and np.median(faint["g_r"]) < 0.6
    bright = gal[gal["m_i"] < 21.0]
    assert np.mean(bright["red"]) > np.mean(faint["red"]) + 0.2  # red fraction rises at bright magnitudes
    assert np.median(bright["g_r"][bright["red"]]) > 1.1
    # faint blue galaxies are small (Miller et al. 2013 median r_e ≈ 0.3″ at i ≈ 25)
    assert 0.15 < np.median(faint["r_eff"]) < 0.45
    t = sample_lens_params(3000, seed=3)
    g_r = 2.5 * np.log10(np.asarray(t["ratio_r_fg"]))
    r_i = 2.5 * np.log10(np.asarray(t["ratio_i_fg"]) / np.asarray(t["ratio_r_fg"]))
    assert 1.2 < np.median(g_r) < 1.9 and np.all(g_r > 0.9)
    assert 0.4 < np.median(r_i) < 1.0
    r = np.asarray(t["r_eff_fg"])  # brighter deflectors are nearer and larger
    m = np.asarray(t["m_g_fg"])
    assert np.median(r[m < 21]) > np.median(r[m > 22.5]) and 0.4 < np.median(r) < 2.0


def test_field_is_deterministic_and_independent_of_threads_and_chunks():
    t = sample_lens_params(12, seed=4)
    a = craft_lenses(t, seed=9, output="float32")
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        b = craft_lenses(t, seed=9, output="float32")
        nb1, _ = craft_negatives(12, seed=9, output="float32")
    finally:
        numba.set_num_threads(prev)
    np.testing.assert_array_equal(a, b)
    c = np.concatenate([craft_lenses(t[:5], seed=9, output="float32"),
                        craft_lenses(t[5:], seed=9, output="float32", index_offset=5)])
    np.testing.assert_array_equal(a, c)
    nb2, _ = craft_negatives(12, seed=9, output="float32")
    np.testing.assert_array_equal(nb1, nb2)
    p1 = field_population(10, seed=3)
    p2 = field_population(4, seed=3, index_offset=6)
    assert np.array_equal(np.asarray(p1[p1["index"] >= 6]["m_i"]), np.asarray(p2["m_i"]))


def test_field_option_none_one_scale_and_zero():
    t = reference_lens_params(30)
    t["m_g_fg"], t["m_g_src"] = 40.0, 40.0
    kw = dict(seed=5, output="float32", noise=False)
    default = craft_lenses(t, **kw)
    np.testing.assert_array_equal(default, craft_lenses(t, field=1, **kw))
    assert np.abs(craft_lenses(t, field=0, **kw)).max() < 1e-4  # empty sky (m = 40 lenses), no field
    flux1 = default.sum()
    assert craft_lenses(t, field=3, **kw).sum() > flux1 > 0
    with pytest.raises(InputError, match="field"):
        craft_lenses(t, field=-1)
    with pytest.raises(InputError, match="i_max"):
        craft_lenses(t, field_i_max=40)
    neg0, _ = craft_negatives(4, seed=1, field=0, output="float32")
    neg1, _ = craft_negatives(4, seed=1, output="float32")
    assert not np.array_equal(neg0, neg1)


def test_bright_stars_get_spikes_and_saturate():
    rows = fieldmod.star_rows(0.0, 0.0, 17.0, 2.0, 1.5, 0.168)
    assert [int(r[0]) for r in rows] == [fieldmod.kernels.POINT, fieldmod.kernels.SPIKE, fieldmod.kernels.SPIKE]
    assert len(fieldmod.star_rows(0.0, 0.0, 23.0, 2.0, 1.5, 0.168)) == 1
    img = np.zeros((3, 20, 20))
    img[:, 10, 10] = 20000.0
    fieldmod.saturate(img, np.random.default_rng(0), 200.0)
    assert img.max() <= 200.0 and (img[0, :, 10] > 190).sum() >= 3  # a bleed trail along the column


def test_no_import_cycle_between_lenscrafter_modules():
    root = Path(fieldmod.__file__).parent
    graph = {}
    for f in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[f.stem] = deps & {p.stem for p in root.glob("*.py")}
    assert "negatives" not in graph["synth"] and "synth" not in graph["field"]
    state = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack + [m, d])}")
            if d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in graph:
        if m not in state and m != "__init__":
            visit(m, [])
