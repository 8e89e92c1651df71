#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (within 8 minutes): build the CUDA kernels, run the
# CUDA tests, print kernel and full-frame timings at 512², train on the vendored real clip for
# 5 minutes and evaluate. `--device cpu` runs the same steps shortened on the CPU so the script
# cannot rot:
#   bash scripts/gpu_check.sh                # on the GPU machine
#   bash scripts/gpu_check.sh --device cpu   # anywhere (about 3 minutes on 2 cores;
#                                            # tests/test_gpu_check_script.py, -m slow)
# Writes into ${OUT:-gpu_check_out}/ (capture, actor, metrics.json, log.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cuda or cpu}; fi
OUT=${OUT:-gpu_check_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
# the CPU path trains with the measured CPU recipe (tiny decoder), so its minute reaches its 300 steps
# even on a loaded machine and the quality check after it stays meaningful
if [ "$DEVICE" = cuda ]; then MINUTES=5; RES=256; STEPS=20000; RECIPE=(); else MINUTES=1; RES=64; STEPS=300; RECIPE=(--recipe cpu); fi
echo "== marionette gpu_check on $DEVICE ($(date -u +%FT%TZ))"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
if [ "$DEVICE" = cuda ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== build the CUDA kernels"
  $PY -m pip install --no-build-isolation ./cuda_ext 2>&1 | tail -2
  $PY -c "from engine.neural.render import kernels; import torch; \
print('kernels on cuda:', kernels.available(torch.device('cuda')), 'texture:', kernels.texture_available(torch.device('cuda')), kernels.unavailable_reason() or '')"
  echo "== CUDA tests"
  $PY -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | tail -3
else
  echo "== CPU kernel tests"
  $PY -m pytest -q tests/test_kernels.py tests/test_bone_texture.py tests/test_surface_primitives.py -p no:cacheprovider 2>&1 | tail -2
fi
echo "== timings at 512x512"
$PY scripts/gpu_timings.py --device "$DEVICE" --size 512 --reps $([ "$DEVICE" = cuda ] && echo 20 || echo 2)
echo "== ingest the vendored clip (keypoints from the vendored OpenPose files; cam02 held out)"
if [ ! -f "$OUT/capture/capture.json" ]; then
  $PY -m engine ingest engine/data/pose2sim_demo/videos --calib engine/data/pose2sim_demo/Calib.qca.txt \
      --keypoints engine/data/pose2sim_demo/pose --heldout-cameras cam02 --heldout-frames 80-99 \
      --resolution 256 -o "$OUT/capture" --overwrite 2>&1 | grep -v "%|" | tail -4
fi
echo "== train for $MINUTES minute(s) at ${RES}px"
$PY -m engine train --capture "$OUT/capture" -o "$OUT/actor" --device "$DEVICE" --resolution $RES \
    --steps $STEPS --max-minutes $MINUTES --refine-pose "${RECIPE[@]}" --eval-views 0 --overwrite --quiet | tail -8
echo "== evaluate"
$PY -m engine evaluate "$OUT/actor" --capture "$OUT/capture" --device "$DEVICE" --max-views 24 --json \
    --grid "$OUT/grid.png" > "$OUT/metrics.json"
$PY -c "import json,sys; d=json.load(open(sys.argv[1])); [print(k, {m: d['splits'][k].get(m) for m in \
('psnr_person','psnr_box','ssim_box','mask_iou','psnr_flat')}) for k in d['splits']]" "$OUT/metrics.json"
echo "== done ($(date -u +%FT%TZ)); log in $OUT/log.txt"
