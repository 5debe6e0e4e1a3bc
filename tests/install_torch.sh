#!/usr/bin/env bash
# Install torch 2.13.0 for the python given ($1), unless it has torch: PyTorch's CPU build, from PyTorch's CPU index,
# where the machine has no NVIDIA GPU (a bare `torch` from PyPI is the CUDA build, with several GB of NVIDIA
# packages); pip's default index where a GPU is, or, with one line saying so, where the CPU index cannot be reached.
set -euo pipefail
python=$1
version=2.13.0
index=${STARLING_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
if "$python" -c "import torch" 2>/dev/null; then
    exit 0
fi
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo "install_torch: an NVIDIA GPU is here: torch $version from pip's default index (the CUDA build)" >&2
    exec "$python" -m pip install -q "torch==$version"
fi
if "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=15)" \
        "$index" 2>/dev/null; then
    exec "$python" -m pip install -q --index-url "$index" "torch==$version"
fi
echo "install_torch: $index cannot be reached: torch $version from pip's default index instead (the CPU build only" \
     "where that index serves it, as a local mirror may; PyPI's is the CUDA build)" >&2
exec "$python" -m pip install -q "torch==$version"
