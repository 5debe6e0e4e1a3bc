"""Straightforward reimplementations of the two model cards' scoring code, the reference for the tests.

Deliberately naive, as the cards are: batch 1, the card's own padding, the card's own read-out.
"""
import json
import math
import re
from pathlib import Path

import sentencepiece
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, PreTrainedTokenizerFast


def rm7b_text(messages, reply):
    """The authors' RLHF format, written out by hand from STARLING.md."""
    turns = [m for m in messages if m["role"] != "system"] + [{"role": "assistant", "content": reply}]
    return " ".join(f"[INST] {turns[i]['content'].strip()} [/INST] {turns[i + 1]['content'].strip()}</s>"
                    for i in range(0, len(turns), 2))


# The chat template of meta-llama/Llama-2-7b-chat-hf's tokenizer, which RewardBench renders RM-7B-alpha's text with.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def rewardbench_rm7b_text(tokenizer, messages, reply):
    """RewardBench's RM-7B text: the Llama-2-chat template applied by transformers, as its utils do."""
    return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": reply}],
                                         chat_template=LLAMA2_CHAT_TEMPLATE, tokenize=False)


def rm34b_text(messages, reply):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                   for m in messages + [{"role": "assistant", "content": reply}])


class CardRM7B(nn.Module):
    """The card's GPTRewardModel: a causal LM, its backbone as .transformer, and a v_head."""

    def __init__(self, folder: Path):
        super().__init__()
        config = LlamaConfig.from_pretrained(folder)
        self.model = LlamaForCausalLM(config)
        self.transformer = self.model.model
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        # The card ran transformers 4, whose LlamaTokenizerFast used tokenizer.json exactly as written.
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>",
                                                 eos_token="</s>", unk_token="<unk>")
        self.tokenizer.pad_token = self.tokenizer.unk_token
        self.tokenizer.truncation_side = "left"
        self.PAD_ID = self.tokenizer(self.tokenizer.pad_token)["input_ids"][0]
        self.load_state_dict(torch.load(folder / "pytorch_model.bin"), strict=False)
        self.eval()

    def forward(self, input_ids, attention_mask):
        hidden_states = self.transformer(input_ids, attention_mask=attention_mask)[0]
        rewards = self.v_head(hidden_states).squeeze(-1)
        scores = []
        for i in range(input_ids.shape[0]):
            c_inds = (input_ids[i] == self.PAD_ID).nonzero()
            c_ind = c_inds[0].item() if len(c_inds) > 0 else input_ids.shape[1]
            scores.append(rewards[i, c_ind - 1])
        return scores

    @torch.no_grad()
    def get_reward(self, samples):
        enc = self.tokenizer(samples, truncation=True, max_length=2048, padding="max_length", return_tensors="pt")
        out = []
        for i in range(math.ceil(len(samples))):
            out.extend(self(enc["input_ids"][i: i + 1], enc["attention_mask"][i: i + 1]))
        return torch.hstack(out).tolist()

    @torch.no_grad()
    def get_reward_rewardbench(self, samples):
        """RewardBench's StarlingPipeline at batch size 1: tokenizer(text) with its BOS, padded to the longest
        (so not at all), the same forward: PAD_ID is the BOS id, so it reads the last column."""
        out = []
        for text in samples:
            enc = self.tokenizer([text], truncation=True, max_length=2048, padding=True, return_tensors="pt")
            out.extend(self(enc["input_ids"], enc["attention_mask"]))
        return torch.hstack(out).tolist()


def sentencepiece_segments(text: str, specials: dict[str, int], processor) -> list[int]:
    """A slow tokenizer's `tokenizer(text)` spelled out: split at special tokens, SentencePiece for each segment."""
    ids = []
    for segment in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
        ids += [specials[segment]] if segment in specials else processor.encode(segment)
    return ids


class CardRM34B(nn.Module):
    """The RM-34B card's LlamaForSequenceClassification: .transformer, .v_head, PAD_ID 0, last real token."""

    def __init__(self, folder: Path):
        super().__init__()
        config = LlamaConfig.from_pretrained(folder)
        self.transformer = LlamaModel(config)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.PAD_ID = 0
        state = {}
        for shard in sorted(folder.glob("*.safetensors")):
            state |= load_file(shard)
        self.load_state_dict(state)
        # Yi ships only tokenizer.model; the card's tokenizer(text) splits at special tokens and gives each
        # segment SentencePiece's ids (transformers 4's conversion did exactly that), no BOS.
        self.sentencepiece = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        self.specials = {token["content"]: int(i) for i, token in
                         json.loads((folder / "tokenizer_config.json").read_text())["added_tokens_decoder"].items()}
        self.eval()

    def tokenize(self, text):
        return sentencepiece_segments(text, self.specials, self.sentencepiece)[-2048:]  # left truncation at 2048

    @torch.no_grad()
    def get_reward(self, samples):
        rows = [self.tokenize(text) for text in samples]
        width = max(map(len, rows))  # padding="longest", pad id 0 on the right
        input_ids = torch.tensor([row + [self.PAD_ID] * (width - len(row)) for row in rows])
        attention_mask = (torch.arange(width) < torch.tensor([[len(row)] for row in rows])).long()
        out = []
        for i in range(len(samples)):
            ids = input_ids[i: i + 1]
            hidden = self.transformer(ids, attention_mask=attention_mask[i: i + 1]).last_hidden_state
            rewards = self.v_head(hidden).squeeze(-1)
            c_inds = (ids[0] == self.PAD_ID).nonzero()
            c_ind = c_inds[0].item() if len(c_inds) > 0 else ids.shape[1]
            out.append(rewards[0, c_ind - 1])
        return torch.stack(out).tolist()
