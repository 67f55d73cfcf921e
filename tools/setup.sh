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
# Debian packages: Fashion-MNIST (real data for the tests and the quickstart) and openssh-server (the ssh
# target's tests start a throwaway sshd on 127.0.0.1; they fail, not skip, without it).
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: not installed: ${need[*]}; run 'sudo apt-get install ${need[*]}'" \
      "(for Fashion-MNIST you may instead set data.download: true)" >&2
  fi
fi
