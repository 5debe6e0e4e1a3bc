"""Convert a Starling reward model to a LlamaForSequenceClassification checkpoint for vLLM's pooling runner.

The result is served with `vllm serve DST --runner pooling --convert classify`, which reads the reward at the
last token (`--readout last-token`); RM-7B-alpha's card read-out at index 2047 has no vLLM equivalent.
Tensors are read lazily and written one shard at a time: real checkpoints are 13-70 GB.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from .loading import LoadError, reward_checkpoint_folder, rm_folder, rm_tokenizer
from .presets import rm_preset

MAX_SHARD_SIZE = "5GB"
HEAD = "v_head.weight"
IGNORED = "model."  # RM-7B-alpha's GPTRewardModel keeps the backbone twice: model.model.* (and its LM head)
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def source_name(name: str) -> str:
    """The Starling checkpoint's name of LlamaForSequenceClassification tensor `name`.

    >>> source_name("model.layers.0.mlp.up_proj.weight")
    'transformer.layers.0.mlp.up_proj.weight'
    >>> source_name("score.weight")
    'v_head.weight'
    """
    return HEAD if name == "score.weight" else "transformer." + name.removeprefix("model.")


def listed(names: list[str]) -> str:
    """Up to three names, and how many more.

    >>> listed(["a", "b"]), listed(["a", "b", "c", "d", "e"])
    ('a, b', 'a, b, c and 2 more')
    """
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def source_names(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], folder: Path) -> dict[str, str]:
    """Each expected tensor's checkpoint name; LoadError if one is missing, extra or of another shape.

    `found` and `expected` map names to (meta) tensors. The card loads with strict=False, which would hide a
    missing tensor: a served model would then score with random weights.
    """
    names = {name: source_name(name) for name in expected}
    missing = sorted(source for source in names.values() if source not in found)
    if missing:
        raise LoadError(f"The checkpoint in {folder} lacks {listed(missing)}: it is not a complete Starling reward "
                        "model (it needs transformer.* and v_head.weight), so it is not converted.")
    wanted = set(names.values())
    # Checkpoints saved by older transformers also hold each layer's rotary `inv_freq`, a buffer computed from the
    # config, not a weight: `load_rm` ignores it too.
    extra = sorted(name for name in found if name not in wanted and not name.startswith(IGNORED)
                   and not name.endswith(".rotary_emb.inv_freq"))
    if extra:
        raise LoadError(f"The checkpoint in {folder} has tensors a Llama reward model does not: {listed(extra)}; "
                        "it is not in the layout of a Starling reward model, so it is not converted.")
    wrong = sorted(f"{source} {list(found[source].shape)} (config.json says {list(expected[name].shape)})"
                   for name, source in names.items() if found[source].shape != expected[name].shape)
    if wrong:
        raise LoadError(f"The checkpoint in {folder} does not match its config.json: {listed(wrong)}.")
    return names


def pytorch_tensors(folder: Path):
    """RM-7B-alpha's single PyTorch checkpoint, memory-mapped: (meta tensors by name, read)."""
    checkpoint = reward_checkpoint_folder(folder) / "pytorch_model.bin"
    state = torch.load(checkpoint, mmap=True, weights_only=True, map_location="cpu")
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise LoadError(f"{checkpoint} is not a state dict of tensors: it is not a Starling reward model checkpoint.")
    return {name: tensor.to("meta") for name, tensor in state.items()}, state.__getitem__


def safetensors_tensors(folder: Path, stack: contextlib.ExitStack):
    """RM-34B's safetensors shards (those its index names, else all), opened lazily: (meta tensors by name, read)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())) if index.exists()
             else sorted(path.name for path in folder.glob("*.safetensors")))
    specs, handles = {}, {}
    for file in files:
        handle = stack.enter_context(safe_open(folder / file, framework="pt"))
        for name in handle.keys():
            piece = handle.get_slice(name)
            if piece.get_dtype() not in SAFETENSORS_DTYPES:
                raise LoadError(f"{folder / file} holds {name} as {piece.get_dtype()}, not as floating-point weights.")
            specs[name] = torch.empty(piece.get_shape(), dtype=SAFETENSORS_DTYPES[piece.get_dtype()], device="meta")
            handles[name] = handle
    return specs, lambda name: handles[name].get_tensor(name)


@contextlib.contextmanager
def checkpoint_tensors(folder: Path):
    """Every tensor of the reward checkpoint in `folder`, unread: yields (meta tensors by name, read(name))."""
    from safetensors import SafetensorError

    with contextlib.ExitStack() as stack:
        try:
            found = (safetensors_tensors(folder, stack) if any(folder.glob("*.safetensors"))
                     else pytorch_tensors(folder))
        except LoadError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as error:
            raise LoadError(f"Cannot read the reward model weights in {folder}: {error}") from None
        yield found


def classifier_config(folder: Path, pad_id: int):
    """The source's Llama config as a one-label LlamaForSequenceClassification config."""
    from transformers import LlamaConfig

    try:
        # The 7B config names a class transformers does not have; read it as the Llama config it is.
        config = LlamaConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise LoadError(f"Cannot read {folder / 'config.json'}: {error}") from None
    config.architectures = ["LlamaForSequenceClassification"]
    config.num_labels = 1
    config.pad_token_id = pad_id
    return config


