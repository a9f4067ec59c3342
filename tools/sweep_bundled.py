"""Choose the bundled demo model: craft one data set, train several EZnet tables side by side on
one GPU within a time budget, export each and score it on a demo-like mock survey.

    python tools/sweep_bundled.py WORKDIR --budget 420 [--scale 1.0] [--device cuda]

Everything lands in WORKDIR: the crafted stacks, ``recipes/<name>.toml``, ``runs/<name>/`` (the
trainer's output), ``onnx/<name>.onnx`` and ``results.json``. Epochs per table are set from a
timing of 30 training steps on the device so that every run ends inside the budget; a run still
going at the deadline is stopped and its last checkpoint exported instead. The table that wins
is copied into training/recipes/demo.toml by hand, and tools/build_bundled_model.sh rebuilds it.

Scoring (never the demo's own seed): ``eval`` is a mock survey of ``deepmine demo``'s kind
(3,000 non-lens scenes of every kind, seed 7) with 300 lenses from the demo's priors; per table
it gives the ranking performance and the fraction of lenses above 99.5 % of the non-lenses, and
the same fraction for 300 lens galaxies *without* arcs (``frac_arcless_top_0.5%``): a model
that scores those like lenses has learnt the lens galaxy, not the arc (the first 2026-11-26
build did: an exactly centred red galaxy was enough — docs/benchmarks.md). The sweep trains on
the stage-1 data only; stage 2 (recipe demo-anneal) adds arc-less negatives.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEEPMINE = [sys.executable, "-m", "deepmine.inference.cli"]
HARD_KINDS = ("ring", "blend", "artefact", "elliptical")  # the demo's top false positives


def _k(k: int, first: int, last: int) -> list[dict]:
    return [
        {"kernels": first, "kernel": 5, "size": 50}, {"kernels": k, "kernel": 4, "size": 40},
        {"kernels": k, "kernel": 3, "size": 32}, {"kernels": k, "kernel": 3, "size": 24},
        {"kernels": k, "kernel": 3, "size": 16, "repeat": 2}, {"kernels": k, "kernel": 3, "size": 12, "repeat": 2},
        {"kernels": k, "kernel": 3, "size": 8, "repeat": 2}, {"kernels": last, "kernel": 1, "size": 1},
    ]  # fmt: skip


#: name → (block table or None for the seed's 50-block table, branching)
CONFIGS = {
    "s12": (_k(12, 16, 32), 2),
    "w24": (_k(24, 24, 48), 2),
    "w32b3": (_k(32, 32, 64), 3),
    "seed50": (None, 2),
}


def craft(w: Path, scale: float) -> dict:
    from deepmine.lenscrafter import craft_lenses, craft_negatives, sample_lens_params
    from deepmine.lenscrafter.demo import DEMO_LENS_PRIORS

    n = {k: max(64, int(v * scale)) for k, v in {"lenses": 40000, "negatives": 80000, "hard": 20000}.items()}
    files = {}
    t0 = time.perf_counter()
    p = sample_lens_params(n["lenses"], seed=101, m_g_src=(21.5, 24.5), theta_e=(0.8, 2.8))
    files["lenses"] = _save(w / "lenses.npy", craft_lenses(p, seed=101, field=1.0))
    files["negatives"] = _save(w / "negatives.npy", craft_negatives(n["negatives"], seed=202)[0])
    files["hard"] = _save(w / "hard.npy", craft_negatives(n["hard"], seed=505, kinds=HARD_KINDS)[0])
    neg, _ = craft_negatives(3000, seed=7)
    ev = craft_lenses(sample_lens_params(300, seed=8, **DEMO_LENS_PRIORS), seed=8, field=1.0)
    files["eval_neg"] = _save(w / "eval_neg.npy", neg)
    files["eval_lens"] = _save(w / "eval_lens.npy", ev)
    arcless = craft_lenses(sample_lens_params(300, seed=9, m_g_src=35.0), seed=9, field=1.0)
    files["eval_arcless"] = _save(w / "eval_arcless.npy", arcless)
    print(f"crafted {n} in {time.perf_counter() - t0:.0f} s", flush=True)
    return files


def _save(path: Path, arr: np.ndarray) -> str:
    np.save(path, arr)
    return str(path)


def write_recipe(w: Path, name: str, table, branching: int) -> Path:
    lines = ['extends = "eznet"', f'name = "{name}"', "seed = 7", "", "[model]", 'name = "eznet"',
             f"branching = {branching}"]  # fmt: skip
    if table is not None:
        rows = ", ".join("{ " + ", ".join(f"{k} = {v}" for k, v in r.items()) + " }" for r in table)
        lines.append(f"table = [{rows}]")
    lines += ["", "[data]", "batch_positives = 64", "", "[optimizer]", "lr = 0.1"]
    p = w / "recipes" / f"{name}.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def step_seconds(table, branching: int, device: str, batch: int = 128, steps: int = 30) -> float:
    import torch

    from deepmine.training.registry import create_model

    kw = {"branching": branching} | ({"table": table} if table is not None else {})
    m = create_model("eznet", **kw).to(device)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 64, 64, device=device)
    y = torch.nn.functional.one_hot(torch.randint(0, 2, (batch,), device=device), 2).float()
    for i in range(steps + 10):
        if i == 10:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(m(x), y).backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def evaluate(onnx_path: Path, files: dict) -> dict:
    from deepmine.inference.model import load_model
    from deepmine.inference.ranking import ordinality_against, ranking_performance

    m = load_model(onnx_path, device="cpu")
    def score(key):
        return m.predict(np.load(files[key]))[0].astype(np.float64)

    neg, lens, arcless = score("eval_neg"), score("eval_lens"), score("eval_arcless")
    ordin = ordinality_against(lens, neg)
    return {"rp": float(ranking_performance(lens, neg)), "frac_top_0.5%": float(np.mean(ordin > 0.995)),
            "frac_top_1%": float(np.mean(ordin > 0.99)),
            "frac_arcless_top_0.5%": float(np.mean(ordinality_against(arcless, neg) > 0.995))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for everything")
    ap.add_argument("--scale", type=float, default=1.0, help="data-set size factor (tests: 0.01)")
    ap.add_argument("--device", default="cuda")
    # measured on an H200 (2026-11-26): a run alone took ~2.5× the step-timing estimate (evaluation,
    # data preparation, launch overhead) and four runs sharing the GPU another ~2.6× each
    ap.add_argument("--concurrency-factor", type=float, default=7.0)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--max-epochs", type=int, default=80)
    a = ap.parse_args()
    t_start = time.time()
    deadline = t_start + a.budget
    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    files = craft(w, a.scale)
    names = a.configs.split(",")
    n_pos_train = int(0.9 * np.load(files["lenses"], mmap_mode="r").shape[0])
    reserve = 60.0 + 15.0 * len(names)  # export + scoring
    plan = {}
    for name in names:
        table, b = CONFIGS[name]
        t_step = step_seconds(table, b, a.device)
        epoch_s = math.ceil(n_pos_train / 64) * t_step * 1.3 + 2.0
        left = deadline - time.time() - reserve
        epochs = int(max(3, min(a.max_epochs, left / (a.concurrency_factor * epoch_s))))
        plan[name] = {"step_s": t_step, "epoch_s_est": epoch_s, "epochs": epochs}
        print(f"{name}: {t_step * 1e3:.1f} ms/step → {epochs} epochs", flush=True)
    procs = {}
    for name in names:
        table, b = CONFIGS[name]
        e = plan[name]["epochs"]
        ms = sorted({max(1, round(0.6 * e)), max(2, round(0.85 * e))})
        cmd = [*DEEPMINE, "train", "eznet", str(write_recipe(w, name, table, b)), "--positives", files["lenses"],
               "--negatives", files["negatives"], "--negatives", files["hard"], "--out", str(w / "runs" / name), "--device", a.device,
               "--set", f"epochs={e}", "--set", f"schedule.milestones={ms}", "--set", "early_stop.patience=0",
               "--plot"]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS="2", COLUMNS="100")
        with open(w / f"train-{name}.log", "w") as log:  # the child keeps its own descriptor
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    stop_at = deadline - reserve + 30
    while any(p.poll() is None for p in procs.values()) and time.time() < stop_at:
        time.sleep(2)
    for name, p in procs.items():
        if p.poll() is None:
            print(f"{name}: still training at the deadline, stopped; exporting its last checkpoint", flush=True)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        plan[name]["returncode"] = p.returncode
    results = {"plan": plan, "train_s": time.time() - t_start}
    (w / "onnx").mkdir(exist_ok=True)
    for name in names:
        run = w / "runs" / name
        src = run / "model.pt" if (run / "model.pt").exists() else run / "checkpoint.pt"
        r = results.setdefault(name, {"source": src.name})
        if (run / "history.csv").exists():
            from deepmine.training.trainer import read_history

            hist = read_history(run / "history.csv")
            r["epochs_done"] = len(hist)
            r["best_test_rp"] = max(h["test_rp"] for h in hist) if hist else None
            r["last"] = hist[-1] if hist else None
        if not src.exists():
            continue
        out = w / "onnx" / f"{name}.onnx"
        ex = subprocess.run([*DEEPMINE, "export", str(src), "--out", str(out)], capture_output=True, text=True)
        if ex.returncode:
            r["export_error"] = (ex.stdout + ex.stderr)[-800:]
            continue
        r |= evaluate(out, files)
        print(name, json.dumps(r, default=str)[:400], flush=True)
        (w / "results.json").write_text(json.dumps(results, indent=2, default=str))
    results["total_s"] = time.time() - t_start
    (w / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v for k, v in results.items() if k != "plan"}, indent=1, default=str)[:3000])


if __name__ == "__main__":
    sys.exit(main())
