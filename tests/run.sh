#!/usr/bin/env bash
# The README's test command: set up a fresh machine (venv, CPU torch, deps, Chromium, vLLM), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
python="$venv/bin/python"
# CPU torch first: with no torch present, a bare `torch` requirement pulls several GB of CUDA packages.
"$python" -c "import torch" 2>/dev/null || "$python" -m pip install -q torch==2.13.0
"$python" -m pip install -q -r requirements.txt -r tests/requirements.txt
if ! command -v chromium >/dev/null; then  # the browser tests drive Debian's Chromium, not a downloaded one
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
fi
# The real vLLM that tests/test_vllm.py serves tiny models with: its own venv, cached outside the clone.
STARLING_VLLM_PYTHON=$(bash tests/vllm_env.sh)
export STARLING_VLLM_PYTHON GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec "$python" -m pytest -q -p no:cacheprovider --doctest-modules starling_demo tests "$@"
