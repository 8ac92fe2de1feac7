#!/usr/bin/env bash
# The GPU run of the inference benchmark (benchmarks/bench_inference.py), made to stop cleanly, with what it has,
# well inside a ~10-minute run on a GPU machine, so that a second run still fits when the first breaks.
#
# What it needs beside the repository: a python3 with torch (CUDA), numpy and scipy, and, as wheels in .whl/ at
# the repository root (ignored by git), what that machine may lack: the kit's and nnU-Net's image I/O and what
# nnunetv2's inference imports. Made once, in the repository root, on any x86_64 Linux box with pip
# (about 61 MiB; ship .whl/ with the repository, nothing else):
#
#   P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#      --platform manylinux2014_x86_64"
#   python3 -m pip download --no-deps $P -d .whl SimpleITK==2.5.7 nnunetv2==2.8.1 batchgenerators==0.25.5 \
#      batchgeneratorsv2==0.3.6 dynamic_network_architectures==0.4.4 nibabel==5.4.2 blosc2==4.14.1 \
#      numexpr==2.14.2 ndindex==1.10.1
#   python3 -m pip wheel --no-deps -w .whl acvl_utils==0.2.6   # PyPI has only its sdist; it is pure Python
#
# Left out on purpose: connected-components-3d (only nnU-Net's trainer modules import it; the benchmark builds
# nnU-Net's predictor without them), imagecodecs (tifffile works without it; 40 MB), and nnunetv2's other
# requirements, which its inference never imports. Without .whl/ the script uses what is installed; without
# nnunetv2 the benchmark times the kit alone and says so. The study and the model are generated (petct.phantom,
# random weights): no data travels.
#
# Run: bash benchmarks/gpu_check.sh, with a time limit of at least GPU_CHECK_BUDGET_S + 30 s. Everything lands in $OUT
# (default bench-out/gpu): env.log and, per step, <step>.log and <step>.json (the benchmark rewrites the JSON after
# each configuration, so a step stopped at its limit keeps what it measured).
#
# Steps, in priority order; each is capped, and gets at most what the budget has left, so
# the lower priorities are the ones cut when time runs short (H200 estimates from nnU-Net's measured times):
#   env      install the wheels, nvidia-smi, versions, imports                                   ~15 s
#   quick    CUDA path end to end, masks vs nnU-Net: small model, 96x128x128 study, 1 fold
#            without and with mirroring                                                          ~30 s  (cap 45 s)
#   setup    autoPET-shaped model (6 stages, 32-320 features, patch 112x160x128), full-size
#            400x400x326 study and a 660-slice one, written to the work folder                   ~40 s  (cap 90 s)
#   full1    autoPET model, full study, 1 fold without mirroring, kit vs nnU-Net end to end      ~35 s  (cap 70 s)
#   memory   fresh process, kit 1 fold without mirroring on the 660-slice study: peak GPU and
#            host memory                                                                         ~35 s  (cap 60 s)
#   compile  as full1 with torch.compile, kit only (throughput with compile; full1 has it
#            without)                                                                            ~80 s  (cap 120 s)
#   tta      1 fold with mirroring (vs nnU-Net) and 5 folds with mirroring (kit only)           ~90 s  (what is left)
# With the default budget of 300 s the steps up to compile fit; tta runs on what they leave. A second run can
# run the rest: GPU_CHECK_STEPS="compile tta" (the work folder, kept on a machine still warm, is reused; on a
# fresh one the setup step is redone first, automatically).
#
# Settings (environment): GPU_CHECK_BUDGET_S (300), GPU_CHECK_STEPS (all, in the order above), GPU_CHECK_WORK
# (work folder, default $TMPDIR or /tmp, then bench_inference), GPU_CHECK_CAP_SCALE (1: multiplies the caps and
# the default budget), PYTHON (python3), OUT.
# GPU_CHECK_DRY_RUN=1 runs every step on the CPU with the small model and a tiny study instead of the autoPET
# model and the full-size one, caps and budget scaled by 6 (to test this script anywhere; its figures mean nothing).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
STEPS=" ${GPU_CHECK_STEPS:-quick setup full1 memory compile tta} "
WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/bench_inference}
export PYTHONUNBUFFERED=1
# nnunetv2 warns at import when these are unset; inference does not use them.
export nnUNet_raw=$WORK/nnunet/raw nnUNet_preprocessed=$WORK/nnunet/preprocessed nnUNet_results=$WORK/nnunet/results

