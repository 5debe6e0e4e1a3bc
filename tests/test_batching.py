"""Batch scoring equals scoring each candidate alone (bit for bit: batch invariance), in input order, for both RM
layouts and read-outs, rows past 2,048 tokens included; its batches keep to the token budget."""
import random

import pytest

from starling_demo import batching
from starling_demo.batching import plan, score_stream
from starling_demo.loading import load_rm
from starling_demo.presets import rm_preset
from starling_demo.scoring import score

WORDS = "the a model reply answer reward token long short good best people water light house city 😀 ünï".split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def conversations(seed: int = 0, count: int = 24) -> list[tuple[list[dict], list[str]]]:
    """Pairs and 4-way rankings of varied lengths: short and long prompts, a multi-turn one, rows over 2,048 tokens
    (a prompt too long for the RM, and a reply that is), and a row whose turns do not alternate."""
    rng = random.Random(seed)
    result = []
    for i in range(count):
        prompt = words(rng, rng.choice([3, 40, 300, 900]))
        messages = [{"role": "user", "content": prompt}]
        if i % 5 == 1:
            messages = [{"role": "system", "content": "Be brief."}, *messages,
                        {"role": "assistant", "content": words(rng, 30)}, {"role": "user", "content": "More?"}]
        candidates = [words(rng, rng.choice([1, 20, 120])) for _ in range(rng.choice([2, 4]))]
        result.append((messages, candidates))
    result.insert(count // 4, ([{"role": "user", "content": words(rng, 2500)}], ["Fine.", words(rng, 50)]))
    result.insert(count // 2, ([{"role": "user", "content": "Hi"}], ["Hello.", words(rng, 2300), "Hey"]))
    result.insert(count * 3 // 4, (MALFORMED, ["a", "b"]))
    return result


MALFORMED = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi?"}]  # turns that do not alternate


@pytest.fixture(scope="module", params=["tiny", "tiny-34b"])
def rm(request):
    return load_rm(rm_preset(request.param), "fp32", "cpu")


@pytest.mark.parametrize("readout", ["card", "last-token"])
def test_batched_equals_each_conversation_alone_in_order(rm, readout):
    data = conversations()
    batches, seen = [], []
    run = lambda groups, *args: batches.append(groups) or rm.values(groups, *args)  # noqa: E731
    results = [r for ready, _ in score_stream(rm, data, readout, run=run, budget=3000, window=10) for _, r in ready]
    assert len(results) == len(data)
    assert any(len(groups) > 1 for groups in batches)  # conversations did share passes
    for (messages, candidates), result in zip(data, results, strict=True):
        if messages is MALFORMED:
            assert isinstance(result, ValueError) and "alternate" in str(result)
            continue
        alone = score(rm, messages, candidates, readout)
        assert result.rewards == alone.rewards == [score(rm, messages, [c], readout).rewards[0] for c in candidates]
        assert (result.readout, result.lengths, result.truncated, result.texts) == (
            alone.readout, alone.lengths, alone.truncated, alone.texts)
        assert result.traces is None
        seen.append(any(result.truncated))
    assert seen.count(True) == 2  # the rows over 2,048 tokens were there, and read where the card reads them


def test_traces_when_asked_equal_those_of_one_conversation(rm):
    data = [c for c in conversations(seed=1, count=8) if c[0] is not MALFORMED]
    results = [r for ready, _ in score_stream(rm, data, traces=True, budget=2000) for _, r in ready]
    for (messages, candidates), result in zip(data, results, strict=True):
        alone = score(rm, messages, candidates, traces=True)
        assert [len(t) for t in result.traces] == alone.lengths
        assert result.traces == alone.traces


def test_batches_keep_to_the_budget_and_a_conversation_over_it_is_split(rm):
    rng = random.Random(3)
    big = ([{"role": "user", "content": words(rng, 200)}], [words(rng, 150) for _ in range(8)])
    data = [*conversations(seed=2, count=12), big]
    data = [c for c in data if c[0] is not MALFORMED]
    costs = []

    def run(groups, *args):
        costs.append(sum(len(group) for group in groups))
        return rm.values(groups, *args)

    budget = 1200
    results = [r for ready, _ in score_stream(rm, data, run=run, budget=budget) for _, r in ready]
    assert score(rm, *big).rewards == pytest.approx(results[-1].rewards, abs=1e-4)
    parts = batching.parts_of(0, [e.ids for e in batching.encode(rm, *big)], budget)
    assert len(parts) > 1 and all(batching.cost([p]) <= budget for p in parts)
    encoded = [batching.encode(rm, m, c) for m, c in data]
    planned = plan([p for i, e in enumerate(encoded) for p in batching.parts_of(i, [x.ids for x in e], budget)],
                   budget)
    # Only a row longer than the budget goes over it, alone.
    assert all(batching.cost(batch) <= budget or (len(batch) == 1 and len(batch[0].rows) == 1) for batch in planned)
    assert any(batching.cost(batch) > budget for batch in planned)
    assert len(costs) == len(planned)


def test_the_input_is_read_a_window_at_a_time(rm):
    read = []

    def source():
        for i, conversation in enumerate(conversations(seed=4, count=30)):
            read.append(i)
            yield conversation

    stream = score_stream(rm, source(), window=8)
    first, scored = next(stream)
    while not first:
        first, scored = next(stream)
    assert len(read) <= 8 and 0 < scored <= 8  # the rest of the file is not read yet
    counts = [scored for _, scored in stream]
    assert counts == sorted(counts) and counts[-1] == len(read) == 33


def test_the_default_budget_is_the_models_own(rm, monkeypatch):
    data = [c for c in conversations(seed=5, count=10) if c[0] is not MALFORMED]
    encoded = [batching.encode(rm, m, c) for m, c in data]
    runs = []

    def run(groups, *args):
        runs.append(groups)
        return rm.values(groups, *args)

    monkeypatch.setattr(type(rm), "batch_tokens", lambda self: 1200)
    [r for ready, _ in score_stream(rm, data, run=run) for _, r in ready]
    planned = plan([p for i, e in enumerate(encoded) for p in batching.parts_of(i, [x.ids for x in e], 1200)], 1200)
    assert len(runs) == len(planned) > len(plan([p for i, e in enumerate(encoded)
                                                 for p in batching.parts_of(i, [x.ids for x in e], 8192)]))


def test_a_local_model_batches_8192_ids_on_a_cpu_and_by_free_memory_on_a_gpu(rm, monkeypatch):
    from types import SimpleNamespace

    import torch
    from transformers import LlamaConfig

    from starling_demo.backends.local import Loaded

    assert rm.batch_tokens() == batching.BATCH_TOKENS == 8192
    # RM-7B's shape: 32 layers x 32 KV heads x 128 dims, K and V in bf16: 0.5 MiB an id.
    config = LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)
    gpu = Loaded(SimpleNamespace(device=torch.device("cuda", 0), config=config), rm.tokenizer, rm.preset, "4bit",
                 "cuda")
    for free, budget in [(7 * 2**30, 8192), (24 * 2**30, 24576), (120 * 2**30, 32768)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 141 * 2**30))
        assert gpu.batch_tokens() == budget
