#!/usr/bin/env bash
# Set up a fresh machine: system packages the tests need, a virtual environment in .venv, the package.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null || [ ! -d /usr/share/sounds/freedesktop ] || [ ! -d /usr/share/sounds/alsa ]; then
  # espeak-ng synthesises the small labelled speech sets the tests build; sox converts audio; the two sound
  # themes ship real recordings (44.1/48 kHz, stereo OGG and mono WAV) that the pipeline tests read.
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng sox sound-theme-freedesktop alsa-utils >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build. Where pip's own indexes offer the CUDA
# build for this pin (public PyPI on Linux), TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes the CPU one.
.venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -e ".[test]"
echo "Set up .venv with byola_hf $(.venv/bin/python -c 'import byola_hf; print(byola_hf.__version__)')"
