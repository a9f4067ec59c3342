"""``deepmine craft``: synthesize lenses or non-lens scenes with LensCrafter, or a preview grid."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import typer

from deepmine.inference.cli.common import err_console, existing_file, task
from deepmine.inference.errors import InputError, file_error

CHUNK = 2048


def _read_psf(path: Path):
    """PSF kernel(s) from a ``.npy`` file or a FITS image: the first image HDU, or the one the
    name picks (``psf.fits[1]``, ``psf.fits[PSF]``; the one parser,
    :func:`deepmine.inference.formats.split_extension`)."""
    import numpy as np

    from deepmine.inference.formats import image_hdu, is_fits, open_fits, split_extension

    existing_file(path, "PSF file")
    file, _ = split_extension(path)
    try:
        if file.suffix.lower() == ".npy":
            kern = np.load(file, allow_pickle=False)
        elif is_fits(file):
            with open_fits(path) as hdul:
                kern = np.asarray(hdul[image_hdu(hdul, path, ndim=(2, 3))].data)
        else:
            raise file_error(path, "unknown PSF format; expected .npy or FITS")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy/astropy raise many kinds
        raise file_error(path, f"cannot read the PSF kernel ({exc}); expected .npy or FITS") from None
    from deepmine.lenscrafter.pipeline import check_psf

    try:
        return check_psf(np.asarray(kern, dtype=float), 3)
    except InputError as exc:
        raise file_error(path, str(exc)) from None


#: bytes of memory per crafted object beyond its cutout (parameter table row, bookkeeping)
ROW_BYTES = 512


def _check_size(n: int, size: int, dtype: str, out: Path) -> None:
    """Refuse, before allocating anything, a stack larger than the free disk beside ``out`` or a
    parameter table larger than the memory available."""
    import shutil

    import numpy as np

    stack = int(n) * 3 * int(size) ** 2 * np.dtype(dtype).itemsize
    folder = out.parent if str(out.parent) else Path(".")
    free = shutil.disk_usage(folder).free if folder.is_dir() else None
    if free is not None and stack > free:
        raise InputError(f"--n {n:,}: the stack needs {stack / 2**30:,.1f} GiB but {folder} has "
                         f"{free / 2**30:,.1f} GiB free; craft fewer cutouts or write elsewhere")
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux
        avail = None
    need = int(n) * ROW_BYTES
    if avail is not None and need > avail:
        raise InputError(f"--n {n:,}: the parameter table needs about {need / 2**30:,.1f} GiB of memory but "
                         f"{avail / 2**30:,.1f} GiB is available; craft in several smaller runs")


def craft(
    n: Optional[int] = typer.Option(None, "--n", "-n", min=1, help="Number of cutouts (default: rows of --params)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output stack N×3×H×W (.npy); the parameter "
                                       "table is written beside it as <name>.ecsv."),
    params: Optional[Path] = typer.Option(None, "--params", "-p", help="Lens parameter table (ECSV/FITS) "
                                          "instead of random draws from the priors."),
    negatives: bool = typer.Option(False, "--negatives/--no-negatives", help="Craft non-lens scenes instead of "
                                   "lenses."),
    onto: Optional[list[Path]] = typer.Option(None, "--onto", help="Paint LensCrafter arcs onto real deflector "
                                              "cutouts in flux units: a FITS cube N×3×H×W (or .npy) or a directory "
                                              "of FITS cutouts 3×H×W — or, repeated, three survey images (one per "
                                              "band) with --catalog; needs a zero point and a gain (header or "
                                              "options). See docs/lenscrafter.md, 'Arcs on real galaxies'."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="--onto survey images: the deflectors' "
                                           "catalogue (RA/Dec or x/y columns); cutouts are cut as `scan` cuts them."),
    ra_col: Optional[str] = typer.Option(None, "--ra-col", help="--catalog: RA column (default ra)."),
    dec_col: Optional[str] = typer.Option(None, "--dec-col", help="--catalog: Dec column (default dec)."),
    x_col: Optional[str] = typer.Option(None, "--x-col", help="--catalog: x pixel column, 0-based."),
    y_col: Optional[str] = typer.Option(None, "--y-col", help="--catalog: y pixel column, 0-based."),
    zero_point: Optional[str] = typer.Option(None, "--zero-point", help="--onto: AB zero point of the cutouts' "
                                             "flux unit, one for all bands or one per band (comma-separated, "
                                             "the file's band order)."),
    gain: Optional[str] = typer.Option(None, "--gain", help="--onto: electrons per count (one or one per band), "
                                       "for the arc's photon noise."),
    exptime: Optional[str] = typer.Option(None, "--exptime", help="--onto: exposure time, s (one or one per "
                                          "band), for cutouts in counts per second: e-/unit = gain × exptime."),
    psf_fwhm: Optional[str] = typer.Option(None, "--psf-fwhm", help="--onto: PSF FWHM, arcsec (one or one per "
                                           "band): a Gaussian, or a Moffat with --psf-beta; default HSC-Wide seeing."),
    psf_beta: Optional[float] = typer.Option(None, "--psf-beta", help="--onto: the --psf-fwhm PSF is a Moffat "
                                             "(1 + (r/α)²)^-β of this β (4.765 fits ground-based seeing); "
                                             "without it, a Gaussian."),
    theta_e: Optional[str] = typer.Option(None, "--theta-e", help="--onto: θ_E prior MIN,MAX in arcsec "
                                          "(uniform; default 0.8,2.8)."),
    theta_e_from_light: bool = typer.Option(False, "--theta-e-from-light", help="--onto: θ_E from the deflector's "
                                            "i-band magnitude in a 2\" aperture (Faber–Jackson L ∝ σ⁴, SIS θ_E = "
                                            "4π(σ/c)² D_ls/D_s, log-normal scatter), clipped to --theta-e; see "
                                            "docs/lenscrafter.md."),
    light_prior: Optional[str] = typer.Option(None, "--light-prior", help="--onto: parameters of "
                                              "--theta-e-from-light (implies it), KEY=VALUE,...: sigma_ref (km/s, "
                                              "default 240) at m_ref (i mag, 19.5), dls_ds (0.6), scatter (dex "
                                              "in σ, 0.08)."),
    unlensed: bool = typer.Option(False, "--unlensed", help="--onto: paint control negatives — a LensCrafter "
                                  "source beside each galaxy (within 3\"), not lensed — to train with beside the "
                                  "painted lenses."),
    bands: Optional[str] = typer.Option(None, "--bands", help="--onto: the cutouts' band order, e.g. g,r,i "
                                        "(default: the header's BANDS card, else i,r,g); output is i,r,g."),
    float_out: bool = typer.Option(False, "--float", help="Write float32 flux instead of the uint8 stack "
                                   "(same as --dtype float32)."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated negative kinds (default all): "
                                        "elliptical,disc,spiral,ring,field,star,blend,artefact."),
    field: Optional[float] = typer.Option(None, "--field", min=0.0, max=50.0, help="Field population "
                                          "(galaxies and stars from published counts, sizes, colours) around "
                                          "every lens or non-lens scene: a scale factor of the published "
                                          "counts; default 1 (published); 0 = none (clean lenses)."),
    field_i_max: float = typer.Option(26.0, "--field-i-max", min=15.0, max=30.0, help="Faint limit of the "
                                      "field population, i-band AB mag (HSC Wide: 26)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed (parameters and noise)."),
    no_noise: bool = typer.Option(False, "--no-noise", help="No photon or sky noise."),
    no_psf: bool = typer.Option(False, "--no-psf", help="No PSF convolution."),
    psf: Optional[Path] = typer.Option(None, "--psf", help="PSF kernel file (.npy or FITS; K×K or 3×K×K in "
                                       "channel order i, r, g; K odd). Default: Gaussian, HSC seeing."),
    size: Optional[int] = typer.Option(None, "--size", min=8, max=1024, help="Cutout side, pixels (default 64; "
                                       "with --onto: checked against the cutouts)."),
    pixel_scale: Optional[float] = typer.Option(None, "--pixel-scale", min=0.001, max=10.0, help="Arcsec per "
                                                "pixel (default 0.168; with --onto: the WCS's, checked against "
                                                "this when both are given)."),
    supersample: int = typer.Option(1, "--supersample", min=1, max=16, help="Sub-pixel samples per axis."),
    dtype: str = typer.Option("uint8", "--dtype", help="uint8 (percentile-normalised, as the scanner reads) "
                              "or float32 (counts, zero point 27)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a Figure 4.1-like grid varying θ_E, "
                                           "source offset, SIE ellipticity and foreground n; the suffix picks the "
                                           "format (.png, .jpg, .pdf, .svg...), others are refused."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing stack, its .ecsv parameter "
                                   "table or --preview; an input (--params, --psf) is never written over."),
) -> None:
    """Synthesize strong lenses (SIE + Sersic source + Sersic lens light, PSF, noise; seed
    Figure 4.2) or realistic non-lens scenes with LensCrafter, as an N×3×H×W stack in channel
    order i, r, g; or, with --onto, paint arcs onto a survey's own deflector cutouts.
    """
    from deepmine.inference.atomic import check_outputs

    if float_out:
        dtype = "float32"
    cols = {k: v for k, v in (("ra_col", ra_col), ("dec_col", dec_col), ("x_col", x_col), ("y_col", y_col))
            if v is not None}
    if onto:
        _craft_onto(onto if len(onto) > 1 or catalog is not None else onto[0], out=out, n=n, params=params, negatives=negatives, kinds=kinds, field=field, seed=seed,
                    no_noise=no_noise, no_psf=no_psf, psf=psf, size=size, pixel_scale=pixel_scale,
                    supersample=supersample, dtype=dtype, preview=preview, overwrite=overwrite,
                    zero_point=zero_point, gain=gain, exptime=exptime, psf_fwhm=psf_fwhm, theta_e=theta_e,
                    psf_beta=psf_beta, light=parse_light_prior(theta_e_from_light, light_prior), bands=bands, unlensed=unlensed, catalog=catalog, columns=cols)
        return
    if catalog is not None or cols:
        raise InputError("--catalog and its columns apply to --onto survey images only")
    if unlensed:
        raise InputError("--unlensed applies to --onto only")
    if theta_e_from_light or light_prior is not None:
        raise InputError(f"{'--theta-e-from-light' if theta_e_from_light else '--light-prior'} applies to --onto only")
    for opt, val in (("--zero-point", zero_point), ("--gain", gain), ("--exptime", exptime),
                     ("--psf-fwhm", psf_fwhm), ("--psf-beta", psf_beta), ("--theta-e", theta_e), ("--bands", bands)):
        if val is not None:
            raise InputError(f"{opt} applies to --onto only")
    size = 64 if size is None else size
    pixel_scale = 0.168 if pixel_scale is None else pixel_scale

    if seed < 0:
        raise InputError(f"--seed: must be a whole number >= 0, got {seed}")
    if dtype not in ("uint8", "float32"):
        raise InputError(f"--dtype {dtype!r}: expected uint8 or float32")
    if no_psf and psf is not None:
        raise InputError("--psf and --no-psf contradict each other; give one")
    if out is not None and out.suffix.lower() != ".npy":
        raise InputError(f"--out {out}: expected a .npy file name")
    check_outputs([out, None if out is None else out.with_suffix(".ecsv"), preview], [params, psf], overwrite)
    if out is not None and n is not None:
        _check_size(n, size, dtype, out)
    psf_arg = False if no_psf else (_read_psf(psf) if psf is not None else True)
    common = dict(size=size, pixel_scale=pixel_scale, noise=not no_noise, psf=psf_arg, supersample=supersample,
                  field=field, field_i_max=field_i_max)

    if preview is not None:
        from deepmine.lenscrafter.preview import write_preview

        write_preview(preview, seed=seed, noise=not no_noise, psf=psf_arg, size=size, pixel_scale=pixel_scale)
        err_console.print(f"wrote preview {preview}")
        if out is None:
            return
    if out is None:
        raise InputError("--out is required (or give --preview PICTURE alone)")
    table_path = out.with_suffix(".ecsv")

    from deepmine.lenscrafter import read_lens_params, sample_lens_params

    kind_list = None
    if kinds is not None:
        if not negatives:
            raise InputError("--kinds applies to --negatives only")
        kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    if negatives:
        if params is not None:
            raise InputError("--params describes lenses; it cannot be combined with --negatives")
        if n is None:
            raise InputError("--n is required with --negatives")
        total = n
        table = None
    else:
        if params is not None:
            table = read_lens_params(params)
            if n is not None and n != len(table):
                raise InputError(f"--n {n} disagrees with the {len(table)} rows of --params {params}; omit --n")
            _check_size(len(table), size, dtype, out)
        else:
            if n is None:
                raise InputError("--n is required (or give --params TABLE)")
            table = sample_lens_params(n, seed=seed)
        total = len(table)

    meta = {"seed": seed, "size": size, "pixel_scale": pixel_scale, "noise": not no_noise,
            "psf": "none" if no_psf else (str(psf) if psf else "gaussian-hsc"),
            "supersample": supersample, "dtype": dtype, "bands": "i,r,g", "stack": out.name,
            "field": 1.0 if field is None else field, "field_i_max": field_i_max}
    if negatives:
        _craft_negatives(out, table_path, total, dtype, meta, seed=seed, kinds=kind_list, **common)
    else:
        _craft_lenses(out, table_path, table, dtype, meta, seed=seed, **common)
    what = "negatives" if negatives else "lenses"
    err_console.print(f"wrote {total} {what} {out} ({dtype} {total}×3×{size}×{size}) and {table_path}")


def _craft_lenses(out: Path, table_path: Path, table, dtype: str, meta: dict, **options) -> None:
    """Write the stack a chunk at a time (pipelined: :func:`~deepmine.lenscrafter.synth.craft_lens_chunks`)
    and the parameter table; the table is written by a second thread while the lenses render, and
    each file is moved into place only when both are complete."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from deepmine.inference.atomic import atomic_path
    from deepmine.lenscrafter.synth import craft_lens_chunks

    table.meta.update(meta)
    total = len(table)
    written = None
    with atomic_path(table_path) as ttmp, atomic_path(out) as tmp, ThreadPoolExecutor(max_workers=1) as pool:
        size = options["size"]
        stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(total, 3, size, size))
        with task("crafting lenses", total) as advance:
            for a, b, imgs in craft_lens_chunks(table, CHUNK, output=dtype, **options):
                if written is None:  # the Python-heavy ECSV writer runs while the compiled renderer works
                    written = pool.submit(table.write, ttmp, format="ascii.ecsv", overwrite=True)
                stack[a:b] = imgs
                advance(b - a)
        stack.flush()
        del stack
        if written is None:
            table.write(ttmp, format="ascii.ecsv", overwrite=True)
        else:
            written.result()


