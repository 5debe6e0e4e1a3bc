"""Candidate generation: sampling, per-candidate stop, N, seeds, prefill-once equivalence, context trimming."""
import gc
import logging
import weakref

import pytest
import torch

from transformers import DynamicCache, MistralConfig, MistralForCausalLM

from starling_demo import generation, static_decoding
from starling_demo.engine import Engine, Settings
from starling_demo.generation import EOT_ID, fit_prompt, sample, stream_candidates
from starling_demo.loading import load_lm
from starling_demo.presets import lm_preset
from starling_demo.static_decoding import stream_static
from starling_demo.templates import openchat_prompt

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def lm():
    return load_lm(lm_preset("tiny"), "fp32", "cpu")


@pytest.fixture(scope="module")
def prompt_ids(lm):
    return openchat_prompt(lm.tokenizer, HELLO).ids


def small_mistral(**config) -> MistralForCausalLM:
    """A Mistral of two small layers with the real vocabulary's size, seeded."""
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32002, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, **config)
    return MistralForCausalLM(config).eval()


def final(stream):
    *_, last = stream
    return last


def test_sample_greedy_and_nucleus():
    logits = torch.tensor([[0.0, 5.0, 4.9, -9.0]] * 200)
    uniform = torch.rand((200, 1), generator=torch.Generator().manual_seed(0))
    assert sample(logits, 0.0, 1.0, uniform).tolist() == [1] * 200
    nucleus = sample(logits, 1.0, 0.5, uniform)
    assert set(nucleus.tolist()) == {1}  # token 1 alone holds more than half the mass
    wide = sample(logits, 1.0, 0.99, uniform)
    assert set(wide.tolist()) == {1, 2}


def test_sampling_follows_the_distribution_and_never_draws_a_zero_probability_token():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.0, 0.7]])).expand(100_000, -1)
    uniform = torch.rand((100_000, 1), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(sample(logits, 1.0, 1.0, uniform), minlength=4)
    assert (counts / 100_000).tolist() == pytest.approx([0.1, 0.2, 0.0, 0.7], abs=0.01)
    assert counts[2] == 0


def test_n_candidates_stream_one_token_per_step(lm, prompt_ids):
    steps = list(stream_candidates(lm.model, prompt_ids, 3, max_new_tokens=6, seed=0))
    counts = [[len(ids) for ids in step.ids] for step in steps]
    assert len(steps) == 6 and counts[0] == [1, 1, 1] and counts[-1] == [6, 6, 6]
    assert steps[-1].finished == ["length"] * 3


def test_greedy_equals_transformers_generate(lm, prompt_ids):
    ours = final(stream_candidates(lm.model, prompt_ids, 2, temperature=0.0, max_new_tokens=12)).ids
    theirs = lm.model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=12, eos_token_id=None)
    assert ours == [theirs[0, len(prompt_ids):].tolist()] * 2


@pytest.fixture
def eot_likely(lm):
    """Make <|end_of_turn|> about 10% likely per step (at temperature 1) among 32002 near-uniform tokens."""
    bias = torch.zeros(32002)
    bias[EOT_ID] = 8.0
    hook = lm.model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + bias)
    yield
    hook.remove()


def test_the_growing_cache_decodes_exactly_like_transformers_cache(lm, prompt_ids, eot_likely, monkeypatch):
    monkeypatch.setattr(generation.GrowingLayer, "ROOM", 3)  # move into new room every few steps
    ours = final(stream_candidates(lm.model, prompt_ids, 8, temperature=1.0, max_new_tokens=40, seed=0))
    lengths = [len(ids) for ids in ours.ids]
    assert len(set(lengths)) > 2 and max(lengths) > 10  # rows left the batch at several steps, after new room
    monkeypatch.setattr(generation, "GrowingCache", lambda: DynamicCache(config=lm.model.config))
    assert final(stream_candidates(lm.model, prompt_ids, 8, temperature=1.0, max_new_tokens=40, seed=0)) == ours


def test_sliding_window_attention_stays_exact():
    model = small_mistral(sliding_window=8)
    prompt = list(range(100, 120))
    ours = final(stream_candidates(model, prompt, 1, temperature=0.0, max_new_tokens=30)).ids[0]
    theirs = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=30, eos_token_id=None)
    assert ours == theirs[0, len(prompt):].tolist()


def test_each_candidate_stops_at_end_of_turn(lm, prompt_ids, eot_likely):
    state = final(stream_candidates(lm.model, prompt_ids, 8, temperature=1.0, max_new_tokens=200, seed=3))
    assert state.finished == ["stop"] * 8
    assert all(EOT_ID not in ids for ids in state.ids)
    assert len({len(ids) for ids in state.ids}) > 1  # they stopped at different steps


