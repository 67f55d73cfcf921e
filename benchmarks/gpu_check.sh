#!/usr/bin/env bash
# The GPU check of issue 19 (benchmarks/gpu_check.py), runnable on a machine whose image has PyTorch,
# torchvision, onnx, onnxruntime and timm but not edgekd's other dependencies.
#
#   bash benchmarks/gpu_check.sh [--wheels DIR] [--fmnist DIR] [gpu_check.py options...]
#
#   --wheels DIR   pip install, offline, every wheel in DIR (build it elsewhere with
#                  pip download --no-deps --only-binary=:all: -d DIR $(python benchmarks/gpu_check.py --carry-list))
#   --fmnist DIR   where Fashion-MNIST's four .gz files are (sets EDGEKD_DATA; the quickstart part needs them)
#   --device cpu --tiny   a CPU smoke run of the same code
#
# edgekd itself runs from this checkout (PYTHONPATH), not installed. Results: $OUT/gpu_check.json (or --out).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then  # this checkout's venv when there is one, else the image's Python
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels)
      shopt -s nullglob
      wheels=("$2"/*.whl)
      if [[ ${#wheels[@]} -eq 0 ]]; then echo "gpu_check: no .whl files in $2" >&2; exit 2; fi
      "$PYTHON" -m pip install --quiet --no-index --find-links "$2" "${wheels[@]}"
      shift 2 ;;
    --fmnist) export EDGEKD_DATA="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py "${args[@]}"
