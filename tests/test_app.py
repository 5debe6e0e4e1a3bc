"""The launcher: which models start where, the banner that says so, flags and environment, ZeroGPU wiring."""
import types

import pytest

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


class FakeEngine:
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


def test_zero_gpu_loads_the_models_first_and_wraps_the_gpu_work(monkeypatch):
    durations = []

    def gpu(duration):
        durations.append(duration)
        return lambda fn: lambda *args: ("on gpu", fn(*args))

    monkeypatch.setattr(app, "spaces", types.SimpleNamespace(GPU=gpu))
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    engine = app.on_zero_gpu(FakeEngine())
    assert engine.loaded == ["lm", "rm"] and len(durations) == 2
    assert engine.generate() == ("on gpu", "generated") and engine.score() == ("on gpu", "scored")


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
