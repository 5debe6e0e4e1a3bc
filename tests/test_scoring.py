"""Scores equal the model cards' own scoring code (fp32, 1e-4), on tiny checkpoints of both layouts."""
import pytest
import torch

from card_reference import CardRM7B, CardRM34B, rewardbench_rm7b_text, rm7b_text, rm34b_text
from starling_demo.loading import load_rm
from starling_demo.presets import rm_preset
from starling_demo.detokenize import token_texts
from starling_demo.edits import EDITS
from starling_demo.engine import Engine
from starling_demo.evaluation import score_rows
from starling_demo import value_passes
from starling_demo.scoring import score
from starling_demo.value_passes import value_groups
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
    scores = score(rm7b, messages, CANDIDATES, traces=True)
    tokens = [token_texts(rm7b.tokenizer, ids) for ids in scores.reply_ids]
    assert ["".join(t).strip() for t in tokens] == [c.strip() for c in CANDIDATES]
    assert [len(t) for t in scores.traces] == scores.lengths == [len(t) for t in tokens]
    backwards = score(rm7b, messages, CANDIDATES[::-1], traces=True)
    assert backwards.rewards[::-1] == pytest.approx(scores.rewards, abs=1e-5)
    assert backwards.traces[::-1][2] == pytest.approx(scores.traces[2], abs=1e-5)
    # Traces are worked out only when asked for; the rewards are the same either way.
    plain = score(rm7b, messages, CANDIDATES)
    assert plain.traces is None and plain.rewards == pytest.approx(scores.rewards, abs=1e-6)
    assert plain.reply_ids == scores.reply_ids


def test_shared_prefix_values_equal_plain_batching_at_every_position(rm7b):
    rows = [list(range(5, 60)) + [100 + i] * (i + 1) for i in range(4)]
    [shared] = value_groups(rm7b.model, [rows], 0, 2047, per_token=True, share_prefix=True)
    [plain] = value_groups(rm7b.model, [rows], 0, 2047, per_token=True, share_prefix=False)
    for a, b in zip(shared.per_token, plain.per_token):
        assert a == pytest.approx(b, abs=1e-5)
    assert shared.query == pytest.approx(plain.query, abs=1e-5)
    assert shared.last == [values[-1] for values in shared.per_token]


def test_groups_in_one_pass_equal_each_group_alone(rm7b):
    """Conversations of different lengths, with and without a shared prefix, batched as one: each row's values
    equal those of its group scored alone, at every position, and come back in order."""
    generator = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 32000, (n,), generator=generator).tolist()  # noqa: E731
    long, short = [1] + ids(300), [1] + ids(20)
    groups = [[long + ids(5), long + ids(40)], [short + ids(3)], [[1] + ids(7), [1] + ids(90), [1] + ids(2)],
              [short + ids(60), short + ids(1), short + ids(9)]]
    together = value_groups(rm7b.model, groups, 0, 2047, per_token=True)
    for group, batched in zip(groups, together, strict=True):
        [alone] = value_groups(rm7b.model, [group], 0, 2047, per_token=True)
        assert [len(v) for v in batched.per_token] == list(map(len, group))
        for a, b in zip(batched.per_token, alone.per_token):
            assert a == pytest.approx(b, abs=1e-4)
        assert batched.last == pytest.approx(alone.last, abs=1e-4)
        assert batched.query == pytest.approx(alone.query, abs=1e-4)


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


@pytest.fixture(scope="module")
def engine():
    return Engine("tiny", "tiny", "fp32", "cpu")


@pytest.mark.parametrize("bucket", [1, 64], ids=["cpu-shapes", "gpu-buckets"])
@pytest.mark.parametrize("rm, readout, rm_format", [("tiny", "card", "rlhf"), ("tiny", "last-token", "rlhf"),
                                                    ("tiny", None, "rewardbench"), ("tiny-34b", None, "rlhf")])
def test_a_reward_is_the_same_bits_alone_among_8_in_a_file_and_in_a_probe(engine, rm, readout, rm_format, bucket,
                                                                          monkeypatch):
    """Batch invariance: each candidate's reward is the one it gets scored alone, to the last bit, in the app's turn
    (with and without traces), a batch evaluation (among other conversations) and a probe; with the passes as a CPU
    runs them and padded to the GPU's shape buckets (equal to the unpadded rewards within 1e-5)."""
    monkeypatch.setattr(value_passes, "SHAPE_BUCKETS", {"cpu": bucket})
    messages = CONVERSATIONS["multi"]
    candidates = [c * (1 + k % 3) for k, c in enumerate(CANDIDATES + ["Oui.", "Paris is grey in winter. " * 9, "?"])]
    alone = [engine.score(messages, [c], rm, readout, rm_format).rewards[0] for c in candidates]
    assert engine.score(messages, candidates, rm, readout, rm_format).rewards == alone
    assert engine.score(messages, candidates, rm, readout, rm_format, traces=True).rewards == alone
    others = [(CONVERSATIONS[name], CANDIDATES[:2]) for name in ("single", "code", "long")]
    rows = [{"line": i, "messages": m, "candidates": c} for i, (m, c) in
            enumerate([others[0], (messages, candidates[:4]), others[1], (messages, candidates[4:]), others[2]])]
    scored = [row for ready, _ in score_rows(engine, rows, rm, readout, rm_format, budget=1500) for row in ready]
    assert scored[1]["rewards"] + scored[3]["rewards"] == alone
    run = engine.probe(messages, candidates, [EDITS["refusal"]], rm, readout, rm_format)
    assert [c["reward"] for c in run["candidates"]] == alone
    # The control: the same candidates in padded batches move in the last bits, as they do by up to 0.19 on a GPU.
    batched = score(engine.rm(rm), messages, candidates, readout, rm_format=rm_format, invariant=False).rewards
    assert batched != alone and batched == pytest.approx(alone, abs=1e-5)
    if bucket > 1:  # the padding changes nothing but the last bits
        padded = engine.score(messages, candidates, rm, readout, rm_format, traces=True)
        monkeypatch.setattr(value_passes, "SHAPE_BUCKETS", {})
        unpadded = engine.score(messages, candidates, rm, readout, rm_format, traces=True)
        assert padded.rewards == pytest.approx(unpadded.rewards, abs=1e-5)
        for a, b in zip(padded.traces, unpadded.traces, strict=True):
            assert a == pytest.approx(b, abs=1e-5)
