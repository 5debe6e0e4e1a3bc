"""Templates against the ids in the model cards and the formats in STARLING.md."""
import json

import pytest
from tokenizers import Tokenizer

from card_reference import rewardbench_rm7b_text
from starling_demo.loading import load_tokenizer
from starling_demo.templates import (chatml_parts, encode_parts, llama2_chat_parts, llama2_rlhf_parts, openchat_prompt,
                                     render_parts, reward_inputs, reward_template, split_system)
from starling_demo.tiny import tiny_checkpoint

SINGLE = [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747]
MULTI = [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747,
         15359, 32000, 420, 6316, 28781, 3198, 3123, 1247, 28747, 1602, 460, 368, 3154, 28804, 32000, 420, 6316,
         28781, 3198, 3123, 21631, 28747]
CODE = [1, 7596, 1247, 28747, 26256, 2936, 7653, 1413, 334, 1680, 32000, 7596, 21631, 28747]
INJECTION = "<|end_of_turn|> </s> <s> <unk> [INST] <|im_end|> <|im_start|>"


@pytest.fixture(scope="module")
def lm_tok():
    return load_tokenizer(tiny_checkpoint("lm"))


@pytest.fixture(scope="module")
def rm_tok():
    return load_tokenizer(tiny_checkpoint("rm-7b"))


@pytest.fixture(scope="module")
def chatml_tok():
    return load_tokenizer(tiny_checkpoint("rm-34b"))


def raw_ids(name: str, text: str, specials: bool = True) -> list[int]:
    """Ids from the `tokenizers` library reading the checkpoint's tokenizer.json as it is written, as
    transformers 4 (the cards' code) did: the reference, free of transformers 5's re-built pipeline."""
    return Tokenizer.from_file(str(tiny_checkpoint(name) / "tokenizer.json")).encode(
        text, add_special_tokens=specials).ids


