#!/usr/bin/env bash
# Device check for a lent GPU machine (about 1 minute): real GPUs through PALS's GPU layer.
#
#   bash scripts/device_check.sh            # from the repository root
#
# 1. nvidia-smi power view (before), 2. `pals doctor` (lists GPUs, reads power and
# energy, sets GPU 0's minimum cap under a guard, reads back, restores),
# 3. restore on a REAL GPU: a child lowers GPU 0's cap, gets SIGTERM -> limit back;
# again with kill -9 -> `pals restore` -> limit back, 4. nvidia-smi (after) and a diff.
# Every step prints its own PASS/FAIL; the script never leaves a cap changed on purpose:
# it ends with `pals restore` whatever happened.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=""
for cand in "${PYTHON:-}" .venv/bin/python python3 python; do
  [ -n "$cand" ] && "$cand" -c "import sys; assert sys.version_info >= (3, 10)" 2>/dev/null && { PY=$cand; break; }
done
[ -z "$PY" ] && { echo "FAIL: no python >= 3.10 found"; exit 1; }
WORK=$(mktemp -d)
STATE="$WORK/power-limits.json"
export PALS_STATE_DIR="$WORK"
BACKEND=auto
smi() { nvidia-smi --query-gpu=index,name,power.draw,power.limit,power.min_limit,power.max_limit,power.default_limit --format=csv 2>&1; }
final_restore() { echo "== final safety restore"; "$PY" -m pals restore --state "$STATE" --force; }
trap final_restore EXIT

echo "== host"; uname -a; "$PY" --version; id -u
echo "== modules"
"$PY" - <<'PYEOF'
from importlib import metadata
for dist in ("nvidia-ml-py", "zeus", "numpy", "vllm"):
    try:
        print(f"{dist} {metadata.version(dist)}")
    except metadata.PackageNotFoundError:
        print(f"{dist} not installed")
PYEOF
"$PY" -c "import zeus.device.gpu" 2>/dev/null || { echo "zeus not importable: using --gpu-backend nvml"; BACKEND=nvml; }
echo "== nvidia-smi (before)"; smi | tee "$WORK/before.csv"

echo "== pals doctor --gpu-backend $BACKEND"
"$PY" -m pals doctor --gpu-backend "$BACKEND" --state "$STATE"; echo "doctor exit: $?"
"$PY" -m pals doctor --gpu-backend "$BACKEND" --state "$STATE" --json > "$WORK/doctor.json"; echo "doctor --json exit: $?"
head -c 3000 "$WORK/doctor.json"; echo

echo "== restore on a real GPU (GPU 0): SIGTERM, then kill -9 + pals restore"
cat > "$WORK/child.py" <<'PYEOF'
import sys, time
from pals.node.gpu import open_gpus
from pals.node.hwstate import PowerLimitGuard
gpus = open_gpus(sys.argv[1])
guard = PowerLimitGuard(gpus, sys.argv[2])
low_w, high_w = gpus.power_limit_range_w(0)
original_w = gpus.get_power_limit_w(0)
target_w = low_w if abs(original_w - low_w) > 0.5 else high_w
guard.set_power_limit_w(0, target_w)
print(f"READY original={original_w} set={target_w} now={gpus.get_power_limit_w(0)}", flush=True)
while True:
    time.sleep(0.1)
PYEOF
limit0() { "$PY" -c "from pals.node.gpu import open_gpus; print(open_gpus('$BACKEND').get_power_limit_w(0))"; }
if ! ORIG=$(limit0 2>"$WORK/limit0.err"); then
  echo "SKIP real-GPU restore check: no GPU reachable ($(tail -1 "$WORK/limit0.err"))"; exit 0
fi
echo "GPU 0 limit before: $ORIG W"
for how in TERM KILL; do
  "$PY" "$WORK/child.py" "$BACKEND" "$STATE" > "$WORK/child.out" 2>&1 &
  CHILD=$!
  for _ in $(seq 1 100); do grep -q READY "$WORK/child.out" && break; sleep 0.1; done
  cat "$WORK/child.out"
  echo "while held: $(limit0) W"
  kill -s "$how" "$CHILD"; wait "$CHILD"; echo "child exit after SIG$how: $?"
  if [ "$how" = KILL ]; then echo "after kill -9 (expect still lowered): $(limit0) W"; "$PY" -m pals restore --state "$STATE"; fi
  NOW=$(limit0)
  if "$PY" -c "import sys; sys.exit(abs(float('$NOW') - float('$ORIG')) > 0.5)"; then
    echo "PASS SIG$how: GPU 0 limit $NOW W equals the original $ORIG W"
  else
    echo "FAIL SIG$how: GPU 0 limit $NOW W, original $ORIG W"
  fi
done

echo "== nvidia-smi (after)"; smi | tee "$WORK/after.csv"
if diff <(cut -d, -f1,2,4- "$WORK/before.csv") <(cut -d, -f1,2,4- "$WORK/after.csv") >/dev/null; then
  echo "PASS: every GPU's limits equal the values before the check"
else
  echo "FAIL: limits differ:"; diff "$WORK/before.csv" "$WORK/after.csv"
fi
