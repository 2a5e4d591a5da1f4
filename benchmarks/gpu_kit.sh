#!/usr/bin/env bash
# Every GPU figure of issue "GPU" in one command on a lent GPU machine, which has PyTorch and transformers but no
# network and none of the audio packages.
#
#   bash benchmarks/gpu_kit.sh prepare   # here, in the project's .venv: fills .gpu_kit/ (about 45 MB, git-ignored)
#   bash benchmarks/gpu_kit.sh run       # there, with .gpu_kit carried: the benchmarks' output into $OUT
#
# `prepare` downloads, for Python 3.12 on x86-64, wheels of the packages the GPU image lacks, at the versions this
# .venv tests; copies the shared golden outputs and random checkpoint (not the licensed weights); and synthesises
# the espeak-ng keyword recordings the benchmarks splice their audio from. `run` installs the wheels into a new
# folder under /tmp, then runs each benchmark under a time limit, most important first, and writes run.log and JSON
# rows into $OUT, which must be empty (at most 8 files come back). The full-size limits add up to 560 s, leaving
# 40 s of one call's 600 for the install. It writes only into new temporary folders and $OUT.
# `BENCH_DEVICE=cpu QUICK=1 OUT=DIR bash benchmarks/gpu_kit.sh run` checks the kit here on tiny sizes first.
set -euo pipefail
cd "$(dirname "$0")/.."

KIT=.gpu_kit
MARK="$KIT/.made_by_gpu_kit"
# The packages the GPU image lacks (datasets 3.x and its pins, the decoders, the original front-end), and
# transformers at the tested version (the image's is older).
WHEELS="transformers nnAudio datasets dill multiprocess fsspec soundfile cffi pycparser librosa soxr audioread pooch platformdirs decorator"
SHARED="${BYOLA_SHARED_DIR:-../shared}"

die() { echo "gpu_kit: $*" >&2; exit 2; }

prepare() {
  [ -x .venv/bin/python ] || die "no .venv here: run scripts/setup.sh first (the wheels' versions are its versions)."
  [ -f "$SHARED/reference/golden.npz" ] || die "no golden outputs in $SHARED/reference: set BYOLA_SHARED_DIR."
  if [ -e "$KIT" ] && [ ! -e "$MARK" ]; then die "$KIT exists and was not made by this script: move it away."; fi
  rm -rf "$KIT" && mkdir -p "$KIT/wheels" "$KIT/shared/reference" && touch "$MARK"
  local name version
  for name in $WHEELS; do
    version=$(.venv/bin/python -m pip show "$name" | sed -n 's/^Version: //p')
    [ -n "$version" ] || die "$name is not installed in .venv: run scripts/setup.sh."
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$KIT/wheels" "$name==$version"
  done
  cp "$SHARED/reference/golden.npz" "$SHARED/reference/golden.json" \
    "$SHARED/reference/AudioNTT2020-random-seed123-d2048.pth" "$KIT/shared/reference/"
  # build_dataset (benchmarks/benchmark_stats.py) splices its clips from WORKDIR/source when that exists.
  .venv/bin/python -c "import sys; from byola_hf.superb.mini_sets import make_ks; make_ks(sys.argv[1], repeats=1)" \
    "$KIT/source"
  du -sh "$KIT"
}

# step NAME SECONDS COMMAND...: one benchmark under a time limit, its output appended to run.log.
step() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/run.log"
  local start=$SECONDS status=0
  timeout "$limit" "$@" >>"$OUT/run.log" 2>&1 || status=$?
  echo "=== $name: exit $status after $((SECONDS - start))s" | tee -a "$OUT/run.log"
}

# workdir NAME: a new temporary folder holding the speech sources (printed), never one that existed before.
workdir() {
  local dir
  dir=$(mktemp -d "/tmp/gpu_kit_$1.XXXXXX") && cp -r "$KIT/source" "$dir/source" && echo "$dir"
}

