#!/usr/bin/env bash
# Rebuild the bundled demo model (inference/models/default.onnx) reproducibly:
# LensCrafter lenses + non-lens scenes → EZnet in two stages (recipes demo, then demo-anneal
# started from stage 1's weights, with arc-less lens galaxies as extra negatives) → selection function → ONNX fp32 (bundled, with the held-out
# RP and the selection-function summary in its metadata) and int8 (kept in the work folder).
#
#   tools/build_bundled_model.sh [WORKDIR] [DEVICE]     (defaults: build/demo-model, auto)
#
# Needs deepmine[train]. Stage 1 is ~45 s/epoch on an H200 (launch-bound: the net is small) and
# ~11 min/epoch on 2 CPU cores; stage 2 ~6 min/epoch on 2 CPU cores. Existing stacks and stage
# outputs in WORKDIR are reused; delete them to redo a step.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-build/demo-model}
DEVICE=${2:-auto}
mkdir -p "$W"
# training lenses: LensCrafter priors with arcs a survey scan can find (source m_g 21.5-24.5);
# negatives: every kind, plus extra rings, blends, artefacts and ellipticals (the kinds that
# outscore lenses most often)
# (stage 2 adds lens galaxies without arcs: the training priors with the source at m_g 35)
[ -f "$W/arcless_params.ecsv" ] || python - "$W" <<'PY'
import sys
from deepmine.lenscrafter import sample_lens_params
t = sample_lens_params(40000, seed=101, m_g_src=(21.5, 24.5), theta_e=(0.8, 2.8))
t.write(f"{sys.argv[1]}/lens_params.ecsv", overwrite=True)
t = sample_lens_params(20000, seed=606, m_g_src=35.0, theta_e=(0.8, 2.8))
t.write(f"{sys.argv[1]}/arcless_params.ecsv", overwrite=True)
PY
[ -f "$W/lenses.npy" ] || deepmine craft --params "$W/lens_params.ecsv" --out "$W/lenses.npy" --seed 101 --field 1
[ -f "$W/arcless.npy" ] || deepmine craft --params "$W/arcless_params.ecsv" --out "$W/arcless.npy" --seed 606 --field 1
[ -f "$W/negatives.npy" ] || deepmine craft --n 80000 --negatives --out "$W/negatives.npy" --seed 202
[ -f "$W/hard.npy" ] || deepmine craft --n 20000 --negatives --kinds ring,blend,artefact,elliptical \
    --out "$W/hard.npy" --seed 505
DATA=(-p "$W/lenses.npy" -n "$W/negatives.npy" -n "$W/hard.npy")
[ -f "$W/stage1/model.pt" ] || deepmine train eznet demo "${DATA[@]}" --out "$W/stage1" --device "$DEVICE" --plot
[ -f "$W/stage2/model.pt" ] || deepmine train eznet demo-anneal "${DATA[@]}" --extra-negatives "$W/arcless.npy" \
    --init "$W/stage1/model.pt" --out "$W/stage2" --device "$DEVICE" --plot
# selection function of the exported model (default grid; reference pool: 5,000 non-lens scenes
# of every kind, crafted apart from the training data), then the final export records its summary
[ -f "$W/pool_negatives.npy" ] || deepmine craft --n 5000 --negatives --out "$W/pool_negatives.npy" --seed 404
deepmine export "$W/stage2/model.pt" --out "$W/unannotated.onnx"
deepmine selection --model "$W/unannotated.onnx" --negatives "$W/pool_negatives.npy" --out "$W/selection.fits" \
    --plot "$W/selection.png" --workdir "$W/selection.parts" --resume
deepmine export "$W/stage2/model.pt" --out inference/models/default.onnx --selection "$W/selection.fits"
deepmine export "$W/stage2/model.pt" --out "$W/default-int8.onnx" --int8 --calibration "$W/pool_negatives.npy"
deepmine info inference/models/default.onnx
