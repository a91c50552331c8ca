#!/usr/bin/env bash
# The synthetic acceptance table at Table 5's full size on a lent GPU: `semalign3d evaluate
# --method both --profile paper` on the test pairs of every category, for alignment seeds in turn,
# from representations built beforehand (so that they are the very files the CPU figures used:
# a representation rebuilt elsewhere rounds differently, and bottle's figures hang on it).
#
#   bash bench/gpu_acceptance.sh DATA PRIORS          # on the GPU machine (needs .whl/ and $OUT)
#   GPU_SH_DRY=1 OUT=/tmp/ga bash bench/gpu_acceptance.sh data/synthetic PRIORS   # CPU wiring check
#   GPU_SH_DRY=1 EVAL_ARGS= PROFILE=cpu CATS=bottle SEEDS=0 OUT=/tmp/ga \
#     bash bench/gpu_acceptance.sh data/synthetic PRIORS        # a whole CPU run, same layout
#
# DATA is an SPair-layout root holding at least the test split (a copy with only the test images
# is enough), PRIORS a folder of <category>.safetensors. Environment: CATS (default: the four
# synthetic categories), SEEDS (default "0 1 2"), PROFILE (default paper), BUDGET (seconds after
# which no new run starts, default 480), EVAL_ARGS (extra `evaluate` arguments; with GPU_SH_DRY=1,
# which also skips pip and nvidia-smi, they default to 5 steps and 4 pairs). One line per run goes
# to stdout and $OUT/summary.txt. After each run $OUT/runs.tgz holds every finished run's summary
# (<category>-s<seed>.json), log and run folder less its representation and descriptors: the fits
# and predictions, for bench/partner_errors.py (its --relabel-truth also wants the run's
# prior/<category>.safetensors back from PRIORS). One archive, because the device returns only a
# few files from $OUT.
set -u
DATA=${1:?DATA root}
PRIORS=${2:?folder of <category>.safetensors}
OUT=${OUT:?set OUT to the output folder}
CATS=${CATS:-aeroplane bottle chair tvmonitor}
SEEDS=${SEEDS:-0 1 2}
PROFILE=${PROFILE:-paper}
BUDGET=${BUDGET:-480}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
if [ "${GPU_SH_DRY:-0}" != 1 ]; then
  read -r -a EXTRA <<< "${EVAL_ARGS:-}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
else
  # unset: a few steps and pairs; set, even to nothing: as given
  read -r -a EXTRA <<< "${EVAL_ARGS-"--steps 5 --max-pairs 4"}"
fi
WORK=$(mktemp -d)
KEEP=$WORK/keep
mkdir -p "$KEEP"
start=$SECONDS
for seed in $SEEDS; do
  for cat in $CATS; do
    if [ $((SECONDS - start)) -ge "$BUDGET" ]; then
      echo "budget of $BUDGET s spent: $cat seed $seed not started" | tee -a "$OUT/summary.txt"
      continue
    fi
    run=$KEEP/s$seed/$cat
    mkdir -p "$run/prior"
    cp "$PRIORS/$cat.safetensors" "$run/prior/" || continue
    # the descriptors do not depend on the seed: share one cache per category
    mkdir -p "$WORK/features-$cat" && ln -sfn "$WORK/features-$cat" "$run/features"
    printf 'align:\n  seed: %s\n' "$seed" > "$run/cfg.yaml"
    t0=$SECONDS
    python3 -m semalign3d evaluate --root "$DATA" --category "$cat" --method both \
      --profile "$PROFILE" --config "$run/cfg.yaml" --out "$run" \
      --json "$KEEP/$cat-s$seed.json" --quiet ${EXTRA[@]+"${EXTRA[@]}"} > "$KEEP/$cat-s$seed.log" 2>&1
    rc=$?
    # the per-image PCK@0.1 of each method, overall and on viewpoint variation 2
    line=$(python3 - "$KEEP/$cat-s$seed.json" "$cat" <<'EOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(print("no summary"))
cells = []
for m in ("nn", "semalign3d"):
    a = s[m]["by_alpha"]["0.1"]["per_image"]
    cells.append(f"{m} {a[sys.argv[2]]:.1f} / {s[m]['by_viewpoint'].get('2', float('nan')):.1f}")
print(", ".join(cells))
EOF
)
    echo "$cat seed $seed ($PROFILE): rc=$rc, $((SECONDS - t0)) s: $line" | tee -a "$OUT/summary.txt"
    [ "$rc" = 0 ] || tail -5 "$KEEP/$cat-s$seed.log"
    tar czf "$OUT/runs.tgz" --exclude=features --exclude=prior -C "$KEEP" .
  done
done
rm -rf "$WORK"
