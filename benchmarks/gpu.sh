#!/usr/bin/env bash
# Every GPU measurement of issue 25 in one device call of under 8 minutes, and the packages its image lacks.
#
#   bash benchmarks/gpu.sh prepare   # here, once: fills the ignored folder .gpu (about 25 MB)
#   bash benchmarks/gpu.sh run       # on the lent GPU, through the device tool with carry [".gpu"]
#
# The device image has torch 2.11 (CUDA 13.0) and transformers 5.17, but no bitsandbytes and no mistral-common,
# and it cannot download. `prepare` puts in .gpu: the transformers wheel at the requirements' floor (5.24.0, which
# takes the image's huggingface_hub 1.x), bitsandbytes 0.50.2 with only its CUDA 13.0 and CPU libraries (the whole
# wheel is 43 MB), and the tiny checkpoints' tokenizer files (the benchmarks' models are random, built in place;
# the tokenizer is the real Mistral one). `run` installs the wheels in /tmp/site and runs the benchmarks in order
# of what the issue needs most, each under its own time limit, each log in $OUT (artifacts/gpu here).
# DEVICE=cpu runs the same list on this machine's small models: a check of the script, not of the figures (with
# EVAL_ROWS=12: the RewardBench loop takes minutes on 120 rows on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu
PYTHON=${PYTHON:-python3}

prepare() {
    rm -rf "$CARRY" && mkdir -p "$CARRY/whl" "$CARRY/cache" || exit 1
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$CARRY/whl" transformers==5.24.0 bitsandbytes==0.50.2 || exit 1
    # pip installs a wheel's files as listed in the zip: the other CUDA and ROCm builds are simply left out.
    "$PYTHON" - "$CARRY"/whl/bitsandbytes-*.whl <<'EOF' || exit 1
import re, sys, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as whole:
    items = [(i, whole.read(i)) for i in whole.infolist()
             if not re.search(r"libbitsandbytes_(?!cuda130|cpu)", i.filename)]
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as trimmed:
    for info, data in items:
        trimmed.writestr(info, data)
EOF
    "$PYTHON" - "$CARRY/cache" <<'EOF' || exit 1
import shutil, sys
from pathlib import Path
from starling_demo.tiny import CACHE, tiny_checkpoint
for name in ("lm", "rm-7b"):
    target = Path(sys.argv[1]) / CACHE.name / name
    target.mkdir(parents=True)
    for file in tiny_checkpoint(name).iterdir():
        if file.suffix not in (".safetensors", ".bin"):  # no weights: the benchmarks build random models
            shutil.copy(file, target)
EOF
    grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >>.git/info/exclude
    du -sh "$CARRY"
}

run() {
    local device=${DEVICE:-cuda} out=${OUT:-artifacts/gpu}
    mkdir -p "$out"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$CARRY"/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 STARLING_DEMO_CACHE=$PWD/$CARRY/cache
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
      "$PYTHON" -c "import torch, transformers, bitsandbytes as b; print(torch.__version__, torch.version.cuda,
transformers.__version__, b.__version__)"; } | tee "$out/versions.log"
    bench() {  # log name, seconds allowed, module and its flags
        local name=$1 limit=$2 start=$SECONDS
        shift 2
        timeout "$limit" "$PYTHON" -m "benchmarks.$1" --device "$device" "${@:2}" >"$out/$name.log" 2>&1
        echo "$name: exit $? after $((SECONDS - start)) s (limit $limit)" | tee -a "$out/versions.log"
    }
    bench generation 95 bench_generation --repeats 2 --bandwidth 0     # graph vs eager step, kernels, TTFT
    bench turn 125 bench_turn --repeats 2 --profile-scoring             # the turn, its scoring's profile; invariance
    bench turn-cudnn 80 bench_turn --repeats 2 --turn-only --cudnn-attention   # as torch picks: the scoring gap?
    bench eval 100 bench_eval --rows "${EVAL_ROWS:-120}" --invariance-only   # (c) against (c'): invariance's cost
    bench memory 70 bench_memory                                        # peaks, eager and graph
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu.sh prepare|run" >&2; exit 2 ;;
esac
