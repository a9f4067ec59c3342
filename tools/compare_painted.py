"""Does training on arcs painted onto real galaxies pay? (issue 21; docs/benchmarks.md).

Two EZnets with the same recipe, schedule and data sizes:

* **painted**: positives = LensCrafter arcs painted (:func:`deepmine.lenscrafter.paint_arcs`)
  onto the real galaxies of one part of an image, negatives = that part's real cutouts (its
  galaxies unpainted + random cutouts), negative learning (recipe ``survey``);
* **LensCrafter-only**: positives = whole LensCrafter lenses (same θ_E and source priors,
  moved off-centre by σ = 0.2″, HSC-Wide field), negatives = LensCrafter non-lens scenes.

Both are scored on the *other* part of the image (split by region, never by cutout): painted
lenses on its galaxies against its real galaxies (and against its galaxies + random cutouts),
and, the other way round, on fresh LensCrafter lenses against LensCrafter non-lens scenes.
Figures: RP (ranking performance, 2·AUC − 1) and the share of lenses above 99.5 % of the
negatives.

Real image: the Hubble eXtreme Deep Field that scikit-image ships
(``skimage.data.hubble_deep_field()``) — an **8-bit RGB composite, not flux**: linearised with
the sRGB curve, resampled to 0.168″/px, blurred to 0.6″ seeing, scaled to zero point 27 with the
brightest galaxy at i = 20.5, HSC-Wide sky noise added (tools/evaluate_bundled.py, ``hdf_field``;
every one of those numbers is an assumption). Region split: cutouts wholly in the left half of
the resampled image (train) or wholly in the right half (test).

Run (the defaults are the tiny 2-core version: ~3 min an epoch per model on idle cores;
docs/benchmarks.md also has the H200 run, ``--paints 48 --random 6000 --test-paints 8
--test-random 3000 --epochs 12 --device cuda --control --models painted,painted_control,lenscrafter``)::

    python tools/compare_painted.py --work build/compare --epochs 4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from evaluate_bundled import hdf_field  # noqa: E402

SIZE = 64
THETA_E = (0.8, 2.8)
M_SRC = (21.5, 24.5)


def _random_cutouts(img, n, x_lo, x_hi, rng):
    h = img.shape[1]
    x0 = rng.integers(x_lo, x_hi - SIZE + 1, n)
    y0 = rng.integers(0, h - SIZE + 1, n)
    return np.stack([img[:, y:y + SIZE, x:x + SIZE] for x, y in zip(x0, y0)]).astype(np.float32)


def _norm(a):
    from deepmine.inference.preprocess import percentile_normalization

    return percentile_normalization(np.asarray(a, dtype=np.float32))


def _paint(galaxies, times, seed, offset=0):
    from deepmine.lenscrafter import paint_arcs

    rep = np.repeat(galaxies, times, axis=0)
    out = []
    for s in range(0, len(rep), 512):
        p, _ = paint_arcs(rep[s:s + 512], seed=seed, index_offset=offset + s, theta_e=THETA_E, m_g_src=M_SRC,
                          zero_point=27.0, gain=3.0)
        out.append(p.astype(np.float32))
    return np.concatenate(out)


def _paint_unlensed(galaxies, times, seed, offset=0):
    """Control negatives: LensCrafter sources painted *unlensed* beside the galaxies (θ_E = 0.01″,
    source anywhere within ±3″, unlensed g 19.5–22.5 ≈ the arcs' lensed magnitudes): the same
    renderer, PSF and photon noise as the arcs, without the lensing."""
    from deepmine.lenscrafter import paint_arcs

    rep = np.repeat(galaxies, times, axis=0)
    out = []
    for s in range(0, len(rep), 512):
        p, _ = paint_arcs(rep[s:s + 512], seed=seed, index_offset=offset + s, theta_e=0.01, m_g_src=(19.5, 22.5),
                          src_x=(-3.0, 3.0), src_y=(-3.0, 3.0), zero_point=27.0, gain=3.0)
        out.append(p.astype(np.float32))
    return np.concatenate(out)


def _lenscrafter(n_pos, n_neg, seed):
    from deepmine.lenscrafter import craft_lenses, craft_negatives, offset_lenses, sample_lens_params

    t = offset_lenses(sample_lens_params(n_pos, seed=seed, theta_e=THETA_E, m_g_src=M_SRC), 0.2, seed=seed + 1)
    pos = craft_lenses(t, seed=seed + 2, output="uint8", field=1.0)
    neg, _ = craft_negatives(n_neg, seed=seed + 3, output="uint8", field=1.0)
    return pos, neg


def make_data(work: Path, paints: int, n_random: int, test_paints: int, n_random_test: int, control: bool = False,
              log=print) -> dict:
    """Write the train and test stacks (uint8, normalised as scanning does) into ``work``."""
    info_path = work / "data.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    img, cands, mags, info = hdf_field(max_galaxies=10_000, i_max=25.0)
    w = img.shape[2]
    half = w // 2
    corners = np.array([[c[3], c[4]] for c in cands])
    gal = np.stack([img[:, y:y + SIZE, x:x + SIZE] for x, y in corners]).astype(np.float32)
    a = corners[:, 0] + SIZE <= half
    b = corners[:, 0] >= half
    rng = np.random.default_rng(21)
    log(f"XDF: {len(gal)} galaxies (i <= 25); train part {a.sum()}, test part {b.sum()}")
    # painted model: painted A galaxies vs A's real cutouts (galaxies unpainted + random cutouts)
    pos_p = _norm(_paint(gal[a], paints, seed=1))
    neg_p = _norm(np.concatenate([gal[a], _random_cutouts(img, n_random, 0, half, rng)]))
    np.save(work / "painted_pos.npy", pos_p)
    np.save(work / "real_neg.npy", neg_p)
    # LensCrafter-only model: the same numbers of whole LensCrafter lenses and non-lens scenes
    pos_l, neg_l = _lenscrafter(len(pos_p), len(neg_p), seed=100)
    np.save(work / "lc_pos.npy", pos_l)
    np.save(work / "lc_neg.npy", neg_l)
    # tests: the other half of the image, and fresh LensCrafter data
    np.save(work / "test_painted.npy", _norm(_paint(gal[b], test_paints, seed=2, offset=10_000_000)))
    np.save(work / "test_galaxies.npy", _norm(gal[b]))
    np.save(work / "test_random.npy", _norm(_random_cutouts(img, n_random_test, half, w, rng)))
    if control:
        np.save(work / "unlensed_neg.npy", _norm(_paint_unlensed(gal[a], max(1, paints // 2), seed=3)))
        np.save(work / "test_unlensed.npy", _norm(_paint_unlensed(gal[b], test_paints, seed=4, offset=10_000_000)))
    pos_t, neg_t = _lenscrafter(1000, 3000, seed=200)
    np.save(work / "test_lc_pos.npy", pos_t)
    np.save(work / "test_lc_neg.npy", neg_t)
    d = {"xdf": {k: v for k, v in info.items() if k != "corners"}, "galaxies": int(len(gal)),
         "train_galaxies": int(a.sum()), "test_galaxies": int(b.sum()), "paints_per_galaxy": paints,
         "train_positives": int(len(pos_p)), "train_negatives": int(len(neg_p)),
         "test_painted": int(b.sum() * test_paints), "test_random": n_random_test}
    info_path.write_text(json.dumps(d, indent=1))
    return d


def _run(cmd, log):
    log("$ " + " ".join(map(str, cmd)))
    t = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True)
    return time.perf_counter() - t


def train_and_export(work: Path, name: str, pos: str, negs: list, epochs: int, device: str, log=print) -> dict:
    run, onnx = work / f"run_{name}", work / f"{name}.onnx"
    out = {}
    if not (run / "model.pt").exists():
        neg_args = [x for n in negs for x in ("--negatives", work / n)]
        out["train_s"] = _run(["deepmine", "train", "eznet", "survey", "--positives", work / pos, *neg_args,
                               "-o", run, "--device", device, "--set", f"epochs={epochs}",
                               "--set", "schedule.milestones=[]", "--set", "early_stop.patience=0"], log)
    if not onnx.exists():
        _run(["deepmine", "export", run / "model.pt", "--out", onnx], log)
    return out


def evaluate(work: Path, name: str) -> dict:
    from deepmine.inference.model import load_model
    from deepmine.inference.ranking import fraction_above, ranking_performance

    m = load_model(work / f"{name}.onnx", device="cpu")
    s = {k: m.predict(np.load(work / f"{k}.npy", mmap_mode="r"))[0]
         for k in ("test_painted", "test_galaxies", "test_random", "test_lc_pos", "test_lc_neg", "test_unlensed")
         if (work / f"{k}.npy").exists()}
    real = np.concatenate([s["test_galaxies"], s["test_random"]])
    res = {}
    for label, lens, neg in (("painted_vs_galaxies", s["test_painted"], s["test_galaxies"]),
                             ("painted_vs_galaxies_and_random", s["test_painted"], real),
                             ("lenscrafter_vs_lenscrafter", s["test_lc_pos"], s["test_lc_neg"]),
                             ("painted_vs_unlensed_companions", s["test_painted"], s.get("test_unlensed"))):
        if neg is None:
            continue
        res[label] = {"rp": round(float(ranking_performance(lens, neg)), 4),
                      "above_99.5": round(float(fraction_above(lens, neg, 0.995)), 4),
                      "n_lenses": int(len(lens)), "n_negatives": int(len(neg))}
    return res


def write_mosaic_png(path: Path, n: int = 24, seed: int = 7) -> Path:
    """A mosaic of arcs painted onto the XDF's brightest galaxies (docs/img), with the unpainted
    galaxy first in each pair (sources of unlensed g 23.5–25); labels: θ_E, the arc's lensed g magnitude and S/N."""
    from deepmine.inference.mosaic import write_mosaic
    from deepmine.lenscrafter import paint_arcs

    img, cands, mags, info = hdf_field(max_galaxies=n)
    gal = np.stack([img[:, y:y + SIZE, x:x + SIZE] for _, _, _, x, y in cands]).astype(np.float32)
    painted, t = paint_arcs(gal, seed=seed, theta_e=(1.0, 2.4), m_g_src=(23.5, 25.0), zero_point=27.0, gain=3.0)
    tiles, labels = [], []
    for k in range(len(gal)):
        tiles += [_norm(gal[k:k + 1])[0], _norm(painted[k:k + 1])[0]]
        labels += [f"XDF i={mags[k]:.1f}", f"tE {t['theta_e'][k]:.1f}\" g {t['m_arc_g'][k]:.1f} S/N {t['snr_g'][k]:.0f}"]
    return write_mosaic(np.stack(tiles), labels, path, ncols=8, bands=["i", "r", "g"], tile_px=128,
                        title="LensCrafter arcs painted onto Hubble XDF galaxies (8-bit composite made HSC-like); "
                              "each galaxy, then painted")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "compare_painted")
    ap.add_argument("--paints", type=int, default=12, help="arcs painted per training galaxy")
    ap.add_argument("--random", type=int, default=1800, help="random real cutouts among the training negatives")
    ap.add_argument("--test-paints", type=int, default=4)
    ap.add_argument("--test-random", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mosaic", type=Path, help="write only the painted mosaic (PNG) and stop")
    ap.add_argument("--control", action="store_true", help="also make unlensed LensCrafter sources painted beside "
                    "the galaxies: a test set, and the extra negatives of model painted_control")
    ap.add_argument("--models", default="painted,lenscrafter", help="comma-separated: painted, lenscrafter, "
                    "painted_control (needs --control)")
    args = ap.parse_args(argv)
    if args.mosaic:
        print(write_mosaic_png(args.mosaic))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DEEPMINE_NO_PROGRESS", "1")
    t0 = time.perf_counter()
    data = make_data(args.work, args.paints, args.random, args.test_paints, args.test_random, args.control)
    print(json.dumps(data))
    result = {"data": data, "epochs": args.epochs, "device": args.device, "recipe": "survey"}
    models = {"painted": ("painted_pos.npy", ["real_neg.npy"]), "lenscrafter": ("lc_pos.npy", ["lc_neg.npy"]),
              "painted_control": ("painted_pos.npy", ["real_neg.npy", "unlensed_neg.npy"])}
    for name in args.models.split(","):
        pos, negs = models[name]
        result[name] = train_and_export(args.work, name, pos, negs, args.epochs, args.device)
        result[name].update(evaluate(args.work, name))
        print(name, json.dumps(result[name]))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    (args.work / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