if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
  DEVICE=cpu
  SCALE=${GPU_CHECK_CAP_SCALE:-6}  # a CPU runs even the small model far slower than a GPU the big one
  SMALL=(--model small --size tiny)
  BIG=(--model small --size tiny --long-slices 100)  # stands for the autoPET model and the full-size study
else
  DEVICE=cuda
  SCALE=${GPU_CHECK_CAP_SCALE:-1}
  SMALL=(--model small --size small)
  BIG=(--model autoPET --size full --long-slices 660)
fi
BUDGET_S=${GPU_CHECK_BUDGET_S:-$((300 * SCALE))}
SMALL+=(--work-dir "$WORK/small")
BIG+=(--work-dir "$WORK/big")

left() { echo $((BUDGET_S - SECONDS)); }

# step NAME CAP ARGS...: the benchmark with ARGS, stopped at min(CAP, what the budget has left), into $OUT/NAME.*
step() {
  local name=$1 cap=$2
  shift 2
  case "$STEPS" in *" $name "*) ;; *) return 0 ;; esac
  local limit
  limit=$(left)
  cap=$((cap * SCALE))
  [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt 20 ]; then
    echo "[gpu_check] $name skipped: $(left) s of the budget left" | tee "$OUT/$name.log"
    failed="$failed $name(skipped)"
    return 0
  fi
  echo "[gpu_check] $name (limit ${limit} s, $(left) s left): $*"
  timeout -k 5 "$limit" "$PY" benchmarks/bench_inference.py --device "$DEVICE" --json "$OUT/$name.json" "$@" \
    >"$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "[gpu_check] $name stopped at its ${limit} s limit" >>"$OUT/$name.log"
  echo "[gpu_check] $name exit $rc after ${SECONDS} s in all"
  tail -n 20 "$OUT/$name.log"
  [ $rc -eq 0 ] || failed="$failed $name"
}

failed=""
{  # a group, not a subshell: the PYTHONPATH exported here holds for the steps too
  echo "[gpu_check] $(date -u +%FT%TZ) on $(hostname); budget ${BUDGET_S} s; steps:${STEPS}"
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      .whl/*.whl || install_failed=1
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "[gpu_check] no .whl/*.whl: using what is installed"
  fi
  [ "$DEVICE" = cuda ] && { nvidia-smi || true; }
  "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for name in ("SimpleITK", "nnunetv2", "numpy", "blosc2"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
import SimpleITK, nnunetv2.inference.predict_from_raw_data  # noqa: F401,E401 - a missing package shows here
print("imports ok")
EOF
} >"$OUT/env.log" 2>&1
cat "$OUT/env.log"
if [ "${install_failed:-0}" = 1 ]; then
  echo "[gpu_check] wheel install failed (see above)"
  exit 3
fi
# A failed nnunetv2 import (above) leaves the benchmark timing the kit alone, and it says so: keep going.

step quick 45 "${SMALL[@]}" --configs 1,1tta --no-memory-probe
step setup 90 "${BIG[@]}" --configs "" --no-memory-probe --no-reference
step full1 70 "${BIG[@]}" --configs 1 --no-memory-probe
step memory 60 "${BIG[@]}" --configs "" --memory-probes long_study --no-reference
step compile 120 "${BIG[@]}" --configs 1 --compile --no-memory-probe --no-reference
step tta "$BUDGET_S" "${BIG[@]}" --configs 1tta,5tta --reference-configs 1tta --no-memory-probe
ls -la "$OUT"
if [ -n "$failed" ]; then
  echo "[gpu_check] done after ${SECONDS} s; failed or stopped:$failed"
  exit 1
fi
echo "[gpu_check] done after ${SECONDS} s; every step ran"
