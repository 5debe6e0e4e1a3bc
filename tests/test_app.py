"""The launcher: which models start where, the banner that says so, flags and environment, ZeroGPU wiring."""
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch

import app
from starling_demo.engine import Engine


@pytest.mark.parametrize("gpu, hub, expected, reason", [
    (False, True, app.TINY, "no GPU was found"),
    (True, False, app.TINY, "the Hugging Face Hub is unreachable and nothing is cached"),
    (True, True, app.REAL, None),
])
def test_real_models_need_a_gpu_and_the_hub(monkeypatch, gpu, hub, expected, reason):
    monkeypatch.setattr(app, "has_gpu", lambda: gpu)
    monkeypatch.setattr(app, "hub_available", lambda repo: hub)
    assert app.pick_defaults() == (expected, reason)


def test_the_banner_shows_whenever_a_tiny_model_runs(monkeypatch):
    monkeypatch.delenv("STARLING_LM", raising=False)
    tiny = app.parse_args(app.TINY, [])
    assert "no GPU was found" in app.banner(tiny, "no GPU was found")
    assert "the tiny presets were chosen" in app.banner(tiny, None)
    assert app.banner(app.parse_args(app.TINY, ["--lm", "starling-lm-7b-beta", "--rm", "starling-rm-34b"]),
                      "no GPU was found") is None


def test_flags_fall_back_to_environment_variables(monkeypatch):
    monkeypatch.setenv("STARLING_RM", "starling-rm-34b")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9000")
    monkeypatch.setenv("GRADIO_SHARE", "1")
    args = app.parse_args(app.REAL, ["--precision", "bf16"])
    assert (args.lm, args.rm, args.precision, args.port, args.share) == (
        "starling-lm-7b-beta", "starling-rm-34b", "bf16", 9000, True)
    with pytest.raises(SystemExit):
        app.parse_args(app.REAL, ["--precision", "8bit"])


def test_clients_are_addresses_and_on_a_space_the_proxys_header_names_them(monkeypatch):
    assert app.parse_args(app.TINY, []).client_header == ""
    assert app.parse_args(app.TINY, ["--client-header", "X-Real-IP"]).client_header == "X-Real-IP"
    monkeypatch.setenv("SPACE_ID", "someone/starling-demo")
    assert app.parse_args(app.TINY, []).client_header == "X-Forwarded-For"
    monkeypatch.setenv("STARLING_CLIENT_HEADER", "X-Real-IP")
    assert app.parse_args(app.TINY, []).client_header == "X-Real-IP"


class FakeEngine:
    backend = "local"

    def __init__(self):
        self.loaded = []

    def lm(self):
        self.loaded.append("lm")

    def rm(self):
        self.loaded.append("rm")

    def generate(self):
        return "generated"

    def score(self):
        return "scored"

    def values(self):
        return "batch scored"

    def probe(self):
        return "probed"

    def attribute(self):
        return "attributed"


def test_zero_gpu_loads_the_models_first_and_wraps_the_gpu_work(monkeypatch):
    durations = []

    def gpu(duration):
        durations.append(duration)
        return lambda fn: lambda *args: ("on gpu", fn(*args))

    monkeypatch.setattr(app, "spaces", types.SimpleNamespace(GPU=gpu))
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    engine = app.on_zero_gpu(FakeEngine())
    assert engine.loaded == ["lm", "rm"] and len(durations) == 5
    assert engine.generate() == ("on gpu", "generated") and engine.score() == ("on gpu", "scored")
    assert engine.values() == ("on gpu", "batch scored")
    assert engine.probe() == ("on gpu", "probed") and engine.attribute() == ("on gpu", "attributed")


def test_without_spaces_nothing_changes(monkeypatch):
    monkeypatch.setattr(app, "spaces", None)
    engine = app.on_zero_gpu(FakeEngine())
    assert engine.loaded == [] and engine.generate() == "generated"