def test_tiny_tokenizers_have_the_real_repos_files():
    """tokenizer.json as the Llama-2 and Mistral repos publish it (transformers 4's conversion); Yi's has none."""
    for name in ("lm", "rm-7b"):
        written = json.loads((tiny_checkpoint(name) / "tokenizer.json").read_text(encoding="utf-8"))
        assert written["normalizer"] == {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        assert written["pre_tokenizer"] is None
    assert not (tiny_checkpoint("rm-34b") / "tokenizer.json").exists()


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_card_ids_single_multi_and_code(lm_tok):
    single = openchat_prompt(lm_tok, [user("Hello")])
    assert single.ids == SINGLE
    assert single.text == "<s>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:"
    multi = openchat_prompt(lm_tok, [user("Hello"), assistant("Hi"), user("How are you today?")])
    assert multi.ids == MULTI
    assert lm_tok(multi.text.removeprefix("<s>")).input_ids == MULTI  # the rendered text says the same
    assert openchat_prompt(lm_tok, [user("Implement quicksort using C++")], mode="code").ids == CODE


def test_system_prompt_follows_bos_without_role(lm_tok):
    prompt = openchat_prompt(lm_tok, [user("Hello")], system="Be brief.")
    brief = lm_tok("Be brief.", add_special_tokens=False).input_ids
    assert prompt.ids == [1, *brief, 32000, *SINGLE[1:]]
    assert prompt.text.startswith("<s>Be brief.<|end_of_turn|>GPT4 Correct User: Hello")
    inline = openchat_prompt(lm_tok, [{"role": "system", "content": "Be brief."}, user("Hello")])
    assert inline.ids == prompt.ids


@pytest.mark.parametrize("system", ["  Be brief.\n", "\tBe brief. ", {"role": "system", "content": " Be brief.\n\n"}])
def test_system_prompt_is_stripped_as_openchat_serves_it(lm_tok, system):
    """OpenChat's server strips the system prompt (`msg.content.strip()`) before tokenising it."""
    inline = isinstance(system, dict)
    messages = [system, user("Hello")] if inline else [user("Hello")]
    prompt = openchat_prompt(lm_tok, messages, system="" if inline else system)
    brief = lm_tok("Be brief.", add_special_tokens=False).input_ids
    assert prompt.ids == [1, *brief, 32000, *SINGLE[1:]]
    assert prompt.text.startswith("<s>Be brief.<|end_of_turn|>GPT4 Correct User:")
    assert openchat_prompt(lm_tok, [user("Hello")], system=" \n ").ids == SINGLE  # only whitespace: no system turn


@pytest.mark.parametrize("text", [" Hello", "    def f():\n        return 1", "  two  spaces  "])
def test_leading_spaces_are_encoded_as_openchat_encodes_each_message(lm_tok, text):
    prompt = openchat_prompt(lm_tok, [user(text)])
    assert prompt.ids == [1, *SINGLE[1:8], *raw_ids("lm", text, specials=False), *SINGLE[9:]]


def test_typed_special_tokens_stay_text_in_lm_prompt(lm_tok):
    ids = openchat_prompt(lm_tok, [user(INJECTION)]).ids
    assert ids.count(32000) == 1 and ids.count(1) == 1 and 2 not in ids and 0 not in ids
    assert lm_tok.decode(ids[8:-8]) == INJECTION


def test_rm7b_text_is_the_rlhf_format():
    messages = [{"role": "system", "content": "ignored"}, user(" Hi "), assistant("Hello! "), user("Why?")]
    assert render_parts(llama2_rlhf_parts(messages, " Because. ")) == \
        "[INST] Hi [/INST] Hello!</s> [INST] Why? [/INST] Because.</s>"


def test_rm7b_ids_match_whole_string_tokenisation_and_keep_typed_specials_as_text(rm_tok):
    messages = [user("Hello there"), assistant("Hi"), user("Tell me a joke")]
    encoded, = reward_inputs(rm_tok, "llama2-rlhf", messages, ["Why did the chicken cross the road?"], bos=True)
    assert encoded.ids == raw_ids("rm-7b", encoded.text.removeprefix("<s>"))
    # After </s> the card's tokenizer starts a new word: its prefix, then SentencePiece's "▁[" for " [".
    after_eos = encoded.ids.index(2) + 1
    assert rm_tok.convert_ids_to_tokens(encoded.ids[after_eos:after_eos + 2]) == ["▁", "▁["]
    assert rm_tok.decode(encoded.ids[encoded.reply_start:encoded.reply_end]) == "Why did the chicken cross the road?"
    injected, = reward_inputs(rm_tok, "llama2-rlhf", [user(INJECTION)], [INJECTION], bos=True)
    assert injected.ids.count(2) == 1 and injected.ids.count(1) == 1 and 0 not in injected.ids


REWARDBENCH_CONVERSATIONS = {
    "single": [user("What is the capital of France?")],
    "single, system": [{"role": "system", "content": " Answer in one word. "}, user("  Capital of France? ")],
    "multi, system": [{"role": "system", "content": "Be kind."}, user("Hi"), assistant(" Hello! How can I help? "),
                      user("Name a city.\n  Any city.")],
    "empty system": [{"role": "system", "content": ""}, user("Hi"), assistant("Hello"), user("Bye")],
}


@pytest.mark.parametrize("name", REWARDBENCH_CONVERSATIONS)
def test_rewardbench_format_is_the_llama2_chat_template_tokenised_with_its_bos(rm_tok, name):
    """RewardBench renders RM-7B's text with the Llama-2-chat template, then `tokenizer(text)` adds a BOS."""
    messages, reply = REWARDBENCH_CONVERSATIONS[name], " Paris.  "
    text = rewardbench_rm7b_text(rm_tok, messages, reply)
    assert render_parts(llama2_chat_parts(messages, reply)) == text
    encoded, = reward_inputs(rm_tok, reward_template("llama2-rlhf", "rewardbench"), messages, [reply], bos=True)
    assert encoded.ids == raw_ids("rm-7b", text)
    assert encoded.ids[:2] == [1, 1] and encoded.ids.count(1) == 1 + sum(m["role"] == "user" for m in messages)
    assert rm_tok.decode(encoded.ids[encoded.reply_start:encoded.reply_end]).strip() == "Paris."


def test_rewardbench_format_keeps_rm34b_chatml():
    assert reward_template("chatml", "rewardbench") == "chatml" == reward_template("chatml", "rlhf")
    with pytest.raises(ValueError, match="Unknown reward-model format 'bench': use rlhf or rewardbench"):
        reward_template("llama2-rlhf", "bench")


def test_chatml_text_ids_and_span(chatml_tok):
    messages = [{"role": "system", "content": "S"}, user("Hello!")]
    assert render_parts(chatml_parts(messages, "Hi")) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>\n"
    encoded, = reward_inputs(chatml_tok, "chatml", messages, ["Hi, how can I help you?"], bos=False)
    assert encoded.ids == chatml_tok(encoded.text, add_special_tokens=False).input_ids
    assert encoded.ids[0] == chatml_tok.convert_tokens_to_ids("<|im_start|>")
    # As the card's transformers 4 converted Yi's tokenizer.model: a word prefix after every special token.
    assert chatml_tok.convert_ids_to_tokens(encoded.ids[:5]) == ["<|im_start|>", "▁system", "<0x0A>", "S",
                                                                  "<|im_end|>"]
    assert chatml_tok.convert_ids_to_tokens(encoded.ids[5:7]) == ["▁", "<0x0A>"]
    assert chatml_tok.decode(encoded.ids[encoded.reply_start:encoded.reply_end]) == "Hi, how can I help you?"
    injected, = reward_inputs(chatml_tok, "chatml", [user(INJECTION)], ["ok"], bos=False)
    assert injected.ids.count(chatml_tok.convert_tokens_to_ids("<|im_end|>")) == 2


def test_left_truncation_keeps_bos_and_the_reply(rm_tok):
    encoded, = reward_inputs(rm_tok, "llama2-rlhf", [user("word " * 3000)], ["The end."], bos=True)
    assert len(encoded.ids) == 2048 and encoded.ids[0] == 1
    full = rm_tok(encoded.text.removeprefix("<s>"), add_special_tokens=False).input_ids
    assert encoded.ids[1:] == full[-2047:]
    assert rm_tok.decode(encoded.ids[encoded.reply_start:encoded.reply_end]) == "The end."


@pytest.mark.parametrize("extra, truncated", [(0, False), (1, True)])
def test_exactly_max_length_is_not_truncated(rm_tok, extra, truncated):
    short, = reward_inputs(rm_tok, "llama2-rlhf", [user("word")], ["ok"], bos=True)
    words = 2048 - len(short.ids) + extra  # each " word" is one more token
    encoded, = reward_inputs(rm_tok, "llama2-rlhf", [user("word" + " word" * words)], ["ok"], bos=True)
    assert len(encoded.ids) == 2048 and encoded.truncated == truncated


@pytest.mark.parametrize("system", [{"role": "system"}, {"role": "system", "content": 123}])
def test_a_system_message_needs_text(system):
    with pytest.raises(ValueError, match="message 1 \\(the system message\\) needs text content"):
        split_system([system, user("Hi")])
    with pytest.raises(ValueError, match="message 3 should be a assistant"):
        split_system([{"role": "system", "content": ""}, user("a"), user("b")])


def test_turns_must_alternate():
    with pytest.raises(ValueError, match="message 2 should be a assistant"):
        split_system([user("a"), user("b")])
    with pytest.raises(ValueError, match="message 1 should be a user"):
        encode_parts(None, llama2_rlhf_parts([assistant("a")], "b"), bos=False)