def expected_tensors(config) -> dict[str, torch.Tensor]:
    """The state dict LlamaForSequenceClassification(config) has, as meta tensors (nothing allocated)."""
    from transformers import LlamaForSequenceClassification

    with torch.device("meta"):
        return LlamaForSequenceClassification(config).state_dict()


def write_weights(names: dict[str, str], specs: dict[str, torch.Tensor], read, folder: Path) -> int:
    """Safetensors shards of at most MAX_SHARD_SIZE (and their index) in `folder`; the number of shards.

    huggingface_hub's save_torch_state_dict needs every tensor in memory at once; its own shard planner and
    file names are used instead, and one shard at a time is read, copied and written.
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    plan = split_torch_state_dict_into_shards({name: specs[source] for name, source in names.items()},
                                              max_shard_size=MAX_SHARD_SIZE)
    folder.mkdir(parents=True)
    for filename, shard_names in plan.filename_to_tensors.items():
        # A contiguous copy of each tensor: RM-7B-alpha's share storage with their model.* duplicates, and
        # safetensors refuses to write tensors that share storage.
        shard = {name: read(names[name]).clone(memory_format=torch.contiguous_format) for name in shard_names}
        save_file(shard, folder / filename, metadata={"format": "pt"})
        del shard
    if plan.is_sharded:
        index = {"metadata": plan.metadata, "weight_map": plan.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return len(plan.filename_to_tensors)


def save_tokenizer(tokenizer, folder: Path) -> None:
    """The project's tokenizer, saved so that AutoTokenizer reads its tokenizer.json back unchanged.

    save_pretrained records the tokenizer's class; for a Yi-style folder that is LlamaTokenizer, which
    transformers 5 rebuilds from the vocabulary with other merges (see tokenization.py). The generic class
    takes tokenizer.json as written, in transformers 4 and 5.
    """
    tokenizer.save_pretrained(folder)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) | {"tokenizer_class": "PreTrainedTokenizerFast"}
    for option in ("is_local", "local_files_only"):  # how this process loaded it, which transformers 5 records
        config.pop(option, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def convert_rm(source: str, destination: str | Path, kind: str | None = None) -> dict:
    """Write reward model `source` (an RM preset, or a local directory in the `kind` preset's layout) to
    `destination` as a LlamaForSequenceClassification checkpoint (`score.weight` = the v_head) with its tokenizer.

    Returns what was written: destination, tensors, shards, dtype, hidden_size, layers.
    """
    destination = Path(destination)
    if destination.exists() and not (destination.is_dir() and not any(destination.iterdir())):
        raise LoadError(f"{destination} already exists and is not an empty folder: give a new one.")
    preset = rm_preset(source, kind)
    folder = rm_folder(preset)  # the files load_rm reads
    tokenizer = rm_tokenizer(preset, folder)
    # The card pads with <unk>: give the tokenizer the pad token config.json names.
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.unk_token
    config = classifier_config(folder, tokenizer.pad_token_id)
    staging = destination.with_name(f".{destination.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with checkpoint_tensors(folder) as (specs, read):
            names = source_names(specs, expected_tensors(config), folder)
            config.dtype = specs[names["model.embed_tokens.weight"]].dtype  # the backbone's
            shards = write_weights(names, specs, read, staging)
        config.save_pretrained(staging)
        save_tokenizer(tokenizer, staging)
        # Published whole or not at all: a failed conversion leaves no half-written destination.
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"destination": str(destination), "tensors": len(names), "shards": shards,
            "dtype": str(config.dtype).removeprefix("torch."), "hidden_size": config.hidden_size,
            "layers": config.num_hidden_layers}
