"""EZnet (seed 4.5, Table 4.1/4.2, Figure 3.5): a chain of densely connected blocks built
from a table.

Block table
-----------
One row per group of identical blocks::

    kernels   convolution filters of each block (C of "C×k×k")
    kernel    convolution kernel size k (square, no padding)
    height, width   output size of each block's feature maps (the resize target)
    repeat    how many consecutive blocks the row describes (default 1)
    branching b: after the block, only the feature maps made by the last b blocks are kept
              (the network input counts as the maps of "block 0"); default: the model's
              ``branching`` (2, the value of the seed's Figure 3.5)
    concat    whether the kept inputs are concatenated with the convolution output (default
              true; false keeps only the block's own output)

Block i, given the kept maps ``x`` (all of one size): ``y = conv(tanh(BatchNorm(x)))``; the
oldest maps are dropped so that only those of the last b blocks remain (``y`` included);
every kept map is resized to the block's H×W by bilinear interpolation (``antialias=False``,
``align_corners=False``; resizing to 1×1 exports to ONNX on the dynamo path); the result is
their concatenation. The convolution has no padding: its output is resized like the rest,
which avoids the asymmetric padding that even kernels (4×4 in block 2) would need.

After the last block: flatten → linear (``hidden``) → ReLU → linear 2 → two sigmoids
(negative, positive). ``forward`` returns the two raw scores (N, 2) before the sigmoids; the
loss is binary cross-entropy of each sigmoid against the one-hot label (the seed's
"cross-entropy" with two sigmoid neurons), and the positive-class logit is ``s1``.

The default table is the seed's (Table 4.1, for 3×64×64 HSC cutouts): block 1 16×5×5 → 50²,
block 2 12×4×4 → 40², block 3 12×3×3 → 32², block 4 → 24², blocks 5–10 → 16², 11–20 → 12²,
21–40 → 8², 41–50 32×1×1 → 1². The seed gives no branching rate for it; 2 is used (its
Figure 3.5 example). Preprocessing: per-band percentile normalisation (seed 4.1).

The same table ships as ``deepmine/training/tables/eznet_hsc64.toml``, to copy and edit.
A user table is a TOML file (``[[block]]`` rows with the keys above, ``size = 16`` or
``size = [16, 16]`` allowed instead of height/width; optional top-level ``branching``,
``hidden``, ``in_channels``, ``size`` apply to the model) or an ECSV table with those columns.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deepmine.inference.errors import InputError, file_error, first_line
from deepmine.inference.formats import HSC_BANDS

from .registry import register_model

HSC_PIXEL_SCALE = 0.168

#: Seed Table 4.1 (rows grouped with ``repeat``).
DEFAULT_TABLE: list[dict[str, Any]] = [
    {"kernels": 16, "kernel": 5, "height": 50, "width": 50, "repeat": 1},
    {"kernels": 12, "kernel": 4, "height": 40, "width": 40, "repeat": 1},
    {"kernels": 12, "kernel": 3, "height": 32, "width": 32, "repeat": 1},
    {"kernels": 12, "kernel": 3, "height": 24, "width": 24, "repeat": 1},
    {"kernels": 12, "kernel": 3, "height": 16, "width": 16, "repeat": 6},
    {"kernels": 12, "kernel": 3, "height": 12, "width": 12, "repeat": 10},
    {"kernels": 12, "kernel": 3, "height": 8, "width": 8, "repeat": 20},
    {"kernels": 32, "kernel": 1, "height": 1, "width": 1, "repeat": 10},
]

_ROW_KEYS = {"kernels", "kernel", "height", "width", "size", "repeat", "branching", "concat"}
_MODEL_KEYS = {"branching", "hidden", "in_channels", "size", "bands", "pixel_scale"}


def _int_field(row: dict, key: str, where: str, minimum: int = 1, default=None) -> int:
    value = row.get(key, default)
    if value is None:
        raise InputError(f"{where}: missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__index__"):
        raise InputError(f"{where}: {key} must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise InputError(f"{where}: {key} must be an integer, got {value!r}")
    iv = int(value)
    if iv < minimum:
        raise InputError(f"{where}: {key} must be >= {minimum}, got {value!r}")
    return iv


def normalize_table(rows, source: str = "block table") -> list[dict[str, Any]]:
    """Check a block table and return it as a list of complete row dicts.

    Each returned row has ``kernels, kernel, height, width, repeat`` (ints), ``branching``
    (int or None = model default) and ``concat`` (bool).
    """
    if isinstance(rows, dict) or not hasattr(rows, "__iter__") or isinstance(rows, (str, bytes)):
        raise InputError(f"{source}: expected a list of block rows")
    out = []
    for i, row in enumerate(rows, 1):
        where = f"{source}, row {i}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a table of block fields, got {row!r}")
        unknown = sorted(set(row) - _ROW_KEYS)
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_ROW_KEYS))}")
        r = dict(row)
        if "size" in r:
            if "height" in r or "width" in r:
                raise InputError(f"{where}: give either size or height/width, not both")
            size = r.pop("size")
            if isinstance(size, (list, tuple)):
                if len(size) != 2:
                    raise InputError(f"{where}: size must be an integer or [height, width], got {size!r}")
                r["height"], r["width"] = size
            else:
                r["height"] = r["width"] = size
        concat = r.get("concat", True)
        if not isinstance(concat, bool):
            if str(concat).lower() in ("true", "1", "yes"):
                concat = True
            elif str(concat).lower() in ("false", "0", "no"):
                concat = False
            else:
                raise InputError(f"{where}: concat must be true or false, got {concat!r}")
        branching = r.get("branching")
        out.append({
            "kernels": _int_field(r, "kernels", where),
            "kernel": _int_field(r, "kernel", where),
            "height": _int_field(r, "height", where),
            "width": _int_field(r, "width", where),
            "repeat": _int_field(r, "repeat", where, default=1),
            "branching": None if branching is None else _int_field(r, "branching", where),
            "concat": concat,
        })  # fmt: skip
    if not out:
        raise InputError(f"{source}: the table has no blocks")
    return out


def read_block_table(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read a block table from TOML (``[[block]]`` rows) or ECSV.

    Returns the normalised rows and the model options found beside them (TOML top-level keys
    ``branching``, ``hidden``, ``in_channels``, ``size``, ``bands``, ``pixel_scale``; ECSV meta).
    """
    p = Path(path)
    if not p.is_file():
        raise file_error(p, "EZnet block table not found")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise file_error(p, f"not valid TOML ({exc})") from None
        if "block" not in data:
            raise file_error(p, "no [[block]] rows; each block is a [[block]] table with kernels, kernel, size")
        options = {k: v for k, v in data.items() if k != "block"}
        rows = data["block"]
    elif suffix == ".ecsv":
        from astropy.table import Table

        try:
            table = Table.read(p, format="ascii.ecsv")
        except Exception as exc:  # noqa: BLE001 - astropy raises many types for bad files
            raise file_error(p, f"not a readable ECSV table ({first_line(exc)})") from None
        rows = []
        for rec in table:
            row = {}
            for name in table.colnames:
                v = rec[name]
                if hasattr(v, "mask") and bool(getattr(v, "mask", False)):
                    continue
                row[name] = v.item() if hasattr(v, "item") else v
            rows.append(row)
        options = dict(table.meta or {})
    else:
        raise file_error(p, "EZnet block table must be .toml or .ecsv")
    unknown = sorted(set(options) - _MODEL_KEYS)
    if unknown:
        raise file_error(p, f"unknown option(s) {', '.join(unknown)}; allowed beside the blocks: {', '.join(sorted(_MODEL_KEYS))}")
    return normalize_table(rows, str(p)), options


