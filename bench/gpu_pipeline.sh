#!/usr/bin/env bash
# One-shot GPU check of the whole pipeline on one synthetic category: render it, build its
# representation, then `semalign3d evaluate` with the cpu profile (alignment on the GPU, images
# batched, eager) and with the paper profile (compiled energy). Prints each step's wall time and
# the PCK tables; the summaries go to $OUT/<profile>.json, the logs to $OUT/<profile>.log.
#
#   bash bench/gpu_pipeline.sh [CATEGORY]                  # on the GPU machine (needs .whl/, $OUT)
#   GPU_SH_DRY=1 OUT=/tmp/gp bash bench/gpu_pipeline.sh    # CPU dry run: tiny data, 20 steps
set -u
CAT=${1:-chair}
OUT=${OUT:?set OUT to the output folder}
export PYTHONUNBUFFERED=1
source "$(dirname "$0")/gpu_env.sh"
if [ "${GPU_SH_DRY:-0}" != 1 ]; then
  SYNTH=() STEPS=()
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
else
  SYNTH=(--n-train 8 --n-val 1 --n-test 4 --n-test-pairs 6 --channels 16) STEPS=(--steps 20)
fi
WORK=$(mktemp -d)
mkdir -p "$OUT"
t0=$SECONDS
python3 -m semalign3d data synth --out "$WORK/data" --categories "$CAT" --quiet "${SYNTH[@]}" \
  || exit 1
echo "synth $CAT: $((SECONDS - t0)) s"
mkdir -p "$WORK/cpu/prior"
t0=$SECONDS
python3 -m semalign3d prior build --root "$WORK/data" --category "$CAT" --quiet \
  --out "$WORK/cpu/prior/$CAT.safetensors" --cache "$WORK/cpu/features" || exit 1
echo "prior build $CAT: $((SECONDS - t0)) s"
printf 'align:\n  compile: true\n' > "$WORK/compile.yaml"
for profile in cpu paper; do
  extra=()
  [ "$profile" = paper ] && extra=(--config "$WORK/compile.yaml")
  mkdir -p "$WORK/$profile"
  # the representation and the descriptors are the same for both profiles: build them once
  [ "$profile" = paper ] && cp -r "$WORK/cpu/prior" "$WORK/cpu/features" "$WORK/$profile/"
  t0=$SECONDS
  python3 -m semalign3d evaluate --root "$WORK/data" --category "$CAT" --profile "$profile" \
    --out "$WORK/$profile" --json "$OUT/$profile.json" --quiet "${STEPS[@]}" "${extra[@]}" \
    > "$OUT/$profile.log" 2>&1
  rc=$?
  echo "=== evaluate $CAT --profile $profile${extra[*]:+ (compiled)}: rc=$rc, $((SECONDS - t0)) s"
  # each method's headline PCK@0.1 line and its table by viewpoint variation
  grep -E "^== |^$CAT |^[012] |^category|viewpoint" "$OUT/$profile.log" | awk '!seen[$0]++'
  [ "$rc" = 0 ] || tail -20 "$OUT/$profile.log"
done
rm -rf "$WORK"
