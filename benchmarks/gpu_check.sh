#!/usr/bin/env bash
# The GPU check: one short command for a host with an NVIDIA GPU (done within 8 minutes).
#
#   benchmarks/gpu_check.sh [OUT_DIR]          # on the GPU host; OUT_DIR defaults to $OUT, else out/gpu-check
#   benchmarks/gpu_check.sh --cpu [OUT_DIR]    # dry run here on the CPU, tiny sizes (GPU_CHECK_DRY_RUN=1 too)
#   benchmarks/gpu_check.sh --prepare          # on a machine with PyPI: fill .gpu-check/ for an offline host
#   benchmarks/gpu_check.sh --stage            # on the GPU host: keep the carried onnxruntime-gpu parts, then exit
#
# It installs the gpu extra (onnxruntime-gpu) unless CUDAExecutionProvider is already importable, checks that a
# session really runs on CUDA, then runs one worker pinned to device 0 on the faces job and the full job at
# chunk sizes 16 and 64 (python -m benchmarks.gpu_check), and writes OUT_DIR/gpu-check.md: images/s, GPU memory
# (nvidia-smi), the batching gain. The report is always written, partial if a step fails or time runs out.
#
# Offline hosts (nothing can be downloaded there): `--prepare` here copies into .gpu-check/ (git-ignored; carry it)
#   wheels/  the runtime dependencies such a host may lack (pure Python or manylinux, for GPU_CHECK_PY_VERSION,
#            default 3.12), and any onnxruntime-gpu wheel you put there yourself (~hundreds of MB: often too big
#            to carry);
#   models/  the face and OCR packs (~46 MB), copied from ASSETQ_MODEL_DIR;
#   bin/, lib/  Debian's redis-server and the libraries it needs beyond a base system.
# The ViT-B-32 stand-in is generated on the host (tools/make_vit_b32.py, ~5 s), never carried.
# With GPU_CHECK_ORT_GPU=1, --prepare also splits the pinned onnxruntime-gpu wheel (cp312: ~244 MiB, far over
# one call's 64 MiB) into .gpu-check/ort-gpu/part-NN (GPU_CHECK_PART_MIB, default 56) + MANIFEST: carry MANIFEST
# and one part per `--stage` call while the host stays warm (parts wait in /tmp/assetq-ort-stage there), then
# run the check, which joins the parts, checks the sha256 and installs the wheel.
#
# Environment: GPU_CHECK_PYTHON (default .venv/bin/python, else python3), GPU_CHECK_WHEELS (default
# .gpu-check/wheels), ASSETQ_MODEL_DIR (default .gpu-check/models when present), GPU_CHECK_BUDGET_S (seconds for
# the measurements, default 360 less what installing took), GPU_CHECK_IMAGES (assets per run, default 128), GPU_CHECK_WORK (scratch:
# photos, the generated ViT-B-32, worker logs; default /tmp/assetq-gpu-check, never under OUT_DIR, which keeps
# only gpu-check.md and gpu-check.log).
set -u
START=$SECONDS
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/.gpu-check
DRY=${GPU_CHECK_DRY_RUN:-0}
MODE=check
case "${1:-}" in
  --cpu) DRY=1; shift ;;
  --prepare) MODE=prepare; shift ;;
  --stage) MODE=stage; shift ;;
esac
STAGE=/tmp/assetq-ort-stage

