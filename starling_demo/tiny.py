"""Tiny random Starling checkpoints, written in exactly the layouts of the real hub repos, for offline use.

They run the real loading, template and scoring code in seconds on a CPU; their replies are noise.
The tokenizer is the real Mistral one that `mistral-common` ships (the Llama-2 and Yi tokenizers are
not on PyPI, so the tiny reward models use it too, with the same special-token conventions).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

VERSION = "v6"  # bump when a layout, shape or tokenizer changes: stale caches are rebuilt, then removed
CACHE_ROOT = Path(os.environ.get("STARLING_DEMO_CACHE", Path.home() / ".cache" / "starling_demo"))
CACHE = CACHE_ROOT / f"tiny-{VERSION}"
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-5)
# A shape vLLM can serve: its CPU attention needs head_dim 64 (hidden_size / num_attention_heads).
SERVABLE_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, rms_norm_eps=1e-5)


def mistral_tokenizer(extra_special: list[str], add_bos: bool = True):
    """The Mistral SentencePiece tokenizer from mistral-common, with `extra_special` appended as ids 32000.."""
    import mistral_common
    from transformers import LlamaTokenizer

    from .tokenization import as_sentencepiece

    source = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    staging = CACHE / "sp"
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, staging / "tokenizer.model")
    tokenizer = LlamaTokenizer.from_pretrained(staging, legacy=True)
    # What the real repos' tokenizer.json files hold: transformers 4's conversion, which encodes as SentencePiece.
    as_sentencepiece(tokenizer.backend_tokenizer, staging / "tokenizer.model")
    if extra_special:
        tokenizer.add_special_tokens({"additional_special_tokens": extra_special})
    tokenizer.add_bos_token = add_bos
    tokenizer.padding_side = "right"  # as the Llama-2 and Yi tokenizers
    return tokenizer


def _save_tokenizer(tokenizer, path: Path) -> None:
    """tokenizer.json and tokenizer.model, with the config files the real repos have (as transformers 4 wrote
    them: added tokens listed in `added_tokens_decoder`, the special tokens also in special_tokens_map.json)."""
    tokenizer.save_pretrained(path)
    shutil.copy(CACHE / "sp" / "tokenizer.model", path / "tokenizer.model")
    added = {str(i): {"content": token.content, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
             for i, token in sorted(tokenizer.added_tokens_decoder.items())}
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": tokenizer.pad_token,
                "additional_special_tokens": [t["content"] for i, t in added.items() if int(i) >= 32000]}
    config = specials | {"add_bos_token": tokenizer.add_bos_token, "add_eos_token": False,
                         "added_tokens_decoder": added, "clean_up_tokenization_spaces": False, "legacy": True,
                         "model_max_length": 1000000000000000019884624838656, "padding_side": "right",
                         "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def tiny_shape(**overrides) -> dict:
    """SHAPE with `overrides`; a key SHAPE does not have is refused (it would silently become a config field).

    >>> tiny_shape(**SERVABLE_SHAPE)["hidden_size"], tiny_shape()["hidden_size"]
    (128, 64)
    """
    unknown = sorted(set(overrides) - set(SHAPE))
    if unknown:
        raise ValueError(f"Unknown tiny-model shape field {unknown[0]!r}: use {', '.join(SHAPE)}.")
    return SHAPE | overrides


def _write_lm(path: Path, shape: dict) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=32002, max_position_embeddings=1024, sliding_window=None,
                           bos_token_id=1, eos_token_id=32000, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    model = MistralForCausalLM(config)
    model.generation_config.eos_token_id = 32000
    model.save_pretrained(path)
    _save_tokenizer(mistral_tokenizer(["<|end_of_turn|>", "<|pad_0|>"]), path)


def _reward_backbone(vocab_size: int, seed: int, architecture: str, shape: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         architectures=[architecture], tie_word_embeddings=False, **shape)
    torch.manual_seed(seed)
    causal = LlamaForCausalLM(config)
    # A wider head than the default init, so rewards spread over a few units as real ones do.
    v_head = torch.randn(1, config.hidden_size) / config.hidden_size**0.5
    return config, causal, v_head


def _write_rm_7b(path: Path, shape: dict) -> None:
    """The card's GPTRewardModel state dict: model.model.*, model.lm_head, transformer.* (shared), v_head."""
    config, causal, v_head = _reward_backbone(32000, seed=1, architecture="LLMForSequenceRegression", shape=shape)
    state = {f"model.{k}": v for k, v in causal.state_dict().items()}
    state |= {f"transformer.{k}": v for k, v in causal.model.state_dict().items()}
    state["v_head.weight"] = v_head
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    torch.save(state, path / "pytorch_model.bin")
    _save_tokenizer(mistral_tokenizer([]), path)


def _write_rm_34b(path: Path, shape: dict) -> None:
    """The RM-34B layout: sharded safetensors with transformer.* and v_head.weight, plus an index."""
    from huggingface_hub import save_torch_state_dict

    config, causal, v_head = _reward_backbone(32002, seed=2, architecture="LlamaForSequenceClassification",
                                              shape=shape)
    state = {f"transformer.{k}": v for k, v in causal.model.state_dict().items()} | {"v_head.weight": v_head}
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    save_torch_state_dict(state, path, max_shard_size="2MB")
    # Yi-34B-Chat's ChatML markers; like Yi, no BOS is added and <unk> is also the pad token.
    tokenizer = mistral_tokenizer(["<|im_start|>", "<|im_end|>"], add_bos=False)
    tokenizer.pad_token = tokenizer.unk_token
    _save_tokenizer(tokenizer, path)
    (path / "tokenizer.json").unlink()  # Yi-34B-Chat ships only tokenizer.model


WRITERS = {"lm": _write_lm, "rm-7b": _write_rm_7b, "rm-34b": _write_rm_34b}


def write_tiny(name: str, path: Path, **shape) -> Path:
    """Write tiny checkpoint `name` ("lm", "rm-7b" or "rm-34b") into `path`, with SHAPE overridden by `shape`.

    Same layouts and seeds as `tiny_checkpoint`; `write_tiny(name, path, **SERVABLE_SHAPE)` gives one vLLM can serve.
    """
    if name not in WRITERS:
        raise ValueError(f"Unknown tiny checkpoint {name!r}: use {', '.join(WRITERS)}.")
    WRITERS[name](Path(path), tiny_shape(**shape))
    return Path(path)


def tiny_checkpoint(name: str) -> Path:
    """The folder of tiny checkpoint `name` ("lm", "rm-7b" or "rm-34b"), built on first use."""
    path = CACHE / name
    if not (path / "config.json").exists():
        for stale in CACHE_ROOT.glob("tiny-v*"):
            if stale != CACHE:
                shutil.rmtree(stale, ignore_errors=True)
        staging = CACHE / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        write_tiny(name, staging)
        # Atomic publish: a half-written folder is never seen by another process.
        try:
            staging.rename(path)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return path
