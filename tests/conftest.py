"""Shared test configuration and helpers.

Environment defaults (quiet progress bars, the Agg backend), the hypothesis profile (no deadlines:
Numba compiles) and the helpers several test folders share, each exposed as a fixture that returns
the helper (tests take them as parameters; nothing in tests/ imports another test file):

- ``make_classifier(path, ...)``: a tiny deepmine ONNX classifier (no torch); ``toy_logit(images)``
  its logit in numpy; ``blobs(n, ...)``: noisy cutouts with a central blob of random brightness;
- ``synthetic_part`` / ``write_parts``: scan part files as ``run_shard`` writes them (no images);
- ``make_cutouts`` / ``make_scan``: cutout stacks and a scan catalogue pointing at them (inspect);
- ``torch_blocker``: Python source that makes importing torch fail (prepend to ``python -c`` code);
- ``serve_inspect``: start ``deepmine inspect ...`` in a subprocess, return (process, URL);
- ``reader_meta`` / ``read_all`` / ``survey_images`` / ``survey_files``: survey images with a WCS
  and reading whole inputs (the readers' tests and those of the scan command);
- ``cli``: the CLI run in-process.

Folder conftests add what only that folder uses (tests/cli/conftest.py: ``export_checkpoint``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("DEEPMINE_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

settings.register_profile(
    "deepmine", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("deepmine")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``rc, out, err = cli("rank", ...)``."""
    from deepmine.inference.cli.app import main

    def run(*args):
        rc = main([str(a) for a in args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return run


# -- tiny deepmine classifiers built with onnx.helper (no torch), for scanner tests ----------------
# ``_make_classifier(path)`` writes a model whose logit is ``gain · (mean of the central quarter −
# mean of the whole cutout)`` over all bands of the preprocessed input: objects with a bright centre
# (a lens galaxy, an injected ring) rank high, blank cutouts score 0. The graph has the deepmine I/O
# contract (input ``image`` N×C×H×W float32, outputs ``logit`` and ``probability`` (N,)) and
# deepmine metadata from ``ModelMetadata.to_props()``.
def _make_classifier(path, *, shape=(3, 64, 64), bands=("i", "r", "g"), preprocessing=None, gain=20.0,
                     fixed_batch=None, architecture="toy", conv_channels=0):
    """Write the toy classifier to ``path`` and return the path.

    ``conv_channels`` > 0 adds a 3×3 conv + ReLU branch (heavier compute for timing tests) whose
    global mean is added to the logit with weight 0.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from deepmine.inference.metadata import ModelMetadata

    c, h, w = shape
    batch = fixed_batch if fixed_batch else "N"
    y0, y1, x0, x1 = h // 4, h - h // 4, w // 4, w - w // 4
    inits = [
        numpy_helper.from_array(np.array([y0, x0], np.int64), "starts"),
        numpy_helper.from_array(np.array([y1, x1], np.int64), "ends"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([gain], np.float32), "gain"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["centre"]),
        helper.make_node("ReduceMean", ["centre"], ["m_centre"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["image"], ["m_all"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sub", ["m_centre", "m_all"], ["diff"]),
        helper.make_node("Mul", ["diff", "gain"], ["raw"]),
    ]
    last = "raw"
    if conv_channels:
        rng = np.random.default_rng(0)
        inits += [
            numpy_helper.from_array(rng.normal(0, 0.1, (conv_channels, c, 3, 3)).astype(np.float32), "cw"),
            numpy_helper.from_array(np.zeros(conv_channels, np.float32), "cb"),
            numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
        ]
        nodes += [
            helper.make_node("Conv", ["image", "cw", "cb"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Conv", ["relu", "cw2", "cb"], ["conv2"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv2"], ["relu2"]),
            helper.make_node("ReduceMean", ["relu2"], ["m_conv"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["m_conv", "zero"], ["m_zero"]),
            helper.make_node("Add", ["raw", "m_zero"], ["raw2"]),
        ]
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (conv_channels, conv_channels, 3, 3))
                                             .astype(np.float32), "cw2"))
        last = "raw2"
    nodes += [
        helper.make_node("Reshape", [last, "flat"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes, "toy_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, c, h, w])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [batch]),
         helper.make_tensor_value_info("probability", TensorProto.FLOAT, [batch])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(architecture=architecture, input_shape=list(shape), bands=list(bands),
                         preprocessing=preprocessing or {"kind": "percentile", "low": 0.5, "high": 99.5})
    for k, v in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)


def _toy_logit(images, gain=20.0):
    """The toy model's logit computed with numpy from preprocessed float input (N×C×H×W)."""
    x = np.asarray(images, dtype=np.float64)
    h, w = x.shape[2:]
    centre = x[:, :, h // 4:h - h // 4, w // 4:w - w // 4].mean(axis=(1, 2, 3))
    return (gain * (centre - x.mean(axis=(1, 2, 3)))).astype(np.float32)


def _blobs(n, shape=(3, 64, 64), seed=0, dtype=np.uint8):
    """``n`` noisy cutouts, each with a Gaussian blob of random brightness at the centre.

    uint8 output is percentile-normalised per band (the HSC storage convention).
    """
    from deepmine.inference.preprocess import percentile_normalization

    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    amp = rng.uniform(0, 5, n)
    x = rng.normal(0, 1, (n, c, h, w)) + amp[:, None, None, None] * np.exp(-r2 / (2 * (h / 10) ** 2))
    x = x.astype(np.float32)
    return percentile_normalization(x) if dtype == np.uint8 else x.astype(dtype)


# -- synthetic scan part files (no images) ----------------------------------------------------------
# The arrays :func:`deepmine.inference.scan.shards.run_shard` writes, with heavy ties, null (not ranked)
# rows, ±0.0 logits and gaps in the ids, for the streamed-merge and ranking tests.
_FLAG_BLANK = 2
_FLAG_EDGE = 4


def _synthetic_part(first_id: int, n: int, seed: int, *, spec_index: int = 0, kept: bool = True,
                    source: str = "survey/cat.fits", ties: float = 0.3) -> dict:
    """Arrays of one part file of ``n`` objects starting at id ``first_id``."""
    rng = np.random.default_rng(seed)
    keep = rng.random(n) > 0.01  # a few invalid rows dropped, as run_shard drops them
    m = int(keep.sum())
    ids = np.arange(first_id, first_id + n, dtype=np.int64)[keep]
    logit = rng.normal(-3.0, 3.0, m).astype(np.float32)
    tie = rng.random(m)
    logit[tie < ties] = np.round(logit[tie < ties], 1)  # heavy ties
    logit[tie < 0.05] = np.float32(16.0)  # saturated top
    logit[(tie >= 0.05) & (tie < 0.06)] = np.float32(-0.0)
    logit[(tie >= 0.06) & (tie < 0.07)] = np.float32(0.0)
    flags = np.zeros(m, np.int32)
    blank = rng.random(m) < 0.02
    flags[blank] = _FLAG_BLANK
    flags[rng.random(m) < 0.01] |= _FLAG_EDGE
    logit[blank] = np.nan
    prob = (1 / (1 + np.exp(-logit.astype(np.float64)))).astype(np.float32)
    arrays = {
        "id": ids, "source_idx": (rng.random(m) < 0.5).astype(np.int32), "index": ids - first_id + 7,
        "ra": rng.uniform(0, 360, m), "dec": rng.uniform(-60, 60, m), "x": rng.uniform(0, 4000, m),
        "y": rng.uniform(0, 4000, m), "logit": logit, "probability": prob, "flags": flags,
        "spec_index": np.full(m, spec_index, np.int32),
        "sources": np.array([source, source.replace("cat", "cat2")], dtype=str),
        "skipped": np.array([[f"bad-{seed}.fits", f"bad-{seed}.fits: unreadable"]] if seed % 7 == 3 else [],
                            dtype=str).reshape(-1, 2),
    }
    if kept:
        arrays["keep:object_id"] = (ids * 10 + 3).astype(np.int64)
        arrays["keep:name"] = np.array([f"J{int(i):08d}" for i in ids], dtype=str)
    return arrays


def _write_parts(folder, n_rows: int, part_rows: int, *, seed: int = 0, kept: bool = True,
                 ties: float = 0.3) -> list[Path]:
    """Write ``part-NNNNNN.npz`` files of ``part_rows`` objects each into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, n_rows, part_rows)):
        n = min(part_rows, n_rows - start)
        p = folder / f"part-{k:06d}.npz"
        with open(p, "wb") as fh:
            np.savez(fh, **_synthetic_part(start, n, seed * 100_003 + k, spec_index=k % 3,
                                           kept=kept and k % 5 != 4, ties=ties))
        paths.append(p)
    return paths


# -- cutouts and scan catalogues for deepmine inspect ----------------------------------------------
def _make_cutouts(n: int, size: int = 32, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """n synthetic i, r, g cutouts: an elliptical galaxy, every third one with a blue ring (arc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 3, size, size), np.float32)
    for k in range(n):
        q, phi = rng.uniform(0.5, 1), rng.uniform(0, np.pi)
        u = xx * np.cos(phi) + yy * np.sin(phi)
        v = -xx * np.sin(phi) + yy * np.cos(phi)
        gal = np.exp(-(u**2 + (v / q) ** 2) / (2 * rng.uniform(2, 4) ** 2))
        ring = np.exp(-((np.hypot(xx, yy) - size / 4) ** 2) / 2.0) if k % 3 == 0 else 0 * gal
        for c, (g, a) in enumerate(((1.0, 0.2), (0.7, 0.5), (0.4, 0.9))):  # i, r, g: red galaxy, blue arc
            out[k, c] = g * gal + a * 0.4 * ring + rng.normal(0, 0.02, gal.shape)
    if dtype == np.uint8:
        lo = np.percentile(out, 0.5, axis=(2, 3), keepdims=True)
        hi = np.percentile(out, 99.5, axis=(2, 3), keepdims=True)
        return np.round(np.clip((out - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return out.astype(dtype)


def _make_scan(folder: Path, n: int = 40, sources: int = 1, dtype=np.uint8, fmt: str = "fits") -> Path:
    """Cutout stacks ``stack{k}.npy`` and the scan catalogue ``scan.<fmt>`` pointing at them."""
    from astropy.table import Table

    from deepmine.inference.catalog.io import write_catalog

    rng = np.random.default_rng(1)
    per = n // sources
    src, idx = [], []
    for k in range(sources):
        np.save(folder / f"stack{k}.npy", _make_cutouts(per, seed=k, dtype=dtype))
        src += [f"stack{k}.npy"] * per
        idx += list(range(per))
    logit = rng.normal(0, 2, len(src)).astype(np.float32)
    t = Table()
    t["id"] = np.arange(len(src), dtype=np.int64)
    t["source"] = src
    t["index"] = np.array(idx, dtype=np.int64)
    for c in ("ra", "dec", "x", "y"):
        t[c] = np.full(len(src), np.nan)
    t["ra"] = rng.uniform(150, 151, len(src))
    t["dec"] = rng.uniform(2, 3, len(src))
    t["logit"] = logit
    t["probability"] = (1 / (1 + np.exp(-logit))).astype(np.float32)
    t["ordinality"] = (np.argsort(np.argsort(logit)) + 1) / len(src)
    t["flags"] = np.zeros(len(src), np.int32)
    t.meta["DM_META"] = {"bands": ["i", "r", "g"]}
    return write_catalog(t, folder / f"scan.{fmt}", [fmt])[fmt]


# -- survey images with a WCS, and reading whole inputs -------------------------------------------
def _reader_meta():
    """The model metadata the readers' tests read with: 3 bands (i, r, g), 16×16 cutouts."""
    from deepmine.inference.metadata import ModelMetadata

    return ModelMetadata(architecture="toy", input_shape=[3, 16, 16], bands=["i", "r", "g"])


def _read_all(spec, meta=None, **kw):
    """Every cutout of one input spec as one block (``meta`` defaults to :func:`_reader_meta`)."""
    from deepmine.inference.inputs.readers import read_block

    return read_block(spec, 0, spec.n, meta if meta is not None else _reader_meta(), **kw)


def _survey_images(tmp_path, compressed=False, ny=80, nx=100):
    """Images of noise in g, r, i (integers: lossless when tile-compressed) with a TAN WCS and
    FILTER cards, as ``img_<band>.fits`` (``.fits.fz`` tile-compressed)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [50.0, 40.0]
    w.wcs.cdelt = [-0.168 / 3600, 0.168 / 3600]
    rng = np.random.default_rng(5)
    imgs = {b: np.round(rng.normal(size=(ny, nx)) * 10).astype(np.float32) + k for k, b in enumerate("gri")}  # integers: lossless when tile-compressed
    paths = {}
    for b, img in imgs.items():
        h = w.to_header()
        h["FILTER"] = f"HSC-{b.upper()}"
        p = tmp_path / f"img_{b}.fits{'.fz' if compressed else ''}"
        if compressed:
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img.astype(np.int32), header=h)]).writeto(p)
        else:
            fits.PrimaryHDU(img, header=h).writeto(p)
        paths[b] = p
    return imgs, paths, w


def _survey_files(tmp_path, n=120):
    """i, r, g images of noise ``<band>.fits`` with an ICRS TAN WCS (no FILTER cards)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [10.0, -5.0], [60.0, 60.0], [-0.168 / 3600, 0.168 / 3600]
    w.wcs.radesys = "ICRS"
    rng = np.random.default_rng(3)
    files = []
    for b in "irg":
        p = tmp_path / f"{b}.fits"
        fits.PrimaryHDU(rng.normal(size=(n, n)).astype(np.float32), header=w.to_header()).writeto(p)
        files.append(p)
    return files, w


# -- subprocesses: torch blocked, the inspect server ------------------------------------------------
_TORCH_BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name in ("torchvision", "onnxscript"):
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _NoTorch())
    """
)


def _sigint_default():
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _serve_inspect(args, cwd):
    """Start ``deepmine inspect ...`` in a subprocess; return (process, url)."""
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1", COLUMNS="200")
    # the tests stop the server with SIGINT (Ctrl-C); a test run started in the background
    # (`pytest &`, nohup) ignores SIGINT and its children would inherit that, so restore it
    proc = subprocess.Popen([sys.executable, "-m", "deepmine.inference.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_sigint_default if os.name == "posix" else None)
    line = proc.stdout.readline()
    if not line.startswith("open http"):
        proc.kill()
        raise AssertionError(f"no URL printed: {line!r} {proc.stderr.read()}")
    return proc, line.split()[1]


# -- the fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def make_classifier():
    """``make_classifier(path, *, shape=(3, 64, 64), bands=..., preprocessing=None, gain=20.0,
    fixed_batch=None, architecture="toy", conv_channels=0)`` → path of the toy ONNX classifier."""
    return _make_classifier


@pytest.fixture(scope="session")
def toy_logit():
    """``toy_logit(images, gain=20.0)``: the toy classifier's logit computed with numpy."""
    return _toy_logit


@pytest.fixture(scope="session")
def blobs():
    """``blobs(n, shape=(3, 64, 64), seed=0, dtype=np.uint8)``: cutouts with a central blob."""
    return _blobs


@pytest.fixture(scope="session")
def synthetic_part():
    """``synthetic_part(first_id, n, seed, *, spec_index=0, kept=True, source=..., ties=0.3)`` → arrays."""
    return _synthetic_part


@pytest.fixture(scope="session")
def write_parts():
    """``write_parts(folder, n_rows, part_rows, *, seed=0, kept=True, ties=0.3)`` → part file paths."""
    return _write_parts


@pytest.fixture(scope="session")
def make_cutouts():
    """``make_cutouts(n, size=32, seed=0, dtype=np.uint8)``: i, r, g galaxies, every third with an arc."""
    return _make_cutouts


@pytest.fixture(scope="session")
def make_scan():
    """``make_scan(folder, n=40, sources=1, dtype=np.uint8, fmt="fits")`` → the scan catalogue's path."""
    return _make_scan


@pytest.fixture(scope="session")
def reader_meta():
    """The readers' model metadata: bands i, r, g, 3×16×16 cutouts."""
    return _reader_meta()


@pytest.fixture(scope="session")
def read_all():
    """``read_all(spec, meta=reader_meta, **kw)``: every cutout of ``spec`` as one block."""
    return _read_all


@pytest.fixture(scope="session")
def survey_images():
    """``survey_images(folder, compressed=False, ny=80, nx=100)`` → (images by band, paths by band, WCS)."""
    return _survey_images


@pytest.fixture(scope="session")
def survey_files():
    """``survey_files(folder, n=120)`` → ([i, r, g FITS paths], WCS): ICRS survey images of noise."""
    return _survey_files


@pytest.fixture(scope="session")
def torch_blocker():
    """Python source that makes ``import torch`` (and torchvision, onnxscript) fail; prepend it to
    the code of a ``python -c`` subprocess."""
    return _TORCH_BLOCKER


@pytest.fixture(scope="session")
def serve_inspect():
    """``serve_inspect(args, cwd)``: start ``deepmine inspect ...`` in a subprocess → (process, URL)."""
    return _serve_inspect
