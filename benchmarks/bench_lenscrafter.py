"""LensCrafter speed: per lens against lenstronomy (same physics, PSF, noise) and batched throughput.

Run: ``python -m pytest benchmarks/bench_lenscrafter.py --benchmark-only -q``. Numba compilation
and lenstronomy/caustics set-up happen outside the timings. Ratios and rates are stored in
``benchmark.extra_info``. The machine may be shared: timings are noisy; CPU-time figures are
reported beside wall-clock ones.
"""
import time

import numba
import numpy as np
import pytest

from deepmine.lenscrafter import craft_lenses, percentile_normalization, sample_lens_params
from deepmine.lenscrafter.pipeline import HSC, default_psf

N_OURS = 400  # lenses per timed LensCrafter call
N_PEER = 12  # lenses per timed lenstronomy call


@pytest.fixture(scope="module")
def params():
    return sample_lens_params(N_OURS, seed=11)


@pytest.fixture
def one_thread():
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


def _lenstronomy_simulator(kernels):
    """A function crafting one 3-band lens with lenstronomy's ImageModel, as LensCrafter does."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.SimulationAPI.data_api import DataAPI  # noqa: F401 - import cost outside timing
    from lenstronomy.Util import image_util
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    from deepmine.lenscrafter.profiles import magnitude_to_flux, sersic_amp_from_flux

    size, ps = 64, 0.168
    half = (size - 1) / 2 * ps
    models = []
    for k in kernels:
        data = ImageData(image_data=np.zeros((size, size)), ra_at_xy_0=-half, dec_at_xy_0=-half,
                         transform_pix2angle=np.array([[ps, 0], [0, ps]]))
        psf = PSF(psf_type="PIXEL", kernel_point_source=k)
        models.append(ImageModel(data, psf, lens_model_class=LensModel(["SIE"]),
                                 source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                                 lens_light_model_class=LightModel(["SERSIC_ELLIPSE"]),
                                 kwargs_numerics={"supersampling_factor": 1}))
    gain = HSC["gain"]
    sky = HSC["sky_sigma"]
    rng = np.random.default_rng(0)

    def simulate(row):
        e1, e2 = phi_q2_ellipticity(np.radians(row["phi_sie"]), 1 - row["e_sie"])
        kl = [{"theta_E": row["theta_e"], "e1": e1, "e2": e2, "center_x": row["dfl_x"], "center_y": row["dfl_y"]}]
        out = np.empty((3, size, size))
        for b, (model, ratio_s, ratio_f) in enumerate(zip(models, ("ratio_i_src", "ratio_r_src", None),
                                                          ("ratio_i_fg", "ratio_r_fg", None))):
            fs = magnitude_to_flux(row["m_g_src"]) * (row[ratio_s] if ratio_s else 1.0)
            ff = magnitude_to_flux(row["m_g_fg"]) * (row[ratio_f] if ratio_f else 1.0)
            s1, s2 = phi_q2_ellipticity(np.radians(row["phi_src"]), 1 - row["e_src"])
            f1, f2 = phi_q2_ellipticity(np.radians(row["phi_fg"]), 1 - row["e_fg"])
            ks = [{"amp": float(sersic_amp_from_flux(fs, row["r_eff_src"], row["n_src"])),
                   "R_sersic": row["r_eff_src"], "n_sersic": row["n_src"], "e1": s1, "e2": s2,
                   "center_x": row["src_x"], "center_y": row["src_y"]}]
            kf = [{"amp": float(sersic_amp_from_flux(ff, row["r_eff_fg"], row["n_fg"])),
                   "R_sersic": row["r_eff_fg"], "n_sersic": row["n_fg"], "e1": f1, "e2": f2,
                   "center_x": row["fg_x"], "center_y": row["fg_y"]}]
            img = model.image(kl, ks, kf)
            img = img + image_util.add_poisson(np.maximum(img, 0), exp_time=gain[b])
            img = img + rng.normal(0, sky[b], img.shape)
            out[b] = img
        return out

    return simulate


def test_per_lens_vs_lenstronomy(benchmark, params, one_thread):
    pytest.importorskip("lenstronomy")
    kernels = default_psf()
    simulate = _lenstronomy_simulator(kernels)
    rows = [params[i] for i in range(N_PEER)]
    simulate(rows[0])
    craft_lenses(params[:2], psf=kernels, output="float32")  # compile/load outside the timing

    def peer_run():
        for r in rows:
            simulate(r)

    def ours_run():
        craft_lenses(params, psf=kernels, output="float32")

    # interleave the two so that load on a shared machine hits both alike; best of 3 each
    peer = {"wall": np.inf, "cpu": np.inf}
    ours = {"wall": np.inf, "cpu": np.inf}
    for _ in range(3):
        for fn, store, n in ((peer_run, peer, N_PEER), (ours_run, ours, N_OURS)):
            w, c = time.perf_counter(), time.process_time()
            fn()
            store["wall"] = min(store["wall"], (time.perf_counter() - w) / n)
            store["cpu"] = min(store["cpu"], (time.process_time() - c) / n)
    benchmark.pedantic(ours_run, rounds=3, iterations=1, warmup_rounds=0)
    ratio_wall = peer["wall"] / ours["wall"]
    ratio_cpu = peer["cpu"] / ours["cpu"]
    benchmark.extra_info.update({
        "threads": 1, "lenscrafter_ms_per_lens": ours["wall"] * 1e3, "lenstronomy_ms_per_lens": peer["wall"] * 1e3,
        "lenscrafter_cpu_ms_per_lens": ours["cpu"] * 1e3, "lenstronomy_cpu_ms_per_lens": peer["cpu"] * 1e3,
        "speedup_vs_lenstronomy": ratio_wall, "speedup_vs_lenstronomy_cpu": ratio_cpu,
    })
    print(f"\nper 3-band 64×64 lens with PSF and noise, 1 thread: LensCrafter {ours['wall'] * 1e3:.3f} ms "
          f"(cpu {ours['cpu'] * 1e3:.3f}), lenstronomy {peer['wall'] * 1e3:.2f} ms (cpu {peer['cpu'] * 1e3:.2f}); "
          f"speed-up {ratio_wall:.1f}× wall, {ratio_cpu:.1f}× cpu")
    assert ratio_cpu > 1


def _rate(fn, n, repeats=3):
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return n / best_wall, best_cpu / n * 1e3


def test_batched_throughput(benchmark):
    n = 2000
    t = sample_lens_params(n, seed=12)
    craft_lenses(t[:2])
    steps = {
        "profiles+deflection": dict(noise=False, psf=False, output="float32"),
        "+psf": dict(noise=False, psf=True, output="float32"),
        "+psf+noise": dict(noise=True, psf=True, output="float32"),
    }
    info = {"threads": numba.get_num_threads(), "n": n}
    for name, kw in steps.items():
        rate, cpu_ms = _rate(lambda kw=kw: craft_lenses(t, **kw), n)
        info[f"{name}_lenses_per_s"] = rate
        info[f"{name}_cpu_ms_per_lens"] = cpu_ms
    imgs = craft_lenses(t, output="float32")
    rate, cpu_ms = _rate(lambda: percentile_normalization(imgs), n)
    info["uint8_normalisation_per_s"] = rate
    info["uint8_normalisation_cpu_ms_per_lens"] = cpu_ms
    benchmark.pedantic(craft_lenses, args=(t,), rounds=3, iterations=1, warmup_rounds=0)
    info["uint8_end_to_end_lenses_per_s"] = n / benchmark.stats.stats.min
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"{k:45s} {v:10.3f}" if isinstance(v, float) else f"{k:45s} {v}" for k, v in info.items()))


def test_batched_vs_caustics(benchmark):
    """caustics 1.7 (batched torch on CPU, torch.vmap) rendering the same SIE + 2 Sersic scenes with
    the same PSF, one band, no noise, against LensCrafter's three bands without noise."""
    caustics = pytest.importorskip("caustics")
    torch = pytest.importorskip("torch")
    n = 400
    t = sample_lens_params(n, seed=13)
    cosmo = caustics.FlatLambdaCDM(name="cosmo")
    lens = caustics.SIE(cosmology=cosmo, name="lens", z_l=0.5, z_s=1.5)
    sim = caustics.LensSource(lens=lens, source=caustics.Sersic(name="src"), lens_light=caustics.Sersic(name="fg"),
                              pixelscale=0.168, pixels_x=64, psf=torch.tensor(default_psf()[2]))
    a = {c: np.asarray(t[c], dtype=float) for c in t.colnames}
    cols = [a["dfl_x"], a["dfl_y"], 1 - a["e_sie"], np.radians(a["phi_sie"]), a["theta_e"],
            a["src_x"], a["src_y"], 1 - a["e_src"], np.radians(a["phi_src"]), a["n_src"], a["r_eff_src"], np.ones(n),
            a["fg_x"], a["fg_y"], 1 - a["e_fg"], np.radians(a["phi_fg"]), a["n_fg"], a["r_eff_fg"], np.ones(n)]
    x = torch.tensor(np.stack(cols, axis=1), dtype=torch.float32)  # order of sim.dynamic_params
    batched = torch.vmap(sim)

    def run_caustics():
        with torch.no_grad():
            return batched(x)

    run_caustics()
    craft_lenses(t[:2], noise=False, output="float32")
    rate_c, _ = _rate(run_caustics, n, repeats=3)
    rate_o, _ = _rate(lambda: craft_lenses(t, noise=False, output="float32"), n, repeats=3)
    benchmark.pedantic(run_caustics, rounds=1, iterations=1)
    benchmark.extra_info.update({"caustics_images_per_s_1band": rate_c, "lenscrafter_lenses_per_s_3band": rate_o,
                                 "speedup_vs_caustics_per_band": 3 * rate_o / rate_c,
                                 "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads()})
    print(f"\ncaustics {rate_c:.0f} 1-band images/s; LensCrafter {rate_o:.0f} 3-band lenses/s "
          f"({3 * rate_o / rate_c:.1f}× per band)")


N_CLI = 8000  # lenses per `deepmine craft` run (issue 22 measures --n 8000)


def _run_craft_cli(out, n, extra=()):
    """Wall and CPU seconds of one whole ``deepmine craft`` process (start-up and ECSV included)."""
    import resource
    import subprocess
    import sys

    code = "import sys; from deepmine.inference.cli.app import main; sys.exit(main(sys.argv[1:]))"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, "craft", "--n", str(n), "-o", str(out), "--overwrite", *extra],
                   check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


@pytest.mark.parametrize("field", ["0", "1"], ids=["same-scene", "with-field"])
def test_cli_craft_vs_lenstronomy(benchmark, tmp_path, field):
    """Issue 22: the whole ``deepmine craft --n 8000`` command (uint8, every core Numba gets)
    against lenstronomy's time per lens (SIE + two Sersics + PSF + noise, one thread, float64),
    interleaved in the same run; goal ≥ 5× (and 5,000 lenses/s on 2 idle cores).

    ``same-scene`` crafts what lenstronomy renders (``--field 0``: lens galaxy, source, PSF,
    noise); ``with-field`` adds LensCrafter's field population (galaxies and stars from published
    counts, ~20 more profiles a cutout), which the peer does not draw.
    """
    pytest.importorskip("lenstronomy")
    import statistics

    kernels = default_psf()
    simulate = _lenstronomy_simulator(kernels)
    n_peer = 200  # lenses per timed lenstronomy loop (~0.5-1.5 s: enough to average over the lens prior)
    table = sample_lens_params(n_peer, seed=11)
    rows = [table[i] for i in range(n_peer)]
    simulate(rows[0])
    out = tmp_path / "lenses.npy"
    extra = ("--field", field)
    _run_craft_cli(out, 64, extra)  # Numba cache and file-system warm-up outside the timings
    peer, peer_cpu, cli_wall, cli_cpu = [], [], [], []
    for _ in range(3):  # interleaved: load on a shared machine hits both alike
        w, c = time.perf_counter(), time.process_time()
        for r in rows:
            simulate(r)
        peer.append((time.perf_counter() - w) / n_peer)
        peer_cpu.append((time.process_time() - c) / n_peer)
        wall, cpu = _run_craft_cli(out, N_CLI, extra)
        cli_wall.append(wall / N_CLI)
        cli_cpu.append(cpu / N_CLI)
    benchmark.pedantic(_run_craft_cli, args=(out, N_CLI, extra), rounds=1, iterations=1)
    ratios = [p / c for p, c in zip(peer, cli_wall)]
    # CPU seconds: fairer on a loaded machine, where the one-thread peer and the multi-threaded
    # command get different shares of the cores (on idle cores the wall ratio lies between the
    # CPU ratio and the CPU ratio times the cores)
    cpu_ratios = [p / c for p, c in zip(peer_cpu, cli_cpu)]
    info = {
        "n": N_CLI, "field": float(field), "lenstronomy_ms_per_lens": statistics.median(peer) * 1e3,
        "lenstronomy_cpu_ms_per_lens": statistics.median(peer_cpu) * 1e3,
        "speedup_vs_lenstronomy_cpu": statistics.median(cpu_ratios),
        "cli_ms_per_lens": statistics.median(cli_wall) * 1e3, "cli_cpu_ms_per_lens": statistics.median(cli_cpu) * 1e3,
        "cli_lenses_per_s": 1.0 / statistics.median(cli_wall), "speedup_vs_lenstronomy": statistics.median(ratios),
        "speedup_per_round": ratios, "numba_threads": numba.get_num_threads(),
    }
    benchmark.extra_info.update(info)
    print(f"\ndeepmine craft --n {N_CLI} --field {field} (whole command): {info['cli_ms_per_lens']:.3f} ms/lens "
          f"({info['cli_lenses_per_s']:.0f}/s, CPU {info['cli_cpu_ms_per_lens']:.3f} ms/lens); lenstronomy "
          f"{info['lenstronomy_ms_per_lens']:.2f} ms/lens; speed-up {info['speedup_vs_lenstronomy']:.2f}× "
          f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}); in CPU time {info['speedup_vs_lenstronomy_cpu']:.2f}×")
