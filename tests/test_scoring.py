"""Scores equal the model cards' own scoring code (fp32, 1e-4), on tiny checkpoints of both layouts."""
import pytest
import torch

from card_reference import CardRM7B, CardRM34B, rewardbench_rm7b_text, rm7b_text, rm34b_text
from starling_demo.loading import load_rm
from starling_demo.presets import rm_preset
from starling_demo.scoring import score, value_rows
from starling_demo.tiny import tiny_checkpoint

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hello, how are you today?"}],
    "multi": [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "Tell me about Paris. " * 4},
              {"role": "assistant", "content": "Paris is the capital of France."},
              {"role": "user", "content": "And its weather?"}],
    "unicode": [{"role": "user", "content": "Ça va? 你好吗？ Привет 😀 — ok"}],
    "code": [{"role": "user", "content": "Write quicksort in C++:\n```cpp\nvoid qs(int* a, int n);\n```"}],
    "whitespace": [{"role": "user", "content": "Fix  this:\n\tdef f():\n        return  1\n\n\n  ok  "}],
    "long": [{"role": "user", "content": "Repeat after me: " + "lorem ipsum dolor " * 800}],
}
CANDIDATES = ["I am fine, thanks for asking!", "No.", "Très bien 😀!\n```python\nprint('hi')\n```\nDone.",
              "Sure " * 40, "Here:\n```python\ndef f():\n    if x:\n        return  1\n```\n  Indented  text.  "]


@pytest.fixture(scope="module")
def rm7b():
    return load_rm(rm_preset("tiny"), "fp32", "cpu")


@pytest.fixture(scope="module")
def rm34b():
    return load_rm(rm_preset("tiny-34b"), "fp32", "cpu")


@pytest.fixture(scope="module")
def card7b():
    return CardRM7B(tiny_checkpoint("rm-7b"))


@pytest.fixture(scope="module")
def card34b():
    return CardRM34B(tiny_checkpoint("rm-34b"))


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("name", CONVERSATIONS)
def test_rm7b_equals_card(rm7b, card7b, name, share_prefix):
    messages = CONVERSATIONS[name]
    expected = card7b.get_reward([rm7b_text(messages, c) for c in CANDIDATES])
    scores = score(rm7b, messages, CANDIDATES, share_prefix=share_prefix)
    assert scores.readout == "card"
    assert scores.rewards == pytest.approx(expected, abs=1e-4)
    assert len(set(round(r, 4) for r in scores.rewards)) == len(CANDIDATES)  # not a constant read-out
    assert scores.truncated == [name == "long"] * len(CANDIDATES)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_rm34b_equals_card(rm34b, card34b, name):
    messages = CONVERSATIONS[name]
    expected = card34b.get_reward([rm34b_text(messages, c) for c in CANDIDATES])
    assert score(rm34b, messages, CANDIDATES).rewards == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_rm7b_rewardbench_format_equals_rewardbench(rm7b, card7b, name):
    """With --rm-format rewardbench the rewards are RewardBench's (its pipeline at batch size 1)."""
    messages = CONVERSATIONS[name]
    expected = card7b.get_reward_rewardbench([rewardbench_rm7b_text(card7b.tokenizer, messages, c) for c in CANDIDATES])
    scores = score(rm7b, messages, CANDIDATES, rm_format="rewardbench")
    assert scores.readout == "last-token" and scores.rm_format == "rewardbench"
    assert scores.rewards == pytest.approx(expected, abs=1e-4)
    assert scores.rewards != pytest.approx(score(rm7b, messages, CANDIDATES, readout="last-token").rewards, abs=1e-3)


def test_last_token_readout_reads_the_last_real_token(rm7b):
    messages = CONVERSATIONS["multi"]
    scores = score(rm7b, messages, CANDIDATES, readout="last-token")
    for reply, reward in zip(CANDIDATES, scores.rewards):
        ids = rm7b.tokenizer(rm7b_text(messages, reply)).input_ids
        with torch.inference_mode():
            alone = rm7b.model(torch.tensor([ids]))[0, -1].item()
        assert reward == pytest.approx(alone, abs=1e-4)


def test_trace_covers_the_reply_tokens_and_order_does_not_matter(rm7b):
    messages = CONVERSATIONS["single"]
    scores = score(rm7b, messages, CANDIDATES)
    assert ["".join(t).strip() for t in scores.tokens] == [c.strip() for c in CANDIDATES]
    assert [len(t) for t in scores.traces] == scores.lengths == [len(t) for t in scores.tokens]
    backwards = score(rm7b, messages, CANDIDATES[::-1])
    assert backwards.rewards[::-1] == pytest.approx(scores.rewards, abs=1e-5)
    assert backwards.traces[::-1][2] == pytest.approx(scores.traces[2], abs=1e-5)


def test_shared_prefix_values_equal_plain_batching_at_every_position(rm7b):
    rows = [list(range(5, 60)) + [100 + i] * (i + 1) for i in range(4)]
    shared, q_shared = value_rows(rm7b.model, rows, 0, 2047, share_prefix=True)
    plain, q_plain = value_rows(rm7b.model, rows, 0, 2047, share_prefix=False)
    for a, b in zip(shared, plain):
        assert a == pytest.approx(b, abs=1e-5)
    assert q_shared == pytest.approx(q_plain, abs=1e-5)


def test_4bit_scores_are_close_to_fp32(rm7b):
    quantised = load_rm(rm_preset("tiny"), "4bit", "cpu")
    messages = CONVERSATIONS["single"]
    full, nf4 = score(rm7b, messages, CANDIDATES).rewards, score(quantised, messages, CANDIDATES).rewards
    assert nf4 != full and nf4 == pytest.approx(full, abs=0.5)


def test_bad_readout_and_no_candidates(rm7b):
    with pytest.raises(ValueError, match="read-out"):
        score(rm7b, CONVERSATIONS["single"], ["a"], readout="first")
    with pytest.raises(ValueError, match="No candidates"):
        score(rm7b, CONVERSATIONS["single"], [])
