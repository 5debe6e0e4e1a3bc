"""Named Starling models: where each lives, which tokenizer and template it uses, how its reward is read."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LMPreset:
    """A Starling language model (OpenChat template)."""

    name: str
    repo: str  # hub repo id, or "tiny:<name>" for an offline random model
    tokenizer: str | None = None  # None: the model's own folder
    drop_sep_token: bool = False  # alpha declares a <sep> that is not in its vocabulary
    context: int = 8192  # max_position_embeddings of the model's config
    billions: float = 7.24  # parameters, to tell what fits beside what before loading anything


@dataclass(frozen=True)
class RMPreset:
    """A Starling reward model: backbone + v_head, its text format and where the reward is read."""

    name: str
    repo: str
    tokenizer: str | None
    template: str  # "llama2-rlhf" (RM-7B-alpha) or "chatml" (RM-34B)
    readout: str  # "card": index 2047 of the 2048-padded input; "last-token": last real token
    add_bos: bool
    max_length: int = 2048
    gated: bool = False
    billions: float = 6.74


LM_PRESETS = {
    p.name: p
    for p in [
        LMPreset("starling-lm-7b-beta", "Nexusflow/Starling-LM-7B-beta"),
        LMPreset("starling-lm-7b-alpha", "berkeley-nest/Starling-LM-7B-alpha", drop_sep_token=True),
        LMPreset("tiny", "tiny:lm", context=1024, billions=0.0),
    ]
}

# Llama-2-7b-chat-hf is gated; this ungated copy holds the same tokenizer files.
LLAMA2_TOKENIZER = os.environ.get("STARLING_RM7B_TOKENIZER", "NousResearch/Llama-2-7b-chat-hf")

RM_PRESETS = {
    p.name: p
    for p in [
        RMPreset("starling-rm-7b-alpha", "berkeley-nest/Starling-RM-7B-alpha", LLAMA2_TOKENIZER,
                 template="llama2-rlhf", readout="card", add_bos=True),
        RMPreset("starling-rm-34b", "Nexusflow/Starling-RM-34B", "01-ai/Yi-34B-Chat",
                 template="chatml", readout="last-token", add_bos=False, gated=True, billions=34.4),
        RMPreset("tiny", "tiny:rm-7b", None, template="llama2-rlhf", readout="card", add_bos=True, billions=0.0),
        RMPreset("tiny-34b", "tiny:rm-34b", None, template="chatml", readout="last-token", add_bos=False,
                 billions=0.0),
    ]
}
# A local directory stands in for a preset's hub repo; these say which layout it has.
RM_KINDS = ("starling-rm-7b-alpha", "starling-rm-34b")


def local_context(folder: str) -> int:
    """max_position_embeddings from a local model folder's config.json (8192, Mistral's, when absent)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as file:
            return int(json.load(file).get("max_position_embeddings", 8192))
    except (OSError, ValueError, TypeError, AttributeError):
        return 8192


def lm_preset(spec: str) -> LMPreset:
    """The LM preset named `spec`, or one for a local directory in the layout of the hub repos.

    >>> lm_preset("starling-lm-7b-beta").repo
    'Nexusflow/Starling-LM-7B-beta'
    """
    if spec in LM_PRESETS:
        return LM_PRESETS[spec]
    if os.path.isdir(spec):
        return LMPreset(spec, os.path.abspath(spec), context=local_context(spec))
    raise ValueError(f"Unknown language model {spec!r}: use one of {', '.join(LM_PRESETS)} or a local directory.")


def rm_preset(spec: str, kind: str | None = None) -> RMPreset:
    """The RM preset named `spec`, or one for a local directory laid out like the `kind` preset's repo.

    >>> rm_preset("starling-rm-34b").readout
    'last-token'
    """
    if spec in RM_PRESETS and kind is None:
        return RM_PRESETS[spec]
    if os.path.isdir(spec):
        if kind not in RM_KINDS:
            raise ValueError(f"{spec} is a directory: say which layout it has with --reward-kind "
                             f"({' or '.join(RM_KINDS)}).")
        base = RM_PRESETS[kind]
        return RMPreset(spec, os.path.abspath(spec), base.tokenizer, base.template, base.readout, base.add_bos)
    if spec in RM_PRESETS:
        raise ValueError("--reward-kind only applies to a local directory.")
    raise ValueError(f"Unknown reward model {spec!r}: use one of {', '.join(RM_PRESETS)} or a local directory.")