run() {
  [ -n "${OUT:-}" ] || die "OUT is not set: run this on the device machine, or set OUT=DIR for a dry run."
  [ -e "$MARK" ] || die "no $KIT here: run 'bash benchmarks/gpu_kit.sh prepare' and carry $KIT."
  [ -d "$OUT" ] && [ -z "$(ls -A "$OUT")" ] || die "OUT ($OUT) must be an empty folder: give a new one."
  local python=${PYTHON:-python3} device=${BENCH_DEVICE:-cuda}
  if ! "$python" -c "import nnAudio, datasets, soundfile, librosa" 2>/dev/null; then
    local site
    site=$(mktemp -d /tmp/gpu_kit_site.XXXXXX)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$KIT"/wheels/*.whl
    export PYTHONPATH="$site"
  fi
  export BYOLA_SHARED_DIR="$PWD/$KIT/shared" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  : >"$OUT/run.log"
  { nvidia-smi || true; "$python" -c "import torch, transformers; print('torch', torch.__version__, 'CUDA',
torch.version.cuda, 'transformers', transformers.__version__)"; } >>"$OUT/run.log" 2>&1
  local quick=${QUICK:-}
  step parity 60 "$python" benchmarks/gpu_parity.py --device "$device"
  if [ -n "$quick" ]; then
    step models 120 "$python" benchmarks/benchmark.py --device "$device" --cases network,readme --shapes 1x10s \
      --repeats 1 --json "$OUT/models.json"
    step pretrain 60 "$python" benchmarks/benchmark_pretrain.py --device "$device" --batch 8 --repeats 1 \
      --json "$OUT/pretrain.json"
    step finetune 60 "$python" benchmarks/benchmark_finetune.py --device "$device" --batch 4 --repeats 1 \
      --json "$OUT/finetune.json"
  else
    step models 140 "$python" benchmarks/benchmark.py --device "$device" --bf16 --memory --json "$OUT/models.json"
    step pretrain 100 "$python" benchmarks/benchmark_pretrain.py --device "$device" --batch 256 --memory \
      --json "$OUT/pretrain.json"
    step pretrain_bf16 80 "$python" benchmarks/benchmark_pretrain.py --device "$device" --batch 256 --bf16 \
      --json "$OUT/pretrain_bf16.json"
    # byola-finetune's step against EVAR's loop at EVAR's batch (issue 35's GPU figure).
    step finetune 40 "$python" benchmarks/benchmark_finetune.py --device "$device" --batch 256 \
      --json "$OUT/finetune.json"
  fi
  local extract_dir superb_dir sampler=""
  extract_dir=$(workdir extract)
  if command -v nvidia-smi >/dev/null && [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 250 >"$extract_dir/util.txt" &
    sampler=$!
  fi
  # 360 clips of 10 s: the hour of audio the issue asks byola-extract to keep the GPU busy on.
  step extract 80 "$python" benchmarks/benchmark_extract.py --device "$device" --workdir "$extract_dir" \
    $([ -n "$quick" ] && echo "--clips 4 --seconds 2" || echo "--clips 360 --seconds 10")
  if [ -n "$sampler" ]; then
    kill "$sampler"
    awk '{ n++; s += $1; if ($1 >= 50) busy++ } END { if (n) printf "GPU utilisation during extract: mean %.0f%%, \
%.0f%% of %d samples at 50%% or more\n", s / n, 100 * busy / n, n }' "$extract_dir/util.txt" | tee -a "$OUT/run.log"
  fi
  superb_dir=$(workdir superb)
  step superb_features 60 "$python" benchmarks/benchmark_superb_features.py --device "$device" \
    --workdir "$superb_dir" $([ -n "$quick" ] && echo "--clips 8 --seconds 1 --epochs 1 --repeats 1")
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) die "say 'prepare' (here) or 'run' (on the GPU machine, with $KIT carried)." ;;
esac
