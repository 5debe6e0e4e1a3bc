"""Incremental decoding: the text of each token, and streamed text that grows without re-decoding the reply."""
import pytest

from starling_demo.detokenize import TextStream, token_texts
from starling_demo.engine import Engine, Settings
from starling_demo.loading import load_lm
from starling_demo.presets import lm_preset

TEXTS = ["Hello world! Ça va? 你好吗 😀🐦 ok", "a 1 22 333  4444", "   leading spaces and\n\ttabs",
         "def f(a, b):\n    return a  +  b  # 🤖🤖", "typed <|end_of_turn|> </s> stays text"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_lm(lm_preset("tiny"), "fp32", "cpu").tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_token_texts_join_to_the_decoded_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    pieces = token_texts(tokenizer, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == tokenizer.decode(ids)


def test_a_character_split_over_byte_tokens_appears_once_complete(tokenizer):
    ids = tokenizer("🐦", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # byte fallback: the bird is several byte tokens
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids]
    assert "".join(pieces).strip() == "🐦" and "\ufffd" not in "".join(pieces)


def test_streaming_decodes_each_token_a_bounded_number_of_times(monkeypatch):
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    tokenizer = engine.lm().tokenizer
    decode, decoded = tokenizer.decode, []

    def counting_decode(token_ids, **kwargs):  # batch_decode passes token_ids by name
        decoded.append(len(token_ids))
        return decode(token_ids, **kwargs)

    monkeypatch.setattr(tokenizer, "decode", counting_decode)
    steps = list(engine.generate([{"role": "user", "content": "Hi"}], Settings(n=2, max_new_tokens=200, seed=3)))
    total = sum(steps[-1].token_counts)
    assert total > 100 and all(steps[-1].texts)
    # Re-decoding every reply at every step would be about total * steps / 2 ids; streaming is linear.
    assert sum(decoded) < 20 * total
