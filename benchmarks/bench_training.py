"""Training speed: optimiser steps per second for LensFlow and EZnet at the seed's sizes, and the
data pipeline's share of the time.

A step is one minibatch of the shipped recipe (LensFlow: 64 + 64 cutouts of 1×100×100,
histogram matching, random symmetries and 90×90 crops, Adam; EZnet: 32 + 32 cutouts of
3×64×64 through the 50-block table, percentile-normalised uint8, random symmetries, SGD
Nesterov). The data pipeline (reading rows from a memory-mapped .npy, ``prepare_batch``,
augmentation) is timed separately from the model step, and the pipeline is compared with the
step in the same run: ``extra_info["data_share"]`` = pipeline / (pipeline + step).

Run: ``python -m pytest benchmarks/bench_training.py --benchmark-only -q -s``. Warm-up (Numba
compilation, first torch calls) happens outside the timings. The machine is shared by several
processes, so figures are noisy; CPU seconds are reported beside wall-clock ones. On a machine
with a GPU, ``DEEPMINE_BENCH_DEVICE=cuda`` runs the model steps there.
"""
import os
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepmine.inference.preprocess import histogram_template  # noqa: E402
from deepmine.training import create_model  # noqa: E402
from deepmine.training import data as D  # noqa: E402
from deepmine.training.data import generic_two_class  # noqa: E402

DEVICE = torch.device(os.environ.get("DEEPMINE_BENCH_DEVICE", "cpu"))
STEPS = 2

CASES = {
    # name: (shape, batch positives, optimiser, crop, source dtype)
    "lensflow": ((1, 100, 100), 64, "adam", 90, np.float32),
    "eznet": ((3, 64, 64), 32, "sgd", 0, np.uint8),
}


@pytest.fixture(scope="module")
def cutouts(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_training")
    files = {}
    for name, (shape, bp, _, _, dtype) in CASES.items():
        pos, neg = generic_two_class(4 * bp, shape, seed=1)
        if dtype == np.uint8:
            from deepmine.inference.preprocess import percentile_normalization

            pos, neg = percentile_normalization(pos), percentile_normalization(neg)
        np.save(d / f"{name}_pos.npy", pos)
        np.save(d / f"{name}_neg.npy", neg)
        files[name] = (d / f"{name}_pos.npy", d / f"{name}_neg.npy")
    return files


def _setup(name, files):
    shape, bp, opt_name, crop, _ = CASES[name]
    torch.manual_seed(0)
    model = create_model(name).to(DEVICE)
    pos = D.CutoutSource([D.open_cutouts(files[0])], ["pos"])
    neg = D.CutoutSource([D.open_cutouts(files[1])], ["neg"])
    if name == "lensflow":
        model.set_template(histogram_template(np.asarray(pos.arrays[0][:64]) / np.float32(1.0)))
    spec = model.deepmine_config["preprocessing"]
    sampler = D.NegativeLearningSampler(pos, neg, np.arange(len(pos)), np.arange(len(neg)), spec,
                                        batch_positives=bp, symmetries=True, crop=crop)  # fmt: skip
    if opt_name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    return model, sampler, opt


def _step(model, opt, batch):
    x = torch.from_numpy(batch.images).to(DEVICE)
    y = torch.from_numpy(batch.labels).to(DEVICE)
    opt.zero_grad(set_to_none=True)
    loss = model.loss(model(x), y)
    loss.backward()
    opt.step()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return float(loss.detach())


@pytest.mark.parametrize("name", list(CASES))
def test_training_steps_per_second(benchmark, cutouts, name):
    model, sampler, opt = _setup(name, cutouts[name])
    model.train()
    rng = np.random.default_rng(0)
    warm = next(sampler.batches(rng))  # Numba compile + first torch calls, outside the timings
    _step(model, opt, warm)
    timings = {"data": 0.0, "step": 0.0, "data_cpu": 0.0, "step_cpu": 0.0, "n": 0}

    def run():
        it = sampler.batches(np.random.default_rng(timings["n"] + 1))
        for _ in range(STEPS):
            t0, c0 = time.perf_counter(), time.process_time()
            batch = next(it)
            t1, c1 = time.perf_counter(), time.process_time()
            _step(model, opt, batch)
            t2, c2 = time.perf_counter(), time.process_time()
            timings["data"] += t1 - t0
            timings["step"] += t2 - t1
            timings["data_cpu"] += c1 - c0
            timings["step_cpu"] += c2 - c1
            timings["n"] += 1

    benchmark.pedantic(run, rounds=2, iterations=1)
    n = timings["n"]
    batch = 2 * CASES[name][1]
    info = {
        "model": name,
        "device": str(DEVICE),
        "batch": batch,
        "steps_per_s": n / (timings["data"] + timings["step"]),
        "model_steps_per_s": n / timings["step"],
        "images_per_s": n * batch / (timings["data"] + timings["step"]),
        "data_ms_per_batch": 1e3 * timings["data"] / n,
        "step_ms_per_batch": 1e3 * timings["step"] / n,
        "data_share": timings["data"] / (timings["data"] + timings["step"]),
        "data_vs_step_ratio": timings["data"] / timings["step"],
        "cpu_s_per_step": (timings["data_cpu"] + timings["step_cpu"]) / n,
        "torch_threads": torch.get_num_threads(),
    }
    benchmark.extra_info.update(info)
    print(f"\n{name}: {info['steps_per_s']:.2f} steps/s ({info['images_per_s']:.0f} images/s, batch {batch}), "
          f"data pipeline {100 * info['data_share']:.1f} % of the time "
          f"({info['data_ms_per_batch']:.0f} ms vs step {info['step_ms_per_batch']:.0f} ms); "
          f"{info['cpu_s_per_step']:.2f} CPU s per step")  # fmt: skip
    assert info["data_share"] < 0.5  # the pipeline is not the bottleneck
