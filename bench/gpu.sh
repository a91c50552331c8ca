#!/usr/bin/env bash
# One-shot GPU benchmark run (lent H100/H200, no internet): alignment throughput (eager, then
# torch.compile), encoder throughput, representation build. Every step is bounded by `timeout`
# and by a global budget (GPU_SH_BUDGET seconds, counted from the start, pip install included);
# each step's output goes to $OUT/<n>-<step>.log, a summary to stdout and $OUT/summary.txt.
#
#   bash bench/gpu.sh                                  # on the GPU machine (needs .whl/ and $OUT)
#   GPU_SH_ONLY='^[0-2]' bash bench/gpu.sh             # only the steps whose names match (regex)
#   GPU_SH_DRY=1 OUT=/tmp/gpu_dry bash bench/gpu.sh    # CPU dry run at tiny sizes, no pip/nvidia-smi
source "$(dirname "$0")/gpu_env.sh"
set -u
export PYTHONUNBUFFERED=1
DRY=${GPU_SH_DRY:-0}
BUDGET=${GPU_SH_BUDGET:-520}
SCALE=${GPU_SH_CAP_SCALE:-1}  # multiplies every step's cap (slow CPUs in dry runs)
ONLY=${GPU_SH_ONLY:-.}
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
START=0  # $SECONDS counts from the script start: the budget includes the pip install
SUMMARY=()

# step NAME CAP_SECONDS CMD...: run CMD under timeout min(CAP, budget left - 10), tee its output
# to $OUT/NAME.log, remember rc and wall time for the summary.
step() {
  local name=$1 cap=$2 log="$OUT/$1.log" left t rc t0 cmd
  shift 2
  [[ $name =~ $ONLY ]] || return 0
  cmd="$*"
  left=$((BUDGET - (SECONDS - START) - 10))
  cap=$((cap * SCALE))
  t=$((cap < left ? cap : left))
  if [ "$t" -lt 15 ]; then
    echo "SKIPPED: only ${left}s of the ${BUDGET}s budget left" | tee -a "$log"
    SUMMARY+=("$(printf '%-16s %-8s %5s s' "$name" skipped 0)")
    return
  fi
  echo "=== $name (timeout ${t}s, $((SECONDS - START)) s elapsed): ${cmd:0:200}" | tee -a "$log"
  t0=$SECONDS
  timeout -k 5 "$t" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "TIMED OUT after ${t}s" | tee -a "$log"
  SUMMARY+=("$(printf '%-16s rc=%-5s %5s s' "$name" "$rc" $((SECONDS - t0)))")
}

if [ "$DRY" = 1 ]; then
  DEV=cpu
  ALIGN=(--steps 3 --hypotheses 2 --keypoints 6 --dense 50 --grid 8 --channels 16)
  FEAT=(--device cpu --dtype float32 --batch 1 --n 1 --dinov2-resolution 224 --sd-resolution 256)
  PRIOR=(random --images 4 --keypoints 6 --channels 16 --grid 8 --progress)
  WARM=2 SUB=20 CLOUDS=8
else
  DEV=cuda
  # paper size: K=25, N=800, 60x60 grid, 768-d, 24 hypotheses; 100 steps, reported per 1000
  ALIGN=(--steps 100 --hypotheses 24 --keypoints 25 --dense 800 --grid 60 --channels 768)
  FEAT=(--device cuda --dtype bfloat16 --batch 4 --n 32)
  PRIOR=(random --progress)
  WARM=20 SUB=2000  # compiled warm-ups: compilation and 20 steps; CPU profile's subsample
  CLOUDS=768  # keypoint clouds of bench/relations.py: 32 images x 24 hypotheses
fi

ENV_INFO='
if [ "$DRY" != 1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch;print(torch.__version__, torch.cuda.get_device_name())"
fi
echo "cpus $(nproc)"
python3 -c "
import sys, torch, transformers, diffusers, roma, huggingface_hub, safetensors, tokenizers
import semalign3d
print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| transformers\",
      transformers.__version__, \"| diffusers\", diffusers.__version__, \"| roma\", roma.__version__,
      \"| hf_hub\", huggingface_hub.__version__, \"| tokenizers\", tokenizers.__version__,
      \"| safetensors\", safetensors.__version__, \"| semalign3d\", semalign3d.__file__)"
'
export DRY
step 0-env 60 bash -c "$ENV_INFO"
step 1-align-eager 90 python3 bench/align.py --device $DEV --batch 16 4 1 "${ALIGN[@]}"
# the largest batches first: the issue's target is for batches of >= 64 image-hypotheses
step 2-align-compile 300 env TORCH_LOGS=recompiles \
  python3 bench/align.py --device $DEV --batch 64 32 --compile --warmup-steps "$WARM" --profile 5 "${ALIGN[@]}"
step 2b-align-sub2000 150 env TORCH_LOGS=recompiles \
  python3 bench/align.py --device $DEV --batch 32 --compile --warmup-steps "$WARM" \
  --relations "$SUB" "${ALIGN[@]}"
# the relation features on their grids against per-relation gathers (the switch between them)
step 2c-relations 90 python3 bench/relations.py --device $DEV --batch "$CLOUDS" --keypoints 25
step 3-features 200 python3 bench/features.py "${FEAT[@]}"
step 4-prior 150 python3 bench/prior.py --threads "$(nproc)" "${PRIOR[@]}" --device $DEV
# the CUDA build is the library's CPU code under a default-device context (bench/prior.py): if it
# failed (not timed out), measure the CPU build with every core instead, with 200 instead of 2000
# refinement steps (sparse.refine is the slow CPU stage: x10 its time for the full build)
if [ "$DEV" != cpu ] && grep -q '^4-prior  *rc=[1-9]' <(printf '%s\n' "${SUMMARY[@]}") \
   && ! grep -q '^TIMED OUT' "$OUT/4-prior.log"; then
  step 5-prior-cpu 150 python3 bench/prior.py --threads "$(nproc)" "${PRIOR[@]}" --device cpu \
    --set refine_steps=200
fi

keys() { [ -f "$OUT/$1.log" ] && tr '\r' '\n' < "$OUT/$1.log" | grep -E "$2"; }
ERR='TIMED OUT|SKIPPED|Error|error:|Traceback'
{
  echo
  echo "================ summary ($((SECONDS - START)) s of ${BUDGET} s budget) ================"
  printf '%s\n' "${SUMMARY[@]}"
  echo "--- key lines"
  keys 0-env "^(NVIDIA|name,|[0-9][^ ]* NVIDIA|python |cpus )|$ERR"
  for f in 1-align-eager 2-align-compile 2b-align-sub2000; do
    echo "[$f]"
    keys $f "^(device=|batch |  +warm-up)|$ERR"
  done
  echo "[2c-relations]"
  keys 2c-relations "^(device=|family|edges|tets)|$ERR"
  echo "[3-features]"
  keys 3-features "^(built|device=|encoder |dinov2 |sd |geoaware |peak)|$ERR"
  for f in 4-prior 5-prior-cpu; do
    [ -f "$OUT/$f.log" ] || continue
    echo "[$f]"
    keys $f "^(random|  wall time|\[prior\] .* done in|  peak)|$ERR"
  done
} 2>&1 | tee "$OUT/summary.txt"
