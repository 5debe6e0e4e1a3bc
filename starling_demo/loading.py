"""Download and load Starling language and reward models, in 4-bit, bf16 or fp32, on CPU or CUDA."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaModel, LlamaPreTrainedModel

from .backends.local import Loaded
from .host_memory import release_freed_memory
from .presets import LMPreset, RMPreset
from .tiny import CACHE_ROOT, tiny_checkpoint
from .tokenization import read_tokenizer

log = logging.getLogger(__name__)
PRECISIONS = ("4bit", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
VIEWS = CACHE_ROOT / "views"  # folders that present a repo's files the way transformers needs them


class LoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


class StarlingRewardModel(LlamaPreTrainedModel):
    """The Starling RM: a Llama backbone without its LM head, and `v_head = Linear(hidden, 1)`.

    The attribute names match both checkpoints: RM-34B stores `transformer.*` and `v_head.weight`;
    RM-7B-alpha stores the same plus `model.*` (the card's duplicate reference to the backbone).
    """

    base_model_prefix = "transformer"
    _keys_to_ignore_on_load_unexpected = [r"^model\."]

    def __init__(self, config):
        super().__init__(config)
        self.transformer = LlamaModel(config)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False):
        """The v_head value at every position, shape [batch, seq], in the head's (full) precision."""
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  cache=cache, use_cache=use_cache).last_hidden_state
        return self.v_head(hidden.to(self.v_head.weight.dtype)).squeeze(-1)


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise LoadError(f"Unknown device {device!r}: use one of {', '.join(DEVICES)}.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LoadError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    return device


def device_memory(device: str) -> int:
    """Bytes of memory the models will live in: the GPU's, or the machine's for CPU."""
    if resolve_device(device) == "cuda":
        return torch.cuda.get_device_properties(0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def compute_dtype(device: str) -> torch.dtype:
    """bf16 where the GPU has bf16 tensor cores (Ampere and newer), fp16 on older GPUs, fp32 on CPU."""
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    return torch.float32


def attention_without_plans(device: str) -> None:
    """On a GPU, scaled-dot-product attention from flash or memory-efficient kernels, not cuDNN's: torch puts cuDNN
    first on Hopper and Blackwell GPUs where its cuDNN is newer than 9.15 (torch 2.11 did on the H200), and cuDNN
    builds an execution plan for every new shape (batch, query and key lengths), reported at about 0.4 s each and
    kept for the life of the process. A turn's prompt and replies have new lengths every time: on an H200 its
    scoring took 1.12 s, where `bench_scoring`, repeating its shapes, scores 8 longer replies in 0.16 s (RESULTS.md,
    issue 25: the likely cause, to be measured). Process-wide, as torch's own switch is."""
    if device == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def precision_kwargs(precision: str, device: str, keep_full: list[str]) -> dict:
    """from_pretrained arguments for a precision; `keep_full` modules are never quantised."""
    if precision not in PRECISIONS:
        raise LoadError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision == "fp32":
        return {"dtype": torch.float32}
    if precision == "bf16":
        return {"dtype": torch.bfloat16}
    dtype = compute_dtype(device)
    # llm_int8_skip_modules replaces the default skip list, so the head must be named here. Double quantisation stays
    # off: it would save about 0.4 bits a weight (0.3 GB for 7B) at the cost of dequantising the scales too in every
    # 4-bit matmul, which a batch-1 decode step pays in full.
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                               llm_int8_skip_modules=keep_full)
    return {"dtype": dtype, "quantization_config": quant}


def fetch(repo: str, patterns: list[str]) -> Path:
    """A local folder holding `patterns` of `repo`: a tiny checkpoint, a local directory or a hub download."""
    if repo.startswith("tiny:"):
        return tiny_checkpoint(repo.removeprefix("tiny:"))
    if os.path.isdir(repo):
        return Path(repo)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except GatedRepoError:
        raise LoadError(f"{repo} is gated: accept its licence at https://huggingface.co/{repo} and set HF_TOKEN "
                        "to a token of that account (or use the tiny presets).") from None
    except RepositoryNotFoundError:
        raise LoadError(f"{repo} was not found on the Hugging Face Hub: check the name, or set HF_TOKEN if "
                        "it is private.") from None
    except (LocalEntryNotFoundError, OSError, HfHubHTTPError) as error:
        raise LoadError(f"Cannot download {repo} ({type(error).__name__}): the Hugging Face Hub is unreachable "
                        "and it is not cached. Connect to the internet, or try the app offline with the tiny "
                        "presets (--lm tiny --rm tiny).") from None


def load_tokenizer(source: Path):
    """The tokenizer in `source`, as the Starling models saw it (see `tokenization.read_tokenizer`)."""
    try:
        return read_tokenizer(source)
    except Exception as error:  # malformed files fail in many ways; all mean the same to the user
        raise LoadError(f"Cannot read the tokenizer in {source} ({type(error).__name__}: {error}): "
                        "check that the folder holds a complete tokenizer.") from None


def view_folder(folder: Path, purpose: str) -> Path:
    """An empty-or-reused folder of our cache that stands for `folder`: one per source path and purpose."""
    view = VIEWS / f"{purpose}-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]}"
    view.mkdir(parents=True, exist_ok=True)
    return view


def write_atomically(path: Path, write) -> None:
    """`write(temporary)` then rename it to `path`: another process (app and CLI share the cache) never
    reads half a file or finds a link missing."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.unlink(missing_ok=True)
    write(temporary)
    os.replace(temporary, path)


def without_sep_token(folder: Path) -> Path:
    """A copy of `folder`'s tokenizer files without Starling-LM-7B-alpha's `<sep>` (not in its vocabulary).

    Loaded naively, `<sep>` becomes id 32002, past the embeddings; transformers ignores `sep_token=None`
    when `special_tokens_map.json` names it, so the files themselves are edited.
    """
    view = view_folder(folder, "nosep")
    for name in TOKENIZER_FILES:
        if not (folder / name).exists():
            continue
        if not name.endswith(".json"):
            write_atomically(view / name, lambda path: shutil.copyfile(folder / name, path))
            continue
        data = json.loads((folder / name).read_text(encoding="utf-8"))
        sep = data.pop("sep_token", None)
        sep = sep.get("content") if isinstance(sep, dict) else sep or "<sep>"
        if name == "added_tokens.json":  # {content: id}
            data.pop(sep, None)
        if "added_tokens_decoder" in data:
            data["added_tokens_decoder"] = {k: v for k, v in data["added_tokens_decoder"].items()
                                            if v.get("content") != sep}
        if "added_tokens" in data:
            data["added_tokens"] = [t for t in data["added_tokens"] if t.get("content") != sep]
        text = json.dumps(data, ensure_ascii=False)
        write_atomically(view / name, lambda path: path.write_text(text, encoding="utf-8"))
    return view


def has_tokenizer(folder: Path) -> bool:
    """Whether `folder` holds a vocabulary (a config or special-token map alone is not a tokenizer)."""
    return any((folder / name).exists() for name in ("tokenizer.json", "tokenizer.model"))


def lm_folder(preset: LMPreset, weights: bool = True) -> Path:
    """The LM's local folder: config, tokenizer and (with `weights`) safetensors, else .bin, weights."""
    if not weights:
        return fetch(preset.repo, ["*.json", "*.model"])
    folder = fetch(preset.repo, ["*.json", "*.model", "*.safetensors"])
    return folder if any(folder.glob("*.safetensors")) else fetch(preset.repo, ["*.json", "*.model", "*.bin"])


def lm_tokenizer(preset: LMPreset, folder: Path | None = None):
    """The LM's tokenizer, alpha's out-of-vocabulary `<sep>` dropped; only its files are fetched without `folder`."""
    folder = folder or lm_folder(preset, weights=False)
    return load_tokenizer(without_sep_token(folder) if preset.drop_sep_token else folder)


def load_lm(preset: LMPreset, precision: str = "4bit", device: str = "auto") -> Loaded:
    """Load a Starling LM and its tokenizer."""
    device = resolve_device(device)
    attention_without_plans(device)
    kwargs = precision_kwargs(precision, device, keep_full=["lm_head"])
    folder = lm_folder(preset)
    tokenizer = lm_tokenizer(preset, folder)
    model = AutoModelForCausalLM.from_pretrained(folder, device_map={"": device}, **kwargs)
    if len(tokenizer) > model.config.vocab_size:
        raise LoadError(f"The tokenizer of {preset.repo} has {len(tokenizer)} tokens but the model only "
                        f"{model.config.vocab_size}: a special token outside the vocabulary would crash generation.")
    release_freed_memory()
    return Loaded(model.eval(), tokenizer, preset, precision, device)


def reward_checkpoint_folder(folder: Path) -> Path:
    """A folder from_pretrained can read for RM-7B-alpha, whose single checkpoint may be named `*.pt`.

    Like the card, take the first file ending in `.pt` or `model.bin`; link it under the name
    transformers looks for when it has another.
    """
    if any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").exists():
        return folder
    found = sorted(p for p in folder.iterdir() if p.name.endswith((".pt", "model.bin")))
    if not found:
        raise LoadError(f"{folder} has no reward-model weights (no *.safetensors, *.pt or *model.bin file).")
    view = view_folder(folder, "checkpoint")
    for link, target in [("config.json", folder / "config.json"), ("pytorch_model.bin", found[0])]:
        write_atomically(view / link, lambda path: path.symlink_to(target.resolve()))
    return view


def rm_folder(preset: RMPreset) -> Path:
    """The RM's local folder: config, weights (safetensors, .bin or .pt) and any tokenizer files."""
    folder = fetch(preset.repo, ["*.json", "*.safetensors", "*.pt", "*.bin", *TOKENIZER_FILES, "*.model"])
    if not (folder / "config.json").exists():
        raise LoadError(f"{folder} has no config.json: it is not in the layout of a Starling reward model repo.")
    return folder


def rm_tokenizer(preset: RMPreset, folder: Path | None = None):
    """The RM's tokenizer: its repo's (`folder`, else only the tokenizer files are fetched), else its preset's."""
    folder = folder or fetch(preset.repo, ["*.json", *TOKENIZER_FILES, "*.model"])
    if preset.tokenizer is not None and not has_tokenizer(folder):
        folder = fetch(preset.tokenizer, ["*.json", "*.model", "*.tiktoken"])
    return load_tokenizer(folder)


def load_rm(preset: RMPreset, precision: str = "4bit", device: str = "auto") -> Loaded:
    """Load a Starling reward model; fail loudly if its checkpoint has no `v_head.weight`."""
    device = resolve_device(device)
    attention_without_plans(device)
    kwargs = precision_kwargs(precision, device, keep_full=["v_head"])
    folder = rm_folder(preset)
    tokenizer = rm_tokenizer(preset, folder)
    try:
        # The 7B config names a class transformers does not have; read it as the Llama config it is.
        config = LlamaConfig.from_pretrained(folder)
        model, info = StarlingRewardModel.from_pretrained(reward_checkpoint_folder(folder), config=config,
                                                          device_map={"": device}, output_loading_info=True,
                                                          **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise LoadError(f"Cannot read the reward model weights in {folder}: {error}") from None
    missing = [k for k in info["missing_keys"] if not k.startswith("model.")]
    if missing:
        raise LoadError(f"The checkpoint in {folder} lacks {', '.join(sorted(missing)[:3])}: it is not a Starling "
                        "reward model (a reward model needs transformer.* and v_head.weight).")
    model.v_head.float()  # the reward is read in full precision, whatever the backbone's
    check_segment_tokenisation(tokenizer, preset)
    release_freed_memory()
    return Loaded(model.eval(), tokenizer, preset, precision, device)


def check_segment_tokenisation(tokenizer, preset: RMPreset) -> None:
    """Warn if encoding the template part by part gives other ids than the card's whole-string call.

    Parts are encoded separately so typed special tokens stay text; for ordinary text the ids must be
    the ones the card's `tokenizer(text)` gives, or the rewards would not be the card's.
    """
    from .templates import reward_inputs

    messages = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi!"},
                {"role": "user", "content": "How are you?"}]
    encoded, = reward_inputs(tokenizer, preset.template, messages, ["Fine, thanks."], preset.add_bos)
    text = encoded.text.removeprefix("<s>")
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    if encoded.ids[int(preset.add_bos):] != whole:
        log.warning("The %s tokenizer splits the reward-model template differently part by part than as one "
                    "string; rewards may differ slightly from the model card's.", preset.name)
