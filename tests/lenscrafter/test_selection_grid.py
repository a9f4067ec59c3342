"""Selection grids: files, errors, cell geometry and sampling; Wilson intervals; marginals."""
from __future__ import annotations

import numpy as np
import pytest

from deepmine.inference.errors import InputError
from deepmine.lenscrafter.selection.grid import (
    ALIASES,
    DEFAULT_AXES,
    SelectionGrid,
    default_grid,
    make_axis,
    read_grid,
    write_grid_toml,
)
from deepmine.lenscrafter.selection.measure import SelectionFunction, assemble, wilson_interval

KNOWN = ["m_g_fg", "m_g_src", "r_eff_fg", "n_fg", "theta_e", "e_fg", "e_sie", "phi_sie"]


def write(tmp_path, text, name="grid.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_grid_is_figure_3_3():
    g = default_grid(known=KNOWN)
    assert g.names == ["m_fg", "m_arc", "r_eff_fg", "n_fg", "theta_e", "e_fg"]
    assert [a.column for a in g.axes] == [ALIASES[n] for n in g.names]
    assert (g.axis("theta_e").lo, g.axis("theta_e").hi) == (0.1, 6.0)
    assert (g.axis("m_arc").lo, g.axis("m_arc").hi) == (18.0, 27.0)
    assert g.n_cells == int(np.prod([spec[2] for spec in DEFAULT_AXES.values()]))


def test_default_grid_names_real_lenscrafter_columns():
    g = default_grid()  # checked against LensCrafter's own parameter table
    from deepmine.lenscrafter.params import LENS_COLUMNS

    assert all(a.column in LENS_COLUMNS for a in g.axes)


def test_toml_roundtrip_and_aliases(tmp_path):
    p = write(tmp_path, """
per_cell = 5
others = "prior"
sampling = "center"
[axes.theta_e]
range = [0.3, 3.0]
bins = 3
scale = "log"
[axes.m_g_src]
range = [20, 26]
bins = 2
[fixed]
m_fg = 22.0
""")
    g = read_grid(p, known=KNOWN)
    assert g.shape == (3, 2) and g.per_cell == 5 and g.others == "prior" and g.sampling == "center"
    assert g.fixed == {"m_g_fg": 22.0}
    np.testing.assert_allclose(g.axis("theta_e").edges, [0.3, 0.3 * 10 ** (1 / 3), 0.3 * 10 ** (2 / 3), 3.0])
    out = write_grid_toml(g, tmp_path / "again.toml")
    assert read_grid(out, known=KNOWN).to_dict() == g.to_dict()
    assert SelectionGrid.from_dict(g.to_dict()).to_dict() == g.to_dict()


def test_ecsv_grid(tmp_path):
    from astropy.table import Table

    t = Table({"name": ["m_arc", "n_fg"], "lo": [18.0, 1.0], "hi": [27.0, 4.0], "bins": [4, 2]})
    t.meta["per_cell"] = 3
    t.write(tmp_path / "g.ecsv", format="ascii.ecsv")
    g = read_grid(tmp_path / "g.ecsv", known=KNOWN)
    assert g.shape == (4, 2) and g.per_cell == 3 and g.axes[0].column == "m_g_src"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[axes.m_arcc]\nrange = [18, 27]\nbins = 4\n", "unknown parameter 'm_arcc'"),
        ("[axes.m_arc]\nrange = [27, 27]\nbins = 4\n", "empty range [27, 27]"),
        ("[axes.m_arc]\nrange = [27, 18]\nbins = 4\n", "empty range"),
        ("[axes.m_arc]\nrange = [18, 27]\nbins = 0\n", "bins must be a whole number >= 1"),
        ("[axes.m_arc]\nrange = [18, 27]\nbins = 2.5\n", "bins must be a whole number"),
        ("[axes.m_arc]\nrange = [18]\nbins = 2\n", "range must be [lo, hi]"),
        ("[axes.theta_e]\nrange = [0, 6]\nbins = 2\nscale = 'log'\n", "log axis needs a positive range"),
        ("[axes.theta_e]\nrange = [0.1, 6]\nbins = 2\nscale = 'cubic'\n", "scale must be one of"),
        ("[axes.m_arc]\nrange = [18, 27]\nbinz = 2\n", "unknown key 'binz'"),
        ("per_cel = 3\n[axes.m_arc]\nrange = [18, 27]\nbins = 2\n", "unknown key 'per_cel'"),
        ("per_cell = 3\n", "no [axes.<parameter>]"),
        ("[axes.m_arc]\nrange = [18, 27]\nbins = 2\n[fixed]\nm_arc = 20\n", "both an axis and fixed"),
        ("[axes.m_arc]\nrange = [18, 27]\nbins = 2\n[axes.m_g_src]\nrange = [18, 27]\nbins = 2\n", "more than one axis"),
        ("others = 'random'\n[axes.m_arc]\nrange = [18, 27]\nbins = 2\n", "others must be one of"),
        ("[axes.m_arc\nrange = [18, 27]\n", "not valid TOML"),
    ],
)
def test_bad_grid_files_give_one_clear_line(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        read_grid(p, known=KNOWN)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg and str(p) in msg


def test_grid_file_errors(tmp_path):
    with pytest.raises(InputError, match="grid file not found"):
        read_grid(tmp_path / "missing.toml")
    p = write(tmp_path, "x", name="grid.yaml")
    with pytest.raises(InputError, match="use .toml or .ecsv"):
        read_grid(p)


def test_cells_and_sampling_stay_inside_their_bins():
    g = SelectionGrid(axes=[make_axis("theta_e", 0.1, 6.0, 4, "log", known=KNOWN),
                            make_axis("m_arc", 18, 27, 3, known=KNOWN)])
    cells = np.arange(g.n_cells)
    idx = g.unravel(cells)
    assert idx.shape == (12, 2) and tuple(idx[-1]) == (3, 2) and tuple(idx[1]) == (0, 1)
    vals = g.axis_values(cells, 50, np.random.default_rng(1).random((12 * 50, 2)))
    rep = np.repeat(idx, 50, axis=0)
    for k, a in enumerate(g.axes):
        v = vals[a.column]
        e = a.edges
        assert np.all(v >= e[rep[:, k]]) and np.all(v <= e[rep[:, k] + 1])
    with pytest.raises(InputError, match="cell indices"):
        g.unravel([12])


def test_wilson_interval_matches_formula():
    k, n = np.array([0, 3, 10, 0]), np.array([10, 10, 10, 0])
    lo, hi = wilson_interval(k, n, 0.6827)
    z = 1.0000 + 0.0
    p = k[:3] / n[:3]
    centre = (p + z * z / (2 * n[:3])) / (1 + z * z / n[:3])
    half = z / (1 + z * z / n[:3]) * np.sqrt(p * (1 - p) / n[:3] + z * z / (4 * n[:3] ** 2))
    np.testing.assert_allclose(lo[:3], centre - half, atol=2e-4)
    np.testing.assert_allclose(hi[:3], centre + half, atol=2e-4)
    assert (lo[3], hi[3]) == (0.0, 1.0)


def test_marginals_sum_counts_in_requested_order(tmp_path):
    from astropy.table import Table

    g = SelectionGrid(axes=[make_axis("m_arc", 18, 27, 3, known=KNOWN), make_axis("n_fg", 1, 4, 2, known=KNOWN),
                            make_axis("e_fg", 0, 0.5, 4, known=KNOWN)])
    rng = np.random.default_rng(0)
    n = np.full(g.n_cells, 10)
    k = rng.integers(0, 11, g.n_cells)
    part = Table({"cell": np.arange(g.n_cells), "n": n, "n_detected": k, "sum_ordinality": k * 1.0,
                  "median_logit": np.zeros(g.n_cells, np.float32), "craft_s": np.ones(g.n_cells),
                  "scan_s": np.ones(g.n_cells)})
    # parts may come in any order
    sel = assemble(g, [part[12:], part[:12]], provenance={"cut": 0.9})
    cube = k.reshape(g.shape)
    m = sel.marginal("e_fg", "m_arc")
    np.testing.assert_array_equal(m["n_detected"], cube.sum(axis=1).T)
    np.testing.assert_array_equal(m["n"], np.full((4, 3), 20))
    np.testing.assert_allclose(sel.marginal("n_fg")["fraction"], cube.sum(axis=(0, 2)) / 120)
    paths = sel.save(tmp_path / "sel.fits")
    for p in paths:
        back = SelectionFunction.load(p)
        assert back.grid.to_dict() == g.to_dict() and back.cut == 0.9
        np.testing.assert_array_equal(back.cube("n_detected"), cube)
    with pytest.raises(InputError, match="more than one part"):
        assemble(g, [part, part[:3]])


def test_lens_tables_reference_and_prior():
    from deepmine.lenscrafter.params import REFERENCE
    from deepmine.lenscrafter.selection.measure import lens_params_for_cells

    axes = [make_axis("theta_e", 0.3, 3.0, 2, "log"), make_axis("m_arc", 20, 24, 2)]
    ref = SelectionGrid(axes=axes, fixed={"m_g_fg": 27.0})
    p, craft_seed, offset = lens_params_for_cells(ref, np.arange(1, 4), 5, seed=1)
    assert len(p) == 15 and offset == 5 and list(np.unique(p["cell"])) == [1, 2, 3]
    assert np.all(p["m_g_fg"] == 27.0) and np.all(p["n_fg"] == REFERENCE["n_fg"])
    assert np.all(p["theta_e"][p["cell"] == 1] < 0.95) and np.all(p["m_g_src"][p["cell"] == 1] >= 22)
    # the same cell gets the same lenses whichever chunk it is crafted in
    q, seed2, _ = lens_params_for_cells(ref, np.arange(2, 4), 5, seed=1)
    np.testing.assert_array_equal(q["theta_e"], p["theta_e"][5:])
    assert craft_seed == seed2
    prior = SelectionGrid(axes=axes, others="prior")
    p = lens_params_for_cells(prior, np.arange(4), 200, seed=2)[0]
    assert np.std(p["n_fg"]) > 0.5  # drawn, not the reference value
    # priors put the source within 0.6 θ_E of the deflector, using the grid's θ_E
    assert np.all(np.hypot(p["src_x"], p["src_y"]) <= 0.6 * p["theta_e"] + 1e-12)
    with pytest.raises(InputError, match="consecutive"):
        lens_params_for_cells(ref, np.array([0, 2]), 5, seed=1)


def test_wilson_interval_matches_astropy():
    import numpy as np
    from astropy.stats import binom_conf_interval

    from deepmine.lenscrafter.selection.measure import wilson_interval

    k = np.array([0, 1, 5, 10, 3, 0])
    n = np.array([10, 10, 10, 10, 7, 0])
    lo, hi = wilson_interval(k, n, 0.6827)
    ref = binom_conf_interval(k[:5], n[:5], confidence_level=0.6827, interval="wilson")
    np.testing.assert_allclose(lo[:5], ref[0], atol=1e-12)
    np.testing.assert_allclose(hi[:5], ref[1], atol=1e-12)
    assert (lo[5], hi[5]) == (0.0, 1.0)
