"""GAN sampling: ``deepmine generate``'s onnxruntime path against the torch generator (eager).

The generator is the seed's LensGenerator (latent 64 → 3×64×64, features 64), freshly
initialised (speed does not depend on the weights), exported with deepmine's exporter. Both
sides make the same 256 cutouts in batches of 128 on the CPU, uint8 conversion included.
Figures on a shared machine are noisy; the ratio (torch seconds / onnxruntime seconds) is in
``extra_info``.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

N, BATCH = 256, 128


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from deepmine.export import export_model, metadata_for
    from deepmine.training import create_model

    torch.manual_seed(0)
    g = create_model("lensgenerator").eval()
    path = tmp_path_factory.mktemp("bench_gan") / "gen.onnx"
    export_model(g, path, metadata_for(g), np.zeros((2, 64), np.float32))
    return g, path


def torch_sample(g, n, seed=0):
    from deepmine.inference.generate import latent_batches, to_uint8

    out = np.empty((n, 3, 64, 64), np.uint8)
    with torch.no_grad():
        for start, z in latent_batches(n, 64, seed, BATCH):
            out[start:start + len(z)] = to_uint8(g.images(torch.from_numpy(z)).numpy())
    return out


def test_generate_onnxruntime_vs_torch(benchmark, exported, peer_time):
    from deepmine.inference.generate import load_generator

    g, path = exported
    gen = load_generator(path)
    ours = gen.sample(N, seed=0, batch_size=BATCH)  # warm-up (session already created)
    ref = torch_sample(g, N)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    result = benchmark.pedantic(gen.sample, args=(N,), kwargs={"seed": 0, "batch_size": BATCH}, rounds=3, iterations=1)
    assert result.shape == (N, 3, 64, 64)
    t_torch = peer_time(torch_sample, g, N, repeat=3)
    t_ort = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "n": N, "batch": BATCH, "onnxruntime_per_s": N / t_ort, "torch_eager_per_s": N / t_torch,
        "speedup_vs_torch": t_torch / t_ort, "torch_threads": torch.get_num_threads(),
    })  # fmt: skip