def test_visitors_may_choose_the_launched_models_and_what_the_flags_allow(monkeypatch):
    def allowed(*flags):
        args = app.parse_args(app.TINY, list(flags))
        return app.allowed_models(args, Engine(args.lm, args.rm, args.precision, args.device))

    assert allowed() == {"lm": ("tiny",), "rm": ("tiny", "tiny-34b")}  # the second tiny RM fits beside
    monkeypatch.setenv("STARLING_ALLOW_RMS", "tiny-34b")
    assert allowed("--rm", "tiny-34b", "--allow-lms", "all")["lm"] == ("tiny", "starling-lm-7b-beta",
                                                                        "starling-lm-7b-alpha")
    assert allowed("--rm", "tiny-34b")["rm"] == ("tiny-34b",)  # the flag says exactly which
    with pytest.raises(SystemExit, match="--allow-lms: unknown preset 'gpt-5'"):
        allowed("--allow-lms", "gpt-5")


def startup(argv, reason, device, allowed=None):
    args = app.parse_args(app.TINY, argv)
    return app.startup_lines(args, reason, allowed or {"lm": (args.lm,), "rm": (args.rm,)}, device)


@pytest.fixture
def no_model_env(monkeypatch):
    for name in ("STARLING_LM", "STARLING_RM", "STARLING_PRECISION", "STARLING_DEVICE"):
        monkeypatch.delenv(name, raising=False)


def test_the_terminal_says_tiny_models_run_because_there_is_no_gpu(no_model_env):
    said = startup([], "no GPU was found", "cpu", {"lm": ("tiny",), "rm": ("tiny", "tiny-34b")})
    assert said == ["Starling demo",
                    "  language model: tiny (fp32, cpu)",
                    "  reward model:   tiny (fp32, cpu)",
                    "  no GPU was found: the tiny random models run instead; replies are noise",
                    "  visitors may choose: LMs tiny; RMs tiny, tiny-34b"]


def test_the_terminal_says_when_tiny_was_chosen(no_model_env):
    said = "\n".join(startup(["--lm", "tiny", "--rm", "starling-rm-7b-alpha", "--precision", "4bit"], None, "cuda"))
    assert "language model: tiny (4bit, cuda)" in said and "reward model:   starling-rm-7b-alpha (4bit, cuda)" in said
    assert "the tiny presets were chosen (--lm tiny): random models; replies are noise" in said
    assert "a GPU was found: the real models run on it" in said  # the RM is real


def test_the_terminal_names_the_real_models_and_the_gpu(no_model_env):
    allowed = {"lm": ("starling-lm-7b-beta",), "rm": ("starling-rm-7b-alpha", "starling-rm-34b")}
    said = app.startup_lines(app.parse_args(app.REAL, []), None, allowed, "cuda")
    assert said[1:3] == ["  language model: starling-lm-7b-beta (4bit, cuda)",
                         "  reward model:   starling-rm-7b-alpha (4bit, cuda)"]
    assert "a GPU was found" in said[3] and "loads on first use" in said[3]
    assert said[4] == "  visitors may choose: LMs starling-lm-7b-beta; RMs starling-rm-7b-alpha, starling-rm-34b"
    assert not any("tiny" in line for line in said)
    on_cpu = startup(["--lm", "starling-lm-7b-beta", "--rm", "starling-rm-7b-alpha"], "no GPU was found", "cpu")
    assert "the real models run on the CPU, slowly" in on_cpu[3] and len(on_cpu) == 5


