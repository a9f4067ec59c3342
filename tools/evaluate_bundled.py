"""Position robustness and real galaxies: the figures of issue 17 for a model (torch-free).

    python tools/evaluate_bundled.py [--model X.onnx] [--baseline OLD.onnx] [--out DIR]
                                     [--n-lenses 400] [--n-negatives 3000] [--threads 2]

Default model: the bundled one (inference/models/default.onnx). Writes DIR/evaluation.json and
DIR/evaluation.md (a markdown table; default DIR build/evaluate-<model stem>) and prints the
table. Everything is scored with deepmine.inference.model (the scanner's preprocessing) and
ranked with deepmine.inference.ranking (RP = 2·AUC − 1 on logits; "above 99.5 %" = ordinality
against the non-lens scenes > 0.995).

1. **Whole-lens offsets.** N lenses of the default ``deepmine craft`` prior
   (``sample_lens_params`` defaults) and N of the demo prior (``demo.DEMO_LENS_PRIORS``: source
   m_g 22–24, θ_E 1–2.5″), each moved as a whole by ``offset_lenses`` with σ = 0, 0.1, 0.2,
   0.3″ per axis, field population on (as ``deepmine craft``), against M non-lens scenes of
   every kind (``craft_negatives``).
2. **Arc-less lens galaxies**: the default prior with the source at m_g 35, offset the same way;
   the share above the 99.5 % cut, against the non-lens scenes' own rate (0.5 % by
   construction of the cut on an independent set: here, a held-out half of the non-lenses).
3. **Real galaxies** (:func:`hdf_cutouts`): 64×64 cutouts around the galaxies of the Hubble
   eXtreme Deep Field image that scikit-image ships in its wheel
   (``skimage.data.hubble_deep_field()``, 1000×872 RGB JPEG, no download; NASA/STScI release
   2012-37). RP of the same σ = 0 lenses against those galaxies, and RP of LensCrafter arcs
   painted onto those galaxies (``lenscrafter.paint_arcs``, defaults: θ_E 0.8–2.8″, the
   LensCrafter source prior, HSC seeing, zero point 27, gain 1000) against the same galaxies
   unpainted, for all of them and for the deflector-like ones (i ≤ 23).
4. **Scan rate**: cutouts/s of ``Model.predict`` on 1,024 uint8 non-lens cutouts (best of 3) with ``--threads`` threads,
   for the model and (``--baseline``) a previous one, alternated in the same run.

Seeds (disjoint from tools/build_bundled_model.sh's 101, 202, 404, 505, 606, the demo's 0/1,
tools/sweep_bundled.py's 7 and tests/integration/test_bundled_model.py's 9101–9104): 1701 onwards.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIGMAS = (0.0, 0.1, 0.2, 0.3)
SEED_DEFAULT, SEED_DEMO, SEED_NEG, SEED_ARCLESS, SEED_OFFSET, SEED_PAINT, SEED_SKY = (
    1701, 1702, 1703, 1704, 1710, 1720, 1730)

# ----------------------------------------------------------------------------- the real image
#: Assumed native pixel scale of skimage's Hubble eXtreme Deep Field image: the XDF (STScI
#: release 2012-37) spans about 2.3′ × 2.0′, and the 1000 × 872 px image has that aspect,
#: so 138″ / 1000 px. An assumption: the JPEG carries no WCS.
HDF_PIXEL_SCALE = 0.138
#: Brightest detected galaxy's i-band magnitude (zero point 27) that sets the flux scale of the
#: 8-bit composite (the XDF's brightest galaxies are i ≈ 20–21 AB); an assumption too.
HDF_BRIGHTEST_I = 20.5
#: Galaxies this bright (i, 2″ aperture) count as deflector-like in the painted-arc figure.
BRIGHT_I = 23.0


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = v / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def hdf_cutouts(*, size: int = 64, pixel_scale: float = 0.168, seeing: float = 0.6, max_galaxies: int = 400,
                min_area: int = 12, i_max: float = 25.0, seed: int = SEED_SKY):
    """Cutouts (N, 3, size, size) float32 around the XDF's galaxies: :func:`hdf_field`'s, cut.

    Returns (cutouts, info, i_mags); ``info["corners"]`` holds each cutout's first column and
    row (x0, y0) in the resampled image (e.g. to split the galaxies by region).
    """
    img, cands, mags, info = hdf_field(size=size, pixel_scale=pixel_scale, seeing=seeing, max_galaxies=max_galaxies,
                                       min_area=min_area, i_max=i_max, seed=seed)
    cut = np.stack([img[:, y0:y0 + size, x0:x0 + size] for _, _, _, x0, y0 in cands]).astype(np.float32)
    info["corners"] = [[int(x0), int(y0)] for _, _, _, x0, y0 in cands]
    return cut, info, mags


def hdf_field(*, size: int = 64, pixel_scale: float = 0.168, seeing: float = 0.6, max_galaxies: int = 400,
              min_area: int = 12, i_max: float = 25.0, seed: int = SEED_SKY):
    """The XDF as an HSC-like 3-band image in counts for zero point 27, and its galaxies.

    Steps (every choice an assumption about an 8-bit composite, not flux calibration):

    * RGB → i, r, g (the image's red, green, blue channels; the XDF composite maps its reddest
      filters to red), each linearised with the sRGB transfer function (the release's own
      stretch is not published) and its median sky subtracted;
    * resampled from :data:`HDF_PIXEL_SCALE` to ``pixel_scale`` (skimage ``rescale``, bilinear,
      anti-aliased; surface brightness per pixel scaled by the pixel-area ratio);
    * blurred with a Gaussian to ``seeing`` FWHM (arcsec; the HST resolution is taken as
      negligible; 0 = none) so the galaxies look as through HSC's median seeing;
    * scaled so that the brightest detected galaxy has i = :data:`HDF_BRIGHTEST_I`, with the
      same factor in every band (the composite's colour balance kept), then HSC-Wide sky noise
      (``lenscrafter.pipeline.HSC['sky_sigma']``) added;
    * galaxies detected on the i band: local maxima (``skimage.feature.peak_local_max``, 4 px
      apart) 3σ above the sky inside connected regions (``skimage.measure.label``) of at least
      ``min_area`` pixels, each centred by ``lenscrafter.measure_light`` (windowed centroid),
      its flux taken in a 2″-radius aperture (for the ranking and the magnitude scale),
      kept where the whole cutout fits in the image and the galaxy is brighter than ``i_max``
      (default 25: clearly detected at HSC-Wide depth), brightest first (at most ``max_galaxies``);
    * cutouts nearest-centred on the centroid (first column ``ceil(x − size/2)``, as
      ``astropy.nddata.Cutout2D``; docs/formats.md).

    Returns (image, galaxies, i_mags, info): the calibrated 3×H×W image (float64, counts for zero
    point 27, sky noise included), the galaxies brightest first as (aperture flux before
    scaling, x, y, x0, y0) with (x0, y0) the first column and row of their cutout, their i-band
    magnitudes (2″ aperture), and a dict of the numbers used.
    """
    from skimage import data, feature, measure, transform

    from deepmine.lenscrafter import measure_light
    from deepmine.lenscrafter.pipeline import HSC, convolve_psf, gaussian_psf, observe

    rgb = data.hubble_deep_field().astype(np.float64)
    img = np.stack([_srgb_to_linear(rgb[..., c]) for c in range(3)])  # R, G, B → i, r, g
    img -= np.median(img, axis=(1, 2))[:, None, None]
    factor = HDF_PIXEL_SCALE / pixel_scale
    img = np.stack([transform.rescale(b, factor, order=1, anti_aliasing=True, preserve_range=True) for b in img])
    img *= (pixel_scale / HDF_PIXEL_SCALE) ** 2
    if seeing > 0:
        img = convolve_psf(img, gaussian_psf(seeing, pixel_scale))
    sig0 = 1.4826 * np.median(np.abs(img[0] - np.median(img[0])))
    thresh = np.median(img[0]) + 3.0 * max(sig0, 1e-12)
    lab = measure.label(img[0] > thresh, connectivity=2)
    big = np.isin(lab, [r.label for r in measure.regionprops(lab) if r.area >= min_area])
    peaks = feature.peak_local_max(np.where(big, img[0], 0.0), min_distance=4, threshold_abs=thresh,
                                   exclude_border=False)
    h, w = img.shape[1:]
    half = size // 2
    yy, xx = np.mgrid[-half:half, -half:half]
    ap = (xx + 0.5) ** 2 + (yy + 0.5) ** 2 <= (2.0 / pixel_scale) ** 2  # 2″ aperture for the ranking flux
    cands = []
    for py, px in peaks:
        r0, c0 = py - half, px - half
        if r0 < 0 or c0 < 0 or r0 + size > h or c0 + size > w:
            continue
        first = img[None, :, r0:r0 + size, c0:c0 + size]
        m = measure_light(first, pixel_scale=pixel_scale)  # windowed centroid, sub-pixel
        x, y = c0 + float(m["x"][0]), r0 + float(m["y"][0])
        x0, y0 = int(np.ceil(x - size / 2)), int(np.ceil(y - size / 2))
        if x0 < 0 or y0 < 0 or x0 + size > w or y0 + size > h or abs(x0 - c0) > 2 or abs(y0 - r0) > 2:
            continue
        tot = float(img[0, y0:y0 + size, x0:x0 + size][ap].sum())
        if tot > 0 and (x0, y0) not in {(c[3], c[4]) for c in cands}:
            cands.append((tot, x, y, x0, y0))
    cands.sort(reverse=True)
    k = 10 ** (-0.4 * (HDF_BRIGHTEST_I - 27.0)) / cands[0][0]
    cands = [c for c in cands if 27.0 - 2.5 * np.log10(c[0] * k) <= i_max][:max_galaxies]
    img = observe(img * k, HSC["sky_sigma"], seed=seed)
    mags = 27.0 - 2.5 * np.log10(np.array([c[0] for c in cands]) * k)
    info = {"image": "skimage.data.hubble_deep_field() (Hubble eXtreme Deep Field, NASA/STScI 2012-37, JPEG)",
            "native_pixel_scale": HDF_PIXEL_SCALE, "pixel_scale": pixel_scale, "seeing_fwhm": seeing,
            "bands": "R→i, G→r, B→g (sRGB-linearised)", "brightest_i": HDF_BRIGHTEST_I,
            "n_peaks": int(len(peaks)), "n_galaxies": len(cands), "i_max": i_max,
            "i_mag_range": [float(mags.min()), float(mags.max())], "i_mag_median": float(np.median(mags)),
            "resampled_shape": [int(h), int(w)]}
    return img, cands, mags, info


# ----------------------------------------------------------------------------- evaluation
def _rank(lens, neg):
    from deepmine.inference.ranking import fraction_above, ranking_performance

    return {"rp": ranking_performance(lens, neg), "above_99.5": fraction_above(lens, neg, 0.995)}


def scan_rate(paths: dict, images: np.ndarray, threads: int, repeats: int = 3) -> dict:
    """Cutouts/s of each model on ``images`` (uint8), alternating the models, best of ``repeats``."""
    from deepmine.inference.model import load_model

    models = {name: load_model(p, device="cpu", threads=threads) for name, p in paths.items()}
    for m in models.values():
        m.predict(images[:256])  # warm-up
    best = dict.fromkeys(models, 0.0)
    for _ in range(repeats):
        for name, m in models.items():
            t = time.perf_counter()
            m.predict(images)
            best[name] = max(best[name], images.shape[0] / (time.perf_counter() - t))
    return best


def evaluate(model_path, *, baseline=None, n_lenses=400, n_negatives=3000, threads=2, max_galaxies=400,
             seeing=0.6, mosaic: Path | None = None, log=print) -> dict:
    from deepmine.inference.metadata import file_sha256
    from deepmine.inference.model import load_model, resolve_model_path
    from deepmine.inference.ranking import fraction_above
    from deepmine.lenscrafter import craft_lenses, craft_negatives, offset_lenses, paint_arcs, sample_lens_params
    from deepmine.lenscrafter.demo import DEMO_LENS_PRIORS

    t0 = time.perf_counter()
    path = resolve_model_path(model_path)
    model = load_model(path, device="cpu", threads=threads)

    def score(images):
        return model.predict(images)[0].astype(np.float64)

    res = {"model": str(path), "model_sha256": file_sha256(path), "n_lenses": n_lenses,
           "n_negatives": n_negatives, "threads": threads, "sigmas": list(SIGMAS)}
    log(f"model {path}")
    neg_img, _ = craft_negatives(n_negatives, seed=SEED_NEG)
    neg = score(neg_img)
    log(f"  {n_negatives} non-lens scenes scored ({time.perf_counter() - t0:.0f} s)")
    priors = {"default": (sample_lens_params(n_lenses, seed=SEED_DEFAULT), SEED_DEFAULT),
              "demo": (sample_lens_params(n_lenses, seed=SEED_DEMO, **DEMO_LENS_PRIORS), SEED_DEMO)}
    res["offsets"] = {}
    centred = {}
    for name, (params, seed) in priors.items():
        res["offsets"][name] = {}
        for k, s in enumerate(SIGMAS):
            lens = score(craft_lenses(offset_lenses(params, s, seed=SEED_OFFSET + k), seed=seed, field=1.0))
            if s == 0:
                centred[name] = lens
            res["offsets"][name][str(s)] = _rank(lens, neg)
        log(f"  {name} prior: " + ", ".join(f"σ={s}: RP {v['rp']:.3f} / {100 * v['above_99.5']:.1f} %"
                                            for s, v in zip(SIGMAS, res['offsets'][name].values())))
    # arc-less lens galaxies vs the non-lens scenes' own rate (a held-out half against the other half)
    arcless = sample_lens_params(n_lenses, seed=SEED_ARCLESS, m_g_src=35.0)
    res["arcless"] = {}
    for k, s in enumerate(SIGMAS):
        sc = score(craft_lenses(offset_lenses(arcless, s, seed=SEED_OFFSET + k), seed=SEED_ARCLESS, field=1.0))
        res["arcless"][str(s)] = fraction_above(sc, neg, 0.995)
    half = n_negatives // 2
    res["negatives_self_rate"] = fraction_above(neg[half:], neg[:half], 0.995)
    log(f"  arc-less lens galaxies above the cut: {res['arcless']}; non-lens half vs half: "
        f"{res['negatives_self_rate']:.4f}")
    # real galaxies
    real, info, mags = hdf_cutouts(max_galaxies=max_galaxies, seeing=seeing)
    res["real"] = info
    real_s = score(real)
    painted, ptab = paint_arcs(real, seed=SEED_PAINT)
    painted_s = score(painted)
    res["real"]["lenses_vs_real"] = {name: _rank(centred[name], real_s) for name in centred}
    res["real"]["painted_vs_unpainted"] = _rank(painted_s, real_s)
    bright = mags <= BRIGHT_I  # deflector-like: luminous galaxies
    res["real"]["n_bright"] = int(bright.sum())
    res["real"]["painted_vs_unpainted_bright"] = _rank(painted_s[bright], real_s[bright])
    res["real"]["real_above_neg_cut"] = fraction_above(real_s, neg, 0.995)
    res["real"]["painted_snr_g_median"] = float(np.median(ptab["snr_g"]))
    res["real"]["painted_m_arc_g_median"] = float(np.median(ptab["m_arc_g"]))
    log(f"  real galaxies ({info['n_galaxies']}): lenses vs real RP "
        f"{res['real']['lenses_vs_real']['default']['rp']:.3f}; painted vs unpainted RP "
        f"{res['real']['painted_vs_unpainted']['rp']:.3f}")
    if mosaic is not None:
        from deepmine.inference.mosaic import write_mosaic

        order = np.arange(min(16, len(real)))  # the brightest galaxies
        imgs, labels = [], []
        for i in order:
            imgs += [real[i], painted[i]]
            labels += [f"#{i} real\nlogit {real_s[i]:.1f}",
                       f"painted tE {ptab['theta_e'][i]:.1f}\ng {ptab['m_arc_g'][i]:.1f} S/N {ptab['snr_g'][i]:.0f}"
                       f"\nlogit {painted_s[i]:.1f}"]
        write_mosaic(imgs, labels, mosaic, ncols=8, title="XDF galaxies (skimage) and LensCrafter arcs painted on them")
        res["mosaic"] = str(mosaic)
    # scan rate
    rate_imgs = neg_img[: min(1024, n_negatives)]
    paths = {"model": path}
    if baseline is not None:
        paths["baseline"] = Path(baseline)
        res["baseline"] = str(baseline)
        res["baseline_sha256"] = file_sha256(baseline)
    res["scan_rate"] = scan_rate(paths, rate_imgs, threads)
    log(f"  scan rate (cutouts/s, {threads} threads): {res['scan_rate']}")
    res["seconds"] = time.perf_counter() - t0
    return res


def markdown(res: dict) -> str:
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    lines = [f"Model `{Path(res['model']).name}` ({res['model_sha256'][:19]}…); {res['n_lenses']} lenses per σ, "
             f"{res['n_negatives']} non-lens scenes of every kind; {res['threads']} threads.", "",
             "| whole-lens offset σ (per axis) | " + " | ".join(f"{s}″" for s in res["sigmas"]) + " |",
             "|---|" + "---|" * len(res["sigmas"])]
    for name in ("default", "demo"):
        o = res["offsets"][name]
        lines.append(f"| RP, {name} prior | " + " | ".join(f"{o[str(s)]['rp']:.3f}" for s in res["sigmas"]) + " |")
        lines.append(f"| above 99.5 %, {name} prior | "
                     + " | ".join(pct(o[str(s)]["above_99.5"]) for s in res["sigmas"]) + " |")
    lines.append("| arc-less lens galaxies above 99.5 % | "
                 + " | ".join(pct(res["arcless"][str(s)]) for s in res["sigmas"]) + " |")
    r = res["real"]
    lines += ["", f"Non-lens scenes above the cut of the other half: {pct(res['negatives_self_rate'])}.", "",
              f"Real galaxies: {r['n_galaxies']} cutouts from {r['image']}, assumed {r['native_pixel_scale']}″/px "
              f"resampled to {r['pixel_scale']}″/px, seeing {r['seeing_fwhm']}″, {r['bands']}, i "
              f"{r['i_mag_range'][0]:.1f}–{r['i_mag_range'][1]:.1f} (median {r['i_mag_median']:.1f}).", "",
              "| real galaxies | RP | above 99.5 % |", "|---|---|---|"]
    for name, v in r["lenses_vs_real"].items():
        lines.append(f"| {name}-prior lenses (σ = 0) vs the real galaxies | {v['rp']:.3f} | {pct(v['above_99.5'])} |")
    v = r["painted_vs_unpainted"]
    lines.append(f"| arcs painted on the real galaxies vs the same unpainted (median arc g "
                 f"{r['painted_m_arc_g_median']:.1f}, S/N_g {r['painted_snr_g_median']:.0f}) | {v['rp']:.3f} | "
                 f"{pct(v['above_99.5'])} |")
    v = r["painted_vs_unpainted_bright"]
    lines.append(f"| the same, the {r['n_bright']} galaxies with i ≤ {BRIGHT_I:g} | {v['rp']:.3f} | {pct(v['above_99.5'])} |")
    lines.append(f"| real galaxies above 99.5 % of the non-lens scenes | — | {pct(r['real_above_neg_cut'])} |")
    lines += ["", "| scan rate | cutouts/s |", "|---|---|"]
    for name, v in res["scan_rate"].items():
        lines.append(f"| {name} | {v:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="ONNX model (default: the bundled one)")
    ap.add_argument("--baseline", default=None, help="a previous model whose scan rate is measured alongside")
    ap.add_argument("--out", default=None, help="output folder (default build/evaluate-<model stem>)")
    ap.add_argument("--n-lenses", type=int, default=400)
    ap.add_argument("--n-negatives", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-galaxies", type=int, default=400)
    ap.add_argument("--seeing", type=float, default=0.6, help="FWHM (arcsec) the real image is blurred to")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    out = Path(a.out) if a.out else ROOT / "build" / f"evaluate-{Path(a.model).stem if a.model else 'default'}"
    out.mkdir(parents=True, exist_ok=True)
    res = evaluate(a.model, baseline=a.baseline, n_lenses=a.n_lenses, n_negatives=a.n_negatives,
                   threads=a.threads, max_galaxies=a.max_galaxies, seeing=a.seeing, mosaic=out / "painted.png")
    (out / "evaluation.json").write_text(json.dumps(res, indent=2, default=str))
    md = markdown(res)
    (out / "evaluation.md").write_text(md)
    print(md)
    print(f"wrote {out / 'evaluation.json'}, {out / 'evaluation.md'}, {out / 'painted.png'} "
          f"({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
