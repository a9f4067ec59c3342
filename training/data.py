"""Training data: cutout stacks, preprocessing, augmentation and negative learning.

Files
    ``.npy`` stacks (memory-mapped) and FITS cubes (memory-mapped; first HDU with data),
    N×C×H×W, or N×H×W for one band; uint8 (already percentile-normalised, the HSC
    convention) or float (raw fluxes). Preprocessing is
    :func:`deepmine.inference.preprocess.prepare_batch` with the model's own spec — the same
    call the scanner makes, so training and scanning see identical inputs. A set may mix uint8
    and float files: :meth:`CutoutSource.prepared` preprocesses each file's rows on their own,
    so every row is normalised exactly once, as the scanner normalises it.

Negative learning (seed 4.2)
    An epoch walks over the positives in a random order; every positive in a minibatch is
    paired with ``negatives_per_positive`` random draws from the negative pool (without
    replacement within an epoch while the pool lasts), so the train set changes every epoch.
    With 64 positives per batch this is LensFlow's balanced 64 + 64 batch (seed 2.3).

Augmentation
    Each image gets a random element of the symmetry group of the square (4 rotations, 4
    reflections; seed 2.2, 4.2), then, when ``shift`` is set, a random integer translation of
    up to ``shift`` pixels per axis (:func:`random_shift`: position robustness, issue 17; the
    exposed border is filled by reflection, never zeros) and, when ``crop`` is set (LensFlow:
    90), a random crop of crop×crop pixels rescaled bilinearly to the input size (seed 2.2:
    90×90 → 100×100). Positives and negatives get the same treatment, and all of it runs on
    the preprocessed arrays, so it applies to real cutout stacks exactly as to crafted ones.

All randomness comes from one ``numpy.random.Generator`` per epoch, seeded by
(seed, phase, epoch), so an epoch's batches do not depend on what ran before it: a resumed run
draws exactly what the uninterrupted run drew.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepmine.inference.errors import InputError, file_error
from deepmine.inference.formats import STACK_SUFFIXES, open_stack
from deepmine.inference.metadata import file_sha256
from deepmine.inference.preprocess import percentile_normalization, prepare_batch

SUFFIXES = STACK_SUFFIXES


def open_cutouts(path: str | os.PathLike, what: str = "cutouts") -> np.ndarray:
    """Open a stack of cutouts as an N×C×H×W array (memory-mapped where possible); any number
    of bands. :func:`deepmine.inference.formats.open_stack` with ``what`` (e.g.
    ``"--positives"``) naming the option in the messages."""
    return open_stack(path, f"{what} file", channels=None)


def describe_file(path: str | os.PathLike, arr: np.ndarray) -> dict:
    """Provenance of a data file: path, sha256 of its bytes, shape, dtype."""
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "shape": list(arr.shape), "dtype": str(arr.dtype)}


@dataclass
class CutoutSource:
    """Rows of one or more cutout arrays, addressed as one sequence."""

    arrays: list
    names: list

    def __post_init__(self):
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def image_shape(self) -> tuple:
        return tuple(self.arrays[0].shape[1:])

    def _groups(self, index: np.ndarray):
        """(array number, positions in ``index``, sorted rows of that array) for every array ``index`` hits."""
        which = np.searchsorted(self.offsets, index, side="right") - 1
        for k in range(len(self.arrays)):
            sel = np.nonzero(which == k)[0]
            if sel.size:
                rows = index[sel] - self.offsets[k]
                order = np.argsort(rows, kind="stable")  # sorted reads are kinder to memmaps
                yield k, sel[order], rows[order]

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats allowed) as one in-memory array.

        When any array is uint8 (already percentile-normalised, the HSC convention), the rows
        come back as uint8 and the rows of float arrays are percentile-normalised on their own
        (:func:`deepmine.inference.preprocess.percentile_normalization`, 0.5/99.5 %, as the
        scanner normalises a float cutout), so no uint8 row is normalised a second time by a
        later :func:`prepare_batch`. Otherwise the common dtype of the arrays.
        """
        index = np.asarray(index, dtype=np.int64)
        dtypes = [a.dtype for a in self.arrays]
        as_uint8 = any(d == np.uint8 for d in dtypes) and any(d != np.uint8 for d in dtypes)
        dtype = np.uint8 if as_uint8 else np.result_type(*dtypes)
        out = np.empty((index.size,) + self.image_shape, dtype=dtype)
        for k, at, rows in self._groups(index):
            x = self.arrays[k][rows]
            out[at] = percentile_normalization(x) if as_uint8 and x.dtype != np.uint8 else x
        return out

    def prepared(self, index: np.ndarray, spec: dict) -> np.ndarray:
        """Rows ``index`` as the model's float32 input: each array's rows through
        :func:`prepare_batch` with ``spec`` on their own (uint8 / 255; float normalised as the
        spec says), so every row is exactly what the scanner makes of that row alone, whatever
        the other arrays of the source hold."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((index.size,) + self.image_shape, dtype=np.float32)
        for k, at, rows in self._groups(index):
            out[at] = prepare_batch(np.asarray(self.arrays[k][rows]), spec)
        return out


def make_source(items: list[tuple[str, np.ndarray]], channels=None, input_shape=None, what: str = "data") -> CutoutSource:
    """Combine arrays into one source; select ``channels``; check they fit ``input_shape`` (C,H,W)."""
    arrays, names = [], []
    for name, arr in items:
        if channels:
            if max(channels) >= arr.shape[1] or min(channels) < 0:
                raise file_error(name, f"channels {list(channels)} requested but the cutouts have {arr.shape[1]} band(s)")
            arr = arr[:, list(channels)] if list(channels) != list(range(arr.shape[1])) else arr
        if input_shape is not None and tuple(arr.shape[1:]) != tuple(input_shape):
            raise file_error(
                name,
                f"cutouts are {'×'.join(map(str, arr.shape[1:]))} but the model takes "
                f"{'×'.join(map(str, input_shape))} (C×H×W); choose data.channels or the model's in_channels/size",
            )
        arrays.append(arr)
        names.append(name)
    if not arrays:
        raise InputError(f"{what}: no cutout files given")
    return CutoutSource(arrays, names)


def split_indices(n: int, test_fraction: float, rng: np.random.Generator, max_test: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random train/test split of ``n`` items; at least one of each when n ≥ 2 and fraction > 0."""
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    perm = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    if max_test:
        n_test = min(n_test, int(max_test))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# --------------------------------------------------------------------------------------
