#!/usr/bin/env bash
# Set up edgekd on a fresh Debian/Ubuntu-like machine: .venv with torch + edgekd, and Fashion-MNIST when apt works.
# Idempotent: rerunning only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision: the pair this machine carries on disk (a CPU-capable build); pin before the rest resolves.
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || \
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[dev]"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST not installed; run 'sudo apt-get install dataset-fashion-mnist' or set data.download: true" >&2
  fi
fi
