"""LensCrafter pipeline steps, batched synthesis, parameter tables, priors and negatives."""
import numba
import numpy as np
import pytest
from astropy.table import Table
from scipy.signal import convolve2d

from deepmine.inference.errors import InputError
from deepmine.lenscrafter import (
    LENS_COLUMNS,
    NEGATIVE_KINDS,
    PARAM_RANGES,
    compose,
    convolve_psf,
    craft_lenses,
    craft_negatives,
    gaussian_psf,
    moffat_psf,
    observe,
    offset_lenses,
    percentile_normalization,
    read_lens_params,
    reference_lens_params,
    sample_lens_params,
    shot_noise,
)
from deepmine.lenscrafter.params import REFERENCE


# ----------------------------------------------------------------------------- pipeline steps
@pytest.mark.parametrize("kernel", [gaussian_psf(0.7), moffat_psf(0.8, size=15),
                                    np.random.default_rng(0).uniform(0, 1, (7, 7))])
def test_convolve_psf_matches_scipy(kernel):
    img = np.random.default_rng(1).uniform(0, 5, (3, 40, 40))
    got = convolve_psf(img, kernel)
    k = kernel / kernel.sum()
    for b in range(3):
        np.testing.assert_allclose(got[b], convolve2d(img[b], k, mode="same"), atol=2e-6 * img.max())


def test_per_band_psf_and_flux_conservation():
    img = np.zeros((3, 41, 41))
    img[:, 20, 20] = 1.0
    psf = np.stack([gaussian_psf(f, size=21) for f in (0.5, 0.7, 0.9)])
    out = convolve_psf(img, psf)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(out[:, 10:31, 10:31], psf, atol=1e-14)


def test_noise_statistics():
    sky = observe(np.zeros((3, 200, 200)), sky_sigma=(0.1, 0.2, 0.3), seed=4)
    np.testing.assert_allclose(sky.std(axis=(1, 2)), [0.1, 0.2, 0.3], rtol=0.02)
    assert abs(sky.mean()) < 0.005
    big = shot_noise(np.full((300, 300), 2.0), gain=50.0, seed=1)  # normal regime, λ = 100 e⁻
    assert big.mean() == pytest.approx(2.0, rel=0.005) and big.var() == pytest.approx(2.0 / 50, rel=0.03)
    small = shot_noise(np.full((300, 300), 0.1), gain=50.0, seed=2)  # exact Poisson, λ = 5 e⁻
    counts = small * 50
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    assert counts.mean() == pytest.approx(5.0, rel=0.02) and counts.var() == pytest.approx(5.0, rel=0.05)
    np.testing.assert_array_equal(shot_noise(np.ones((5, 5)), seed=3), shot_noise(np.ones((5, 5)), seed=3))
    assert np.all(shot_noise(-np.ones((4, 4))) == 0)


def test_step_errors_are_one_line_input_errors():
    with pytest.raises(InputError, match="compose"):
        compose(np.zeros((3, 4, 4)), np.zeros((3, 5, 5)))
    with pytest.raises(InputError, match="PSF kernel"):
        convolve_psf(np.zeros((4, 4)), np.ones((4, 4)))
    with pytest.raises(InputError, match="sky_sigma"):
        observe(np.zeros((3, 4, 4)), sky_sigma=(1.0, 2.0))
    with pytest.raises(InputError, match="gain"):
        shot_noise(np.zeros((4, 4)), gain=0.0)


