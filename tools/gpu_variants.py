"""Make the GPU deployment variants of exported classifiers, for tools/gpu_check.py.

    python tools/gpu_variants.py OUTDIR [MODEL.onnx ...]

For each model (default: the bundled one) writes ``NAME-fp32-float.onnx`` (a copy),
``NAME-fp16-float.onnx`` (float16 arithmetic, float32 input), ``NAME-fp32-uint8.onnx`` and
``NAME-fp16-uint8.onnx`` (normalised uint8 cutouts in, divided by 255 inside the graph; only
for percentile preprocessing — LensFlow's histogram matching is not a division), each
restamped with its metadata (precision, ``preprocessing.graph_input``) — the same graph rewrites
``deepmine export --fp16`` and ``--graph-input uint8`` apply to a checkpoint, here applied to an
existing ONNX file. With ``--lensflow`` it also exports an untrained LensFlow (weights do not
matter for a scan rate; needs torch). Parity of each variant with its float32 original is
printed (max |Δ logit| on 256 random uint8 cutouts, CPU provider).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx

from deepmine.export.exporter import stamp
from deepmine.export.graph import prepend_uint8_input
from deepmine.export.precision import convert_fp16
from deepmine.inference.metadata import read_metadata
from deepmine.inference.model import load_model, resolve_model_path


def variants(path: Path, out: Path, name: str) -> list[Path]:
    meta, _ = read_metadata(path)
    base = onnx.load(str(path))
    written = []
    for precision in ("fp32", "fp16"):
        proto = base if precision == "fp32" else convert_fp16(base)[0]
        inputs = ("float", "uint8") if meta.preprocessing.get("kind") == "percentile" else ("float",)
        for graph_input in inputs:
            target = out / f"{name}-{precision}-{graph_input}.onnx"
            if precision == "fp32" and graph_input == "float":
                shutil.copyfile(path, target)
            else:
                p = prepend_uint8_input(proto) if graph_input == "uint8" else proto
                m = type(meta).from_json(meta.to_json())
                m.precision = precision
                if graph_input == "uint8":
                    m.preprocessing = {**m.preprocessing, "graph_input": "uint8"}
                target.write_bytes(stamp(p, m).SerializeToString())
            written.append(target)
    x = np.random.default_rng(0).integers(0, 256, (256, *meta.input_shape)).astype(np.uint8)
    ref = load_model(written[0], device="cpu").predict(x)[0]
    for w in written[1:]:
        d = np.max(np.abs(load_model(w, device="cpu").predict(x)[0] - ref))
        print(f"{w.name}: max |Δ logit| vs fp32 float = {d:.2e}")
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--lensflow", action="store_true", help="also an untrained LensFlow export (needs torch)")
    ap.add_argument("--only-lensflow", action="store_true", help="with --lensflow: not the other models")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for m in [] if a.only_lensflow else a.models or [resolve_model_path(None)]:
        variants(m, a.out, "eznet" if not a.models else m.stem)
    if a.lensflow:
        import torch

        from deepmine.export import export_checkpoint
        from deepmine.training import create_model
        from deepmine.training.checkpoint import save_checkpoint

        torch.manual_seed(0)
        ckpt = save_checkpoint(a.out / "lensflow-untrained.pt", create_model("lensflow"),
                               {"recipe_name": "untrained (rate only)", "seed": 0})
        lf = export_checkpoint(ckpt, a.out / "lensflow.onnx", check=False)
        variants(lf, a.out, "lensflow")
        lf.unlink()
        ckpt.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
