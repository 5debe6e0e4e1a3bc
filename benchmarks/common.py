"""Shared benchmark helpers: random Starling-shaped models (small on CPU, true 7B shapes on CUDA), timing, reports."""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import time

import torch
from torch import nn
from transformers import LlamaConfig, MistralConfig, MistralForCausalLM

from starling_demo.loading import StarlingRewardModel, attention_without_plans, precision_kwargs

# Starling-LM-7B = Mistral-7B; RM-7B-alpha = Llama-2-7B (multi-head attention: 32 KV heads).
LM_TRUE = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336)
RM_TRUE = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
               intermediate_size=11008)
LM_SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                intermediate_size=768)
RM_SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=768)
LM_VOCAB, RM_VOCAB = 32002, 32000
H100_BANDWIDTH = 3.35e12  # B/s, H100 SXM HBM3


def parse_args(description: str, **extra) -> argparse.Namespace:
    """--device cpu|cuda and --repeats, plus `extra` flags given as name=(type, default, help); type bool: a switch."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: small random models (hidden 256, 4 layers, real vocab); cuda: true 7B shapes, 4-bit")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up; medians are reported")
    for name, (kind, default, text) in extra.items():
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a visible CUDA GPU")
    return args


def lm_config(true_shape: bool) -> MistralConfig:
    return MistralConfig(vocab_size=LM_VOCAB, max_position_embeddings=32768, sliding_window=None, bos_token_id=1,
                         eos_token_id=32000, pad_token_id=0, tie_word_embeddings=False, rms_norm_eps=1e-5,
                         **(LM_TRUE if true_shape else LM_SMALL))


def rm_config(true_shape: bool) -> LlamaConfig:
    return LlamaConfig(vocab_size=RM_VOCAB, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                       tie_word_embeddings=False, rms_norm_eps=1e-5, **(RM_TRUE if true_shape else RM_SMALL))


def quantize_4bit(model: nn.Module, keep_full: list[str], device: str) -> nn.Module:
    """Swap every Linear outside `keep_full` for a bitsandbytes Linear4bit with the project's settings.

    The settings (NF4, compute dtype, double quantisation: off) are read from `precision_kwargs`, the loader's
    own; this quantises random weights in place, which is what `from_pretrained` does with real ones.
    """
    import bitsandbytes as bnb

    quant = precision_kwargs("4bit", device, keep_full)["quantization_config"]
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not any(name.split(".")[-1] == k for k in keep_full)]
    while targets:  # pop, so each full-precision weight is freed once replaced
        name, linear = targets.pop()
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                compute_dtype=quant.bnb_4bit_compute_dtype, quant_type=quant.bnb_4bit_quant_type,
                                compress_statistics=quant.bnb_4bit_use_double_quant, device="meta")
        new.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False,
                                       quant_type=quant.bnb_4bit_quant_type,
                                       compress_statistics=quant.bnb_4bit_use_double_quant, module=new).to(device)
        if linear.bias is not None:
            new.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
        del linear
    return model


def build(kind: str, true_shape: bool, precision: str, device: str) -> nn.Module:
    """A random-weight LM ("lm", Mistral) or RM ("rm", StarlingRewardModel) on `device` in fp32, bf16 or 4bit."""
    config = lm_config(true_shape) if kind == "lm" else rm_config(true_shape)
    cls, keep_full = (MistralForCausalLM, ["lm_head"]) if kind == "lm" else (StarlingRewardModel, ["v_head"])
    dtype = precision_kwargs(precision, device, keep_full)["dtype"]
    attention_without_plans(device)  # as the loaders
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype)
    if precision == "4bit":
        quantize_4bit(model, keep_full, device)
    if kind == "rm":
        model.v_head.float()  # as load_rm: the reward is read in full precision
    if device == "cuda":
        torch.cuda.empty_cache()
    return model.eval()


def time_forward(model, device: str) -> list:
    """Wrap `model.forward` to count the time in model passes; the returned [seconds, positions] grows with every call (reset it between runs)."""
    spent, inner = [0.0, 0], model.forward

    def forward(input_ids, *args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(input_ids, *args, **kwargs)
        finally:
            sync(device)
            spent[0] += time.perf_counter() - start
            spent[1] += input_ids.numel()

    model.forward = forward
    return spent


def reward_model(device: str):
    """The benchmarks' reward model as the engine holds one (`backends.local.Loaded`): random weights, the true
    RM-7B shape in 4-bit on CUDA and the small one in fp32 on CPU, with the real Mistral tokenizer and the tiny
    RM-7B preset (its template, the card's read-out, 2,048 positions)."""
    from starling_demo.backends.local import Loaded
    from starling_demo.loading import load_tokenizer
    from starling_demo.presets import RM_PRESETS
    from starling_demo.tiny import tiny_checkpoint

    cuda = device == "cuda"
    precision = "4bit" if cuda else "fp32"
    return Loaded(build("rm", cuda, precision, device), load_tokenizer(tiny_checkpoint("rm-7b")), RM_PRESETS["tiny"],
                  precision, device)


def engine_of(device: str, with_lm: bool = False):
    """An Engine holding the benchmarks' random RM (`reward_model`) and, `with_lm`, a random LM, in place of loads
    (the `tiny` presets' templates)."""
    from starling_demo.backends.local import Loaded
    from starling_demo.engine import Engine
    from starling_demo.loading import load_tokenizer
    from starling_demo.presets import LM_PRESETS
    from starling_demo.tiny import tiny_checkpoint

    rm = reward_model(device)
    engine = Engine(lm_name="tiny", rm_name="tiny", precision=rm.precision, device=device)
    engine._models[("rm", "tiny")] = rm
    if with_lm:
        engine._models[("lm", "tiny")] = Loaded(build("lm", device == "cuda", rm.precision, device),
                                                 load_tokenizer(tiny_checkpoint("lm")), LM_PRESETS["tiny"],
                                                 rm.precision, device)
    return engine


def random_ids(n: int, generator: torch.Generator) -> list[int]:
    """`n` random ordinary token ids (past the specials 0-2, inside both vocabularies)."""
    return torch.randint(3, 32000, (n,), generator=generator).tolist()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def clock(fn, device: str) -> float:
    """Seconds `fn()` takes, with the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median of what each fn returns (seconds, or a tuple of them) over `repeats` runs after `warmup` runs.

    The fns take turns within every repeat, so load from other processes hits all of them alike.
    """
    runs = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            value = fn()
            if i >= warmup:
                runs[name].append(value)
    return {name: statistics.median(v) if isinstance(v[0], float) else [statistics.median(c) for c in zip(*v)]
            for name, v in runs.items()}


def module_bytes(model: nn.Module) -> int:
    """Resident bytes of parameters, buffers and bitsandbytes quantisation statistics (absmax, code)."""
    seen, total = set(), 0

    def add(tensor):
        nonlocal total
        if tensor is not None and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        while state is not None:
            add(state.absmax)
            add(state.code)
            add(getattr(state, "offset", None))
            state = getattr(state, "state2", None)
    return total


def machine() -> str:
    """CPU model, cores, torch version and GPU (if any), one line."""
    cpu = platform.processor()
    with contextlib.suppress(Exception):
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                   text=True).stdout.splitlines() if line.startswith("Model name"))
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}"


def cpu_snapshot() -> tuple[int, int, float] | None:
    """(busy, total) jiffies of all CPUs and this process's own CPU jiffies; None off Linux."""
    with contextlib.suppress(OSError):
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
        return sum(fields) - fields[3] - fields[4], sum(fields), sum(os.times()[:4]) * os.sysconf("SC_CLK_TCK")
    return None


def report_contention(before) -> None:
    """Print the share of CPU time other processes took since `before`: timings are trustworthy only near 0%."""
    after = cpu_snapshot()
    if before and after:
        others = (after[0] - before[0]) - (after[2] - before[2])
        print(f"other processes used {max(others, 0) / (after[1] - before[1]):.0%} of the CPUs during this run "
              f"(load average {os.getloadavg()[0]:.2f})")


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with 3 significant digits."""
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [header, ["---"] * len(header), *[[cell(v) for v in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def verdict(name: str, value: float, op: str, target: float, unit: str = "x") -> bool:
    """Print whether `value op target` holds, and return it."""
    met = value >= target if op == ">=" else value <= target
    print(f"TARGET {name}: {value:.2f}{unit} {op} {target}{unit}: {'MET' if met else 'NOT MET'}")
    return met