# ----------------------------------------------------------------------------- tables and priors
def test_reference_and_sampled_tables_have_every_column_in_range(tmp_path):
    ref = reference_lens_params(3)
    assert ref.colnames == list(LENS_COLUMNS) and len(ref) == 3
    assert ref["theta_e"][0] == 1.5 and ref["e_sie"][0] == pytest.approx(1 - 1 / 1.8)
    assert np.hypot(ref["src_x"][0], ref["src_y"][0]) == pytest.approx(0.17)
    lit = reference_lens_params(literal=True)
    assert (lit["r_eff_src"][0], lit["n_src"][0]) == (6.0, 7.0)
    t = sample_lens_params(500, seed=2, m_g_src=24.0, theta_e=(0.1, 6.0))
    for name in LENS_COLUMNS:
        lo, hi = PARAM_RANGES[name]
        assert np.all((t[name] >= lo) & (t[name] <= hi)), name
    assert np.all(t["m_g_src"] == 24.0) and t["theta_e"].min() < 1 and t["theta_e"].max() > 5
    np.testing.assert_array_equal(t["phi_fg"], sample_lens_params(500, seed=2, m_g_src=24.0,
                                                                   theta_e=(0.1, 6.0))["phi_fg"])
    path = tmp_path / "p.ecsv"
    t.write(path)
    back = read_lens_params(path)
    assert back["theta_e"].unit == "arcsec"
    np.testing.assert_array_equal(back["theta_e"], t["theta_e"])


@pytest.mark.parametrize("name,value", [("theta_e", -0.5), ("n_src", 0.05), ("e_fg", 0.99), ("m_g_fg", np.nan),
                                        ("r_eff_fg", 0.0)])
def test_out_of_range_parameters_are_named(name, value):
    t = reference_lens_params(2)
    t[name][1] = value
    with pytest.raises(InputError, match=rf"{name}=.*row 1.*expected"):
        craft_lenses(t)


def test_table_errors():
    t = reference_lens_params(1)
    t.remove_column("phi_src")
    with pytest.raises(InputError, match="lacks column.*phi_src"):
        craft_lenses(t)
    with pytest.raises(InputError, match="unknown lens parameter"):
        sample_lens_params(3, thetaE=1.0)
    with pytest.raises(InputError, match="output"):
        craft_lenses(reference_lens_params(1), output="png")
    with pytest.raises(InputError, match="PSF kernel"):
        craft_lenses(reference_lens_params(1), psf=np.ones((2, 4, 4)))
    with pytest.raises(InputError, match="supersample"):
        craft_lenses(reference_lens_params(1), supersample=0)


# ----------------------------------------------------------------------------- batched synthesis
def test_craft_lenses_shapes_dtypes_and_normalisation():
    t = sample_lens_params(6, seed=1)
    u8 = craft_lenses(t, seed=3)
    f32 = craft_lenses(t, seed=3, output="float32")
    assert u8.shape == f32.shape == (6, 3, 64, 64) and u8.dtype == np.uint8 and f32.dtype == np.float32
    np.testing.assert_array_equal(u8, percentile_normalization(f32))
    odd = craft_lenses(t[:2], size=33, pixel_scale=0.2, supersample=2, psf=moffat_psf(0.7, pixel_scale=0.2))
    assert odd.shape == (2, 3, 33, 33)


def test_bands_follow_the_flux_ratios_in_channel_order_i_r_g():
    t = reference_lens_params(1)
    img = craft_lenses(t, noise=False, output="float32", field=0)[0].sum(axis=(1, 2))
    assert img[0] > img[1] > img[2]  # i > r > g for the red foreground (20.5 : 5.5 : 1)


def test_deterministic_per_seed_and_independent_of_threads_and_chunks():
    t = sample_lens_params(12, seed=5)
    a = craft_lenses(t, seed=9, output="float32", field=1.5)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        b = craft_lenses(t, seed=9, output="float32", field=1.5)
    finally:
        numba.set_num_threads(old)
    c = np.concatenate([craft_lenses(t[:5], seed=9, output="float32", field=1.5),
                        craft_lenses(t[5:], seed=9, output="float32", field=1.5, index_offset=5)])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, craft_lenses(t, seed=10, output="float32", field=1.5))


def test_noise_levels_in_an_empty_field():
    t = reference_lens_params(20)
    t["m_g_fg"], t["m_g_src"], t["fg_x"] = 40.0, 40.0, 50.0
    img = craft_lenses(t, seed=1, output="float32", sky_sigma=(0.1, 0.2, 0.3), field=0)
    np.testing.assert_allclose(img.std(axis=(0, 2, 3)), [0.1, 0.2, 0.3], rtol=0.02)