def expand_table(rows: list[dict[str, Any]], branching: int) -> list[dict[str, Any]]:
    """One dict per block (``repeat`` expanded, ``branching`` filled with the default)."""
    blocks = []
    for r in rows:
        for _ in range(r["repeat"]):
            blocks.append({
                "kernels": r["kernels"], "kernel": r["kernel"], "height": r["height"], "width": r["width"],
                "branching": branching if r["branching"] is None else r["branching"], "concat": r["concat"],
            })  # fmt: skip
    return blocks


class EZBlock(nn.Module):
    """One EZnet block: BatchNorm → tanh → conv on the kept maps; drop the oldest; resize."""

    def __init__(self, in_channels: int, kernels: int, kernel: int, height: int, width: int, drop: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, kernels, kernel)
        self.size = (height, width)
        self.drop = drop  # leading input channels removed (maps of blocks beyond the branching rate)
        self.keep_input = drop < in_channels

    def _resize(self, t: torch.Tensor) -> torch.Tensor:
        if tuple(t.shape[-2:]) == self.size:
            return t
        return F.interpolate(t, size=self.size, mode="bilinear", align_corners=False, antialias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._resize(self.conv(torch.tanh(self.bn(x))))
        if not self.keep_input:
            return y
        return torch.cat([self._resize(x[:, self.drop :]), y], dim=1)


@register_model("eznet")
class EZnet(nn.Module):
    """EZnet classifier built from a block table (seed 4.5).

    Parameters
    ----------
    table : list of row dicts, or path (str) to a TOML/ECSV table, or None
        The block table (see the module docstring); default: the seed's 50-block table.
    in_channels : int
        Input bands (3: i, r, g).
    size : int or [int, int]
        Input height and width in pixels (64).
    branching : int
        Default branching rate b for rows that do not give one (2).
    hidden : int
        Width of the first fully connected layer (64).
    bands : list[str] or None
        Band per channel (default ``["i", "r", "g"]`` for 3 channels).
    pixel_scale : float
        Arcsec per pixel (0.168, HSC).
    low, high : float
        Percentiles of the per-band normalisation (0.5, 99.5).
    """

    architecture = "eznet"

    def __init__(
        self,
        table=None,
        in_channels: int | None = None,
        size=None,
        branching: int | None = None,
        hidden: int | None = None,
        bands=None,
        pixel_scale: float | None = None,
        low: float = 0.5,
        high: float = 99.5,
    ):
        super().__init__()
        file_options: dict[str, Any] = {}
        if table is None:
            rows = normalize_table(DEFAULT_TABLE, "default EZnet table")
        elif isinstance(table, (str, os.PathLike)):
            rows, file_options = read_block_table(table)
        else:
            rows = normalize_table(table, "EZnet table")

        def pick(name, value, default):
            return value if value is not None else file_options.get(name, default)

        in_channels = _int_field({"in_channels": pick("in_channels", in_channels, 3)}, "in_channels", "eznet")
        size = pick("size", size, 64)
        if isinstance(size, (list, tuple)):
            if len(size) != 2:
                raise InputError(f"eznet: size must be an integer or [height, width], got {size!r}")
            h0, w0 = (_int_field({"size": s}, "size", "eznet") for s in size)
        else:
            h0 = w0 = _int_field({"size": size}, "size", "eznet")
        branching = _int_field({"branching": pick("branching", branching, 2)}, "branching", "eznet")
        hidden = _int_field({"hidden": pick("hidden", hidden, 64)}, "hidden", "eznet")
        bands = pick("bands", bands, None)
        if bands is None:
            bands = list(HSC_BANDS) if in_channels == 3 else (["i"] if in_channels == 1 else [f"b{i}" for i in range(in_channels)])
        bands = [str(b) for b in bands]
        if len(bands) != in_channels:
            raise InputError(f"eznet: {len(bands)} band names for {in_channels} input channels")
        pixel_scale = float(pick("pixel_scale", pixel_scale, HSC_PIXEL_SCALE))
        if not 0.0 <= float(low) < float(high) <= 100.0:
            raise InputError(f"eznet: percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")

        groups = [in_channels]  # channels of the kept maps, oldest first (input = block 0)
        h, w = h0, w0
        blocks = []
        self.block_shapes: list[tuple[int, int, int]] = []
        for i, b in enumerate(expand_table(rows, branching), 1):
            if b["kernel"] > h or b["kernel"] > w:
                raise InputError(
                    f"eznet: block {i} has a {b['kernel']}×{b['kernel']} kernel but its input is only {h}×{w}; "
                    "shrink the kernel or the previous block's size"
                )
            cin = sum(groups)
            new = (groups + [b["kernels"]]) if b["concat"] else [b["kernels"]]
            kept = new[-b["branching"] :]
            dropped_inputs = len(new) - len(kept)  # leading groups removed (all from the input)
            drop = sum(groups[:dropped_inputs]) if b["concat"] else cin
            blocks.append(EZBlock(cin, b["kernels"], b["kernel"], b["height"], b["width"], drop))
            groups = kept
            h, w = b["height"], b["width"]
            self.block_shapes.append((sum(groups), h, w))
        self.blocks = nn.Sequential(*blocks)
        flat = sum(groups) * h * w
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, 2))

        self.deepmine_overrides = {
            "table": rows, "in_channels": in_channels, "size": [h0, w0], "branching": branching,
            "hidden": hidden, "bands": bands, "pixel_scale": pixel_scale, "low": float(low), "high": float(high),
        }  # fmt: skip
        self.deepmine_config = {
            "architecture": "eznet",
            "task": "classifier",
            "architecture_config": {
                "table": rows, "branching": branching, "hidden": hidden, "n_blocks": len(blocks),
                "interpolation": "bilinear", "conv_padding": 0,
            },  # fmt: skip
            "input_shape": [in_channels, h0, w0],
            "bands": bands,
            "pixel_scale": pixel_scale,
            "preprocessing": {"kind": "percentile", "low": float(low), "high": float(high)},
        }

    def feature_parameters(self):
        return self.blocks.parameters()

    def head_parameters(self):
        return self.head.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores (N, 2) of the two sigmoid neurons (negative, positive)."""
        return self.head(self.blocks(x))

    @staticmethod
    def positive_logit(scores: torch.Tensor) -> torch.Tensor:
        """Positive-class log-odds: the positive sigmoid neuron's input ``s1`` (N,)."""
        return scores[:, 1]

    @staticmethod
    def loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of both sigmoid neurons against the one-hot labels."""
        target = F.one_hot(labels.long(), 2).to(scores.dtype)
        return F.binary_cross_entropy_with_logits(scores, target)
