#!/usr/bin/env bash
# The GPU run of the inference benchmark (benchmarks/bench_inference.py) in one script, sized to finish in
# about 9 minutes on an H100, for a GPU machine that may have no network.
#
# Such a machine needs Python 3.12 with torch; what else it lacks can travel as wheels in .whl/ (ignored by git),
# downloaded on a machine with network from the repository root (about 61.4 MiB):
#
#   P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#      --platform manylinux2014_x86_64"
#   .venv/bin/python -m pip download --no-deps $P -d .whl SimpleITK==2.5.7 nnunetv2==2.8.1 batchgenerators==0.25.5 \
#      batchgeneratorsv2==0.3.6 dynamic_network_architectures==0.4.4 nibabel==5.4.2 blosc2==4.14.1 \
#      numexpr==2.14.2 ndindex==1.10.1
#   .venv/bin/python -m pip wheel --no-deps -w .whl acvl_utils==0.2.6   # PyPI has only its sdist; it is pure Python
#   du -ch .whl/*.whl | tail -1
#
# SimpleITK is the kit's and nnU-Net's image I/O; the rest is what nnunetv2's inference imports. Left out on
# purpose: connected-components-3d (only nnU-Net's trainer modules import it, and the benchmark builds the
# predictor without them, see nnunet_predictor), imagecodecs (tifffile falls back without it; 40 MB), and
# nnunetv2's other requirements, which its inference never imports.
#
# Copy the repository with .whl/ to the GPU machine and run `bash benchmarks/gpu_check.sh` from its root. The
# steps share a 540 s budget (GPU_CHECK_BUDGET_S), so the whole run fits a 10-minute job limit.
# Everything comes back under $OUT (7 files): env.log, quick.{log,json}, full.{log,json}, compile.{log,json}.
#
# Steps and their time limits (H100 estimates from nnU-Net's measured times on an H200, 2026-11-27):
#   1. install the wheels, nvidia-smi                                                     ~20 s
#   2. quick correctness: small model, 96x128x128 study, kit vs nnU-Net, 1 fold without and
#      with mirroring (fp16 on the GPU against nnU-Net's own fp16 path)                   ~40 s   (limit 120 s)
#   3. autoPET model, 400x400x326 study: kit 1 fold, 1 fold + mirroring, 5 folds + mirroring;
#      nnU-Net (files and in memory) for the first two only (its 5-fold run alone is ~90 s);
#      fresh-process memory on the study and on a 660-slice one (measured first)          ~250 s  (limit 330 s)
#   4. the same study, kit 1 fold + mirroring with torch.compile (compiling counts as
#      model loading)                                                                     ~120 s  (what is left)
# A step that runs out of time is stopped and the next one starts; its log keeps what it printed and its JSON
# what it had measured (the benchmark rewrites it after every configuration).
#
# GPU_CHECK_DRY_RUN=1 runs the same steps on the CPU with the small model and tiny studies (to test this
# script anywhere); OUT defaults to bench-out/gpu.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}
WORK=${GPU_CHECK_WORK:-/tmp/bench_inference}
export PYTHONUNBUFFERED=1
# nnunetv2 warns at import when these are unset; inference does not use them.
export nnUNet_raw=/tmp/nnunet/raw nnUNet_preprocessed=/tmp/nnunet/preprocessed nnUNet_results=/tmp/nnunet/results

if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
  DEVICE=cpu
  QUICK=(--model small --size tiny --configs 1 --no-memory-probe)
  FULL=(--model small --size tiny --configs 1,1tta --reference-configs 1 --long-slices 100)
else
  DEVICE=cuda
  QUICK=(--model small --size small --configs 1,1tta --no-memory-probe)
  FULL=(--model autoPET --size full --configs 1,1tta,5tta --reference-configs 1,1tta --long-slices 660)
fi

left() { echo $((BUDGET_S - SECONDS)); }

# Runs one benchmark step under a time limit, its output to $OUT/<name>.log; returns its exit status.
step() {
  local name=$1 limit=$2
  shift 2
  if [ "$limit" -lt 30 ]; then
    echo "[gpu_check] $name skipped: ${limit}s left" | tee "$OUT/$name.log"
    return 1
  fi
  echo "[gpu_check] $name (limit ${limit}s, $(left)s left): $*"
  timeout -k 10 "$limit" "$PY" benchmarks/bench_inference.py --device "$DEVICE" --json "$OUT/$name.json" "$@" \
    >"$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "[gpu_check] $name stopped at its ${limit}s limit" | tee -a "$OUT/$name.log"
  echo "[gpu_check] $name exit $rc after ${SECONDS}s in all"
  tail -n 25 "$OUT/$name.log"
  return $rc
}

{
  echo "[gpu_check] $(date -u +%FT%TZ) on $(hostname)"
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || install_failed=1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "[gpu_check] no .whl/*.whl: using what is installed"
  fi
  nvidia-smi || true
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

step quick $(( $(left) < 120 ? $(left) : 120 )) "${QUICK[@]}"
full_limit=$(( $(left) - 60 ))
step full $(( full_limit < 330 ? full_limit : 330 )) "${FULL[@]}" --work-dir "$WORK"
full_rc=$?
step compile $(( $(left) - 10 )) "${FULL[@]:0:4}" --configs 1tta --compile --no-reference --no-memory-probe \
  --work-dir "$WORK" --long-slices "${FULL[-1]}"
ls -la "$OUT"
exit $full_rc