PY=${GPU_CHECK_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=$(command -v python3); fi
fi
ORT_GPU_PIN=$(grep -o 'onnxruntime-gpu==[0-9.]*' pyproject.toml | head -1)

prepare() {
  local pyver=${GPU_CHECK_PY_VERSION:-3.12} freeze pkgs=() name version
  mkdir -p "$CARRY/wheels" "$CARRY/models" "$CARRY/bin" "$CARRY/lib"
  freeze=$("$PY" -m pip freeze 2>/dev/null)
  # What the lent GPU image lacks of assetq's runtime (it has numpy, pillow, opencv, onnx, onnxruntime),
  # at the versions this checkout's virtualenv runs.
  for name in pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection redis \
      celery kombu billiard vine amqp click click-didyoumean click-repl click-plugins prompt-toolkit wcwidth \
      tzlocal pyclipper; do
    version=$(printf '%s\n' "$freeze" | tr '_' '-' | grep -i "^${name}==" | head -1 | cut -d= -f3)
    pkgs+=("${name}${version:+==$version}")
  done
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$CARRY/wheels" "${pkgs[@]}" || return 1
  local src=${ASSETQ_MODEL_DIR:-$HOME/.cache/assetq/models}
  for pack in facial-recognition/buffalo_s ocr/PP-OCRv6_small; do
    rm -rf "${CARRY:?}/models/$pack" && mkdir -p "$CARRY/models/$(dirname $pack)"
    cp -rL "$src/$pack" "$CARRY/models/$pack" || return 1
  done
  local exe; exe=$(command -v redis-server) && cp -L "$exe" "$CARRY/bin/redis-server"
  for lib in liblzf.so.1 libjemalloc.so.2 libatomic.so.1; do
    [ -f "/lib/x86_64-linux-gnu/$lib" ] && cp -L "/lib/x86_64-linux-gnu/$lib" "$CARRY/lib/"
  done
  if [ "${GPU_CHECK_ORT_GPU:-0}" = 1 ]; then split_ort_gpu "$pyver" || return 1; fi
  du -sh "$CARRY"/*
  echo "carry .gpu-check/{wheels,models,bin,lib} (with the working tree: under 64 MiB) and run:"
  echo "  bash benchmarks/gpu_check.sh \"\$OUT\""
}

split_ort_gpu() {
  local dl=/tmp/assetq-ort-gpu-download wheel
  rm -rf "$CARRY/ort-gpu" && mkdir -p "$CARRY/ort-gpu" "$dl"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$1" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$dl" "$ORT_GPU_PIN" || return 1
  wheel=$(ls "$dl"/onnxruntime_gpu-*.whl | head -1)
  split -b "${GPU_CHECK_PART_MIB:-56}M" -d "$wheel" "$CARRY/ort-gpu/part-"
  { echo "wheel $(basename "$wheel")"; echo "sha256 $(sha256sum "$wheel" | cut -d' ' -f1)"
    (cd "$CARRY/ort-gpu" && ls part-*) | sed 's/^/part /'; } >"$CARRY/ort-gpu/MANIFEST"
  echo "onnxruntime-gpu in $(ls "$CARRY/ort-gpu" | grep -c part-) parts: one --stage call each (carry"
  echo "  .gpu-check/ort-gpu/MANIFEST and .gpu-check/ort-gpu/part-NN), then the check itself"
}

# Parts of the onnxruntime-gpu wheel carried by this call join those earlier calls left on this host.
stage_parts() {
  local manifest=$CARRY/ort-gpu/MANIFEST missing=() part
  mkdir -p "$STAGE"
  [ -f "$manifest" ] && cp "$manifest" "$STAGE/MANIFEST"
  for part in "$CARRY"/ort-gpu/part-*; do [ -f "$part" ] && cp "$part" "$STAGE/"; done
  [ -f "$STAGE/MANIFEST" ] || return 1
  for part in $(awk '$1 == "part" {print $2}' "$STAGE/MANIFEST"); do [ -f "$STAGE/$part" ] || missing+=("$part"); done
  if [ ${#missing[@]} -gt 0 ]; then echo "gpu_check: onnxruntime-gpu parts still missing: ${missing[*]}"; return 1; fi
  local wheel sum
  wheel=$STAGE/$(awk '$1 == "wheel" {print $2}' "$STAGE/MANIFEST")
  sum=$(awk '$1 == "sha256" {print $2}' "$STAGE/MANIFEST")
  if [ ! -f "$wheel" ]; then
    (cd "$STAGE" && cat $(awk '$1 == "part" {print $2}' MANIFEST)) >"$wheel.tmp" && mv "$wheel.tmp" "$wheel"
  fi
  if [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$sum" ]; then
    echo "gpu_check: joined onnxruntime-gpu wheel fails its sha256"; rm -f "$wheel"; return 1
  fi
  echo "gpu_check: onnxruntime-gpu wheel complete: $wheel"
}

if [ "$MODE" = prepare ]; then prepare; exit $?; fi
if [ "$MODE" = stage ]; then stage_parts; ls -la "$STAGE"; exit 0; fi

OUT_DIR=${1:-${OUT:-out/gpu-check}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG=$OUT_DIR/gpu-check.log
exec > >(tee -a "$LOG") 2>&1
echo "gpu_check: python $PY, out $OUT_DIR, dry run $DRY"

# Wheels, models and redis-server carried to an offline host (see --prepare).
SITE=/tmp/assetq-gpu-site
WHEELS=${GPU_CHECK_WHEELS:-$CARRY/wheels}
export PYTHONPATH=$ROOT
# Only where something is missing: wheels built for another Python would shadow working packages.
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1 \
    && ! "$PY" -c 'import pydantic_settings, celery, redis, pyclipper' 2>/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --upgrade \
    --target "$SITE" "$WHEELS"/*.whl && export PYTHONPATH=$ROOT:$SITE
fi
[ -d "$CARRY/models" ] && export ASSETQ_MODEL_DIR=${ASSETQ_MODEL_DIR:-$CARRY/models}
[ -x "$CARRY/bin/redis-server" ] && ! command -v redis-server >/dev/null && export PATH=$CARRY/bin:$PATH \
  && export LD_LIBRARY_PATH=$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# A redis-server that cannot start here (a missing library) is as good as none: the in-process path is used.
if command -v redis-server >/dev/null && ! redis-server --version >/dev/null 2>&1; then
  echo "gpu_check: redis-server is here but does not run; using the in-process path"
  export GPU_CHECK_NO_REDIS=1
fi

# onnxruntime-gpu finds CUDA and cuDNN through the loader: point it at the nvidia-* pip packages' libraries
# (the GPU image's torch brings them), which a wheel installed outside their site directory cannot see.
NV_LIBS=$("$PY" -c 'import glob, os, sys
print(":".join(sorted({d for p in sys.path for d in glob.glob(os.path.join(p, "nvidia", "*", "lib"))})))' 2>/dev/null)
[ -n "$NV_LIBS" ] && export LD_LIBRARY_PATH=$NV_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

has_cuda() {
  "$PY" -c 'import sys, onnxruntime as o; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' \
    2>/dev/null
}
if [ "$DRY" = 1 ]; then
  NOTE="not installed (CPU dry run)"
elif has_cuda; then
  NOTE="already installed: onnxruntime lists CUDAExecutionProvider"
elif ! command -v nvidia-smi >/dev/null; then
  NOTE="not installed: no nvidia-smi here, so no NVIDIA GPU to install it for"
elif stage_parts || ls "$WHEELS"/onnxruntime_gpu-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --upgrade --target "$SITE" \
    $(ls "$STAGE"/onnxruntime_gpu-*.whl "$WHEELS"/onnxruntime_gpu-*.whl 2>/dev/null | head -1) \
    && export PYTHONPATH=$ROOT:$SITE
  if has_cuda; then NOTE="installed $ORT_GPU_PIN from a carried wheel"; else NOTE="a carried $ORT_GPU_PIN wheel did not install"; fi
else
  # An online host: the extra's pinned wheel, into a private site directory (never over the host's packages).
  if timeout 150 "$PY" -m pip install -q --disable-pip-version-check --retries 0 --timeout 15 --no-deps \
      --target "$SITE" "$ORT_GPU_PIN" >/dev/null 2>&1; then
    export PYTHONPATH=$ROOT:$SITE
  fi
  if has_cuda; then
    NOTE="installed $ORT_GPU_PIN from the package index"
  else
    NOTE="could NOT be installed: $ORT_GPU_PIN is not importable, no onnxruntime_gpu wheel in $WHEELS, and pip could not fetch it (offline?)"
  fi
fi
echo "gpu_check: gpu extra: $NOTE"

# Whatever the install steps took comes off the measurements: the whole command ends within 8 minutes.
BUDGET=${GPU_CHECK_BUDGET_S:-$(( 420 - (SECONDS - START) - 45 ))}
[ "$BUDGET" -gt 360 ] && BUDGET=360
[ "$BUDGET" -lt 60 ] && BUDGET=60
ARGS=(--out "$OUT_DIR" --work "${GPU_CHECK_WORK:-/tmp/assetq-gpu-check}" --budget-s "$BUDGET" --install-note "$NOTE")
[ "$DRY" = 1 ] && ARGS+=(--cpu)
[ -n "${GPU_CHECK_IMAGES:-}" ] && ARGS+=(--images "$GPU_CHECK_IMAGES")
# The measurements stop themselves at the budget; the hard limit only catches a hang.
timeout --kill-after 10 $(( BUDGET + 45 )) "$PY" -m benchmarks.gpu_check "${ARGS[@]}"
RC=$?
REPORT=$OUT_DIR/gpu-check.md
if [ ! -s "$REPORT" ]; then
  printf '# assetq GPU check\n\nThe measurement step wrote no report (exit %s). gpu extra: %s\n' "$RC" "$NOTE" >"$REPORT"
fi
if [ "$RC" -ne 0 ]; then
  {
    printf '\n## Incomplete (exit %s)\n\nLast lines of %s:\n\n```\n' "$RC" "$(basename "$LOG")"
    tail -n 25 "$LOG"
    printf '```\n'
  } >>"$REPORT"
fi
echo "gpu_check: report $REPORT (exit $RC)"
exit "$RC"
