#!/usr/bin/env bash
# One GPU lease, used whole: the bundled model's training (issue 17) in the background and the
# CUDA scanner's checks and scan rates (issue 23) in the foreground, on a machine whose image
# has python3 with torch (CUDA 13) but not astropy, deepmine or onnxruntime-gpu, and no network.
#
#   tools/gpu_session.sh setup     install .whl/*.whl (astropy, pyerfa, astropy-iers-data,
#                                  deepmine) into /tmp/site; copy the repo to /tmp/repo; start
#                                  `TRAIN_ONLY=1 tools/build_bundled_model.sh /tmp/dm cuda` detached
#   tools/gpu_session.sh status    the training log's tail, the GPU's load
#   tools/gpu_session.sh ortgpu    join .ortgpu/p/part* (the onnxruntime-gpu wheel, carried in
#                                  pieces), check its sha256, install it into /tmp/ortgpu
#   tools/gpu_session.sh checks    CUDA tests + tools/gpu_check.py providers,variants,parity
#   tools/gpu_session.sh rates     wait for training (until DEADLINE, epoch seconds), then
#                                  tools/gpu_check.py bare,end_to_end,torch,cpu
#   tools/gpu_session.sh collect   training results and logs into $OUT
#
# onnxruntime-gpu goes into its own folder ahead of /tmp/site on PYTHONPATH, so the image's CPU
# onnxruntime is shadowed only for the checks (the training job keeps the image's); the CUDA
# and cuDNN libraries come from the image's nvidia-* wheels via onnxruntime.preload_dlls().
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
case "${1:-}" in
setup)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  python3 -c "import deepmine.inference, astropy, torch, numba; print('deepmine ok; torch', torch.__version__, torch.cuda.is_available(), 'numba', numba.__version__)" || exit 1
  deepmine --help > /dev/null && python3 -m pip list 2>/dev/null | grep -iE "^(typer|click|numpy|onnxruntime|onnx|numba) " || exit 1
  rm -rf /tmp/repo && mkdir -p /tmp/repo /tmp/dm && tar cf - --exclude=./.ortgpu --exclude=./.whl . | tar xf - -C /tmp/repo
  (cd /tmp/repo && setsid nohup bash -c 'TRAIN_ONLY=1 tools/build_bundled_model.sh /tmp/dm cuda; echo "BUILD EXIT $?"' \
      > /tmp/build.log 2>&1 < /dev/null &)
  sleep 25; tail -5 /tmp/build.log ;;
status)
  tail -4 /tmp/build.log; ls /tmp/dm; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader ;;
ortgpu)
  cat .ortgpu/p/part* > /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
  (cd /tmp && sha256sum -c "$OLDPWD/.ortgpu/whl.sha256") || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/ortgpu \
      /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl || exit 1
  PYTHONPATH=/tmp/ortgpu:/tmp/site deepmine info --providers ;;
checks)
  export PYTHONPATH=/tmp/ortgpu:/tmp/site
  python3 -m pytest -q -p no:cacheprovider tests/inference/test_gpu.py 2>&1 | tail -15
  timeout 200 python3 tools/gpu_check.py "$OUT/gpu" --steps providers,variants,parity 2>&1 | cut -c1-400 ;;
rates)
  export PYTHONPATH=/tmp/ortgpu:/tmp/site
  while ! grep -q "BUILD EXIT" /tmp/build.log && [ "$(date +%s)" -lt "${DEADLINE:-0}" ]; do sleep 5; done
  tail -3 /tmp/build.log
  timeout "${RATES_LIMIT:-200}" python3 tools/gpu_check.py "$OUT/gpu" --steps bare,end_to_end,torch,cpu 2>&1 | cut -c1-300 ;;
collect)
  while ! grep -q "BUILD EXIT" /tmp/build.log && [ "$(date +%s)" -lt "${DEADLINE:-0}" ]; do sleep 5; done
  cp /tmp/build.log "$OUT/"
  tar czf "$OUT/model_build.tgz" -C /tmp/dm offset_sigma stage1 stage2 2>&1 | tail -2
  ls -la "$OUT" "$OUT/gpu" 2>/dev/null; tail -20 /tmp/build.log ;;
*) echo "usage: $0 setup|status|ortgpu|checks|rates|collect" >&2; exit 2 ;;
esac
