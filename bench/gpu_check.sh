#!/usr/bin/env bash
# The GPU path checked in one go (issue 14): bf16 training, the NF4/int8 CUDA paths against the CPU
# reference, compile on/off, and tokens/s + peak memory for LoRA, QLoRA and full fine-tuning on the
# bundled SmolLM2-135M (bench/gpu_check.py; figures in bench/results/gpu_check.json).
#
#   bench/gpu_check.sh                 # from a fresh checkout on a CUDA machine, about 5-8 minutes on one H200
#   VENV=.venv-gpu bench/gpu_check.sh  # another virtualenv
#   bench/gpu_check.sh --steps 10      # arguments go to bench/gpu_check.py
#
# It uses $VENV (default .venv) if it is there, else installs it as `make setup` does (the hashed locks,
# the bundled model's package); package registries only, no model downloads. If the torch there has no
# CUDA (`make setup` installs the CPU build), the same torch version is installed from the package index with
# its CUDA libraries (and triton, which inductor compiles GPU kernels with). Exit status 0 only if every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
TORCH=$(sed -n 's/^TORCH := //p' Makefile)   # the pinned version, e.g. torch==2.13.0

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [ ! -f "$VENV/.installed" ]; then
  echo "== installing $VENV (make setup)"
  make setup VENV="$VENV"
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "== $("$PY" -c 'import torch; print(torch.__version__)') has no CUDA here: installing $TORCH with its CUDA libraries"
  "$PY" -m pip uninstall -q -y torch
  "$PY" -m pip install -q "$TORCH"   # with its dependencies this time: the nvidia-* libraries and triton
  "$PY" -c 'import sys, torch; print("torch", torch.__version__, "CUDA", torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "torch still sees no CUDA device: check the driver (nvidia-smi)"; exit 2; }
fi

echo "== bench/gpu_check.py"
exec "$PY" bench/gpu_check.py "$@"
