#!/usr/bin/env bash
# The README's test command: set up a fresh machine (venv, CPU torch, deps, Chromium, vLLM), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
python="$venv/bin/python"
# Torch first (the CPU build where there is no NVIDIA GPU): with no torch present, a bare `torch` requirement pulls
# several GB of CUDA packages.
bash tests/install_torch.sh "$python"
"$python" -m pip install -q -r requirements.txt -r tests/requirements.txt
# A Chromium for the browser tests (tests/browser.py finds it; pytest's header says which): Debian's package where
# apt has one, else Playwright's own build and the libraries it needs.
if ! "$python" tests/browser.py >/dev/null 2>&1; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    if command -v apt-get >/dev/null && apt-cache show chromium >/dev/null 2>&1; then
        $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
    else
        "$python" -m playwright install chromium
        $sudo "$python" -m playwright install-deps chromium || echo "run.sh: could not install Chromium's libraries" \
            "(playwright install-deps needs root and apt); the browser tests will say what is missing" >&2
    fi
fi
"$python" tests/browser.py || true  # one line: which browser the tests drive
# The real vLLM that tests/test_vllm.py serves tiny models with: its own venv, cached outside the clone.
STARLING_VLLM_PYTHON=$(bash tests/vllm_env.sh)
export STARLING_VLLM_PYTHON GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec "$python" -m pytest -q -p no:cacheprovider --doctest-modules starling_demo tests "$@"