# ----------------------------------------------------------------------------- negatives
def test_negatives_cover_every_kind_and_are_varied():
    imgs, tab = craft_negatives(32, seed=1)
    assert imgs.shape == (32, 3, 64, 64) and imgs.dtype == np.uint8
    assert isinstance(tab, Table) and set(tab["kind"]) == set(NEGATIVE_KINDS)
    assert set(tab["artefact"][tab["kind"] == "artefact"]) <= {"cosmic_rays", "trail", "saturated_star"}
    flat = imgs.reshape(32, -1).astype(float)
    corr = np.corrcoef(flat)
    assert np.median(corr[np.triu_indices(32, 1)]) < 0.9  # not 32 copies of one blob
    again, _ = craft_negatives(32, seed=1)
    np.testing.assert_array_equal(imgs, again)
    part, tpart = craft_negatives(8, seed=1, index_offset=24)
    np.testing.assert_array_equal(part, imgs[24:])
    assert list(tpart["index"]) == list(range(24, 32))


def test_negative_options_and_errors():
    imgs, tab = craft_negatives(10, seed=2, kinds=["ring", "star"], weights=[1, 0], output="float32", size=48)
    assert set(tab["kind"]) == {"ring"} and imgs.dtype == np.float32 and imgs.shape[-1] == 48
    with pytest.raises(InputError, match="kinds"):
        craft_negatives(3, kinds=["quasar"])
    with pytest.raises(InputError, match="weights"):
        craft_negatives(3, kinds=["ring"], weights=[-1])
    with pytest.raises(InputError, match="n="):
        craft_negatives(0)


def test_reference_values_match_figure_4_2():
    assert REFERENCE["ratio_r_src"] == 1.6 and REFERENCE["ratio_i_src"] == 2.6
    assert REFERENCE["ratio_r_fg"] == 5.5 and REFERENCE["ratio_i_fg"] == 20.5
    assert REFERENCE["e_src"] == 0.35 and REFERENCE["phi_src"] == -85 and REFERENCE["phi_fg"] == 5


def test_offset_lenses_moves_whole_lenses():
    """Deflector, its light and the source move together: the image moves, the lens does not change."""
    t = sample_lens_params(4000, seed=3)
    o = offset_lenses(t, 0.2, seed=5)
    d = np.asarray(o["dfl_x"]) - np.asarray(t["dfl_x"])
    for ax in ("x", "y"):
        base = np.asarray(o[f"dfl_{ax}"]) - np.asarray(t[f"dfl_{ax}"])
        for col in (f"fg_{ax}", f"src_{ax}"):
            assert np.allclose(np.asarray(o[col]) - np.asarray(t[col]), base)
    assert np.std(d) == pytest.approx(0.2, rel=0.05) and abs(np.mean(d)) < 0.01
    untouched = [c for c in t.colnames if not c.endswith(("_x", "_y"))]
    assert all(np.array_equal(o[c], t[c]) for c in untouched)
    assert np.array_equal(np.asarray(offset_lenses(t, 0.2, seed=5)["src_y"]), np.asarray(o["src_y"]))
    assert np.array_equal(np.asarray(offset_lenses(t, 0.0)["fg_x"]), np.asarray(t["fg_x"]))
    # a whole-pixel move of the lens is a whole-pixel move of its (noise-free, PSF-free) image
    ref = reference_lens_params(1)
    moved = ref.copy()
    for col in ("dfl_x", "fg_x", "src_x"):
        moved[col] = moved[col] + 2 * 0.168
    a = craft_lenses(ref, noise=False, psf=False, output="float32", field=0)[0]
    b = craft_lenses(moved, noise=False, psf=False, output="float32", field=0)[0]
    assert np.allclose(b[:, :, 6:-6], np.roll(a, 2, axis=2)[:, :, 6:-6], rtol=1e-4, atol=1e-3 * a.max())
    with pytest.raises(InputError, match="sigma"):
        offset_lenses(t, -1.0)
