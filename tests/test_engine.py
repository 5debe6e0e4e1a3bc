"""The engine keeps one LM and at most `max_rms` reward models loaded, and loads nothing before first use."""
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