def test_the_url_line_says_where_to_open_the_app_and_how_to_share_it():
    assert app.url_line("http://127.0.0.1:7860/", None) == (
        "Open http://127.0.0.1:7860 in a browser (python app.py --share for a public link; Ctrl+C stops)")
    shared = app.url_line("http://127.0.0.1:7860/", "https://abc.gradio.live", share=True)
    assert "http://127.0.0.1:7860 " in shared and "https://abc.gradio.live" in shared and "--share" not in shared
    assert "no public link could be made" in app.url_line("http://127.0.0.1:7860/", None, share=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(process, marker: str, deadline: float) -> list[str]:
    """The process's stdout lines up to the first that starts with `marker`; fails at `deadline`."""
    got = queue.Queue()
    threading.Thread(target=lambda: [*map(got.put, process.stdout), got.put(None)], daemon=True).start()
    said = []
    try:
        while (line := got.get(timeout=max(deadline - time.monotonic(), 0.01))) is not None:
            said.append(line.rstrip("\n"))
            if line.startswith(marker):
                return said
        why = "the process ended"
    except queue.Empty:
        why = "time ran out"
    pytest.fail(f"{why} before a line starting {marker!r}; it said:\n" + "\n".join(said))


def test_python_app_py_says_what_runs_and_where_without_gradios_banner():
    port = free_port()
    root = Path(app.__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STARLING_", "GRADIO_"))}
    env.update(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--lm", "tiny", "--rm", "tiny",
                                "--precision", "fp32", "--device", "cpu"], cwd=root, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        said = "\n".join(read_until(process, "Open http", time.monotonic() + 60))
    finally:
        process.kill()
        process.wait(timeout=30)
    assert "language model: tiny (fp32, cpu)" in said and "reward model:   tiny (fp32, cpu)" in said
    assert "replies are noise" in said and "visitors may choose: LMs tiny; RMs tiny, tiny-34b" in said
    assert f"Open http://127.0.0.1:{port} in a browser (python app.py --share for a public link" in said
    assert "share=True" not in said and "Running on local URL" not in said
    threads = torch.get_num_threads()  # PyTorch's default here, one per core
    assert f"the models' CPU work: {max(1, threads - 1)} thread" in said and f"of {threads} (--cpu-threads)" in said


def test_models_on_the_cpu_leave_a_core_to_the_web_server(no_model_env, monkeypatch):
    monkeypatch.delenv("STARLING_CPU_THREADS", raising=False)
    default = torch.get_num_threads()
    args = app.parse_args(app.TINY, [])
    assert app.cpu_threads(args, "cpu") == max(1, default - 1) and app.cpu_threads(args, "cuda") is None
    assert app.cpu_threads(app.parse_args(app.TINY, ["--cpu-threads", "3"]), "cuda") == 3
    monkeypatch.setenv("STARLING_CPU_THREADS", "5")
    assert app.cpu_threads(app.parse_args(app.TINY, []), "cpu") == 5
    with pytest.raises(ValueError, match="--cpu-threads must be at least 1"):
        app.cpu_threads(app.parse_args(app.TINY, ["--cpu-threads", "-2"]), "cpu")


def test_served_models_are_named_with_their_server_and_turns_run_side_by_side(no_model_env, monkeypatch):
    for name in ("STARLING_BACKEND", "STARLING_LM_URL", "STARLING_RM_URL", "STARLING_TURNS_AT_ONCE"):
        monkeypatch.delenv(name, raising=False)
    argv = ["--backend", "vllm", "--lm-url", "http://lm:8000"]
    args = app.parse_args(app.REAL, argv)
    allowed = {"lm": ("starling-lm-7b-beta",), "rm": ("starling-rm-7b-alpha",)}
    said = app.startup_lines(args, None, allowed, "cpu")
    assert said[1:4] == ["  language model: starling-lm-7b-beta on vllm at http://lm:8000",
                         "  reward model:   starling-rm-7b-alpha (4bit, cpu)",
                         "  the real models run on the CPU, slowly; each loads on first use, downloaded first if it "
                         "is not cached"]  # the RM runs here
    both = app.parse_args(app.REAL, [*argv, "--rm-url", "http://rm:8000"])
    assert not any("slowly" in line for line in app.startup_lines(both, None, allowed, "cpu"))
    assert app.turns_at_once(args) == app.SERVED_TURNS_AT_ONCE and app.turns_at_once(app.parse_args(app.REAL, [])) == 1
    monkeypatch.setenv("STARLING_TURNS_AT_ONCE", "3")
    assert app.turns_at_once(app.parse_args(app.REAL, argv)) == 3
    with pytest.raises(SystemExit):  # argparse refuses an unknown backend
        app.parse_args(app.REAL, ["--backend", "sglang"])