# augmentation (numpy, on preprocessed float32 N×C×H×W)
# --------------------------------------------------------------------------------------
def apply_symmetry(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Apply element ``k[i]`` (0..7) of the square's symmetry group to image ``i``.

    0–3: rotation by k·90°; 4–7: transpose (reflection in the diagonal) then rotation by
    (k−4)·90°, which gives the vertical, anti-diagonal and horizontal reflections too.
    Needs square images for k odd or ≥ 4.
    """
    out = np.empty_like(x)
    for g in range(8):
        sel = np.nonzero(k == g)[0]
        if sel.size == 0:
            continue
        y = x[sel]
        if g >= 4:
            y = np.swapaxes(y, -1, -2)
        out[sel] = np.rot90(y, g % 4, axes=(-2, -1))
    return out


def random_symmetry(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random element of the square's symmetry group per image (seed 2.2, 4.2)."""
    if x.shape[-1] != x.shape[-2]:
        raise InputError(f"symmetry augmentation needs square cutouts, got {x.shape[-2]}×{x.shape[-1]}")
    return apply_symmetry(x, rng.integers(0, 8, size=x.shape[0]))


def random_crop_rescale(x: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """Random ``crop``×``crop`` window per image, rescaled bilinearly to the image size (seed 2.2).

    Bilinear resampling with half-pixel centres (``align_corners=False``), no antialiasing.
    """
    n, c, h, w = x.shape
    if not 1 <= crop <= min(h, w):
        raise InputError(f"data.crop must be between 1 and the cutout size {min(h, w)}, got {crop}")
    if crop == h == w:
        return x
    oy = rng.integers(0, h - crop + 1, size=n)
    ox = rng.integers(0, w - crop + 1, size=n)
    # sample positions (in crop pixels) of the output grid
    sy = (np.arange(h) + 0.5) * crop / h - 0.5
    sx = (np.arange(w) + 0.5) * crop / w - 0.5
    sy = np.clip(sy, 0, crop - 1)
    sx = np.clip(sx, 0, crop - 1)
    y0 = np.floor(sy).astype(np.int64)
    x0 = np.floor(sx).astype(np.int64)
    y1 = np.minimum(y0 + 1, crop - 1)
    x1 = np.minimum(x0 + 1, crop - 1)
    wy = (sy - y0).astype(np.float32)[:, None]
    wx = (sx - x0).astype(np.float32)[None, :]
    out = np.empty_like(x)
    for i in range(n):
        win = x[i, :, oy[i] : oy[i] + crop, ox[i] : ox[i] + crop]
        top = win[:, y0][:, :, x0] * (1 - wx) + win[:, y0][:, :, x1] * wx
        bot = win[:, y1][:, :, x0] * (1 - wx) + win[:, y1][:, :, x1] * wx
        out[i] = top * (1 - wy) + bot * wy
    return out


def shift_images(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Translate image ``i`` by (``dy[i]``, ``dx[i]``) whole pixels, filling the exposed border by
    reflection.

    Content moves the way :func:`numpy.roll` moves it (``dy`` > 0: down, towards larger row
    indices; ``dx`` > 0: right), so away from the border the result equals
    ``np.roll(x[i], (dy[i], dx[i]), axis=(-2, -1))``. The strip that the shift uncovers is the
    mirror image of the pixels just inside the edge (``np.pad`` mode ``"reflect"``: the edge
    pixel itself is not repeated). Reflection keeps the sky's level, noise and texture in the
    strip; a constant fill (zeros, or any other value) would not occur in a real cutout and
    would give the classifier a border to key on. Vectorised: one reflect-pad of the batch, then
    one slice copy per distinct shift (at most (2·limit + 1)² of them, as :func:`apply_symmetry`
    loops over the 8 group elements). ``limit`` is the padding (default: the largest |shift|);
    it must be smaller than the image side.
    """
    n, _, h, w = x.shape
    dy = np.asarray(dy, dtype=np.int64).reshape(n)
    dx = np.asarray(dx, dtype=np.int64).reshape(n)
    s = int(limit) if limit is not None else int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    if s == 0:
        return x
    if s >= min(h, w) or np.abs(dy).max(initial=0) > s or np.abs(dx).max(initial=0) > s:
        raise InputError(f"data.shift must be smaller than the cutout size {min(h, w)}, got {s}")
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)), mode="reflect")
    out = np.empty_like(x)
    key = (dy + s) * (2 * s + 1) + (dx + s)
    for k in np.unique(key):
        sel = np.nonzero(key == k)[0]
        oy, ox = (int(v) - s for v in divmod(int(k), 2 * s + 1))  # this group's (dy, dx)
        out[sel] = padded[sel, :, s - oy : s - oy + h, s - ox : s - ox + w]
    return out


def random_shift(x: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """A random integer translation per image, uniform in −``shift``..``shift`` on each axis.

    The exposed border is filled by reflection (:func:`shift_images`). Whole pixels only: a
    sub-pixel shift would have to interpolate, which smooths the noise and so marks the shifted
    images (lower pixel-to-pixel variance) — sub-pixel offsets come from the data instead
    (LensCrafter's ``offset_lenses`` moves whole lenses by continuous amounts). ``shift`` = 0
    returns ``x`` unchanged and draws nothing from ``rng``.
    """
    shift = int(shift)
    n, _, h, w = x.shape
    if shift < 0 or (shift and shift >= min(h, w)):
        raise InputError(f"data.shift must be >= 0 and smaller than the cutout size {min(h, w)}, got {shift}")
    if shift == 0:
        return x
    d = rng.integers(-shift, shift + 1, size=(2, n))
    return shift_images(x, d[0], d[1], limit=shift)


# --------------------------------------------------------------------------------------
# negative learning
# --------------------------------------------------------------------------------------
@dataclass
class Batch:
    images: np.ndarray  # float32 N×C×H×W, preprocessed (and augmented)
    labels: np.ndarray  # int64 (N,), 1 = positive


class NegativeLearningSampler:
    """The batches of one epoch of negative learning.

    Parameters
    ----------
    positives, negatives : CutoutSource
    pos_index, neg_index : int arrays
        Rows of each source that belong to the train set (the negative pool).
    spec : dict
        The model's preprocessing spec (for :func:`prepare_batch`).
    batch_positives : int
        Positives per minibatch (LensFlow 64; each comes with its negative draw(s)).
    negatives_per_positive : int
        Negative draws per positive (1 = balanced batches).
    positives_per_epoch : int
        0: every train positive once per epoch; otherwise that many drawn (with replacement
        when larger than the positive set).
    symmetries : bool
        Random square symmetries.
    crop : int
        Random crop size rescaled to the input size (0: none).
    shift : int
        Largest random translation in whole pixels per axis (0: none); see :func:`random_shift`.
    """

    def __init__(self, positives, negatives, pos_index, neg_index, spec, batch_positives=32,
                 negatives_per_positive=1, positives_per_epoch=0, symmetries=True, crop=0, shift=0):  # fmt: skip
        if len(pos_index) == 0:
            raise InputError("no positives left for training (check data.test_fraction and the positives file)")
        if len(neg_index) == 0:
            raise InputError("no negatives left for training (check data.test_fraction and the negatives file)")
        self.positives, self.negatives = positives, negatives
        self.pos_index, self.neg_index = np.asarray(pos_index), np.asarray(neg_index)
        self.spec = spec
        self.batch_positives = int(batch_positives)
        self.negatives_per_positive = int(negatives_per_positive)
        self.positives_per_epoch = int(positives_per_epoch)
        self.symmetries = bool(symmetries)
        self.crop = int(crop)
        self.shift = int(shift)
        if self.shift < 0:
            raise InputError(f"data.shift must be >= 0, got {shift}")
        if self.batch_positives < 1 or self.negatives_per_positive < 1 or self.positives_per_epoch < 0:
            raise InputError("data.batch_positives and data.negatives_per_positive must be >= 1, positives_per_epoch >= 0")

    def n_positives(self) -> int:
        return self.positives_per_epoch or len(self.pos_index)

    def __len__(self) -> int:
        return -(-self.n_positives() // self.batch_positives)

    def plan(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """(positive rows, negative rows) of every batch of an epoch."""
        n = self.n_positives()
        if self.positives_per_epoch and n > len(self.pos_index):
            pos = self.pos_index[rng.integers(0, len(self.pos_index), size=n)]
        else:
            pos = self.pos_index[rng.permutation(len(self.pos_index))[:n]]
        m = n * self.negatives_per_positive
        pool = len(self.neg_index)
        if m <= pool:
            neg = self.neg_index[rng.choice(pool, size=m, replace=False)]
        else:
            neg = self.neg_index[rng.integers(0, pool, size=m)]
        bp, k = self.batch_positives, self.negatives_per_positive
        return [(pos[i : i + bp], neg[i * k : (i + bp) * k]) for i in range(0, n, bp)]

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        """Preprocessed, augmented batches of one epoch (all draws from ``rng``)."""
        for pos, neg in self.plan(rng):
            x = np.concatenate([self.positives.prepared(pos, self.spec), self.negatives.prepared(neg, self.spec)])
            y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
            if self.symmetries:
                x = random_symmetry(x, rng)
            if self.shift:
                x = random_shift(x, self.shift, rng)
            if self.crop:
                x = random_crop_rescale(x, self.crop, rng)
            yield Batch(np.ascontiguousarray(x, dtype=np.float32), y)


def eval_batches(source: CutoutSource, index: np.ndarray, spec: dict, batch_size: int = 256) -> Iterator[np.ndarray]:
    """Preprocessed float32 batches of ``source`` rows ``index`` in order (no augmentation)."""
    index = np.asarray(index)
    for i in range(0, len(index), batch_size):
        yield source.prepared(index[i : i + batch_size], spec)


# --------------------------------------------------------------------------------------
# a generic two-class set for pre-training (phase 0)
# --------------------------------------------------------------------------------------
def generic_two_class(n: int, shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A generic two-class image set for LensFlow's pre-training phase (seed 2.3).

    The seed pre-trains on two CIFAR classes, which cannot be downloaded here. This set
    teaches the same generic skill — extracting shapes from soft-edged images with a dominant
    central object — without any lens physics: class 1 images hold 1–3 thin curved strokes
    (circle segments of random radius, centre, width and extent), class 0 images 1–3 smooth
    elliptical blobs; both have a bright central blob and Gaussian noise. Users point phase 0
    at their own two-class set instead by giving ``positives``/``negatives`` in the phase.

    Returns
    -------
    (class 1, class 0) float32 arrays of shape (n, C, H, W), arbitrary flux units.
    """
    c, h, w = (int(v) for v in shape)
    rng = np.random.default_rng([int(seed), 0x6E6E])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy = (yy - (h - 1) / 2) / (h / 2)
    xx = (xx - (w - 1) / 2) / (w / 2)

    def blob(cx, cy, sx, sy, ang):
        ca, sa = np.cos(ang), np.sin(ang)
        u = (xx - cx) * ca + (yy - cy) * sa
        v = -(xx - cx) * sa + (yy - cy) * ca
        return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))

    def make(curves: bool) -> np.ndarray:
        out = np.empty((n, c, h, w), np.float32)
        for i in range(n):
            img = rng.uniform(0.5, 2.0) * blob(*rng.normal(0, 0.05, 2), *rng.uniform(0.06, 0.2, 2), rng.uniform(0, np.pi))
            for _ in range(rng.integers(1, 4)):
                amp = rng.uniform(0.2, 0.8)
                if curves:
                    cx, cy = rng.normal(0, 0.2, 2)
                    r = rng.uniform(0.25, 0.8)
                    width = rng.uniform(0.02, 0.06)
                    a0, extent = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 3.5)
                    rad = np.hypot(xx - cx, yy - cy)
                    ang = np.mod(np.arctan2(yy - cy, xx - cx) - a0, 2 * np.pi)
                    img = img + amp * np.exp(-0.5 * ((rad - r) / width) ** 2) * (ang < extent)
                else:
                    img = img + amp * blob(*rng.uniform(-0.6, 0.6, 2), *rng.uniform(0.05, 0.25, 2), rng.uniform(0, np.pi))
            for b in range(c):
                out[i, b] = img * rng.uniform(0.8, 1.2) + rng.normal(0, 0.03, (h, w))
        return out

    return make(True), make(False)
