#!/usr/bin/env bash
# Create .venv and install edgesplit with the CPU build of torch (never a multi-GB CUDA build).
# Usage: bash install.sh        (idempotent; PYTHON=python3.12 bash install.sh to pick another Python;
#        EXTRAS=test,rl bash install.sh adds the optional extras of pyproject.toml, as CI does)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: this wheel is the CPU build; a bare `torch` would pull CUDA.
# Outside this workplace, point TORCH_INDEX_URL at PyTorch's CPU wheel index to get the CPU build.
.venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -e ".[${EXTRAS:-test}]"
.venv/bin/python -c "import torch, edgesplit; print(f'edgesplit {edgesplit.__version__} with torch {torch.__version__} ready in .venv')"
