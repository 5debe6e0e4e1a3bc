"""Exact prompt formats: the OpenChat template for Starling-LM and the two reward-model text formats.

Every format is built as a list of parts, `(text, is_special)`. Template markers are special tokens;
message text is always encoded with special-token parsing off, so a user who types `<|end_of_turn|>`
or `</s>` gets those characters, never the token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .limits import check_text

EOT = "<|end_of_turn|>"
MODE_ROLES = {"gpt4": "GPT4 Correct", "code": "Code"}
Part = tuple[str, bool]


@dataclass
class Encoded:
    """A rendered input: the text a person can read and the ids the model receives."""

    text: str
    ids: list[int]
    reply_start: int | None = None  # index in ids of the first reply token (reward inputs only)
    reply_end: int | None = None
    truncated: bool = False  # the oldest ids were cut to fit the model's length


def split_system(messages: list[dict]) -> tuple[str, list[dict]]:
    """Separate a leading system message and check that the turns alternate user/assistant.

    >>> split_system([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    ('Be brief.', [{'role': 'user', 'content': 'Hi'}])
    """
    system, offset = "", int(bool(messages) and messages[0].get("role") == "system")
    if offset:
        system, messages = messages[0].get("content"), messages[1:]
        if not isinstance(system, str):
            raise ValueError("message 1 (the system message) needs text content")
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i + 1 + offset} should be a {expected} message with text content; "
                             "turns must alternate user/assistant after an optional system message")
    return system, list(messages)


def check_conversation(messages) -> None:
    """Raise ValueError, saying what is wrong, unless `messages` is a conversation a reply can follow.

    >>> check_conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    Traceback (most recent call last):
    ValueError: the last message must be from the user
    >>> check_conversation([{"role": "user", "content": "Hi \\ud800"}])
    Traceback (most recent call last):
    ValueError: message 1's content is not valid Unicode (a lone surrogate \\ud800 at character 4): remove it.
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    if not all(isinstance(m, dict) for m in messages):
        raise ValueError("each message must be an object with 'role' and 'content'")
    split_system(messages)
    for number, message in enumerate(messages, 1):
        # JSON's "\ud800" escape gives a lone surrogate, which json.loads accepts but no tokenizer can encode.
        check_text(f"message {number}'s content", message["content"], math.inf)
    if messages[-1]["role"] != "user":
        raise ValueError("the last message must be from the user")


def encode_plain(tokenizer, text: str) -> list[int]:
    """Ids of `text` as plain text: special-token strings inside it are not parsed."""
    if not text:
        return []
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_parts(tokenizer, parts: list[Part], bos: bool) -> list[int]:
    """Ids of a template: special parts become their single token, text parts are plain text."""
    ids = [tokenizer.bos_token_id] if bos else []
    for text, special in parts:
        ids += [tokenizer.convert_tokens_to_ids(text)] if special else encode_plain(tokenizer, text)
    return ids


def render_parts(parts: list[Part], bos: str = "") -> str:
    return bos + "".join(text for text, _ in parts)


def openchat_parts(messages: list[dict], mode: str = "gpt4", system: str = "") -> list[Part]:
    """The OpenChat prompt as OpenChat's server builds it, ending with the assistant role prefix.

    Role prefix and message text are separate parts, as in OpenChat's own tokenisation; the space
    between `User:` and the text is SentencePiece's word prefix, so it is not written here. The system
    prompt (`system`, else a leading system message) is stripped, as OpenChat's server strips it.

    >>> render_parts(openchat_parts([{"role": "user", "content": "Hello"}]))
    'GPT4 Correct User:Hello<|end_of_turn|>GPT4 Correct Assistant:'
    >>> render_parts(openchat_parts([{"role": "user", "content": "Hi"}], system="  Be brief.\\n"))
    'Be brief.<|end_of_turn|>GPT4 Correct User:Hi<|end_of_turn|>GPT4 Correct Assistant:'
    """
    if mode not in MODE_ROLES:
        raise ValueError(f"Unknown mode {mode!r}: use gpt4 or code.")
    inline_system, turns = split_system(messages)
    system = system.strip() or inline_system.strip()
    role = MODE_ROLES[mode]
    parts: list[Part] = [(system, False), (EOT, True)] if system else []
    for message in turns:
        parts += [(f"{role} {message['role'].title()}:", False), (message["content"], False), (EOT, True)]
    return parts + [(f"{role} Assistant:", False)]


def openchat_prompt(tokenizer, messages: list[dict], mode: str = "gpt4", system: str = "") -> Encoded:
    """The exact Starling-LM prompt: `<s>GPT4 Correct User: {u1}<|end_of_turn|>GPT4 Correct Assistant:`."""
    parts = openchat_parts(messages, mode, system)
    # Readable text: the space after a role prefix is SentencePiece's word prefix of the message.
    text = "<s>" + "".join(" " + t if t and i and parts[i - 1][0].endswith(":") else t
                           for i, (t, _) in enumerate(parts))
    return Encoded(text, encode_parts(tokenizer, parts, bos=True))


def llama2_rlhf_parts(messages: list[dict], reply: str) -> list[Part]:
    """RM-7B-alpha text, the authors' RLHF format: `[INST] {u} [/INST] {a}</s>` per turn, joined by a space.

    Each turn is stripped; the system prompt is not included.

    >>> render_parts(llama2_rlhf_parts([{"role": "user", "content": " Hi "}], "Hello!"))
    '[INST] Hi [/INST] Hello!</s>'
    """
    _, turns = split_system(messages)
    turns = turns + [{"role": "assistant", "content": reply}]
    parts: list[Part] = []
    for i in range(0, len(turns), 2):
        joiner = " " if i else ""
        parts += [(f"{joiner}[INST] {turns[i]['content'].strip()} [/INST] {turns[i + 1]['content'].strip()}", False),
                  ("</s>", True)]
    return parts


def llama2_chat_parts(messages: list[dict], reply: str) -> list[Part]:
    """RM-7B-alpha text as RewardBench feeds it: the Llama-2-chat tokenizer template, then a BOS added.

    `<s>[INST] {u} [/INST] {a} </s>` per turn (a BOS per turn, a space before `</s>`), a system prompt
    inside `<<SYS>>` at the start of the first user message; the tokenizer adds another BOS in front.

    >>> render_parts(llama2_chat_parts([{"role": "system", "content": "Be kind."},
    ...                                 {"role": "user", "content": " Hi "}], "Hello!"))
    '<s>[INST] <<SYS>>\\nBe kind.\\n<</SYS>>\\n\\n Hi [/INST] Hello! </s>'
    """
    system, turns = split_system(messages)
    if messages and messages[0].get("role") == "system":  # the template keeps even an empty system prompt
        turns = [{"role": "user", "content": f"<<SYS>>\n{system}\n<</SYS>>\n\n{turns[0]['content']}"}, *turns[1:]]
    turns = turns + [{"role": "assistant", "content": reply}]
    parts: list[Part] = []
    for i in range(0, len(turns), 2):
        parts += [("<s>", True), (f"[INST] {turns[i]['content'].strip()} [/INST] {turns[i + 1]['content'].strip()} ",
                                  False), ("</s>", True)]
    return parts


def chatml_parts(messages: list[dict], reply: str) -> list[Part]:
    """RM-34B text, Yi's ChatML: `<|im_start|>{role}\\n{content}<|im_end|>\\n` for every message.

    >>> render_parts(chatml_parts([{"role": "user", "content": "Hi"}], "Hello!"))
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n'
    """
    system, turns = split_system(messages)
    turns = ([{"role": "system", "content": system}] if system else []) + turns
    parts: list[Part] = []
    for message in turns + [{"role": "assistant", "content": reply}]:
        parts += [("<|im_start|>", True), (f"{message['role']}\n{message['content']}", False),
                  ("<|im_end|>", True), ("\n", False)]
    return parts


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading ids `a` and `b` share.

    >>> common_prefix_length([1, 5, 6], [1, 5, 7, 8])
    2
    """
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


RM_TEMPLATES = {"llama2-rlhf": llama2_rlhf_parts, "llama2-chat": llama2_chat_parts, "chatml": chatml_parts}
# "rlhf": the text each RM scored in Starling's RLHF (the cards'); "rewardbench": the text RewardBench feeds it.
RM_FORMATS = {"rlhf": {"llama2-rlhf": "llama2-rlhf", "chatml": "chatml"},
              "rewardbench": {"llama2-rlhf": "llama2-chat", "chatml": "chatml"}}


def reward_template(template: str, rm_format: str = "rlhf") -> str:
    """The template a reward model with RLHF template `template` is given in `rm_format`.

    >>> reward_template("llama2-rlhf", "rewardbench")
    'llama2-chat'
    """
    check_rm_format(rm_format)
    return RM_FORMATS[rm_format][template]


def check_rm_format(rm_format: str) -> None:
    """Raise ValueError, saying the choices, unless `rm_format` is a reward-model input format."""
    if rm_format not in RM_FORMATS:
        raise ValueError(f"Unknown reward-model format {rm_format!r}: use {' or '.join(RM_FORMATS)}.")


def reward_inputs(tokenizer, template: str, messages: list[dict], replies: list[str], bos: bool,
                  max_length: int = 2048) -> list[Encoded]:
    """Reward-model ids for each reply, left-truncated to `max_length` (BOS kept), with the reply's span.

    The span is found by encoding the same conversation with an empty reply: the ids agree before and
    after the reply, so the span is exact whatever the tokenizer merges at its edges.
    """
    build = RM_TEMPLATES[template]
    empty = encode_parts(tokenizer, build(messages, ""), bos)
    encoded = []
    for reply in replies:
        parts = build(messages, reply)
        ids = encode_parts(tokenizer, parts, bos)
        start = common_prefix_length(ids, empty)
        end = len(ids) - common_prefix_length(ids[start:][::-1], empty[start:][::-1])
        cut = max(0, len(ids) - max_length)
        if cut:
            # Like the card's tokenizer(truncation_side="left"): drop the oldest text, keep the BOS.
            ids = ids[:bos] + ids[bos + cut:]
            start, end = max(start - cut, bos), max(end - cut, bos)
        encoded.append(Encoded(render_parts(parts, "<s>" if bos else ""), ids, start, end, truncated=cut > 0))
    return encoded