def _craft_negatives(out: Path, table_path: Path, total: int, dtype: str, meta: dict, *, seed: int, kinds,
                     **common) -> None:
    import numpy as np
    from astropy.table import vstack

    from deepmine.inference.atomic import atomic_path
    from deepmine.lenscrafter import craft_negatives

    tables = []
    with atomic_path(out) as tmp:
        size = common["size"]
        stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(total, 3, size, size))
        with task("crafting negatives", total) as advance:
            for a in range(0, total, CHUNK):
                b = min(a + CHUNK, total)
                imgs, tab = craft_negatives(b - a, seed=seed, kinds=kinds, output=dtype, index_offset=a, **common)
                tables.append(tab)
                stack[a:b] = imgs
                advance(b - a)
        stack.flush()
        del stack
    table = vstack(tables) if len(tables) > 1 else tables[0]
    table.meta.update(meta)
    with atomic_path(table_path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)


def _floats(text: Optional[str], option: str, count=None):
    """'27' or '27,27.1,27.2' → list of floats (None stays None); one-line error otherwise."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers") from None
    if count is not None and len(vals) not in count:
        raise InputError(f"{option} {text!r}: expected {' or '.join(map(str, count))} numbers, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"{option} {text!r}: expected finite numbers")
    return vals


def parse_light_prior(flag: bool, text: Optional[str]):
    """``--theta-e-from-light`` / ``--light-prior "sigma_ref=250,scatter=0.1"`` → False, True or a
    dict of overrides (checked by :func:`deepmine.lenscrafter.paint.theta_prior.light_prior`)."""
    if text is None:
        return bool(flag)
    from deepmine.lenscrafter.paint.theta_prior import light_prior

    over = {}
    for item in (t.strip() for t in text.split(",")):
        key, eq, value = (v.strip() for v in item.partition("="))
        if not (key and eq and value):
            raise InputError(f"--light-prior {text!r}: expected KEY=VALUE,... (keys sigma_ref, m_ref, dls_ds, scatter)")
        over[key] = value
    light_prior(over)  # refuse unknown keys and bad values now, in one line
    return over


def _craft_onto(onto: Path, *, out, n, params, negatives, kinds, field, seed, no_noise, no_psf, psf, size,
                pixel_scale, supersample, dtype, preview, overwrite, zero_point, gain, exptime, psf_fwhm, theta_e,
                bands, unlensed=False, catalog=None, columns=None, psf_beta=None, light=False) -> None:
    import numpy as np

    from deepmine.inference.cli.common import progress_bar
    from deepmine.lenscrafter.paint.onto import craft_onto

    for opt, bad in (("--n", n is not None), ("--params", params is not None), ("--negatives", negatives),
                     ("--kinds", kinds is not None), ("--field", field is not None), ("--no-psf", no_psf),
                     ("--preview", preview is not None)):
        if bad:
            raise InputError(f"{opt} does not apply to --onto (one arc is painted on every cutout of "
                             f"{catalog or onto})")
    if out is None:
        raise InputError("--out is required with --onto")
    te = _floats(theta_e, "--theta-e", (2,))
    if te is not None and not 0 < te[0] <= te[1]:
        raise InputError(f"--theta-e {theta_e}: expected MIN,MAX with 0 < MIN <= MAX arcsec")
    kern = _read_psf(psf) if psf is not None else None
    with progress_bar() as prog:
        table = craft_onto(onto, out, zero_point=_floats(zero_point, "--zero-point", (1, 3)),
                           gain=_floats(gain, "--gain", (1, 3)), exptime=_floats(exptime, "--exptime", (1, 3)),
                           psf=kern, psf_fwhm=_floats(psf_fwhm, "--psf-fwhm", (1, 3)), psf_beta=psf_beta,
                           pixel_scale=pixel_scale,
                           size=size, bands=bands, theta_e=te, seed=seed, dtype=dtype, overwrite=overwrite,
                           inputs=[psf], progress=prog, arc_noise=not no_noise, supersample=supersample,
                           unlensed=unlensed, catalog=catalog, columns=columns, theta_e_from_light=light)
    s = table.meta["size"]
    what = "unlensed sources painted beside galaxies" if unlensed else "painted lenses"
    err_console.print(f"wrote {len(table)} {what} {out} ({dtype} {len(table)}×3×{s}×{s}) and "
                      f"{out.with_suffix('.ecsv')}; median S/N g {np.median(table['snr_g']):.1f}")


def register(app: typer.Typer) -> None:
    app.command("craft")(craft)
