"""Sample an exported LensGenerator with onnxruntime (never torch) and write the cutouts.

Contract::

    gen = load_generator(path, threads=None)     # refuses anything but task == "generator"
    gen.metadata, gen.latent_dim, gen.image_shape (C, H, W), gen.sha256, gen.provider
    images = gen.sample(n, seed=0, batch_size=256)           # uint8 N×C×H×W
    out = write_generated(path, gen, n, seed=0, batch_size=256, progress=None)
    diversity(samples, training=None, ...)                   # see below

Latent vectors are standard normal, drawn from ``numpy.random.default_rng(seed)`` in order,
batch after batch: NumPy's generator fills an array element by element, so the cutouts depend
on ``seed`` and ``n`` only, never on ``batch_size`` (tested). The generator's ``image`` output
(0..1) becomes ``round(255 · clip(image, 0, 1))`` as uint8 — the scanner's convention for a
percentile-normalised cutout (bands in the model's order, HSC: i, r, g).

Output formats (by suffix): ``.npy`` (N×C×H×W uint8, written block by block through a memory
map, so memory stays at one batch whatever ``n``) or ``.fits``/``.fit`` (uint8 image HDU with
the provenance in the header). Both are written atomically; a provenance sidecar
``<out>.provenance.json`` (model, hash, seed, n, latent, versions) is written beside.

:func:`diversity` measures what the GAN training reports per cycle: the mean pairwise
Euclidean distance between samples (diversity; mode collapse drives it to 0) and, with a
training set, each sample's distance to its nearest training image (memorisation: a sample
that copies a training image has distance ≈ 0). Distances are between images scaled to 0..1,
divided by sqrt(C·H·W) — i.e. root-mean-square pixel differences, in units of the 0..1 range.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_open, atomic_path
from .errors import InputError, file_error
from .metadata import ModelMetadata, file_sha256, read_metadata
from .session import open_session

__all__ = ["Generator", "load_generator", "write_generated", "diversity", "to_uint8", "latent_batches",
           "OUTPUT_SUFFIXES", "sidecar_path", "check_output"]

OUTPUT_SUFFIXES = (".npy", ".fits", ".fit")
DEFAULT_BATCH = 256


def _check_count(n, option: str = "--n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) and not (isinstance(n, float) and n.is_integer()):
        raise InputError(f"{option}: the number of cutouts must be a whole number, got {n!r}")
    if int(n) <= 0:
        raise InputError(f"{option}: the number of cutouts must be at least 1, got {n}")
    return int(n)


def _check_batch(batch_size) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) < 1:
        raise InputError(f"--batch-size: must be a positive whole number, got {batch_size!r}")
    return int(batch_size)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in 0..1 → uint8 0..255 (rounded, clipped; NaN → 0)."""
    x = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def latent_batches(n: int, latent_dim: int, seed: int, batch_size: int):
    """Yield ``(start, latent)`` float32 blocks of the standard-normal latent stream of ``seed``."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch_size):
        k = min(batch_size, n - start)
        yield start, rng.standard_normal((k, latent_dim), dtype=np.float32)


class Generator:
    """An onnxruntime session of an exported generator plus its metadata.

    Build it with :func:`load_generator`. Attributes: ``path``, ``metadata``, ``session``,
    ``latent_dim``, ``image_shape`` (C, H, W), ``provider``, ``sha256``, ``threads``.
    """

    def __init__(self, path: Path, session, metadata: ModelMetadata, threads: int | None):
        self.path = Path(path)
        self.session = session
        self.metadata = metadata
        self.threads = threads
        self.providers = list(session.get_providers())
        self.provider = self.providers[0]
        self.sha256 = file_sha256(self.path)
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        if "latent" not in inputs or "image" not in outputs:
            raise file_error(self.path, f"generator graph must take 'latent' and return 'image' "
                                        f"(has inputs {sorted(inputs)}, outputs {sorted(outputs)})")
        shape = inputs["latent"].shape
        dim = shape[1] if len(shape) == 2 else None
        meta_dim = int(metadata.input_shape[0]) if metadata.input_shape else None
        if isinstance(dim, int) and meta_dim is not None and dim != meta_dim:
            raise file_error(self.path, f"graph latent length {dim} disagrees with metadata input_shape {meta_dim}")
        self.latent_dim = meta_dim if meta_dim is not None else dim
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise file_error(self.path, "generator metadata lacks the latent length (input_shape)")
        batch = shape[0] if shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        oshape = outputs["image"].shape
        if len(oshape) == 4 and all(isinstance(v, int) for v in oshape[1:]):
            self.image_shape = tuple(int(v) for v in oshape[1:])
        else:  # symbolic C/H/W: ask the graph once
            probe = self._run(np.zeros((self.fixed_batch or 1, self.latent_dim), np.float32))
            if probe.ndim != 4:
                raise file_error(self.path, f"generator returns images of shape {probe.shape}; expected N×C×H×W")
            self.image_shape = tuple(int(v) for v in probe.shape[1:])
        if len(metadata.bands) != self.image_shape[0]:
            raise file_error(self.path, f"metadata bands {metadata.bands} do not match the {self.image_shape[0]} "
                                        "image channels")

    def _run(self, latent: np.ndarray) -> np.ndarray:
        k = latent.shape[0]
        if self.fixed_batch is not None and k != self.fixed_batch:
            padded = np.zeros((self.fixed_batch, latent.shape[1]), np.float32)
            padded[:k] = latent
            latent = padded
        (img,) = self.session.run(["image"], {"latent": np.ascontiguousarray(latent, dtype=np.float32)})
        return np.asarray(img)[:k]

    def images(self, latent: np.ndarray) -> np.ndarray:
        """float32 images N×C×H×W in 0..1 (the graph's output) for latent vectors N×L."""
        z = np.asarray(latent, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise InputError(f"latent: expected an N×{self.latent_dim} array, got shape {z.shape}")
        return self._run(z)

    def batches(self, n: int, seed: int = 0, batch_size: int = DEFAULT_BATCH):
        """Yield ``(start, uint8 images)`` blocks of the ``n`` cutouts of ``seed``."""
        n = _check_count(n)
        b = self.fixed_batch or _check_batch(batch_size)
        for start, z in latent_batches(n, self.latent_dim, int(seed), b):
            yield start, to_uint8(self._run(z))

    def sample(self, n: int, seed: int = 0, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """``n`` uint8 cutouts N×C×H×W (in memory; use :func:`write_generated` for many)."""
        n = _check_count(n)
        out = np.empty((n,) + self.image_shape, np.uint8)
        for start, block in self.batches(n, seed, batch_size):
            out[start:start + len(block)] = block
        return out

    def describe(self) -> dict:
        """Provenance of the model and session (JSON-compatible)."""
        return {"model": str(self.path), "model_sha256": self.sha256, "architecture": self.metadata.architecture,
                "latent_dim": self.latent_dim, "image_shape": list(self.image_shape),
                "bands": list(self.metadata.bands), "pixel_scale": self.metadata.pixel_scale,
                "provider": self.provider, "training": self.metadata.training}

    def __repr__(self) -> str:
        return f"Generator({str(self.path)!r}, latent {self.latent_dim}, image {self.image_shape})"


def load_generator(path: str | os.PathLike, threads: int | None = None, device: str = "cpu") -> Generator:
    """Open an exported generator (``deepmine export`` of a LensGenerator) on ``device``
    (``"cpu"``, ``"cuda"`` or ``"auto"``, see :func:`deepmine.inference.session.open_session`).

    Raises :class:`InputError` when the file is missing, not a readable ONNX model, not a
    deepmine model, or a classifier rather than a generator.
    """
    p = Path(path)
    if p.is_dir():
        raise file_error(p, "expected an exported generator (.onnx file), got a directory")
    metadata, _ = read_metadata(p)
    if metadata.task != "generator":
        raise file_error(p, f"not a generator model (task {metadata.task!r}, architecture "
                            f"{metadata.architecture!r}); `deepmine generate` needs an exported LensGenerator")
    session = open_session(p, device=device, threads=threads)
    return Generator(p, session, metadata, threads)


def sidecar_path(out: str | os.PathLike) -> Path:
    """Where the provenance of a generated file goes: ``<out>.provenance.json``."""
    p = Path(out)
    return p.with_name(p.name + ".provenance.json")


def check_output(out: str | os.PathLike, inputs=(), overwrite: bool = False) -> Path:
    """Refuse an output path of an unknown type or in a missing/unwritable folder, one that is
    an input, or (unless ``overwrite``) one that exists, its sidecar included (before any work)."""
    from .atomic import check_outputs

    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise file_error(out, f"unknown output type {out.suffix!r}; use .npy or .fits")
    check_outputs([out, sidecar_path(out)], inputs, overwrite)
    return out


def write_generated(out: str | os.PathLike, generator: Generator, n: int, seed: int = 0,
                    batch_size: int = DEFAULT_BATCH, progress=None) -> dict:
    """Generate ``n`` cutouts and write them atomically to ``out`` (.npy or .fits) plus the
    provenance sidecar. ``progress(k)`` is called after each block of ``k`` cutouts.

    Returns the provenance dict (also in the sidecar).
    """
    n = _check_count(n)
    batch_size = _check_batch(batch_size)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise InputError(f"--seed: must be a non-negative whole number, got {seed!r}")
    out = check_output(out)
    suffix = out.suffix.lower()
    from . import __version__

    shape = (n,) + generator.image_shape
    prov = {
        "kind": "deepmine.generated",
        "n": n, "seed": int(seed), "shape": list(shape), "dtype": "uint8",
        "latent": "standard normal, numpy.random.default_rng(seed), drawn in order",
        "pixels": "round(255 * clip(image, 0, 1)): percentile-normalised cutouts",
        **generator.describe(),
        "deepmine_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "output": str(out),
    }  # fmt: skip
    if suffix == ".npy":
        with atomic_path(out) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for start, block in generator.batches(n, seed, batch_size):
                mm[start:start + len(block)] = block
                if progress is not None:
                    progress(len(block))
            mm.flush()
            del mm
    else:
        from astropy.io import fits

        data = np.empty(shape, np.uint8)
        for start, block in generator.batches(n, seed, batch_size):
            data[start:start + len(block)] = block
            if progress is not None:
                progress(len(block))
        hdu = fits.PrimaryHDU(data)
        hdr = hdu.header
        hdr["DMKIND"] = ("generated", "deepmine generate: GAN cutouts")
        hdr["DMMODEL"] = (generator.path.name[:60], "generator model file")
        hdr["DMSHA256"] = generator.sha256.split(":", 1)[-1]  # the model file's hash (no room for a comment)
        hdr["DMSEED"] = (int(seed), "seed of the latent vectors")
        hdr["DMBANDS"] = (",".join(generator.metadata.bands), "band of each channel")
        hdr["DMVER"] = (__version__, "deepmine version")
        with atomic_path(out) as tmp:
            hdu.writeto(tmp, overwrite=True)
    with atomic_open(sidecar_path(out), "w", encoding="utf-8") as fh:
        json.dump(prov, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return prov


def _as_unit_float(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 4:
        raise InputError(f"{name}: expected an N×C×H×W array, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.reshape(len(a), -1).astype(np.float32) / 255.0
    return a.reshape(len(a), -1).astype(np.float32)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def diversity(samples, training=None, max_pairs_n: int = 1000, chunk: int = 512, seed: int = 0) -> dict:
    """Diversity and memorisation figures of generated cutouts.

    Parameters
    ----------
    samples : N×C×H×W uint8 (0..255) or float (0..1) cutouts
    training : M×C×H×W cutouts the generator was trained on, or None
    max_pairs_n : at most this many samples (a fixed random subset, ``seed``) enter the
        pairwise mean (O(N²)); nearest-neighbour distances use every sample
    chunk : samples per block of the distance computation (memory ~ chunk·M floats)

    Returns
    -------
    dict with ``n``, ``mean_pairwise`` (mean distance over pairs of distinct samples) and, with
    ``training``: ``nn_train_mean``, ``nn_train_median``, ``nn_train_min`` (distance from each
    sample to its nearest training image), ``train_pairwise_nn_median`` (median distance from a
    training image to its nearest *other* training image — the scale a copy would be judged
    against) and ``memorised_fraction`` (samples closer to a training image than half that
    scale) and ``train_mean_pairwise`` (the training set's own mean pairwise distance, the
    diversity to compare ``mean_pairwise`` with). Distances are RMS pixel differences in units of the 0..1 range.
    """
    s = _as_unit_float(samples, "samples")
    n, dim = s.shape
    if n < 2:
        raise InputError("samples: need at least 2 cutouts to measure diversity")
    scale = 1.0 / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    sub = s if n <= max_pairs_n else s[np.sort(rng.choice(n, max_pairs_n, replace=False))]
    d = np.sqrt(_sq_dists(sub, sub)) * scale
    iu = np.triu_indices(len(sub), 1)
    out = {"n": int(n), "mean_pairwise": float(d[iu].mean())}
    if training is None:
        return out
    t = _as_unit_float(training, "training")
    if t.shape[1] != dim:
        raise InputError(f"training: cutouts have {t.shape[1]} values each but the samples have {dim}")
    nn = np.empty(n, np.float64)
    for i in range(0, n, chunk):
        nn[i:i + chunk] = np.sqrt(_sq_dists(s[i:i + chunk], t).min(1)) * scale
    tt = t if len(t) <= max_pairs_n else t[np.sort(rng.choice(len(t), max_pairs_n, replace=False))]
    if len(tt) >= 2:
        dt = np.sqrt(_sq_dists(tt, tt)) * scale
        train_pairwise = float(dt[np.triu_indices(len(tt), 1)].mean())
        np.fill_diagonal(dt, np.inf)
        ref = float(np.median(dt.min(1)))
    else:
        ref = train_pairwise = float("nan")
    out.update({
        "nn_train_mean": float(nn.mean()), "nn_train_median": float(np.median(nn)), "nn_train_min": float(nn.min()),
        "train_pairwise_nn_median": ref, "train_mean_pairwise": train_pairwise,
        "memorised_fraction": float(np.mean(nn < 0.5 * ref)) if np.isfinite(ref) else float("nan"),
    })  # fmt: skip
    return out
