"""The engine keeps one LM and at most `max_rms` reward models loaded, and loads nothing before first use."""
import pytest

from starling_demo.engine import Engine


def test_models_load_lazily_and_stay_loaded():
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    assert not engine.is_loaded("lm", "tiny") and not engine.is_loaded("rm", "tiny")
    first = engine.rm()
    assert engine.rm("tiny") is first and engine.is_loaded("rm", "tiny")


def test_two_reward_models_fit_by_default_and_the_oldest_leaves_beyond_the_limit():
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    engine.rm("tiny")
    engine.rm("tiny-34b")
    assert engine.is_loaded("rm", "tiny") and engine.is_loaded("rm", "tiny-34b")
    single = Engine("tiny", "tiny", "fp32", "cpu", max_rms=1)
    single.rm("tiny")
    single.rm("tiny-34b")
    assert single.is_loaded("rm", "tiny-34b") and not single.is_loaded("rm", "tiny")


def test_a_backend_needs_its_urls_and_only_the_launched_models_are_served():
    with pytest.raises(ValueError, match="--backend vllm needs --lm-url, --rm-url or both"):
        Engine("tiny", "tiny", "fp32", "cpu", backend="vllm")
    with pytest.raises(ValueError, match="--rm-url needs --backend vllm"):
        Engine("tiny", "tiny", "fp32", "cpu", rm_url="http://rm")
    with pytest.raises(ValueError, match="Unknown backend 'sglang'"):
        Engine("tiny", "tiny", "fp32", "cpu", backend="sglang", lm_url="http://lm")
    engine = Engine("tiny", "tiny", "fp32", "cpu", backend="vllm", rm_url="http://rm")
    assert engine.url("rm") == engine.url("rm", "tiny") == "http://rm"
    assert engine.url("rm", "tiny-34b") is None and engine.url("lm") is None  # a second RM, the LM: in process
    assert engine.lock("lm") is engine.device_lock and engine.lock("rm", "tiny-34b") is engine.device_lock
    with engine.lock("rm"):  # nothing to wait for: the server batches
        assert not engine.device_lock._busy