def test_same_seed_same_candidates_other_seed_other(lm, prompt_ids):
    run = lambda seed: final(stream_candidates(lm.model, prompt_ids, 4, max_new_tokens=8, seed=seed)).ids
    assert run(7) == run(7)
    assert run(7) != run(8)
    assert len({tuple(ids) for ids in run(7)}) == 4


def test_n_out_of_range(lm, prompt_ids):
    for n in (0, 9):
        with pytest.raises(ValueError, match="between 1 and 8"):
            next(stream_candidates(lm.model, prompt_ids, n))


def test_long_conversations_lose_their_oldest_turns_with_a_warning(lm):
    long_turns = []
    for i in range(6):
        long_turns += [{"role": "user", "content": f"question {i} " * 40}, {"role": "assistant", "content": "ok " * 40}]
    messages = long_turns + [{"role": "user", "content": "last question"}]
    prompt, warning = fit_prompt(lm.tokenizer, messages, budget=300)
    assert len(prompt.ids) <= 300 and "oldest" in warning
    assert prompt.text.endswith("GPT4 Correct User: last question<|end_of_turn|>GPT4 Correct Assistant:")
    assert fit_prompt(lm.tokenizer, HELLO, budget=300)[1] is None
    with pytest.raises(ValueError, match="shorten it"):
        fit_prompt(lm.tokenizer, [{"role": "user", "content": "word " * 400}], budget=300)


def test_engine_streams_texts_and_reports_the_seed():
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    updates = list(engine.generate(HELLO, Settings(n=2, max_new_tokens=4)))
    assert len(updates) == 4 and updates[-1].done and not updates[0].done
    again = final(engine.generate(HELLO, Settings(n=2, max_new_tokens=4, seed=updates[-1].seed)))
    assert again.texts == updates[-1].texts and all(again.texts)
    scores = engine.score(HELLO, again.texts)
    assert len(scores.rewards) == 2


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (1.0, 0.95), (0.0, 1.0)])
def test_the_static_cache_decodes_the_same_tokens(lm, prompt_ids, eot_likely, temperature, top_p, monkeypatch):
    """The GPU's path (`static_decoding`: every row kept on a static cache, read a frame at a time) without the
    graph, on the CPU: the same tokens and endings as the eager path for a seed, candidates finishing at several
    steps; and the host reads the tokens at most a frame at a time, not every step."""
    eager = final(stream_candidates(lm.model, prompt_ids, 8, temperature, top_p, max_new_tokens=40, seed=0))
    if temperature:
        assert len({len(ids) for ids in eager.ids}) > 2 and "stop" in eager.finished
    frames = list(stream_static(lm.model, prompt_ids, 8, temperature, top_p, 40, seed=0))
    assert frames[-1] == eager
    monkeypatch.setattr(static_decoding, "FRAME_SECONDS", 3600)
    frames = list(stream_static(lm.model, prompt_ids, 8, temperature, top_p, 40, seed=0))
    assert frames[-1] == eager and len(frames) <= 2  # the first token, then the end
    assert [len(ids) for ids in frames[0].ids] == [0 if end else 1 for end in frames[0].finished]


def test_the_static_cache_keeps_a_sliding_window_exact():
    model = small_mistral(sliding_window=8)
    prompt = list(range(100, 120))
    ours = final(stream_static(model, prompt, 2, temperature=0.0, max_new_tokens=30)).ids
    theirs = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=30, eos_token_id=None)
    assert ours == [theirs[0, len(prompt):].tolist()] * 2


def test_a_graph_that_cannot_be_captured_falls_back_once_and_a_switched_model_is_freed(caplog):
    """Where a CUDA graph cannot be captured (here: no GPU) `stream_static` says why in one log line and gives None,
    for the eager path, without trying again every turn; and the step kept for reuse does not keep a model alive."""
    model = small_mistral()
    with caplog.at_level(logging.WARNING, logger="starling_demo.static_decoding"):
        assert stream_static(model, [1, 2, 3], 2, graph=True) is None
        assert stream_static(model, [1, 2, 3], 2, graph=True) is None
    [record] = caplog.records
    assert record.getMessage().startswith("CUDA graph capture failed (") and "decoding eagerly" in record.getMessage()
    assert len(final(stream_static(model, [1, 2, 3], 2, 0.0, max_new_tokens=4)).ids[1]) == 4
    assert model in static_decoding._steps
    freed = weakref.ref(model)
    del model
    gc.collect()
    assert freed() is None
