"""int8 vs fp32 ONNX for LensFlow and EZnet: CPU throughput and ranking performance (issue 6).

For each classifier (the full seed architectures, ``create_model(name)``):

1. craft a LensCrafter training set (lenses + non-lens scenes) and a disjoint held-out set;
2. train briefly (Adam, ``DEEPMINE_BENCH_TRAIN_SECONDS`` each, default 40 s) — or load a trained
   checkpoint from ``DEEPMINE_BENCH_LENSFLOW`` / ``DEEPMINE_BENCH_EZNET`` — so that the ranking
   means something;
3. ``export_model`` to fp32 and to int8 (static QDQ, calibrated on 256 training cutouts);
4. time onnxruntime on batches of 256 with 1 and with 2 intra-op threads (2 is SPEC section
   9's setting), fp32 and int8 interleaved in the same run, sessions created and warmed up
   outside the timing;
5. ranking performance (RP = 2·AUC − 1) of both graphs on the held-out set, the change, and
   how much of the fp32 ranking int8 keeps (RP of int8 with the fp32 top half as positives).

``benchmark.extra_info`` records: fp32/int8 images per second and the speed-up per thread count,
torch eager images per second, RP fp32/int8/change, the spread of the fp32 logits (a model
trained too briefly gives near-constant logits, whose ranking any rounding reshuffles), the
held-out size. The machine is shared: rates are noisy; one thread suffers least from that.

Run: ``python -m pytest benchmarks/bench_export.py --benchmark-only -q`` (about 2-4 minutes).
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from deepmine.export import export_model, metadata_for  # noqa: E402
from deepmine.export.checkpoint_io import load as load_checkpoint  # noqa: E402
from deepmine.export.parity import lenscrafter_cutouts  # noqa: E402
from deepmine.inference.metadata import read_metadata  # noqa: E402
from deepmine.inference.preprocess import histogram_template, percentile_normalization, prepare_batch  # noqa: E402
from deepmine.inference.ranking import ranking_performance  # noqa: E402
from deepmine.training import create_model  # noqa: E402

BATCH = 256
THREADS = 2
ROUNDS = 5
TRAIN_SECONDS = float(os.environ.get("DEEPMINE_BENCH_TRAIN_SECONDS", "40"))
#: (input shape, bands, pixel scale) LensCrafter crafts for each model
INPUTS = {"lensflow": ((1, 100, 100), ["i"], 0.06), "eznet": ((3, 64, 64), ["i", "r", "g"], 0.168)}


def _crafted(name, n, seed):
    shape, bands, scale = INPUTS[name]
    made = lenscrafter_cutouts(n, shape, bands, scale, seed=seed)
    assert made is not None, "LensCrafter could not craft the benchmark cutouts"
    return made


def _train(model, x, y, seconds, seed=0):
    """Adam on shuffled balanced minibatches of 64 until ``seconds`` have passed."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        idx = torch.from_numpy(rng.choice(len(x), 64, replace=False))
        opt.zero_grad()
        model.loss(model(xt[idx]), yt[idx]).backward()
        opt.step()
        steps += 1
    model.eval()
    return steps


