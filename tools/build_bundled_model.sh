#!/usr/bin/env bash
# Rebuild the bundled demo model (inference/models/default.onnx) reproducibly:
# LensCrafter lenses + non-lens scenes → EZnet (training/recipes/demo.toml) → ONNX fp32 (bundled)
# and int8 (kept in the work folder). Needs deepmine[train]. About 10-20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-build/demo-model}
mkdir -p "$W"
# (re-crafting is skipped when the files exist)
# training lenses: LensCrafter priors with arcs that a survey scan can find (source m_g 21.5-24.5)
python - "$W" <<'PY'
import sys
from deepmine.lenscrafter import sample_lens_params
for name, n, seed in (("lens_params", 3000, 101), ("heldout_params", 500, 303)):
    t = sample_lens_params(n, seed=seed, m_g_src=(21.5, 24.5), theta_e=(0.8, 2.8))
    t.write(f"{sys.argv[1]}/{name}.ecsv", overwrite=True)
PY
[ -f "$W/lenses.npy" ] || deepmine craft --params "$W/lens_params.ecsv" --out "$W/lenses.npy" --seed 101 --field 1
[ -f "$W/negatives.npy" ] || deepmine craft --n 6000 --negatives --out "$W/negatives.npy" --seed 202
[ -f "$W/heldout_lenses.npy" ] || deepmine craft --params "$W/heldout_params.ecsv" --out "$W/heldout_lenses.npy" --seed 303 --field 1
[ -f "$W/heldout_negatives.npy" ] || deepmine craft --n 2000 --negatives --out "$W/heldout_negatives.npy" --seed 404
rm -rf "$W/run"
deepmine train eznet demo --positives "$W/lenses.npy" --negatives "$W/negatives.npy" --out "$W/run" --plot
deepmine export "$W/run/model.pt" --out inference/models/default.onnx
deepmine export "$W/run/model.pt" --out "$W/default-int8.onnx" --int8 --calibration "$W/heldout_negatives.npy"
deepmine info inference/models/default.onnx
