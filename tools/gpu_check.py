"""The GPU scanner, checked and timed in one run (issue 23): correctness, then scan rates.

    python tools/gpu_check.py OUTDIR [--device cuda] [--budget SECONDS] [--quick]

Steps, each written to OUTDIR/gpu_check.json as it finishes (so a run stopped at its time
limit still leaves what it measured):

1. ``providers``: :func:`deepmine.inference.session.provider_report` (distributions, providers).
2. ``variants``: the bundled EZnet as fp32/fp16 × float/uint8 graph input, and an untrained
   LensFlow (fp32/fp16), made by tools/gpu_variants.py.
3. ``parity``: the demo survey (3,000 non-lens scenes + 200 lenses, LensCrafter, seed 0)
   scanned with :func:`deepmine.inference.scan.scanner.scan` on ``--device`` and on the CPU: the
   provider recorded, max |Δ logit| against the CPU scan of the same model, RP of each, ΔRP.
4. ``bare``: the session alone — input already on the device (an OrtValue), outputs kept
   there (IOBinding), for each variant × batch 256…8192.
5. ``end_to_end``: :func:`scan` of a memory-mapped uint8 ``.npy`` (65,536 cutouts) and of a
   float32 flux ``.npy`` (16,384 cutouts, percentile-normalised on the CPU), catalogue and all,
   the rate the scan summary reports; ratio to the bare rate of the same variant and batch.
6. ``torch``: torch eager on the same device (EZnet and LensFlow of the same configurations,
   fp32 and autocast fp16) from uint8 tensors already on the device.
7. ``cpu``: the CPU provider's end-to-end rate on the same file, for the ratio.

With ``--device cpu`` (and ``--quick``) the same script runs on a machine without a GPU — that
is how it is tested before GPU time is spent.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS: dict = {}


def save(out: Path, key: str, value) -> None:
    RESULTS[key] = value
    (out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    print(f"[{time.strftime('%H:%M:%S')}] {key}: {json.dumps(value, default=str)[:1500]}", flush=True)


def rp_of(logit: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(logit)
    return float(2 * roc_auc_score(labels[ok], logit[ok]) - 1)


def bare_rate(path: Path, device: str, batch: int, seconds: float) -> float:
    """Cutouts/s of the session alone: device-resident input and outputs (IOBinding)."""
    from deepmine.inference.model import load_model
    from deepmine.inference.throughput import session_rate

    return session_rate(load_model(path, device=device), batch, seconds)


def scan_rate(stack: Path, model: Path, device: str, batch: int, work: Path, threads=None) -> dict:
    from deepmine.inference.scan.scanner import scan

    out = work / f"scan-{model.stem}-{device}-{batch}.fits"
    t0 = time.perf_counter()
    r = scan([str(stack)], str(model), str(out), device=device, batch_size=batch, threads=threads,
             top=None, mosaic=None, overwrite=True)
    wall = time.perf_counter() - t0
    return {"rate": r.rate, "wall_rate": r.n_objects / wall, "n": r.n_objects, "provider": r.provider,
            "table": r.table}


def torch_rates(arch_config: dict, device: str, batches, seconds: float) -> list[dict]:
    import torch

    from deepmine.training import create_model

    rows = []
    eznet = {k: v for k, v in arch_config.items() if k in ("table", "branching", "hidden")}
    for arch, cfg in (("eznet", eznet), ("lensflow", {})):
        net = create_model(arch, **cfg).to(device).eval()
        shape = tuple(net.deepmine_config["input_shape"])
        for batch in batches:
            x8 = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, device=device)
            for precision in ("fp32", "fp16"):
                def once(net=net, x8=x8, half=precision == "fp16" and device == "cuda"):
                    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.float16, enabled=half):
                        net(x8.float().div_(255.0))
                for _ in range(3):
                    once()
                if device == "cuda":
                    torch.cuda.synchronize()
                runs, t0 = 0, time.perf_counter()
                while runs < 3 or time.perf_counter() - t0 < seconds:
                    once()
                    runs += 1
                if device == "cuda":
                    torch.cuda.synchronize()
                rows.append({"arch": arch, "precision": precision, "batch": batch,
                             "rate": batch * runs / (time.perf_counter() - t0)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU dry run)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"))
    ap.add_argument("--skip", default="", help="comma-separated steps to skip (lensflow, torch, cpu, ...)")
    ap.add_argument("--steps", default="providers,variants,parity,bare,end_to_end,torch,cpu",
                    help="comma-separated steps to run; results of earlier runs in OUTDIR are kept")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    steps = set(filter(None, a.steps.split(","))) - skip
    if (a.out / "gpu_check.json").exists():
        RESULTS.update(json.loads((a.out / "gpu_check.json").read_text()))
    quick = a.quick
    batches = (64, 256) if quick else (256, 1024, 4096, 8192)
    seconds = 0.3 if quick else 1.5
    n_e2e = 2048 if quick else 65536
    n_flux = 512 if quick else 16384

    from deepmine.inference.metadata import read_metadata
    from deepmine.inference.session import provider_report

    if "providers" in steps:
        save(a.out, "providers", provider_report())
    import gpu_variants

    vdir = a.work / "variants"
    vdir.mkdir(exist_ok=True)
    if "variants" in steps:
        t0 = time.perf_counter()
        gpu_variants.variants(gpu_variants.resolve_model_path(None), vdir, "eznet")
        if "lensflow" not in skip:
            gpu_variants.main([str(vdir), "--lensflow", "--only-lensflow"])
        save(a.out, "variants", {"files": sorted(v.name for v in vdir.glob("*.onnx")),
                                 "seconds": time.perf_counter() - t0})
    order = ["eznet-fp32-float", "eznet-fp32-uint8", "eznet-fp16-float", "eznet-fp16-uint8",
             "lensflow-fp32-float", "lensflow-fp16-float"]
    variants = [vdir / f"{n}.onnx" for n in order if (vdir / f"{n}.onnx").exists()]

    # 3. parity on the demo survey
    if "parity" in steps:
        parity_step(a, variants, quick)
    if "bare" in steps:
        bare = []
        for v in variants:
            for b in batches:
                bare.append({"model": v.name, "batch": b, "rate": bare_rate(v, a.device, b, seconds)})
                save(a.out, "bare", bare)
    if "end_to_end" in steps:
        end_to_end_step(a, variants, batches, n_e2e, n_flux)
    meta, _ = read_metadata(variants[0])
    if "torch" in steps:
        try:
            save(a.out, "torch", torch_rates(meta.architecture_config, a.device, batches[1:], seconds))
        except Exception as exc:  # noqa: BLE001 - a measurement, not a product path
            save(a.out, "torch", {"error": repr(exc)})
    if a.device != "cpu" and "cpu" in steps:
        stack = _stack(a.work, tuple(meta.input_shape), n_e2e)
        small = a.work / "stack_uint8_small.npy"
        np.save(small, np.load(stack, mmap_mode="r")[:8192])
        r = scan_rate(small, variants[0], "cpu", 256, a.work)
        save(a.out, "cpu", {"model": variants[0].name, "rate": r["rate"], "threads": os.cpu_count()})
    return 0


def parity_step(a, variants, quick: bool) -> None:
    from deepmine.lenscrafter.demo import craft_mock_survey

    (a.work / "demo").mkdir(exist_ok=True)
    survey, labels = craft_mock_survey(a.work / "demo", 600 if quick else 3000, 40 if quick else 200, 0)
    parity, ref = [], None
    devices = [a.device, "cpu"] if a.device != "cpu" else ["cpu"]
    for v in [p for p in variants if p.name.startswith("eznet")]:
        row, logits = {"model": v.name}, {}
        for dev in devices:
            r = scan_rate(survey, v, dev, 1024, a.work)
            logits[dev] = np.asarray(r["table"]["logit"], dtype=np.float64)
            row[dev] = {"provider": r["provider"], "rp": rp_of(logits[dev], labels)}
        if ref is None:  # the first variant is the fp32 float graph on the CPU: the reference
            ref = (logits["cpu"], row["cpu"]["rp"])
        row["max_abs_dlogit_vs_cpu_fp32"] = float(np.nanmax(np.abs(logits[a.device] - ref[0])))
        row["d_rp_vs_cpu_fp32"] = row[a.device]["rp"] - ref[1]
        parity.append(row)
        save(a.out, "parity", parity)


def _stack(work: Path, shape, n_e2e: int, flux: bool = False, n_flux: int = 0) -> Path:
    """A memory-mapped uint8 (or float32 flux) stack of the same bytes per cutout shape."""
    tag = "x".join(map(str, shape))
    rng = np.random.default_rng(1)
    per = int(np.prod(shape))
    if flux:
        path = work / f"stack_flux_{tag}.npy"
        if not path.exists():
            np.save(path, rng.normal(0, 1, (n_flux * 12288 // per, *shape)).astype(np.float32))
        return path
    path = work / f"stack_uint8_{tag}.npy"
    if not path.exists():
        n = n_e2e * 12288 // per
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *shape))
        for i in range(0, n, 4096):
            mm[i:i + 4096] = rng.integers(0, 256, (min(4096, n - i), *shape), dtype=np.uint8)
        mm.flush()
        del mm
    return path


def end_to_end_step(a, variants, batches, n_e2e: int, n_flux: int) -> None:
    from deepmine.inference.metadata import read_metadata

    bare_of = {(r["model"], r["batch"]): r["rate"] for r in RESULTS.get("bare", [])}
    e2e = []
    for v in variants:
        shape = tuple(read_metadata(v)[0].input_shape)
        for b in batches[1:]:
            for kind in ("uint8", "flux"):
                if kind == "flux" and "-fp32-" not in v.name:
                    continue
                f = _stack(a.work, shape, n_e2e, kind == "flux", n_flux)
                r = scan_rate(f, v, a.device, b, a.work)
                bare = bare_of.get((v.name, b))
                e2e.append({"model": v.name, "input": kind, "batch": b, "rate": r["rate"], "wall_rate": r["wall_rate"],
                            "n": r["n"], "provider": r["provider"], "over_bare": r["rate"] / bare if bare else None})
                save(a.out, "end_to_end", e2e)


if __name__ == "__main__":
    sys.exit(main())