def _session(path, threads=THREADS):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _logits(sess, x):
    return np.concatenate([sess.run(["logit"], {"image": x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)])


def _rp(logits, labels):
    pos = labels.astype(bool)
    return float(ranking_performance(logits[pos], logits[~pos]))


@pytest.fixture(scope="module", params=["lensflow", "eznet"])
def exported(request, tmp_path_factory):
    name = request.param
    torch.set_num_threads(THREADS)
    train_raw, train_y = _crafted(name, 768, seed=1)
    held_raw, held_y = _crafted(name, 512, seed=2)
    ckpt = os.environ.get(f"DEEPMINE_BENCH_{name.upper()}")
    if ckpt:
        model, _ = load_checkpoint(ckpt)
        steps, trained = 0, f"checkpoint {ckpt}"
    else:
        torch.manual_seed(0)
        kw = {}
        if name == "lensflow":  # the template is found on the training set, as the trainer does
            kw["template"] = histogram_template(percentile_normalization(train_raw)).tolist()
        model = create_model(name, **kw)
        meta0 = metadata_for(model)
        steps = _train(model, prepare_batch(train_raw, meta0.preprocessing), train_y, TRAIN_SECONDS)
        trained = f"{steps} Adam steps of 64 ({TRAIN_SECONDS:.0f} s)"
    meta = metadata_for(model, training={"benchmark": trained})
    out = tmp_path_factory.mktemp(name)
    example = np.zeros((2, *meta.input_shape), np.float32)
    fp32 = export_model(model, out / "fp32.onnx", meta, example)
    int8 = export_model(model, out / "int8.onnx", meta, example, int8_calibration=train_raw[::3][:256])
    held = prepare_batch(held_raw, meta.preprocessing)
    return {"name": name, "model": model, "fp32": fp32, "int8": int8, "held": held, "labels": held_y,
            "trained": trained}  # fmt: skip


def _rates(p32, p8, x, threads):
    """Images per second of the fp32 and int8 graphs (median of interleaved rounds)."""
    s32, s8 = _session(p32, threads), _session(p8, threads)
    for s in (s32, s8):  # warm-up outside the timing
        s.run(None, {"image": x})
    t32, t8 = [], []
    for _ in range(ROUNDS):  # interleaved, so both see the same machine load
        t = time.perf_counter()
        s32.run(None, {"image": x})
        t32.append(time.perf_counter() - t)
        t = time.perf_counter()
        s8.run(None, {"image": x})
        t8.append(time.perf_counter() - t)
    return BATCH / statistics.median(t32), BATCH / statistics.median(t8), s32, s8


def test_int8_vs_fp32(benchmark, exported):
    held, labels = exported["held"], exported["labels"]
    x = np.ascontiguousarray(held[:BATCH])
    rates = {th: _rates(exported["fp32"], exported["int8"], x, th)[:2] for th in (1, THREADS)}
    rate32, rate8, s32, s8 = _rates(exported["fp32"], exported["int8"], x, THREADS)
    rates[THREADS] = (rate32, rate8)
    model = exported["model"]
    with torch.no_grad():
        xt = torch.from_numpy(x)
        model(xt)
        t = time.perf_counter()
        model(xt)
        eager = BATCH / (time.perf_counter() - t)

    l32, l8 = _logits(s32, held), _logits(s8, held)
    rp32, rp8 = _rp(l32, labels), _rp(l8, labels)
    top = (l32 > np.median(l32)).astype(np.int8)
    kept = _rp(l8, top)
    meta8, _ = read_metadata(exported["int8"])
    info = {
        "model": exported["name"], "trained": exported["trained"], "batch": BATCH,
        "torch_eager_images_per_s": round(eager, 1), "heldout_n": int(len(labels)),
        "rp_fp32": round(rp32, 4), "rp_int8": round(rp8, 4), "rp_change": round(rp8 - rp32, 4),
        "rp_int8_vs_fp32_ranking": round(kept, 4), "fp32_logit_std": float(np.std(l32)),
        "export_int8_check": meta8.parity["int8"],
    }  # fmt: skip
    for th, (r32, r8) in rates.items():
        info[f"threads{th}"] = {"fp32_images_per_s": round(r32, 1), "int8_images_per_s": round(r8, 1),
                                "int8_speedup": round(r8 / r32, 3)}  # fmt: skip
    benchmark.extra_info.update(info)
    speed = "; ".join(f"{th} thread(s): fp32 {r32:.0f}/s, int8 {r8:.0f}/s (×{r8 / r32:.2f})" for th, (r32, r8) in rates.items())
    print(
        f"\n{exported['name']}: {speed}; torch eager {eager:.0f}/s ({THREADS} threads); held-out RP fp32 {rp32:.4f}, "
        f"int8 {rp8:.4f} (change {rp8 - rp32:+.4f}); int8 keeps the fp32 ranking at RP {kept:.4f}; "
        f"fp32 logit std {np.std(l32):.3g}; trained: {exported['trained']}"
    )
    benchmark.pedantic(s8.run, args=(None, {"image": x}), rounds=ROUNDS, iterations=1)
    assert np.all(np.isfinite(l8))
