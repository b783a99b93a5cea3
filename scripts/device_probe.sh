#!/usr/bin/env bash
# Real-GPU probe (under 8 minutes on one H100/H200): `pals probe` on a Llama-3.1-8B-shaped and a Qwen3-30B-A3B
# (MoE) random-weight model, batch 1-256, at the default power limit and, where this process may set caps, at 70 %
# and 45 % of it. Each run prints its measurements beside the simulator's estimates (docs/probe.md).
#
#   bash scripts/device_probe.sh            # from the repository root; needs torch and transformers
#
# Output: the profiles (CSV, what `pals calibrate` reads), their host descriptions (JSON) and the log, in $OUT
# when that variable is set (written there as the run goes: a run cut short still leaves what it measured), else
# in a temporary folder the script names. Knobs (environment): PALS_PROBE_CAPS (auto | W,W,...),
# PALS_PROBE_BATCHES (1,2,...,256), PALS_PROBE_BUDGET_S (measurement seconds per model, 120),
# PALS_PROBE_TIMEOUT_S (hard limit per model, 220), PALS_PROBE_GPU (0), PYTHON; for a dry run without a GPU
# (tests): PALS_PROBE_MODELS (config folders), PALS_PROBE_BACKEND (simulated) and PALS_PROBE_ARGS (extra flags, e.g.
# "--device cpu --prompt-tokens 16").
#
# Hardware safety: caps are written only by `pals probe`, under PALS's power-limit guard (saved before the
# first write, restored on exit and on SIGTERM, which the per-model timeout sends); the script ends with
# `pals restore` whatever happened, then checks every GPU's limits against their values before the run.
set -u
cd "$(dirname "$0")/.."
START_S=$(date +%s)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
WORK=$(mktemp -d)
OUTDIR=${OUT:-$WORK/out}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/device_probe.log"
exec > >(tee -a "$LOG") 2>&1
export PALS_STATE_DIR="$WORK/state"
STATE="$PALS_STATE_DIR/power-limits.json"
GPU=${PALS_PROBE_GPU:-0}
CAPS=${PALS_PROBE_CAPS:-auto}
BATCHES=${PALS_PROBE_BATCHES:-1,2,4,8,16,32,64,128,256}
BUDGET_S=${PALS_PROBE_BUDGET_S:-120}
TIMEOUT_S=${PALS_PROBE_TIMEOUT_S:-220}
MODELS=${PALS_PROBE_MODELS:-src/pals/data/measurements/models/Llama-3.1-8B src/pals/data/measurements/models/Qwen3-30B-A3B}
EXTRA=${PALS_PROBE_ARGS:-}
elapsed() { echo $(( $(date +%s) - START_S )); }

PY=""
for cand in "${PYTHON:-}" python3 .venv/bin/python python; do
  [ -n "$cand" ] && "$cand" -c "import sys, torch, transformers; assert sys.version_info >= (3, 11)" 2>/dev/null \
    && { PY=$cand; break; }
done
[ -z "$PY" ] && { echo "FAIL: no python >= 3.11 with torch and transformers (pip install 'pals[probe]')"; exit 1; }
BACKEND=${PALS_PROBE_BACKEND:-auto}
if [ "$BACKEND" = auto ] && ! "$PY" -c "import zeus.device.gpu" 2>/dev/null; then
  echo "zeus not importable: using --gpu-backend nvml"; BACKEND=nvml
fi

smi() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,power.limit,power.default_limit,power.min_limit,power.max_limit \
      --format=csv,noheader 2>&1
  else
    echo "nvidia-smi not available"
  fi
}
CHILD=""
STATUS=0
final() {
  trap - EXIT INT TERM
  [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null && { kill -TERM "$CHILD"; wait "$CHILD"; }
  echo "== final safety restore ($(elapsed) s)"
  "$PY" -m pals restore --state "$STATE" --gpu-backend "$BACKEND"
  smi > "$WORK/after.csv"
  if diff "$WORK/before.csv" "$WORK/after.csv" >/dev/null; then
    echo "PASS: every GPU's power limits equal their values before the probe"
  else
    echo "FAIL: power limits differ from before the probe:"; diff "$WORK/before.csv" "$WORK/after.csv"; STATUS=1
  fi
  echo "== files in $OUTDIR:"; ls -l "$OUTDIR"
  echo "== device_probe.sh done in $(elapsed) s (exit $STATUS)"
  [ -n "${OUT:-}" ] && rm -rf "$WORK"  # the results are in $OUT; without it they stay in $WORK/out
  exit "$STATUS"
}
trap final EXIT
trap 'STATUS=130; exit 130' INT
trap 'STATUS=143; exit 143' TERM

echo "== host ($(date -u +%FT%TZ))"; uname -srm; "$PY" --version
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"
smi | tee "$WORK/before.csv"
echo "plan: models $MODELS; batches $BATCHES; caps $CAPS; budget ${BUDGET_S} s of measurement per model (hard limit ${TIMEOUT_S} s)"

for model in $MODELS; do
  name=$(basename "$model")
  echo "== pals probe $name (start at $(elapsed) s)"
  t0=$(date +%s)
  timeout -s TERM -k 20 "$TIMEOUT_S" "$PY" -m pals probe --config "$model" --out "$OUTDIR/probe-$name.csv" \
    --gpu-index "$GPU" --gpu-backend "$BACKEND" --caps "$CAPS" --batches "$BATCHES" --prompt-tokens 512 \
    --decode-steps 64 --time-budget-s "$BUDGET_S" --state "$STATE" --no-progress $EXTRA &
  CHILD=$!
  wait "$CHILD"; rc=$?
  CHILD=""
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s (total $(elapsed) s)"
  [ "$rc" = 0 ] || STATUS=1
  if [ "$rc" = 124 ]; then
    echo "NOTE: $name hit the ${TIMEOUT_S} s limit: its CSV, if any, holds the points measured until then"
  fi
done
